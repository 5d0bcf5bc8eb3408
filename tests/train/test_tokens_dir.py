"""`lmsmith tokenize`: shards decode back to the documents joined by end-of-text; bad inputs are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmsmith.cli import main
from lmsmith.core.atomic import write_json
from lmsmith.core.errors import UserError
from lmsmith.core.manifest import MANIFEST, file_sha256, make_manifest
from lmsmith.data.document import Document
from lmsmith.data.write import CurateWriter
from lmsmith.schema.curate import OutputConfig
from lmsmith.text.tokenizer import load_tokenizer
from lmsmith.text.tokens_dir import SplitWriter, open_tokens_dir, read_split, token_dtype, tokenize_corpus

DOCS = {
    "train": [f"def f{i}(x):\n    return x * {i}  # ünïcode {'😀' * (i % 3)}\n" for i in range(40)],
    "val": ["print('held out')\n", "x = [1, 2, 3]\n"],
    "test": ["assert True\n"],
}


@pytest.fixture
def curated(tmp_path):
    """A curated directory in the format `lmsmith curate` writes."""
    root = tmp_path / "curated"
    writer = CurateWriter(root, OutputConfig(row_group_mb=0.0001), keep_dropped=False)
    for split, texts in DOCS.items():
        for i, text in enumerate(texts):
            writer.write(split, Document(id=f"{split}-{i}", text=text, source="test"))
    sizes = writer.close()
    files = {p.relative_to(root).as_posix(): file_sha256(p) for p in writer.files()}
    counts = {f"{s}_{k}": sizes[s][k] for s in DOCS for k in ("docs", "bytes")}
    write_json(root / MANIFEST, make_manifest("curate", counts=counts, files=files))
    return root


def test_curated_splits_round_trip(tmp_path, curated, tokenizer_dir):
    out = tmp_path / "tokens"
    # Tiny shards so that documents straddle shard boundaries.
    manifest = tokenize_corpus([str(curated)], tokenizer_dir, out, shard_tokens=97, quiet=True)
    tokens = open_tokens_dir(out)
    tokenizer = load_tokenizer(tokenizer_dir)
    assert tokens.dtype == np.dtype("<u2") and tokens.vocab_size == tokenizer.vocab_size == 512
    assert tokens.tokenizer_sha256 == tokenizer.sha256 == tokens.tokenizer().sha256
    for split, texts in DOCS.items():
        ids = read_split(tokens, split)
        assert tokenizer.decode(ids.tolist()) == tokenizer.eot_token.join(texts)
        assert int((ids == tokenizer.eot_id).sum()) == len(texts) - 1  # between documents, not after the last
        assert manifest["counts"][split] == {"tokens": len(ids), "documents": len(texts), "shards": -(-len(ids) // 97)}
    assert len(tokens.shards("train")) > 3
    for name, sha in manifest["files"].items():
        assert file_sha256(out / name) == sha


def test_text_files_hold_out_the_tail_for_validation(tmp_path, tokenizer_dir):
    files = []
    for i in range(3):
        files.append(tmp_path / f"f{i}.py")
        files[-1].write_text("".join(DOCS["train"][i::3]), encoding="utf-8")
    (tmp_path / "empty.py").write_text("")  # no document, so no separator either
    out = tmp_path / "tokens"
    assert main(["tokenize", *map(str, files), str(tmp_path / "empty.py"), "-t", str(tokenizer_dir), "-o", str(out),
                 "--val-fraction", "0.25", "--shard-tokens", "50", "--quiet"]) == 0
    tokens = open_tokens_dir(out)
    tokenizer = load_tokenizer(tokenizer_dir)
    train, val = read_split(tokens, "train"), read_split(tokens, "val")
    whole = np.concatenate([train, val]).tolist()
    assert tokenizer.decode(whole) == tokenizer.eot_token.join(f.read_text(encoding="utf-8") for f in files)
    assert abs(len(val) - 0.25 * len(whole)) <= 1
    assert all(entry["sha256"] for entry in tokens.manifest["inputs"]["files"])


def test_wide_vocabularies_take_uint32(tmp_path):
    assert token_dtype(65536) == np.dtype("<u2") and token_dtype(65537) == np.dtype("<u4")
    writer = SplitWriter(tmp_path / "train", token_dtype(100_000), 3, eot_id=99_999)
    writer.add_document([70_000, 1, 2, 3])
    writer.add_document([80_000])
    writer.close()
    stream = np.concatenate([np.fromfile(tmp_path / s["name"], dtype="<u4") for s in writer.shards])
    assert stream.tolist() == [70_000, 1, 2, 3, 99_999, 80_000]


def test_refuses_missing_foreign_and_damaged_manifests(tmp_path, curated, tokens_dir, capsys):
    with pytest.raises(UserError, match="no manifest.json"):
        open_tokens_dir(tmp_path)
    with pytest.raises(UserError, match="made by stage 'curate'"):
        open_tokens_dir(curated)
    copy = tmp_path / "copy"
    copy.mkdir()
    manifest = json.loads((tokens_dir / MANIFEST).read_text())
    (copy / MANIFEST).write_text(json.dumps(manifest))
    (copy / "train").mkdir()
    (copy / "train" / "shard-00000.bin").write_bytes(b"\0" * 10)  # truncated
    with pytest.raises(UserError, match="truncated"):
        open_tokens_dir(copy)
    # A user's own directory is never replaced, and the message says so.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["tokenize", str(curated), "-t", str(tokens_dir), "-o", str(mine)]) == 2
    assert "lmsmith did not make" in capsys.readouterr().err and (mine / "notes.txt").read_text() == "keep me"


def test_tokens_and_tokenizer_must_belong_together(tmp_path, tokens_dir):
    copy = tmp_path / "tokens"
    copy.mkdir()
    for path in tokens_dir.rglob("*"):
        if path.is_file():
            (copy / path.relative_to(tokens_dir)).parent.mkdir(parents=True, exist_ok=True)
            (copy / path.relative_to(tokens_dir)).write_bytes(path.read_bytes())
    tokenizer = json.loads((copy / "tokenizer.json").read_text())
    tokenizer["normalizer"] = {"type": "Lowercase"}  # another tokenizer of the same size: other ids for "A"
    (copy / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(UserError, match="not the tokenizer that made these tokens"):
        open_tokens_dir(copy).tokenizer()


def test_token_ids_beyond_the_vocabulary_are_one_line_not_an_index_error(tokens_dir, tmp_path):
    import shutil

    from lmsmith.text.tokens_dir import open_tokens_dir
    from lmsmith.train.data import TokenWindows

    damaged = tmp_path / "tokens"
    shutil.copytree(tokens_dir, damaged)
    tokens = open_tokens_dir(damaged)
    shard = np.memmap(tokens.shards("train")[0].filename, dtype=tokens.dtype, mode="r+")
    shard[5] = tokens.vocab_size + 7  # what a damaged disk (or a hand-made shard) leaves
    shard.flush()
    windows = TokenWindows(open_tokens_dir(damaged), "train", 32)
    with pytest.raises(UserError, match=f"holds token id {tokens.vocab_size + 7}, beyond its vocabulary"):
        windows.rows(np.arange(4))
