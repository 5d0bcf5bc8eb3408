"""`lmsmith tokenizer train` and `lmsmith tokenizer show`, through the real command line."""

import json
import re

import pytest

from lmsmith.cli import main
from lmsmith.core.manifest import file_sha256
from lmsmith.text.tokenizer import TOKENIZER_CONFIG, TOKENIZER_FILE, load_tokenizer

TEXT = ("A tokenizer turns text into ids and ids back into text. "
        "Byte pairs that come often are merged into one token. 日本語も大丈夫 😀\n") * 30


@pytest.fixture
def notes(tmp_path):
    folder = tmp_path / "notes"
    (folder / "more").mkdir(parents=True)
    (folder / "a.txt").write_text(TEXT, encoding="utf-8")
    (folder / "more" / "b.md").write_text(TEXT.upper(), encoding="utf-8")
    return folder


def train_cli(capsys, *args) -> tuple[int, str, str]:
    code = main(["tokenizer", "train", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(folder):
    """Every file and folder under `folder` (hidden ones too, so a stray temporary shows) with its bytes."""
    return {p.relative_to(folder): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def test_train_writes_tokenizer_config_and_manifest(tmp_path, notes, capsys):
    out = tmp_path / "tok"
    code, stdout, err = train_cli(capsys, notes, "-o", out, "--vocab-size", "300", "--special", "<|pad|>")
    assert code == 0, err
    assert "300 tokens (2 special)" in stdout and "2 file(s)" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", TOKENIZER_FILE, TOKENIZER_CONFIG]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "tokenizer"
    assert manifest["config"] == {"kind": "bpe", "vocab_size": 300, "special_tokens": ["<|pad|>"], "sample_mb": None}
    read = {f["path"]: f["sha256"] for f in manifest["inputs"]["files"]}
    assert read == {str(notes / "a.txt"): file_sha256(notes / "a.txt"),
                    str(notes / "more" / "b.md"): file_sha256(notes / "more" / "b.md")}
    assert manifest["counts"]["vocab_size"] == 300
    assert manifest["counts"]["bytes"] == sum(len(t.encode()) for t in (TEXT, TEXT.upper()))
    assert manifest["files"][TOKENIZER_FILE] == file_sha256(out / TOKENIZER_FILE)
    tokenizer = load_tokenizer(out)
    assert tokenizer.vocab_size == 300 and tokenizer.special_tokens == ["<|endoftext|>", "<|pad|>"]


def test_show_prints_pieces_and_ids(tmp_path, notes, capsys):
    out = tmp_path / "tok"
    assert train_cli(capsys, notes, "-o", out, "--vocab-size", "400", "--quiet") == (0, "", "")
    text = "Byte pairs merged 🚀\n<|endoftext|>"  # the rocket was never seen: four byte tokens
    assert main(["tokenizer", "show", str(out), text]) == 0
    shown = capsys.readouterr().out
    ids = load_tokenizer(out).encode(text)
    assert f"ids: {ids}" in " ".join(shown.split()).replace("[ ", "[")
    rows = re.findall(r"^\s*(\d+)\s+(\d+)\s+(.+?)\s*$", shown, flags=re.M)
    assert [int(i) for _, i, _ in rows] == ids
    assert "' pairs'" in shown and "\\xf0" in shown and "'\\n'" in shown and "<|endoftext|>" in shown
    assert f"{len(ids)} tokens for {len(text)} characters" in shown


def test_char_kind_from_the_command_line(tmp_path, notes, capsys):
    out = tmp_path / "chars"
    code, stdout, err = train_cli(capsys, notes / "a.txt", "-o", out, "--kind", "char")
    assert code == 0, err
    tokenizer = load_tokenizer(out)
    assert tokenizer.kind == "char" and tokenizer.vocab_size == len(set(TEXT)) + 256 + 1
    assert tokenizer.decode(tokenizer.encode("never seen: ü€")) == "never seen: ü€"


def test_retraining_replaces_a_tokenizer_and_skips_its_own_output(tmp_path, notes, capsys):
    out = notes / "tok"  # inside the folder it reads
    for _ in range(2):
        code, _, err = train_cli(capsys, notes, "-o", out, "--vocab-size", "300", "--quiet")
        assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert [f["path"] for f in manifest["inputs"]["files"]] == [str(notes / "a.txt"), str(notes / "more" / "b.md")]


def bad_input_cases(tmp_path, notes):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.txt").write_text("\n   \n\t")
    (tmp_path / "latin1.txt").write_bytes("café au lait\n".encode("latin-1"))
    return {
        "missing": ([tmp_path / "nope.txt"], "input .*nope.txt does not exist"),
        "empty": ([tmp_path / "empty.txt"], "empty.txt.*all empty"),
        "blank": ([tmp_path / "blank.txt"], "blank.txt.*no text to train on"),
        "latin1": ([notes, tmp_path / "latin1.txt"], r"latin1.txt is not UTF-8 text \(byte 0xe9 at offset 3\): "
                   r"convert it to UTF-8.*`lmsmith curate`"),
        "small vocab": ([notes, "--vocab-size", "200"], "vocab size 200 is smaller than the byte alphabet"),
        "small vocab with specials": ([notes, "--vocab-size", "257", "--special", "<|x|>"], "258 at least"),
        "empty special": ([notes, "--special", " "], "special token ' ' is empty"),
    }


@pytest.mark.parametrize("case", ["missing", "empty", "blank", "latin1", "small vocab", "small vocab with specials",
                                  "empty special"])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, notes, capsys, case):
    args, message = bad_input_cases(tmp_path, notes)[case]
    before = snapshot(tmp_path)
    code, stdout, err = train_cli(capsys, *args, "-o", tmp_path / "tok")
    assert code == 2
    assert re.search(message, err), err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert snapshot(tmp_path) == before  # no output directory, no temporary left behind


def test_failed_training_keeps_the_previous_tokenizer(tmp_path, notes, capsys):
    out = tmp_path / "tok"
    assert train_cli(capsys, notes, "-o", out, "--vocab-size", "300", "--quiet")[0] == 0
    before = snapshot(tmp_path)
    (notes / "zz.txt").write_bytes(b"\xff\xfe not utf-8")
    code, _, err = train_cli(capsys, notes, "-o", out, "--quiet")
    assert code == 2 and "zz.txt is not UTF-8" in err
    (notes / "zz.txt").unlink()
    assert snapshot(tmp_path) == before


def test_output_over_user_data_is_refused(tmp_path, notes, capsys):
    before = snapshot(notes)
    code, _, err = train_cli(capsys, notes, "-o", notes, "--quiet")
    assert code == 2 and ("lmsmith did not make" in err or "would replace the input" in err)
    code, _, err = train_cli(capsys, notes, "-o", notes / "a.txt", "--quiet")
    assert code == 2 and "is a file" in err
    assert snapshot(notes) == before


def test_show_on_a_broken_tokenizer_directory(tmp_path, capsys):
    assert main(["tokenizer", "show", str(tmp_path / "nowhere"), "hi"]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / TOKENIZER_FILE).write_text("not json")
    assert main(["tokenizer", "show", str(tmp_path), "hi"]) == 2
    assert "is not a valid tokenizer" in capsys.readouterr().err
