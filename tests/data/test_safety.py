"""Safety: term blocklist (document and line mode), domain blocklist, local classifier."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmsmith.core.config import ConfigError, parse_section
from lmsmith.core.errors import UserError
from lmsmith.data.document import Document
from lmsmith.data.safety import SafetyFilter, TermMatcher, domain_is_blocked, url_hosts, words_of
from lmsmith.data.step import StepStats
from lmsmith.schema.curate import ClassifierConfig, SafetyConfig

CLEAN = "The quick brown fox jumps over the lazy dog near the river bank. "


def run(step, docs):
    stats = StepStats(step.name)
    kept, dropped = step(docs, stats)
    return kept, {d.id: reason for d, reason in dropped}, stats


def test_term_matcher_counts_words_prefixes_and_phrases_on_word_boundaries():
    matcher = TermMatcher(["badword", "ugl*", "very bad thing*", "# a comment is no entry"])
    assert matcher.count(words_of("BadWord, badwords, ugly, uglier, smuggle, very bad things.")) == 4
    assert matcher.count(words_of("a very bad thing and a very good thing")) == 1
    assert matcher.count(words_of("unbadword xbadword bad word")) == 0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from("the fox jumps over a lazy dog by the bank".split()), min_size=0, max_size=20),
    st.integers(0, 20), st.sampled_from(["zork", "ZORK", "Zork", "zorks"]),
    st.sampled_from([" ", ", ", ". ", "\n", " (", "'"]),
)
def test_planted_terms_are_counted_wherever_they_stand(words, at, term, sep):
    matcher = TermMatcher(["zork*"])
    at = min(at, len(words))
    text = " ".join(words[:at]) + sep + term + sep + " ".join(words[at:])
    assert matcher.count(words_of(text)) == 1
    assert matcher.count(words_of(text.replace(term, "x" + term))) == 0  # inside a longer word: no match


def test_default_list_drops_dense_documents_and_keeps_a_stray_word_in_a_long_one():
    step = SafetyFilter()
    docs = [
        Document("short", "What a fucking mess, you slut.", "t"),
        Document("long", CLEAN * 60 + "Oh fuck, said the fox.", "t"),  # 1 match in ~600 words
        Document("clean", CLEAN * 3, "t"),
        Document("names", "Dick Cumming visited Scunthorpe; the cock crowed at the tit and the pussycat.", "t"),
        Document("phrase", "They shared a blow job video.", "t"),
    ]
    kept, dropped, stats = run(step, docs)
    assert dropped == {"short": "blocklisted_terms", "phrase": "blocklisted_terms"}
    assert [d.id for d in kept] == ["long", "clean", "names"]
    assert stats.counters["blocklist_matches"] == 3


def test_density_threshold_decides(tmp_path):
    terms = tmp_path / "terms.txt"
    terms.write_text("zork\n", encoding="utf-8")
    text = " ".join(["word"] * 99 + ["zork"])  # density 0.01
    loose = SafetyFilter(SafetyConfig(default_blocklist=False, blocklist_files=[str(terms)], max_term_density=0.02))
    strict = SafetyFilter(SafetyConfig(default_blocklist=False, blocklist_files=[str(terms)], max_term_density=0.005))
    assert run(loose, [Document("a", text, "t")])[1] == {}
    assert run(strict, [Document("a", text, "t")])[1] == {"a": "blocklisted_terms"}


def test_line_mode_removes_only_offending_lines_and_never_touches_code(tmp_path):
    terms = tmp_path / "terms.txt"
    terms.write_text("zork\nfoo bar\n", encoding="utf-8")
    config = SafetyConfig(default_blocklist=False, blocklist_files=[str(terms)], mode="line")
    step = SafetyFilter(config)
    prose = Document("p", "first line is fine\nthis one says ZORK loudly\nthird foo bar\nlast line", "t")
    only_bad = Document("b", "zork zork\nfoo bar", "t")
    code = Document("c", "x = 1\n# zork\n" + "y = 2\n" * 10, "t", {"kind": "code"})
    _, dropped, stats = run(step, [prose, only_bad, code])
    assert prose.text == "first line is fine\nlast line"
    assert dropped == {"b": "blocklisted_terms", "c": "blocklisted_terms"}  # code is judged whole: 1 in ~23 words
    assert stats.counters["lines_removed"] == 4


def test_domain_blocklist_checks_meta_url_and_links_in_text(tmp_path):
    domains = tmp_path / "domains.txt"
    domains.write_text("# mine\nbad.example\n", encoding="utf-8")
    step = SafetyFilter(SafetyConfig(domain_blocklist_files=[str(domains)]))
    docs = [
        Document("meta", CLEAN, "t", {"url": "https://www.bad.example/page"}),
        Document("link", CLEAN + " more at http://cdn.BAD.example:8080/x.png", "t"),
        Document("default", CLEAN + " see https://www.pornhub.com/", "t"),
        Document("lookalike", CLEAN + " see https://notbad.example/ and bad.example.org", "t", {"url": "https://good.example"}),
        Document("mention", CLEAN + " the domain bad.example is not a link", "t"),
    ]
    kept, dropped, _ = run(step, docs)
    assert dropped == {"meta": "blocked_domain", "link": "blocked_domain", "default": "blocked_domain"}
    assert [d.id for d in kept] == ["lookalike", "mention"]
    text_only = SafetyFilter(SafetyConfig(domain_blocklist_files=[str(domains)], check_text_urls=False))
    assert run(text_only, [docs[1]])[1] == {}


def test_url_helpers():
    assert url_hosts("a https://user:pw@Sub.Example.com/x?q=1 b ftp://files.example.org.") == [
        "sub.example.com", "files.example.org"
    ]
    assert domain_is_blocked("a.b.example.com", {"example.com"})
    assert not domain_is_blocked("myexample.com", {"example.com"})


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="safety.max_term_density"):
        parse_section(SafetyConfig, {"max_term_density": -1}, "safety")
    with pytest.raises(ConfigError, match=r"safety.blocklist_files\[0\]"):
        parse_section(SafetyConfig, {"blocklist_files": [str(tmp_path / "missing.txt")]}, "safety")
    with pytest.raises(ConfigError, match="safety.classifier.model"):
        parse_section(SafetyConfig, {"classifier": {"model": str(tmp_path / "nope")}}, "safety")
    with pytest.raises(ConfigError, match="'document', 'line'"):
        parse_section(SafetyConfig, {"mode": "paragraph"}, "safety")
    with pytest.raises(ConfigError, match="threshold"):
        parse_section(SafetyConfig, {"classifier": {"threshold": 1.5}}, "safety")


def test_step_is_picklable():
    step = SafetyFilter()
    clone = pickle.loads(pickle.dumps(step))
    docs = [Document("a", "what a fucking mess", "t"), Document("b", CLEAN, "t")]
    assert run(clone, docs)[1] == run(step, [Document("a", "what a fucking mess", "t"), Document("b", CLEAN, "t")])[1]


# ---------------------------------------------------------------------------------------------
# The classifier: a tiny random BERT the test builds and saves, so the real code path runs.

VOCAB_WORDS = "the fox dog cat jumps over lazy quick brown river bank hates loves idiot nice awful kind".split()


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {tok: i for i, tok in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + VOCAB_WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64, num_labels=2, id2label={0: "ok", 1: "toxic"}, label2id={"ok": 0, "toxic": 1},
    )
    model = transformers.BertForSequenceClassification(config).eval()
    with torch.no_grad():  # spread the logits so scores differ clearly between texts
        model.classifier.weight.mul_(20.0)
    directory = tmp_path_factory.mktemp("classifier")
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory, model, fast


def _reference_scores(model, tokenizer, texts):
    import torch

    scores = []
    with torch.no_grad():
        for text in texts:  # one at a time: no padding involved
            enc = tokenizer(text, return_tensors="pt", truncation=True, max_length=64)
            scores.append(torch.softmax(model(**enc).logits[0].double(), -1)[1].item())
    return scores


def test_classifier_drops_exactly_the_documents_scoring_at_or_above_threshold(tiny_classifier):
    directory, model, tokenizer = tiny_classifier
    import random

    rng = random.Random(3)
    texts = [" ".join(rng.choice(VOCAB_WORDS) for _ in range(rng.randint(3, 12))) for _ in range(16)]
    reference = _reference_scores(model, tokenizer, texts)
    ordered = sorted(reference)
    assert ordered[7] < ordered[8]
    threshold = (ordered[7] + ordered[8]) / 2  # the random model's scores straddle it: half go
    config = SafetyConfig(
        default_blocklist=False, default_domains=False,
        classifier=ClassifierConfig(
            model=str(directory), label="toxic", threshold=threshold, batch_size=4, device="cpu"
        ),
    )
    step = SafetyFilter(config)
    assert step.classifier_scores(texts) == pytest.approx(reference, abs=1e-5)
    docs = [Document(str(i), t, "t") for i, t in enumerate(texts)]
    _, dropped, stats = run(pickle.loads(pickle.dumps(step)), docs)  # the copy loads its own model
    expected = {str(i) for i, s in enumerate(reference) if s >= threshold}
    assert set(dropped) == expected and len(expected) == 8
    assert set(dropped.values()) == {"classifier_flagged"}
    assert stats.counters["classifier_scored"] == 16


def test_classifier_label_must_exist(tiny_classifier):
    directory, _, _ = tiny_classifier
    config = SafetyConfig(classifier=ClassifierConfig(model=str(directory), label="hate", device="cpu"))
    with pytest.raises(UserError, match=r"'hate' is not a label .*\['ok', 'toxic'\]"):
        SafetyFilter(config)([Document("a", "the fox", "t")], StepStats("safety"))
