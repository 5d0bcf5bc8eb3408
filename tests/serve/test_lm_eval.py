"""lm-evaluation-harness against `lmsmith serve`, through its `local-completions` model (the OpenAI
completions API): the scores it reports equal the ones computed here directly from the model.

Both tasks are defined from local files written by the test: a log-likelihood task (multiple
choice, scored by echo + logprobs) and a generation task (greedy, until a newline).
"""

from __future__ import annotations

import json

import pytest
import torch
from serve_models import KEY, NAME

from lmsmith.model.decoding import generate
from lmsmith.model.directory import load_model_dir
from lmsmith.schema.generate import GenerationConfig

lm_eval = pytest.importorskip("lm_eval")

QUESTIONS = ["1+2=", "2+2=", "3+1=", "0+5=", "4+4=", "5+2="]
CHOICES = ["3", "4", "5", "8"]


def continuation_logprob(model, tokenizer, context: str, continuation: str) -> float:
    """log P(continuation | context), summed over its tokens, as eval scores text: one forward pass."""
    whole, head = tokenizer.encode(context + continuation), tokenizer.encode(context)
    with torch.no_grad():
        logprobs = model(torch.tensor([whole])).logits[0, :-1].float().log_softmax(-1)
    targets = torch.tensor(whole[1:])
    return float(logprobs.gather(1, targets[:, None])[len(head) - 1:, 0].sum())


def write_tasks(folder, data_cache, generations: dict[str, str]):
    """Two task YAMLs and their JSONL data; half the generation targets are the model's own greedy answers."""
    choice_docs = [{"question": q, "choices": CHOICES, "gold": i % len(CHOICES)} for i, q in enumerate(QUESTIONS)]
    gen_docs = [{"question": q, "answer": generations[q] if i % 2 == 0 else "no such answer"}
                for i, q in enumerate(QUESTIONS)]
    for name, docs in (("choice", choice_docs), ("gen", gen_docs)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    common = {"dataset_path": "json", "test_split": "test", "doc_to_text": "{{question}}"}
    tasks = {
        "lmsmith_choice": {**common, "output_type": "multiple_choice", "doc_to_choice": "{{choices}}",
                           "doc_to_target": "{{gold}}", "target_delimiter": "",
                           "metric_list": [{"metric": "acc"}]},
        "lmsmith_gen": {**common, "output_type": "generate_until", "doc_to_target": "{{answer}}",
                        "target_delimiter": "",
                        "generation_kwargs": {"until": ["\n"], "max_gen_toks": 8, "do_sample": False,
                                              "temperature": 0},
                        "metric_list": [{"metric": "exact_match"}]},
    }
    for task, spec in tasks.items():
        data = folder / f"{task.split('_')[1]}.jsonl"
        spec = {"task": task, **spec,
                "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(data_cache)}}
        (folder / f"{task}.yaml").write_text(json.dumps(spec), encoding="utf-8")  # JSON is YAML


def test_lm_eval_scores_through_the_server_equal_direct_scores(server, chat_model_dir, tmp_path, monkeypatch):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    torch.set_num_threads(1)
    model, tokenizer = load_model_dir(chat_model_dir)
    greedy = {q: generate(model, tokenizer, q, GenerationConfig(max_new_tokens=8, temperature=0, stop=["\n"]))[0]
              for q in QUESTIONS}
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    write_tasks(tasks, tmp_path / "datasets", greedy)

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    results = simple_evaluate(
        model="local-completions",
        model_args=f"base_url={server.url}/completions,model={NAME},tokenizer={chat_model_dir},"
                   "tokenizer_backend=huggingface,tokenized_requests=True,max_length=128,max_retries=1",
        tasks=["lmsmith_choice", "lmsmith_gen"],
        task_manager=TaskManager(include_path=str(tasks), include_defaults=False),
        log_samples=True, random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)

    scores = {q: [continuation_logprob(model, tokenizer, q, c) for c in CHOICES] for q in QUESTIONS}
    picked = [max(range(len(CHOICES)), key=lambda c: scores[q][c]) for q in QUESTIONS]
    direct_acc = sum(p == i % len(CHOICES) for i, p in enumerate(picked)) / len(QUESTIONS)
    assert results["results"]["lmsmith_choice"]["acc,none"] == pytest.approx(direct_acc)
    for sample in results["samples"]["lmsmith_choice"]:
        served = [resp[0] for resp in sample["filtered_resps"]]
        assert served == pytest.approx(scores[sample["doc"]["question"]], abs=1e-4)

    assert results["results"]["lmsmith_gen"]["exact_match,none"] == pytest.approx(0.5)
    for sample in results["samples"]["lmsmith_gen"]:
        assert sample["filtered_resps"][0] == greedy[sample["doc"]["question"]]
