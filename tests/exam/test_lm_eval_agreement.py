"""Multiple choice agrees with lm-evaluation-harness item for item, on a local task written here:

- our scorer (`lmsmith exam`), from its own batched log-likelihoods;
- the harness's own task and metrics, with our model wrapped as its LM class (lmsmith.exam.harness);
- the harness's `hf` model (transformers) on the same model converted to a Hugging Face directory: an
  independent computation of every log-likelihood.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import write_jsonl

from lmsmith.cli import main
from lmsmith.exam.harness import harness_lm
from lmsmith.exam.models import open_model
from lmsmith.schema.exam import ExamConfig

lm_eval = pytest.importorskip("lm_eval")
pytest.importorskip("transformers")

QUESTIONS = ["1+2=", "2+2=", "3+1=", "0+5=", "4+4=", "9+3=", "Is it true?", "abc", "The sum of 7 and 5 is",
             "x=y", "Pick one:", "Q: 6*2=\nA:"]
CHOICES = [["3", "4", "5", "12"], ["yes", "no"], ["a b c", "abc", "cba", "b"]]


def items() -> list[dict]:
    return [{"question": q, "choices": CHOICES[i % 3], "answer": i % len(CHOICES[i % 3])}
            for i, q in enumerate(QUESTIONS)]


def harness_task(folder, data) -> str:
    spec = {"task": "lmsmith_choice", "dataset_path": "json", "test_split": "test",
            "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(folder / "cache")},
            "output_type": "multiple_choice", "doc_to_text": "{{question}}", "doc_to_choice": "{{choices}}",
            "doc_to_target": "{{answer}}", "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}]}
    (folder / "lmsmith_choice.yaml").write_text(json.dumps(spec), encoding="utf-8")  # JSON is YAML
    return "lmsmith_choice"


def harness_scores(model, folder, task) -> list[tuple[float, float]]:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    results = simple_evaluate(model=model[0], model_args=model[1], tasks=[task],
                              task_manager=TaskManager(include_path=str(folder), include_defaults=False),
                              log_samples=True, random_seed=0, numpy_random_seed=0, torch_random_seed=0,
                              fewshot_random_seed=0)
    samples = sorted(results["samples"][task], key=lambda s: s["doc_id"])
    return [(s["acc"], s["acc_norm"]) for s in samples]


def test_multiple_choice_agrees_with_lm_evaluation_harness_item_for_item(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    data = write_jsonl(tmp_path / "choice.jsonl", items())
    out = tmp_path / "exam"
    assert main(["exam", str(model_dir), "--tasks", str(data), "-o", str(out), "--quiet", "--json"]) == 0
    capsys.readouterr()
    ours = json.loads((out / "exam.json").read_text())["models"][str(model_dir)]["choice"]["items"]
    ours = [(i["acc"], i["acc_norm"]) for i in ours]
    assert 0 < sum(a for a, _ in ours) < len(ours)  # neither all right nor all wrong: agreement means something

    task = harness_task(tmp_path, data)
    wrapped = harness_scores((harness_lm(open_model(str(model_dir), ExamConfig())), None), tmp_path, task)
    assert wrapped == ours

    assert main(["convert", "--to-hf", str(model_dir), "-o", str(tmp_path / "hf"), "--quiet"]) == 0
    torch.set_num_threads(1)
    hf = harness_scores(("hf", f"pretrained={tmp_path / 'hf'},dtype=float32,device=cpu,batch_size=8"), tmp_path, task)
    assert hf == ours


def test_lm_eval_tasks_run_through_the_exam(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    data = write_jsonl(tmp_path / "choice.jsonl", items())
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    harness = harness_task(tasks, data)
    assert main(["exam", str(model_dir), "--tasks", str(data), "--lm-eval", harness, f"exam.lm_eval_include={tasks}",
                 "--json", "--quiet"]) == 0
    by_task = json.loads(capsys.readouterr().out)["models"][str(model_dir)]
    assert by_task[f"lm-eval:{harness}"]["item_scores"] == by_task["choice"]["item_scores"]
    assert by_task[f"lm-eval:{harness}"]["metric"] == "acc"
    assert main(["exam", str(model_dir), "--lm-eval", "no_such_task", f"exam.lm_eval_include={tasks}"]) == 2
    assert "--lm-eval no_such_task: lm-evaluation-harness has no such task" in capsys.readouterr().err
