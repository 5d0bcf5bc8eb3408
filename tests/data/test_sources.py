"""Sources: every input kind becomes documents; what cannot be read is skipped with its reason."""

import gzip
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from lmsmith.core.config import parse_section
from lmsmith.core.errors import UserError
from lmsmith.data.document import Document
from lmsmith.data.sources import Skipped, open_inputs
from lmsmith.data.sources.decode import decode_text, looks_binary
from lmsmith.data.sources.stdlib import stdlib_root
from lmsmith.schema.curate import SourceConfig

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x06\x00\x00\x00" + bytes(range(256)) * 4


def read(inputs, **config):
    cfg = parse_section(SourceConfig, config, "sources")
    items = [item for source in open_inputs([str(i) for i in inputs], cfg) for item in source.items()]
    docs = [i for i in items if isinstance(i, Document)]
    skips = [i for i in items if isinstance(i, Skipped)]
    return docs, skips


def by_path(docs):
    return {d.meta["path"]: d for d in docs}


# -- files and folders -----------------------------------------------------------------------


def test_a_folder_is_walked_with_kinds_globs_and_hidden_files(tmp_path):
    (tmp_path / "notes.txt").write_text("plain text")
    (tmp_path / "guide.md").write_text("# Guide\n\nmarkdown text")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "tool.py").write_text("print('hi')\n")
    (tmp_path / "sub" / "lib.rs").write_text("fn main() {}\n")
    (tmp_path / "sub" / "page.html").write_text("<html><body><p>hello</p></body></html>")
    (tmp_path / ".hidden.txt").write_text("secret notes")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text("[core]")
    (tmp_path / "README").write_text("no suffix, still text")

    docs, skips = read([tmp_path])
    found = by_path(docs)
    assert set(found) == {"notes.txt", "guide.md", "sub/tool.py", "sub/lib.rs", "sub/page.html", "README"}
    assert found["sub/tool.py"].meta == {"path": "sub/tool.py", "kind": "code", "language": "python"}
    assert found["sub/lib.rs"].meta["language"] == "rust"
    assert found["guide.md"].meta["format"] == "markdown"
    assert found["sub/page.html"].meta["kind"] == "html"
    assert found["README"].meta["kind"] == "prose"
    assert not skips
    assert found["notes.txt"].source == f"file:{tmp_path / 'notes.txt'}"

    docs, _ = read([tmp_path], include=["sub/*"], exclude=["*.rs"])
    assert set(by_path(docs)) == {"sub/tool.py", "sub/page.html"}
    docs, _ = read([tmp_path], skip_hidden=False)
    assert ".hidden.txt" in by_path(docs) and ".git/config" not in by_path(docs)
    docs, skips = read([tmp_path], unknown_files="skip")
    assert "README" not in by_path(docs) and [s.reason for s in skips] == ["unsupported_type"]


def test_ids_are_stable_and_distinct(tmp_path):
    for i in range(5):
        (tmp_path / f"{i}.txt").write_text("same text")
    first, _ = read([tmp_path])
    again, _ = read([tmp_path])
    assert [d.id for d in first] == [d.id for d in again]
    assert len({d.id for d in first}) == 5


def test_jsonl_with_bad_lines_is_read_line_by_line(tmp_path):
    lines = [json.dumps({"text": "first record", "url": "https://example.org/a"}), "{not json",
             json.dumps({"content": "wrong field"}), "", json.dumps({"text": "   "}), json.dumps([1, 2]),
             json.dumps({"text": "last record"})]
    path = tmp_path / "chats.jsonl"
    path.write_text("\n".join(lines) + "\n")
    docs, skips = read([path])
    assert [d.text for d in docs] == ["first record", "last record"]
    assert docs[0].meta["url"] == "https://example.org/a" and docs[1].meta["line"] == 7
    assert [(s.reason, s.meta["line"]) for s in skips] == [
        ("malformed_json", 2), ("missing_field", 3), ("empty", 5), ("not_a_record", 6)]
    assert "line 2" in skips[0].detail and skips[0].text == "{not json"
    assert "set sources.text_field" in skips[1].detail
    docs, _ = read([path], text_field="content")
    assert [d.text for d in docs] == ["wrong field"]


def test_json_arrays_and_parquet_columns(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"text": "one"}, {"text": "two"}, {"body": "x"}]))
    (tmp_path / "b.json").write_text(json.dumps({"text": "single"}))
    pq.write_table(pa.table({"body": ["row zero", None, "row two"], "n": [1, 2, 3]}), tmp_path / "t.parquet")
    docs, skips = read([tmp_path], text_field="body")
    assert sorted(d.text for d in docs) == ["row two", "row zero", "x"]
    docs, skips = read([tmp_path])
    assert sorted(d.text for d in docs) == ["one", "single", "two"]
    reasons = sorted(s.reason for s in skips)
    assert reasons == ["missing_field", "missing_field"]  # the {"body"} record and the parquet file
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    _, skips = read([tmp_path / "broken.parquet"])
    assert [s.reason for s in skips] == ["unreadable"]


def test_gzip_and_zstd_forms(tmp_path):
    record = json.dumps({"text": "compressed record"}) + "\n"
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as f:
        f.write(record * 3 + "oops\n")
    (tmp_path / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(record.encode() * 2))
    with gzip.open(tmp_path / "c.md.gz", "wt") as f:
        f.write("# Title\n\ncompressed markdown")
    (tmp_path / "d.txt.zst").write_bytes(zstandard.ZstdCompressor().compress(b"zstd text"))
    (tmp_path / "e.txt.gz").write_bytes(b"\x1f\x8b\x08\x00broken gzip")
    docs, skips = read([tmp_path])
    texts = sorted(d.text for d in docs)
    assert texts == ["# Title\n\ncompressed markdown"] + ["compressed record"] * 5 + ["zstd text"]
    assert sorted(s.reason for s in skips) == ["malformed_json", "unreadable"]
    assert by_path(d for d in docs if "format" in d.meta)["c.md.gz"].meta["format"] == "markdown"


def test_binary_empty_unreadable_and_too_large_files_are_skipped(tmp_path):
    (tmp_path / "image.png").write_bytes(PNG)
    (tmp_path / "data.txt").write_bytes(os.urandom(1500))  # no magic number: found out by decoding
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "big.txt").write_text("x" * 3000)
    (tmp_path / "gone.txt").symlink_to(tmp_path / "missing-target")
    docs, skips = read([tmp_path], max_file_mb=0.002)
    assert not docs
    assert {s.meta["path"]: s.reason for s in skips} == {
        "image.png": "binary", "data.txt": "binary", "empty.txt": "empty", "big.txt": "too_large",
        "gone.txt": "unreadable"}


def test_a_few_nul_bytes_do_not_make_a_file_binary(tmp_path):
    (tmp_path / "log.txt").write_bytes(b"line one\n" * 200 + b"bad\x00byte\n" + b"line two\n" * 200)
    docs, skips = read([tmp_path])
    assert len(docs) == 1 and "\x00" in docs[0].text  # the format step removes it
    assert not skips


@pytest.mark.parametrize("encoding, text", [
    ("latin-1", "Le château est situé près de la forêt, où les élèves étudient la géographie."),
    ("cp1252", "Smart “quotes” and an en–dash — from an old word processor, naïve café."),
    ("cp1251", "Съешь же ещё этих мягких французских булок, да выпей чаю. Москва является столицей."),
    ("utf-16", "UTF-16 with a byte order mark: ünïcödé."),
    ("cp1250", "Zażółć gęślą jaźń. Pójdźże, kiń tę chmurność w głąb flaszy! Łódź jest dużym miastem."),
    ("cp1254", "Pijamalı hasta yağız şoföre çabucak güvendi. İstanbul, Türkiye'nin en kalabalık şehridir "
               "ve önemli bir limandır.\n" * 4),
    ("latin-1", "The doctor visited once a week and stayed in the room above the tavern with the blue door. "
                "Most of the village had never seen the inside of the tower, though they passed it every day. "
                "The café served a naïve crème brûlée to every visitor."),
])
def test_legacy_encodings_are_detected(tmp_path, encoding, text):
    (tmp_path / "old.txt").write_bytes(text.encode(encoding))
    docs, _ = read([tmp_path])
    assert docs[0].text == text
    assert docs[0].meta.get("encoding", "utf-8") != "utf-8"


def test_utf8_with_a_stray_legacy_byte_keeps_its_utf8():
    data = "Ünïcode café résumé, all fine. ".encode() * 5 + b"price: 5\x80 only"
    text, encoding = decode_text(data)
    assert text.startswith("Ünïcode café résumé") and text.endswith("price: 5€ only")
    assert encoding == "utf-8+cp1252"


def test_python_coding_cookie_is_honoured(tmp_path):
    source = "# -*- coding: latin-1 -*-\nname = 'Müller'\n"
    (tmp_path / "m.py").write_bytes(source.encode("latin-1"))
    docs, _ = read([tmp_path])
    assert docs[0].text == source and docs[0].meta["encoding"] == "iso-8859-1"


def test_binary_sniffing():
    assert looks_binary(PNG)
    assert looks_binary(b"\x00\x01\x02\x03" * 100)
    assert not looks_binary(b"plain text\twith tabs\n" * 50)
    assert not looks_binary("\ufeffUTF-16 text".encode("utf-16"))


def test_a_50_mb_single_line_file_is_one_document(tmp_path):
    path = tmp_path / "huge.txt"
    with open(path, "wb") as f:
        for _ in range(50):
            f.write(b"word " * 200_000)
    docs, skips = read([path])
    assert len(docs) == 1 and len(docs[0].text) == 50_000_000 and not skips


# -- inputs that cannot be opened --------------------------------------------------------------


def test_nonexistent_input_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="input '.*nope' does not exist"):
        read([tmp_path / "nope"])
    with pytest.raises(UserError, match=r"for a Hugging Face dataset write hf:NAME"):
        read(["someone/dataset"])
    with pytest.raises(UserError, match="not a dataset spec"):
        read(["hf:"])


def test_unknown_hf_dataset_is_one_clear_error_and_exit_code_2(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "lmsmith", "curate", "hf:nobody-here/no-such-set", "-o",
                             str(tmp_path / "out"), "--quiet"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "hf:nobody-here/no-such-set: cannot open this dataset" in result.stderr
    assert not (tmp_path / "out").exists()


# -- Hugging Face datasets, built locally --------------------------------------------------------


def test_hf_dataset_saved_to_disk(tmp_path):
    import datasets

    rows = {"text": ["first story", "", "third story"], "url": ["u1", "u2", "u3"]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows),
                          "validation": datasets.Dataset.from_dict({"text": ["held out"], "url": ["v"]})}
                         ).save_to_disk(tmp_path / "ds")
    docs, skips = read([f"hf:{tmp_path / 'ds'}"])
    assert [d.text for d in docs] == ["first story", "third story"]
    assert docs[1].meta == {"kind": "prose", "row": 2, "url": "u3"} and docs[0].source == f"hf:{tmp_path / 'ds'}"
    assert [s.reason for s in skips] == ["empty"]
    docs, _ = read([f"hf:{tmp_path / 'ds'}::validation"])
    assert [d.text for d in docs] == ["held out"]
    with pytest.raises(UserError, match="no split 'test'"):
        read([f"hf:{tmp_path / 'ds'}::test"])
    with pytest.raises(UserError, match="has no column 'body'"):
        read([f"hf:{tmp_path / 'ds'}"], text_field="body")


def test_hf_dataset_of_local_data_files_is_streamed(tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(5)]}), folder / "train.parquet")
    docs, _ = read([f"hf:{folder}"])
    assert [d.text for d in docs] == [f"row {i}" for i in range(5)]


# -- the standard library ------------------------------------------------------------------------


def test_stdlib_is_the_python_standard_library(tmp_path):
    docs, _ = read(["stdlib"], include=["json/*"])
    paths = by_path(docs)
    assert {"json/__init__.py", "json/decoder.py"} <= set(paths)
    assert all(d.source == "stdlib" and d.meta["language"] == "python" for d in docs)
    assert paths["json/decoder.py"].text == (stdlib_root() / "json" / "decoder.py").read_text()
    assert not any("site-packages" in p for p in paths)
    docs, _ = read(["stdlib"], max_docs=3)  # max_docs is applied by the pipeline's reader, not here
    assert len(docs) > 100
