"""Tokenizer training and round trips, checked against Hugging Face transformers."""

import random

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lmsmith.core.errors import UserError
from lmsmith.core.manifest import file_sha256
from lmsmith.schema.text import EOT
from lmsmith.text.tokenizer import (
    KINDS,
    TOKENIZER_CONFIG,
    TOKENIZER_FILE,
    TextFiles,
    Tokenizer,
    load_tokenizer,
    train_bpe,
    train_char,
)

WORDS = ("the model reads tokens and learns to predict the next one; a tokenizer turns text into ids, "
         "and ids back into text. Über naïve café — 日本語のテキスト, 中文 文本, 한국어 😀 🚀 "
         "def add(a, b):\n    return a + b\n\n").split(" ")


def corpus(n_texts: int = 40, seed: int = 0) -> list[str]:
    """Small documents made of a fixed word list, so training has plenty of repeated pairs."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 80))) for _ in range(n_texts)]


def train(kind: str, texts, **kwargs) -> Tokenizer:
    if kind == "bpe":
        return train_bpe(texts, kwargs.pop("vocab_size", 400), show_progress=False, **kwargs)
    return train_char(texts, kwargs.pop("vocab_size", None), show_progress=False, **kwargs)


@pytest.fixture(scope="module", params=KINDS)
def trained(request, tmp_path_factory):
    """(kind, our tokenizer, the same file loaded by transformers)."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = train(request.param, corpus(), special_tokens=["<|pad|>"])
    directory = tmp_path_factory.mktemp(request.param)
    tokenizer.save(directory)
    hf = PreTrainedTokenizerFast(tokenizer_file=str(directory / TOKENIZER_FILE))
    return request.param, tokenizer, hf


# Emoji (with joiners and skin tones), CJK, combining marks, controls, invisible spaces, the
# special tokens and long whitespace runs, mixed with anything hypothesis finds.
PIECES = ["😀", "👩‍👩‍👧‍👦", "👍🏽", "日本語", "中文", "한국어", "e\u0301", "\u0000", "\x01", "\x1b[0m", "\x7f",
          "\u200b", "\u200d", "\ufeff", "\u3000", "\u00a0", "\t", "\n", "\r\n", " ", "    ", "\n\n\n", "<|endoftext|>",
          "<|pad|>", "<|", "<0x41>", "Ġ", "the", " model", "ü", "\U0010ffff", "\ud7ff"]
any_text = st.one_of(st.text(), st.lists(st.sampled_from(PIECES), max_size=40).map("".join))

examples = ["", " ", " " * 1000, "\t\t\n \n\n\r\n   \t", "😀", "👩‍👩‍👧‍👦 and 👍🏽", "日本語のテキストです。",
            "\x00\x01\x1f\x7f",
            "a<|endoftext|>b<|pad|>c", "<|endoftext|><|endoftext|>", "<0x41><0xFF>", "ĠĠ Ġ", "e\u0301 \u0301",
            "\ufeffstart", "end\U0010ffff", "x" * 5000]


def with_examples(test):
    for text in examples:
        test = example(text=text)(test)
    return test


@with_examples
@given(text=any_text)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_decode_encode_round_trips_any_text(trained, text):
    kind, tokenizer, _ = trained
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert b"".join(tokenizer.token_bytes(i) for i in ids) == text.encode("utf-8")


@with_examples
@given(text=any_text)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_transformers_gives_the_same_ids_and_text(trained, text):
    kind, tokenizer, hf = trained
    ids = tokenizer.encode(text)
    assert hf.encode(text, add_special_tokens=False) == ids
    assert hf(text)["input_ids"] == ids
    assert hf.decode(ids) == text


def test_auto_tokenizer_reads_the_saved_directory(trained, tmp_path):
    from transformers import AutoTokenizer

    kind, tokenizer, _ = trained
    tokenizer.save(tmp_path)
    hf = AutoTokenizer.from_pretrained(str(tmp_path))
    text = "a tokenizer turns text into ids 😀 <|endoftext|>"
    assert hf.encode(text, add_special_tokens=False) == tokenizer.encode(text)
    assert hf.eos_token == EOT and hf.eos_token_id == tokenizer.eot_id
    assert hf.decode(tokenizer.encode(" , . ! ?")) == " , . ! ?"  # no tidying of spaces


def test_token_bytes_knows_every_byte_of_the_byte_level_alphabet():
    from tokenizers.pre_tokenizers import ByteLevel

    tokenizer = train("bpe", corpus(2), vocab_size=257)  # no merges: one token per byte
    assert {tokenizer.backend.id_to_token(i) for i in range(257)} - {EOT} == set(ByteLevel.alphabet())
    # Code points whose UTF-8 uses every byte that UTF-8 can hold (all but C0, C1, F5..FF).
    one_or_two_bytes = range(0x800)
    three_byte = [0x800, *range(0x1000, 0x10000, 0x1000)]
    four_byte = [0x10000, *range(0x40000, 0x110000, 0x40000)]
    text = "".join(map(chr, [*one_or_two_bytes, *three_byte, *four_byte]))
    data = text.encode("utf-8")
    assert len(set(data)) == 256 - 13
    ids = tokenizer.encode(text)
    assert [tokenizer.token_bytes(i) for i in ids] == [bytes([b]) for b in data]


def test_special_tokens_are_single_ids_and_never_learned_in_pieces():
    texts = [f"{t}{EOT}" for t in corpus(60)] + [f"<|pad|>{t}<|pad|>" for t in corpus(20, seed=1)]
    for kind in KINDS:
        tokenizer = train(kind, texts, special_tokens=["<|pad|>", EOT, "<|pad|>"])
        pad = tokenizer.backend.token_to_id("<|pad|>")
        assert tokenizer.special_tokens == [EOT, "<|pad|>"]
        assert tokenizer.encode(f"x{EOT}y<|pad|>z").count(tokenizer.eot_id) == 1
        assert tokenizer.encode(f"{EOT}<|pad|>") == [tokenizer.eot_id, pad]
        learned = [t for t, i in tokenizer.backend.get_vocab().items() if i not in (tokenizer.eot_id, pad)]
        assert not [t for t in learned if "<|" in t or "|>" in t or "endof" in t], kind
    assert train("bpe", texts).eot_id == 0


def test_bpe_vocab_size_is_respected():
    texts = corpus(80)
    assert train("bpe", texts, vocab_size=300).vocab_size == 300
    assert train("bpe", texts, vocab_size=320, special_tokens=["<|a|>", "<|b|>"]).vocab_size == 320
    only_bytes = train("bpe", texts, vocab_size=257)  # 256 bytes + <|endoftext|>: no room for merges
    assert only_bytes.vocab_size == 257
    assert len(only_bytes.encode("the model")) == len("the model")
    small = train("bpe", ["tiny text"], vocab_size=5000)  # runs out of pairs long before
    assert 257 < small.vocab_size < 5000


@pytest.mark.parametrize("kind", KINDS)
def test_vocab_smaller_than_the_byte_alphabet_is_refused(kind):
    with pytest.raises(UserError, match=r"vocab size 256 is smaller than the byte alphabet.*257"):
        train(kind, corpus(2), vocab_size=256)
    with pytest.raises(UserError, match=r"258"):
        train(kind, corpus(2), vocab_size=257, special_tokens=["<|pad|>"])


def test_char_tokenizer_has_one_token_per_character_seen():
    text = "hello world\nhi"
    tokenizer = train("char", [text])
    chars = sorted(set(text))
    assert [tokenizer.backend.id_to_token(i) for i in range(len(chars))] == chars  # ids 0.. in code point order
    assert tokenizer.encode("hello") == [chars.index(c) for c in "hello"]
    assert tokenizer.vocab_size == len(chars) + 256 + 1
    unseen = tokenizer.encode("é")  # never seen: spelt as its two UTF-8 bytes
    assert [tokenizer.backend.id_to_token(i) for i in unseen] == ["<0xC3>", "<0xA9>"]
    assert tokenizer.decode(unseen) == "é"


def test_char_vocab_size_keeps_the_most_frequent_characters():
    tokenizer = train("char", ["aaaa bbb cc d"], vocab_size=256 + 1 + 3)
    assert [tokenizer.backend.id_to_token(i) for i in range(3)] == [" ", "a", "b"]
    assert tokenizer.decode(tokenizer.encode("abcd")) == "abcd"


def write_corpus(root):
    texts = corpus(12)
    (root / "sub" / "deeper").mkdir(parents=True)
    paths = [root / "a.txt", root / "b.md", root / "sub" / "c.txt", root / "sub" / "deeper" / "d.py"]
    for i, text in enumerate(texts):
        with open(paths[i % 4], "a", encoding="utf-8") as f:
            f.write(text + "\n")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "x.txt").write_text("zzqqxx " * 500)
    (root / ".notes.txt").write_text("zzqqxx " * 500)
    return paths


@pytest.mark.parametrize("kind", KINDS)
def test_files_folders_and_texts_train_the_same_tokenizer(tmp_path, kind):
    paths = write_corpus(tmp_path)
    from_folder = train(kind, TextFiles([tmp_path]))
    from_files = train(kind, TextFiles(paths + [paths[0]]))  # a file named twice is read once
    from_texts = train(kind, (p.read_text(encoding="utf-8") for p in paths))
    assert from_folder.sha256 == from_files.sha256 == from_texts.sha256
    assert not [t for t in from_folder.backend.get_vocab() if "zq" in t]  # hidden files are skipped


def test_training_is_reproducible():
    assert train("bpe", corpus()).sha256 == train("bpe", corpus()).sha256


def test_text_files_cut_chunks_without_breaking_characters(tmp_path, monkeypatch):
    text = "ab😀c\n日本語\n" * 50 + "no newline at the end é"
    path = tmp_path / "t.txt"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))  # with a byte-order mark, which is dropped
    monkeypatch.setattr(TextFiles, "chunk_bytes", 7)
    files = TextFiles([path])
    chunks = list(files)
    assert "".join(chunks) == text
    assert len(chunks) > 10 and all(c.endswith("\n") for c in chunks[:-1])
    assert files.files[0].sha256 == file_sha256(path)
    assert files.bytes_read == files.total_bytes == path.stat().st_size


@pytest.mark.parametrize("data, offset", [(b"caf\xe9 au lait", 3), ("é" * 20 + "\n", None),
                                          (b"ok\n" * 10 + b"\xff", 30), ("日本".encode() + b"\xe8\xaa", 6)])
def test_non_utf8_file_is_named_with_the_offset(tmp_path, monkeypatch, data, offset):
    path = tmp_path / "latin1.txt"
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    monkeypatch.setattr(TextFiles, "chunk_bytes", 4)  # the bad byte lies beyond the first chunk
    if offset is None:
        assert "".join(TextFiles([path])) == data
        return
    message = rf"latin1.txt is not UTF-8 text \(byte 0x[0-9a-f]{{2}} at offset {offset}\).*lmsmith curate"
    with pytest.raises(UserError, match=message):
        list(TextFiles([path]))


def test_no_text_is_refused(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.txt").write_text("  \n\t\n")
    with pytest.raises(UserError, match="all empty"):
        TextFiles([tmp_path / "empty.txt"])
    for kind in KINDS:
        with pytest.raises(UserError, match="no text to train on"):
            train(kind, TextFiles([tmp_path]))
        with pytest.raises(UserError, match="no text to train on"):
            train(kind, [])
        with pytest.raises(TypeError, match="iterable of texts"):
            train(kind, "a single string would be read one character at a time")
    with pytest.raises(UserError, match="does not exist"):
        TextFiles([tmp_path / "missing.txt"])
    (tmp_path / "void").mkdir()
    with pytest.raises(UserError, match="holds no files"):
        TextFiles([tmp_path / "void"])


def test_saved_tokenizer_loads_with_the_same_hash(trained, tmp_path):
    kind, tokenizer, _ = trained
    tokenizer.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.sha256 == tokenizer.sha256 == file_sha256(tmp_path / TOKENIZER_FILE)
    assert (loaded.kind, loaded.eot_id, loaded.special_tokens) == (kind, tokenizer.eot_id, [EOT, "<|pad|>"])
    assert load_tokenizer(tmp_path / TOKENIZER_FILE).sha256 == tokenizer.sha256


def test_broken_tokenizer_directories_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_tokenizer(tmp_path / "nowhere")
    with pytest.raises(UserError, match="has no tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / TOKENIZER_FILE).write_text('{"version": "1.0", "model": ')
    with pytest.raises(UserError, match="not a valid tokenizer"):
        load_tokenizer(tmp_path)
    train("bpe", corpus(2)).save(tmp_path)
    (tmp_path / TOKENIZER_CONFIG).write_text("[1, 2")
    with pytest.raises(UserError, match="corrupted"):
        load_tokenizer(tmp_path)
