"""`lmsmith exam`: does the model give the right answers? Items checked by kind, models side by side.

    items.py     tasks: JSONL items, their kind from their fields, bad lines named by file:line
    checkers.py  check(item, output) -> score, one per kind; multiple choice by log-likelihood
    sandbox.py   a model's Python run against its tests in a boxed child process
    models.py    the two questions asked of a model, answered by ours or by an OpenAI-compatible server
    scoring.py   one model on one task, batched
    stats.py     standard errors, and a paired test between two models
    stage.py     the stage: models x tasks, the table, exam.json
"""
