"""Whole journeys from one recipe: steps of any registered stage, named, in order, reading earlier steps.

The shipped sql-assistant recipe runs here end to end on tiny settings (the same steps, the same
code, minutes shrunk to seconds); its GGUF file is read back by transformers' own GGUF reader.
"""

from __future__ import annotations

import json
import shutil
import sysconfig
from pathlib import Path

import pytest
import torch
import yaml

from lmsmith.build import Workdir
from lmsmith.cli import main
from lmsmith.model.directory import load_model_dir
from lmsmith.schema.recipe import find_recipe

STDLIB = Path(sysconfig.get_paths()["stdlib"])
MODULES = ["textwrap.py", "argparse.py", "string.py", "calendar.py", "csv.py", "fractions.py", "heapq.py",
           "shlex.py", "difflib.py", "json/__init__.py", "json/decoder.py", "json/encoder.py", "sqlite3/__init__.py",
           "sqlite3/dump.py", "this.py", "bisect.py", "colorsys.py", "keyword.py", "queue.py", "sched.py"]
TINY_BASE = {"model.block_size": 128, "model.n_layer": 2, "model.n_head": 2, "model.n_embd": 32,
             "train.max_minutes": "null", "train.steps": 4, "train.batch_tokens": 1024, "train.micro_batch": 8,
             "train.eval_every": 2, "train.eval_batches": 2, "train.save_every": 4, "train.optimizer": "adamw",
             "train.schedule": "cosine", "train.warmup_steps": 1, "train.device": "cpu"}
TINY_SQL = {"train.steps": 4, "train.eval_every": 2, "train.eval_batches": 2, "train.micro_batch": 8,
            "train.device": "cpu", "finetune.exact_match": 4}
TINY_EXAM = {"exam.limit": 4, "exam.max_new_tokens": 16, "exam.device": "cpu"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("stdlib")
    for module in MODULES:
        if (STDLIB / module).is_file():
            shutil.copyfile(STDLIB / module, folder / module.replace("/", "_"))
    return folder


def tiny_sql_assistant(corpus: Path) -> list[str]:
    """The shipped recipe's overrides that shrink it to seconds: the same steps, smaller everything."""
    return ([f"steps.curate.inputs=[{corpus}]", "steps.curate.split={val_fraction: 0.2, test_fraction: 0.2}",
             "steps.tokenizer.vocab_size=512", "steps.eval.split=val", "steps.export.export.quant=f32"]
            + [f"steps.train.{k}={v}" for k, v in TINY_BASE.items()]
            + [f"steps.sql.{k}={v}" for k, v in TINY_SQL.items()]
            + [f"steps.exam.{k}={v}" for k, v in TINY_EXAM.items()])


@pytest.fixture(scope="module")
def journey(corpus, tmp_path_factory):
    work = tmp_path_factory.mktemp("journey") / "work"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["build", "sql-assistant", "-o", str(work), *tiny_sql_assistant(corpus)]) == 0
    finally:
        torch.set_num_threads(before)
    return work


def test_the_sql_assistant_pretrains_fine_tunes_scores_and_exports(journey, corpus, capsys, tmp_path):
    assert main(["build", "sql-assistant", "-o", str(journey), *tiny_sql_assistant(corpus)]) == 0
    out = capsys.readouterr().out
    steps = ["curate", "tokenizer", "tokenize", "train", "eval", "sql", "exam", "export"]
    assert [line.split("]")[0][1:] for line in out.splitlines() if "] up to date" in line] == steps
    assert "exact match on 4 val examples:" in out and "%" in out  # before -> after, on questions never trained on
    assert f"chat with it: lmsmith chat {journey / 'runs' / 'sql'}" in out
    assert "ollama create NAME -f" in out
    report = json.loads((journey / "runs" / "sql" / "finetune.json").read_text())
    assert report["base"]["source"].endswith(str(Path("runs") / "main" / "model"))  # it started from the train step
    assert report["after"]["answers"]["examples"] == 4
    exam = json.loads((journey / "exam" / "exam.json").read_text())
    (model, by_task), = exam["models"].items()
    assert model.endswith(str(Path("runs") / "sql" / "model")) and by_task["sql"]["metric"] == "execution_accuracy"
    assert by_task["sql"]["n"] == 4 and "exact_match" in by_task["sql"]["side"]
    assert by_task["sql"]["contaminated"] == 0  # checked (its base's curated data, its own SQL data); short questions
    assert "sql (n=4)" in out and "execution_accuracy" in out
    assert main(["report", str(journey), "-o", str(tmp_path / "report"), "--quiet"]) == 0
    page = (tmp_path / "report" / "report.html").read_text()
    assert "<h2>Exam (exam)</h2>" in page and "sql (execution_accuracy, n=4)" in page
    resolved = yaml.safe_load((journey / "recipe.yaml").read_text())
    assert list(resolved["steps"]) == steps and resolved["steps"]["sql"]["finetune"]["data"].endswith("train.jsonl")


def test_its_gguf_file_loads_in_transformers_with_the_fine_tuned_logits(journey):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    folder = Workdir(journey).output("export")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(folder), gguf_file="model.gguf").eval()
    ours, tokenizer = load_model_dir(journey / "runs" / "sql")
    ids = torch.tensor([tokenizer.encode("SELECT name FROM customers WHERE city = 'Oslo';")])
    with torch.no_grad():
        torch.testing.assert_close(theirs(ids).logits, ours(ids).logits, atol=1e-4, rtol=0)
    assert (folder / "Modelfile").read_text().startswith("# Made by lmsmith export --ollama")


def test_a_journey_can_start_from_a_hugging_face_model(tmp_path, corpus):
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers, trainers

    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator([(corpus / "csv.py").read_text()], trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    torch.manual_seed(0)
    eot = backend.token_to_id("<|endoftext|>")
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=backend.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256, bos_token_id=eot,
        eos_token_id=eot, tie_word_embeddings=True))
    hf_dir = tmp_path / "hf"
    hf.save_pretrained(str(hf_dir))
    backend.save(str(hf_dir / "tokenizer.json"))
    (hf_dir / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                              "eos_token": "<|endoftext|>"}))
    work = tmp_path / "work"
    overrides = [f"steps.sql.from.base={hf_dir}", "steps.export.export.quant=f32"] + [
        f"steps.sql.{k}={v}" for k, v in TINY_SQL.items()]
    assert main(["build", "sql-from-model", "-o", str(work), *overrides, "--quiet"]) == 0
    report = json.loads((work / "runs" / "sql" / "finetune.json").read_text())
    assert report["base"]["kind"] == "hf-dir" and report["steps"] == 4
    assert (work / "export" / "model.gguf").is_file()


# ---------------------------------------------------------------------------------------------
# Bad graphs: one line, exit 2, before any work


def write_recipe(path: Path, steps: dict, **top) -> Path:
    path.write_text(yaml.safe_dump({"steps": steps, **top}, sort_keys=False))
    return path


SQL_DATA = str(find_recipe("sql-assistant").parent / "sql-assistant" / "train.jsonl")


@pytest.mark.parametrize("steps,top,message", [
    ({"curate": {"inputs": ["stdlib"]}, "finetuen": {}}, {},
     "steps.finetuen: 'finetuen' (its name) is not a stage a step can run: did you mean 'finetune'?"),
    ({"eval": {}}, {}, "step 'eval' reads a model (model), but no step before it makes one: add a finetune or "
                       "train step before it, or name one with steps.eval.from"),
    ({"sql": {"stage": "finetune", "from": "export", "finetune": {"data": SQL_DATA}}, "export": {}}, {},
     "steps.sql.from: 'export' does not come before 'sql'"),
    ({"sql": {"stage": "finetune", "from": "nowhere", "finetune": {"data": SQL_DATA}}}, {},
     "steps.sql.from: 'nowhere' is neither an earlier step nor a path that exists"),
    ({"main": {"stage": "finetune", "from": "hf:org/model", "finetune": {"data": SQL_DATA}},
      "train": {"model": {"n_layer": 2}}}, {},
     "steps 'main' and 'train' would both write"),
    ({"curate": {"inputs": ["stdlib"]}}, {"train": {"steps": 3}},
     "the recipe has steps:, so its train: section belongs inside a step"),
    ({"export": {"stage": "export", "from": "hf:org/model", "export": {"ollama": False}}}, {},
     "export.ollama is false, but a build step writes a folder"),
])
def test_a_graph_that_cannot_run_is_refused_before_any_work(tmp_path, capsys, steps, top, message):
    recipe = write_recipe(tmp_path / "journey.yaml", steps, **top)
    assert main(["build", str(recipe), "-o", str(tmp_path / "work")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "work").exists()


def dump(db: Path) -> list[str]:
    """A SQLite database's content as SQL statements: the same data, whatever the file's page layout."""
    import sqlite3

    connection = sqlite3.connect(db)
    try:
        return list(connection.iterdump())
    finally:
        connection.close()


def test_the_shipped_sql_task_is_what_the_example_makes(tmp_path):
    """The recipe's data is reproducible: examples/finetune_sql.py writes the shipped files byte for byte."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("finetune_sql", Path(__file__).parents[1] / "examples" /
                                                  "finetune_sql.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    written = example.write_sql_data(tmp_path, 2000, 200)
    shipped = find_recipe("sql-assistant").parent / "sql-assistant"
    for path in written:
        assert path.read_bytes() == (shipped / path.name).read_bytes(), path.name
    exam = example.write_sql_exam(tmp_path / "exams", written[1])
    shipped_exams = shipped.parent / "exams"
    assert exam.read_bytes() == (shipped_exams / "sql.jsonl").read_bytes()
    assert dump(tmp_path / "exams" / "shop.sqlite") == dump(shipped_exams / "shop.sqlite")
    references = [json.loads(line)["sql"] for line in exam.read_text().splitlines()]
    assert len(references) >= 150 and all(example.answers_something(exam.parent / "shop.sqlite", sql)
                                          for sql in references)  # no question a query returning nothing passes
    train = {json.loads(line)["prompt"] for line in written[0].read_text().splitlines()}
    assert not train & {json.loads(line)["prompt"] for line in written[1].read_text().splitlines()}


def test_two_steps_of_one_stage_each_read_the_step_before(tmp_path):
    """The graph alone (no work): a second fine-tuning starts from the first; export reads the last model."""
    from lmsmith.build import plan
    from lmsmith.schema.recipe import load_recipe
    from lmsmith.stages import STAGE_BY_NAME

    recipe_file = write_recipe(tmp_path / "two.yaml", {
        "sft": {"stage": "finetune", "from": "hf:org/model", "finetune": {"data": SQL_DATA}},
        "dpo": {"stage": "finetune", "finetune": {"data": SQL_DATA, "mode": "dpo"}},
        "export": {"quant": "q8_0", "ollama": True},
    })
    steps = {p.name: p for p in plan(load_recipe(recipe_file, [], STAGE_BY_NAME), Workdir(tmp_path / "work"))}
    assert steps["sft"].given["base"] == ["hf:org/model"] and steps["sft"].folder == tmp_path / "work" / "runs" / "sft"
    assert steps["dpo"].upstream == {"base": "sft"} and steps["dpo"].folder == tmp_path / "work" / "runs" / "dpo"
    assert steps["dpo"].inputs["base"] == str((tmp_path / "work" / "runs" / "sft" / "model").resolve())
    assert steps["export"].upstream == {"model": "dpo"}
    assert steps["dpo"].inputs["data"] == SQL_DATA and steps["dpo"].step.config.finetune.mode == "dpo"


def test_the_shipped_sql_align_data_is_what_its_example_makes_and_never_the_exam(tmp_path):
    """examples/sql_align.py cuts the recipe's data from the sql-assistant's training questions, byte for byte;
    the instruct set, the RL prompts and the RL validation share no question, and none is a held-out exam item."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sql_align", Path(__file__).parents[1] / "examples" /
                                                  "sql_align.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    written = example.write_align_data(tmp_path)
    shipped = find_recipe("sql-align").parent / "sql-align"
    for path in written:
        assert path.read_bytes() == (shipped / path.name).read_bytes(), path.name
    prompts = [{json.loads(line)["prompt"] for line in path.read_text().splitlines()} for path in written]
    exam = {json.loads(line)["prompt"] for line in (shipped.parent / "exams" / "sql.jsonl").read_text().splitlines()}
    assert [len(p) for p in prompts] == [400, 750, 55]  # the rewarded ones: each reference returns rows
    shop = shipped.parent / "exams" / "shop.sqlite"
    assert all(example.returns_rows(shop, json.loads(line)["sql"]) for path in written[1:]
               for line in path.read_text().splitlines())
    assert not (prompts[0] & prompts[1] or prompts[0] & prompts[2] or prompts[1] & prompts[2])
    assert not exam & set().union(*prompts)


def test_the_sql_align_recipe_runs_rl_from_the_small_instruct_step(tmp_path):
    """The graph alone (no work): the instruct step starts from the base, RL from the instruct step, on exam items
    whose database is the shipped shop.sqlite."""
    from lmsmith.build import plan
    from lmsmith.exam.items import SQL
    from lmsmith.finetune.rl_tasks import read_rl_items
    from lmsmith.schema.recipe import load_recipe
    from lmsmith.stages import STAGE_BY_NAME

    steps = {p.name: p for p in plan(load_recipe(find_recipe("sql-align"), [], STAGE_BY_NAME),
                                     Workdir(tmp_path / "work"))}
    assert steps["sft"].upstream == {"base": "train"} and steps["rl"].upstream == {"base": "sft"}
    rl = steps["rl"].step.config.finetune
    assert rl.mode == "rl" and rl.template == steps["sft"].step.config.finetune.template == "chatml"
    items = read_rl_items(rl.data, custom_reward=False).items
    assert {item.kind for item in items} == {SQL}
    assert {Path(item.fields["db"]) for item in items} == {(find_recipe("sql-align").parent / "exams" /
                                                            "shop.sqlite").resolve()}
