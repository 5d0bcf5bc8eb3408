"""Past imitation: RL on the SQL-execution reward, and DPO on the model's own wrong queries, after instruct tuning.

    python examples/sql_align.py                   # the whole journey (11 minutes on 2 idle cores), then the table
    python examples/sql_align.py -o DIR            # ... in DIR (default work/sql-align); rerunning skips what is done
    python examples/sql_align.py KEY=VALUE ...     # the build's recipe keys, e.g. steps.rl.finetune.rl.group=8
    python examples/sql_align.py --write DIR       # writes the recipe's data again (the shipped files, byte for byte)

The sql-align recipe (`lmsmith build sql-align`) pretrains the sql-assistant's base, fine-tunes it on
only 400 of the shop questions, so that it writes the right rows for well under all of
the held-out questions, then runs RL from that model: groups of sampled queries per training question,
each rewarded 1 when it returns the reference query's rows on exams/shop.sqlite.

This script runs that build, then the other way teams teach from what was wrong:

  1. the instruct model sits an exam of training questions (never the held-out exam) and writes each
     question it got wrong with its own query: `lmsmith exam ... --failures mistakes.jsonl`;
  2. each of those lines is a preference pair as it stands, the reference query chosen and the model's
     query rejected: `lmsmith finetune SFT --method dpo --data mistakes.jsonl`;
  3. base, instruct, instruct+RL and instruct+DPO sit the held-out exam (execution accuracy, with its
     standard error, and each model compared with the base on the same items).

The data (beside the recipe, in sql-align/) are cut from the sql-assistant's 2,000 training questions,
none of them a held-out exam question: instruct.jsonl (400 questions, as prompt and response),
tasks.jsonl (the 800 next, as exam items: the RL prompts and the DPO exam), and rl_val.jsonl (60 more,
the RL run's validation, which picks its best checkpoint); of those two, only the questions whose
reference returns rows on shop.sqlite, so a wrong query returning nothing earns no reward.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

SHIPPED = resources.files("lmsmith") / "configs"
SPLITS = {"instruct.jsonl": (0, 400), "tasks.jsonl": (1000, 1800), "rl_val.jsonl": (1800, 1860)}
DB = "../exams/shop.sqlite"  # relative to the task files, as an exam item names its database


def returns_rows(db: Path, sql: str) -> bool:
    """Whether a reference returns anything: execution accuracy passes any query that returns nothing where the
    reference does too, a reward RL would learn to collect, so those questions are left out (as the exam does)."""
    with sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True) as connection:
        found = connection.execute(sql).fetchall()
    connection.close()
    return bool(found)


def write_align_data(folder: Path) -> list[Path]:
    """The recipe's three files, cut from the sql-assistant's training questions by line ranges."""
    source = Path(str(SHIPPED / "sql-assistant" / "train.jsonl")).read_text(encoding="utf-8").splitlines()
    shop = Path(str(SHIPPED / "exams" / "shop.sqlite"))
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (start, stop) in SPLITS.items():
        rows = [json.loads(line) for line in source[start:stop]]
        if name != "instruct.jsonl":  # exam items: the reference query and the database it runs on
            rows = [{"prompt": r["prompt"], "sql": r["response"], "db": DB} for r in rows
                    if returns_rows(shop, r["response"])]
        path = folder / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        written.append(path)
    return written


def lmsmith(*args: str) -> float:
    """One lmsmith command, as a learner would type it; its wall-clock seconds."""
    print("$ lmsmith " + " ".join(args), flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lmsmith", *args], check=True)
    return time.perf_counter() - started


def journey(work: Path, overrides: list[str]) -> None:
    recipe = Path(str(SHIPPED / "sql-align.yaml"))
    lmsmith("build", str(recipe), "-o", str(work), "--quiet", *overrides)
    seconds = {step: s["seconds"] for step, s in json.loads((work / "build.json").read_text())["stages"].items()}
    runs, mistakes = work / "runs", work / "mistakes.jsonl"
    tasks = recipe.parent / "sql-align" / "tasks.jsonl"
    seconds["mistakes"] = lmsmith("exam", str(runs / "sft"), "--tasks", str(tasks),
                                  "--limit", str(MISTAKES_EXAM), "--max-new-tokens", "96", "--failures", str(mistakes),
                                  "--quiet")
    print(f"{sum(1 for _ in mistakes.open())} training questions the instruct model got wrong -> {mistakes}")
    seconds["dpo"] = lmsmith("finetune", str(runs / "sft"), "--method", "dpo", "--data", str(mistakes),
                             "--template", "chatml", "-o", str(runs / "dpo"), "--quiet",
                             "--force", *DPO_SETTINGS)  # a rerun finds new mistakes: its DPO run replaces the last
    seconds["held-out exam"] = lmsmith("exam", *(str(runs / r) for r in ("main", "sft", "rl", "dpo")), "--tasks",
                                       str(SHIPPED / "exams" / "sql.jsonl"), "--max-new-tokens", "96",
                                       "-o", str(work / "held-out"))
    print("minutes per step: " + ", ".join(f"{k} {v / 60:.1f}" for k, v in seconds.items() if v is not None))


# DPO from the instruct model: a gentle step, a few passes over its mistakes, the best validation pairs' loss kept.
MISTAKES_EXAM = 750  # every task question: about a hundred mistakes, half a minute of answers on 2 cores
DPO_SETTINGS = ("train.steps=15", "train.lr=5e-5", "train.micro_batch=16", "train.eval_every=10",
                "dpo.beta=0.1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", default="work/sql-align", help="work directory")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="recipe keys for the build, e.g. steps.sft.train.steps=300")
    parser.add_argument("--write", metavar="DIR", help="write instruct.jsonl, tasks.jsonl and rl_val.jsonl into DIR")
    args = parser.parse_args()
    if args.write:
        print("wrote " + ", ".join(map(str, write_align_data(Path(args.write)))))
        return
    journey(Path(args.out), args.overrides)


if __name__ == "__main__":
    main()
