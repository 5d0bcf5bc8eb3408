"""`lmsmith explain`: the files it writes, that they hold the model's numbers, and bad input."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from lmsmith.cli import main
from lmsmith.explain.explanation import explain_text
from lmsmith.model.directory import load_model_dir
from lmsmith.schema.explain import ExplainConfig

TEXT = "def add(a, b):\\n    return a + b"  # as typed in a shell: \n is a newline


def test_explain_writes_a_self_contained_page_pictures_and_numbers(model_dir, capsys):
    assert main(["explain", str(model_dir.parent), TEXT, "--focus", "return", "--quiet"]) == 0
    out = model_dir.parent / "explain"
    names = {p.name for p in out.iterdir()}
    assert {"index.html", "explain.json", "manifest.json", "attention_layer0.png", "attention_layer1.png",
            "logit_lens.png", "next_token.png", "embedding_map.png", "focus.png"} <= names
    page = (out / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)  # nothing fetched: readable offline
    assert page.count("<img") == len([n for n in names if n.endswith(".png")])
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'<img[^>]* src="([^"]+)"', page))
    for section in ("Tokens", "Attention", "logit lens", "The next token", "Embeddings"):
        assert section in page

    numbers = json.loads((out / "explain.json").read_text(encoding="utf-8"))
    model, tokenizer = load_model_dir(model_dir)
    computed = explain_text(model, tokenizer, TEXT.replace("\\n", "\n"), ExplainConfig(focus="return"))
    np.testing.assert_allclose(np.array(numbers["attention"]), computed["attention"], atol=1e-6)
    assert [t["id"] for t in numbers["tokens"]] == tokenizer.encode(TEXT.replace("\\n", "\n"))
    greedy = computed["next_token"]["greedy"]
    assert numbers["next_token"]["greedy"]["id"] == greedy["id"]
    assert f"(probability {greedy['probability']:.3f})" in page  # the page shows the model's number
    assert numbers["focus"]["text"].strip() == "return"

    assert main(["explain", str(model_dir.parent), "b = 2", "--quiet"]) == 0  # a second run replaces the first
    assert json.loads((out / "explain.json").read_text(encoding="utf-8"))["text"] == "b = 2"


def test_text_longer_than_the_context_is_explained_for_its_last_tokens(model_dir, tokenizer):
    long = "return a + b\\n" * 20
    assert main(["explain", str(model_dir), long, "-o", str(model_dir.parent / "long"), "--quiet"]) == 0
    numbers = json.loads((model_dir.parent / "long" / "explain.json").read_text())
    block = json.loads((model_dir / "config.json").read_text())["block_size"]
    assert len(numbers["tokens"]) == block
    assert [t["id"] for t in numbers["tokens"]] == tokenizer.encode(long.replace("\\n", "\n"))[-block:]
    assert f"the last {block} are explained" in numbers["note"]
    assert "the last" in (model_dir.parent / "long" / "index.html").read_text()


@pytest.mark.parametrize("argv, message", [
    (["", "--quiet"], "the text to explain is empty"),
    (["def x", "--focus", "nowhere"], "is not a token of the text: choose one of 'def"),
    ([], "give a TEXT to explain"),
    (["def x", "--top-k", "0"], "explain.top_k (--top-k) must be at least 1"),
])
def test_bad_input_is_one_clear_line_and_writes_nothing(model_dir, capsys, argv, message):
    assert main(["explain", str(model_dir.parent), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (model_dir.parent / "explain").exists()


def test_a_model_directory_without_its_tokenizer(model_dir, capsys):
    (model_dir / "tokenizer.json").unlink()
    assert main(["explain", str(model_dir), "def x"]) == 2
    err = capsys.readouterr().err
    assert "has no tokenizer.json" in err and "copy" in err and len(err.strip().splitlines()) == 1


def test_heads_are_measured_on_the_held_out_tokens_the_model_names(tmp_path, tokenizer, capsys):
    from explain_models import GPT2, STDLIB, random_model

    from lmsmith.model.directory import save_model_dir
    from lmsmith.text.tokens_dir import tokenize_corpus

    tokenizer.save(tmp_path / "tokenizer")
    tokenize_corpus([str(STDLIB / "textwrap.py")], tmp_path / "tokenizer", tmp_path / "tokens", quiet=True)
    model_dir = tmp_path / "run" / "model"
    save_model_dir(model_dir, random_model(tokenizer.vocab_size, **GPT2), tokenizer, made_by="train",
                   inputs={"tokens": {"path": str(tmp_path / "tokens")}})
    assert main(["explain", str(model_dir.parent), "--heads"]) == 0
    printed = capsys.readouterr().out
    assert "induction" in printed and "L0H0" in printed
    out = model_dir.parent / "explain"
    numbers = json.loads((out / "explain.json").read_text(encoding="utf-8"))
    assert len(numbers["heads"]["table"]) == GPT2["n_layer"] * GPT2["n_head"]
    assert numbers["heads"]["window_tokens"] == GPT2["block_size"]
    assert (out / "heads.png").is_file() and "What each head does" in (out / "index.html").read_text()


def test_explain_never_writes_over_a_folder_of_the_users_files(model_dir, tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my own notes")
    assert main(["explain", str(model_dir), "def x", "-o", str(folder)]) == 2
    assert "lmsmith did not make" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
