"""The README's commands work: every `lmsmith` command in its code blocks parses under today's command
line, with every key=value checked against the stage's config, and its set-up commands are CI's.

A command is checked as `lmsmith` reads it (`find_stage`, the verb's parser, the inputs, every override
routed and the config built) without running the stage. A --config file or recipe the reader would
write themselves (`my-recipe.yaml`) is not in the repository: the overrides are then checked against
the stage's defaults (a shipped recipe, for build and sweep). A few cheap commands also run for real,
on tiny data in tmp_path.
"""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

import pytest

from lmsmith.cli import VERBS as STAGES
from lmsmith.cli import find_stage, load_line_config, main, read_line
from lmsmith.core.errors import UserError
from lmsmith.schema.stage import route_override

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"
SEPARATORS = {"&&", "||", ";", "|"}


# ---------------------------------------------------------------------------------------------
# Reading the commands out of Markdown


def code_blocks(text: str) -> list[list[str]]:
    """Fenced ``` blocks and 4-space indented blocks (after a blank line), each as its lines, indent removed."""
    blocks: list[list[str]] = []
    fence: list[str] | None = None
    indented: list[str] | None = None
    previous_blank = True
    for line in text.splitlines():
        if fence is not None:
            if line.lstrip().startswith("```"):
                blocks.append(fence)
                fence = None
            else:
                fence.append(line)
            continue
        if line.lstrip().startswith("```"):
            fence = []
            indented = None
            previous_blank = False
            continue
        if line.startswith("    ") and line.strip() and (indented is not None or previous_blank):
            if indented is None:
                indented = []
                blocks.append(indented)
            indented.append(line[4:])
        else:
            indented = None
        previous_blank = not line.strip()
    return blocks


def lmsmith_argv(words: list[str]) -> list[str] | None:
    """The lmsmith arguments of one shell command: `lmsmith ARGS`, or `torchrun ... -m lmsmith ARGS`."""
    if not words:
        return None
    if words[0] == "lmsmith":
        return words[1:]
    for n in range(len(words) - 1):
        if words[n] == "-m" and words[n + 1] == "lmsmith":
            return words[n + 2:]
    return None  # pip, python SCRIPT, anything else


def line_commands(line: str) -> list[tuple[str, list[str]]]:
    """(line, argv) for each lmsmith command on one line of a block: the line as shlex reads it, without
    its `# comment`, and the lmsmith arguments of each of its commands (`a && b` may hold two)."""
    if line != line.lstrip():  # an indented line in a block is a picture or output, not a command
        return []
    words = shlex.split(line, comments=True)
    commands, current = [], []
    for word in words + ["&&"]:
        if word in SEPARATORS:
            argv = lmsmith_argv(current)
            if argv is not None:
                commands.append((" ".join(w if w in SEPARATORS else shlex.quote(w) for w in words), argv))
            current = []
        else:
            current.append(word)
    return commands


def readme_commands(text: str) -> list[tuple[str, list[str]]]:
    """Every lmsmith command in the code blocks of a Markdown text. In a block with `$ ` lines (a shell
    session) only those are commands; the other lines are what the command printed."""
    commands = []
    for block in code_blocks(text):
        session = any(line.startswith("$ ") for line in block)
        joined: list[str] = []
        for line in block:
            if joined and joined[-1].endswith("\\"):
                joined[-1] = joined[-1][:-1] + " " + line.strip()
            else:
                joined.append(line)
        for line in joined:
            if session:
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            commands.extend(line_commands(line))
    return commands


# ---------------------------------------------------------------------------------------------
# Checking one command without running it


def _existing(path: str | None) -> str | None:
    return path if path is not None and Path(path).is_file() else None


def _recipe_or_shipped(recipe: str | None) -> str | None:
    """The recipe a build or sweep names, if it is a shipped name or a file here; else the quickstart."""
    if recipe is None or _existing(recipe) or not recipe.endswith((".yaml", ".yml")):
        return recipe  # a bare name must be a shipped recipe's
    return "quickstart"  # the reader's own file: check the overrides against a shipped recipe with every section


def check_command(argv: list[str]):
    """Read `lmsmith ARGV` as the command line does and build its config; runs nothing. Raises UserError
    (an ArgumentError or ConfigError) for anything `lmsmith` would refuse before starting the stage."""
    line = read_line(argv)
    stage = line.stage
    if stage.config_input is not None:  # build and sweep: the recipe is the input, and holds every section
        recipe = _recipe_or_shipped(line.config_file)
        if stage.name == "sweep":  # its own load_config defers every check to the run: check them here
            from lmsmith.sweep.study import load_sweep_recipe

            _, config, _ = load_sweep_recipe(recipe, line.overrides + [f"{k}={v}" for k, v in line.flags.items()])
            config.check()
            return config
        return load_line_config(line, recipe)
    for item in line.overrides:
        route_override(stage, item)  # an unknown key, or a section the verb does not read
    return load_line_config(line, _existing(line.config_file))


README_COMMANDS = readme_commands(README.read_text(encoding="utf-8"))


def test_the_readme_has_a_command_for_every_verb():
    verbs = {" ".join(find_stage(argv)[0].words) for _, argv in README_COMMANDS if find_stage(argv)[0]}
    assert verbs == {" ".join(s.words) for s in STAGES}
    assert len(README_COMMANDS) >= 40


@pytest.mark.parametrize("text,argv", README_COMMANDS, ids=[text for text, _ in README_COMMANDS])
def test_readme_command_parses(text, argv, monkeypatch):
    monkeypatch.chdir(ROOT)  # configs/tiny.yaml and the other paths are the repository's
    check_command(argv)


# ---------------------------------------------------------------------------------------------
# The reader and the checker themselves


SAMPLE = '''\
Set-up:

```bash
pip install -e . && lmsmith build   # the main job
```

```
 lmsmith build RECIPE = curate → tokenizer        (a picture, not a command)
```

    lmsmith eval runs/tiny --json          # one JSON object
    torchrun --nproc_per_node 8 -m lmsmith train tokens/ -o runs/gpt2 --config configs/gpt2-124m.yaml
    python examples/finetune_sql.py

    $ lmsmith generate m --prompt 'a # b' --temperature 0
    -- what it printed
'''


def test_reader_finds_commands_in_fenced_indented_and_session_blocks():
    assert readme_commands(SAMPLE) == [
        ("pip install -e . && lmsmith build", ["build"]),
        ("lmsmith eval runs/tiny --json", ["eval", "runs/tiny", "--json"]),
        ("torchrun --nproc_per_node 8 -m lmsmith train tokens/ -o runs/gpt2 --config configs/gpt2-124m.yaml",
         ["train", "tokens/", "-o", "runs/gpt2", "--config", "configs/gpt2-124m.yaml"]),
        ("lmsmith generate m --prompt 'a # b' --temperature 0",
         ["generate", "m", "--prompt", "a # b", "--temperature", "0"]),
    ]


BAD_COMMANDS = [
    "lmsmith eval m --bogus",  # no such flag
    "lmsmith trian tokens/",  # no such verb
    "lmsmith train configs/tiny.yaml data=tokens/ out=runs/tiny",  # the old form: a config file as the input
    "lmsmith init configs/model-tiny.yaml --tokenizer tok/ -o model/",
    "lmsmith curate stdlib -o data/ --set split.val_fraction=0.05",  # --set is gone
    "lmsmith curate stdlib",  # -o is required
    "lmsmith eval m eval.contxt=256",  # a misspelt key
    "lmsmith eval m train.lr=1",  # a section eval does not read
    "lmsmith generate m --temperature hot",  # a value of the wrong type
    "lmsmith tokenizer show tok/ text more",  # one input too many
    "lmsmith build quickstart train.stpes=10",
    "lmsmith build no-such-recipe",  # not a shipped name nor a file (a .yaml name stands for the reader's own)
    "lmsmith sweep my-recipe.yaml sweep.trails=3",
    "lmsmith finetune runs/main --data qa.jsonl -o runs/qa lora.rnk=16",
]


@pytest.mark.parametrize("command", BAD_COMMANDS)
def test_checker_refuses_what_lmsmith_refuses(command, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(ROOT)
    text = README.read_text(encoding="utf-8") + f"\n\n    {command}   # added by the test\n"
    commands = readme_commands(text)
    assert commands[:-1] == README_COMMANDS and commands[-1][0] == shlex.join(shlex.split(command))
    with pytest.raises(UserError):
        check_command(commands[-1][1])
    monkeypatch.chdir(tmp_path)  # should lmsmith not refuse it after all, what it writes lands here
    assert main(commands[-1][1]) == 2  # lmsmith itself refuses it too, in one line
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# A few README commands for real, on tiny data


def readme_command(prefix: str) -> list[str]:
    """The README command that starts with `prefix` (there must be one)."""
    found = [argv for text, argv in README_COMMANDS if text.startswith(prefix)]
    assert found, f"the README has no command starting with {prefix!r}"
    return found[0]


def substituted(argv: list[str], paths: dict[str, object]) -> list[str]:
    return [str(paths.get(word, word)) for word in argv]


def test_cheap_readme_commands_run(tmp_path, capsys):
    started = time.monotonic()
    notes = tmp_path / "notes"
    notes.mkdir()
    text = "The tokenizer turns text into pieces that the model reads one at a time.\n" * 40
    (notes / "a.txt").write_text(text, encoding="utf-8")
    (tmp_path / "more.txt").write_text("def add(a, b):\n    return a + b\n" * 40, encoding="utf-8")
    paths = {"notes/": notes, "more.txt": tmp_path / "more.txt", "tok/": tmp_path / "tok", "4096": 300,
             "shakespeare.txt": tmp_path / "more.txt", "tok-char/": tmp_path / "tok-char",
             "model/": tmp_path / "model"}

    assert main(substituted(readme_command("lmsmith tokenizer train notes/"), paths)) == 0
    assert (tmp_path / "tok" / "tokenizer.json").is_file() and (tmp_path / "tok" / "manifest.json").is_file()
    assert main(substituted(readme_command("lmsmith tokenizer train shakespeare.txt"), paths)) == 0
    assert (tmp_path / "tok-char" / "tokenizer.json").is_file()
    capsys.readouterr()
    assert main(substituted(readme_command("lmsmith tokenizer show tok/"), paths)) == 0
    assert "tokens for 26 characters" in capsys.readouterr().out  # "I'm learning transformers."

    init = substituted(readme_command("lmsmith init model.n_layer=4"), paths)
    assert main(init + ["model.n_embd=64", "model.block_size=64", "--quiet"]) == 0
    assert (tmp_path / "model" / "model.safetensors").is_file()

    paths |= {"data/": notes, "tokens/": tmp_path / "tokens", "runs/tiny": tmp_path / "model",
              "samples/": tmp_path / "samples", "eval/tiny": tmp_path / "eval"}
    assert main(substituted(readme_command("lmsmith tokenize data/"), paths) + ["--quiet"]) == 0
    generate = substituted(readme_command("lmsmith generate runs/tiny --prompt"), paths)
    assert main(generate + ["--max-new-tokens", "4", "--quiet"]) == 0
    assert (tmp_path / "samples" / "samples.json").is_file() and (tmp_path / "samples" / "manifest.json").is_file()
    evaluate = substituted(readme_command("lmsmith eval runs/tiny -o"), paths)
    assert main(evaluate + ["--data", str(tmp_path / "tokens"), "--split", "val", "--quiet"]) == 0
    assert (tmp_path / "eval" / "result.json").is_file() and (tmp_path / "eval" / "manifest.json").is_file()
    assert time.monotonic() - started < 30


# ---------------------------------------------------------------------------------------------
# Set-up: the README's two commands are the main job and CI's test command


def setup_commands(text: str) -> list[str]:
    """The commands of the fenced blocks in the README's Set-up section, one per line."""
    section = re.search(r"^## Set-up.*?$(.*?)^## ", text, re.M | re.S)
    assert section, "the README has no '## Set-up' section"
    blocks = re.findall(r"^```(?:bash|sh)\n(.*?)^```", section.group(1), re.M | re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_setup_commands_are_the_main_job_and_cis_test_command():
    readme = README.read_text(encoding="utf-8")
    main_job, test_command = "pip install -e . && lmsmith build", 'pip install -e ".[dev]" && python -m pytest'
    assert setup_commands(readme) == [main_job, test_command]
    ci_lines = [line.strip() for line in CI_RUN.read_text(encoding="utf-8").splitlines()]
    assert test_command in ci_lines  # CI runs the README's test command, verbatim, as a line of its own
    assert main_job in readme.splitlines()  # the main job, on a line of its own
    assert (main_job, ["build"]) in README_COMMANDS  # and its lmsmith command is checked above
