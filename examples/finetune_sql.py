"""Worked example: a small general model learns to write SQL for questions about one database.

    python examples/finetune_sql.py                    # everything from scratch, a few minutes on a laptop CPU
    python examples/finetune_sql.py --base runs/main   # start from a model of your own (or a Hugging Face dir)

What it does, with the commands a user would type (each printed before it runs):

1. A general base model, unless --base is given: a BPE tokenizer and a tiny transformer trained
   for a few hundred steps on Python standard library modules (code and English docstrings).
2. A domain task it makes itself: a shop database (customers, orders, products) and questions
   about it, each with the one SQL query that answers it, written as
       {"prompt": "-- all customers from Paris\\n", "response": "SELECT * FROM customers WHERE city = 'Paris';"}
   The validation questions are new combinations (other cities, numbers, products, wordings).
3. Fine-tuning twice from the same base: all weights, and LoRA adapters only. Each run reports
   the domain validation loss, exact-match accuracy of greedy answers to the validation
   questions, and the loss on held-out general text before and after: what the specialty cost.
4. A few answers from the fine-tuned models, through `lmsmith generate`.

Everything goes under --work (default work/sql-example); a second run reuses what is there.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import shutil
import sysconfig
from pathlib import Path

from lmsmith.cli import main as lmsmith

CITIES = {"Paris": "France", "Lyon": "France", "Nice": "France", "Berlin": "Germany", "Munich": "Germany",
          "Hamburg": "Germany", "Madrid": "Spain", "Seville": "Spain", "Rome": "Italy", "Milan": "Italy",
          "Turin": "Italy", "Lisbon": "Portugal", "Porto": "Portugal", "Vienna": "Austria", "Oslo": "Norway",
          "Bergen": "Norway", "Dublin": "Ireland", "Cork": "Ireland", "Warsaw": "Poland", "Krakow": "Poland",
          "Prague": "Czechia", "Brno": "Czechia", "Athens": "Greece", "Zurich": "Switzerland", "Geneva": "Switzerland"}
CATEGORIES = ["books", "toys", "garden", "kitchen", "music", "sports", "office", "games"]
PRODUCTS = ["lamp", "kettle", "chair", "desk", "bicycle", "guitar", "novel", "puzzle", "shovel", "racket",
            "stapler", "blender", "drum", "tent", "mug", "printer", "ladder", "violin", "atlas", "skates"]

# Each task: ways of asking, and the query. Slots: {city} {country} {year} {n} {id} {category} {product} {k}.
TASKS = [
    (["all customers from {city}", "list every customer in {city}", "customers living in {city}"],
     "SELECT * FROM customers WHERE city = '{city}';"),
    (["names of customers in {country}", "which customers are in {country}", "customer names from {country}"],
     "SELECT name FROM customers WHERE country = '{country}';"),
    (["how many customers signed up in {year}", "number of customers who joined in {year}"],
     "SELECT COUNT(*) FROM customers WHERE signup_year = {year};"),
    (["orders over {n} dollars", "all orders with an amount above {n}", "orders bigger than {n}"],
     "SELECT * FROM orders WHERE amount > {n};"),
    (["total amount of orders for customer {id}", "how much has customer {id} spent"],
     "SELECT SUM(amount) FROM orders WHERE customer_id = {id};"),
    (["{category} products cheaper than {n}", "products in the {category} category under {n} dollars"],
     "SELECT name FROM products WHERE category = '{category}' AND price < {n};"),
    (["the {k} most expensive products", "top {k} products by price"],
     "SELECT name, price FROM products ORDER BY price DESC LIMIT {k};"),
    (["average price of {category} products", "mean price in the {category} category"],
     "SELECT AVG(price) FROM products WHERE category = '{category}';"),
    (["customers from {city} who ordered a {product}", "who in {city} bought a {product}"],
     "SELECT DISTINCT c.name FROM customers c JOIN orders o ON o.customer_id = c.id "
     "WHERE c.city = '{city}' AND o.product = '{product}';"),
    (["number of orders per customer", "count the orders of each customer"],
     "SELECT customer_id, COUNT(*) FROM orders GROUP BY customer_id;"),
]
SCHEMA = """-- customers(id, name, city, country, signup_year)
-- orders(id, customer_id, product, amount, order_date)
-- products(id, name, category, price)"""

GENERAL_MODULES = ["textwrap.py", "argparse.py", "json/__init__.py", "json/decoder.py", "json/encoder.py",
                   "string.py", "calendar.py", "csv.py", "fractions.py", "heapq.py", "shlex.py", "difflib.py"]


def run(*args: str) -> None:
    """Run one lmsmith command, showing it as it would be typed."""
    print("\n$ lmsmith " + " ".join(shlex.quote(a) for a in args), flush=True)
    code = lmsmith(list(args))
    if code != 0:
        raise SystemExit(code)


# ---------------------------------------------------------------------------------------------
# The domain task


def question_and_query(rng: random.Random) -> tuple[str, str]:
    wordings, query = rng.choice(TASKS)
    city = rng.choice(list(CITIES))
    slots = dict(city=city, country=rng.choice(sorted(set(CITIES.values()))), year=rng.randint(2015, 2024),
                 n=rng.choice([10, 20, 25, 50, 75, 100, 150, 200, 250, 500, 1000]), id=rng.randint(1, 500),
                 category=rng.choice(CATEGORIES), product=rng.choice(PRODUCTS), k=rng.randint(2, 10))
    return rng.choice(wordings).format(**slots), query.format(**slots)


def write_sql_data(folder: Path, n_train: int, n_val: int, seed: int = 0) -> tuple[Path, Path]:
    """Train and validation question -> SQL pairs; no validation question appears in training."""
    rng = random.Random(seed)
    pairs: dict[str, str] = {}
    while len(pairs) < n_train + n_val:
        question, query = question_and_query(rng)
        pairs.setdefault(question, query)
    items = list(pairs.items())
    rng.shuffle(items)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name, chunk in (("sql_train.jsonl", items[n_val:]), ("sql_val.jsonl", items[:n_val])):
        path = folder / name
        path.write_text("".join(json.dumps({"prompt": f"-- {q}\n", "response": sql}) + "\n" for q, sql in chunk),
                        encoding="utf-8")
        files.append(path)
    return files[0], files[1]


# ---------------------------------------------------------------------------------------------
# The general base model


def make_base(work: Path, steps: int) -> tuple[Path, Path]:
    """A tiny general model trained on standard library modules; returns (run dir, tokens dir)."""
    corpus, tokenizer, tokens, run_dir = work / "general", work / "tokenizer", work / "tokens", work / "runs" / "base"
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    corpus.mkdir(parents=True, exist_ok=True)
    for module in GENERAL_MODULES:
        if (stdlib / module).is_file():
            shutil.copyfile(stdlib / module, corpus / module.replace("/", "_"))
    if not (tokenizer / "tokenizer.json").is_file():
        run("tokenizer", "train", str(corpus), "-o", str(tokenizer), "--vocab-size", "1024", "--quiet")
    if not (tokens / "manifest.json").is_file():
        run("tokenize", str(corpus), "-t", str(tokenizer), "-o", str(tokens), "--quiet")
    if not (run_dir / "model" / "model.safetensors").is_file():
        run("train", f"data={tokens}", f"out={run_dir}", "model.block_size=128", "model.n_layer=4", "model.n_head=4",
            "model.n_embd=128", f"train.steps={steps}", "train.batch_tokens=4096", "train.micro_batch=32",
            "train.lr=3e-3", f"train.warmup_steps={steps // 10}", f"train.eval_every={steps}", "train.eval_batches=8",
            f"train.save_every={steps}", "train.keep_last=1", "train.log_every=50")
    return run_dir, tokens


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="work/sql-example", help="where everything is written")
    parser.add_argument("--base", help="start from this model instead of training a small general one")
    parser.add_argument("--general-val", help="general text to guard (default: the base's held-out stdlib text)")
    parser.add_argument("--base-steps", type=int, default=300, help="training steps of the general base")
    parser.add_argument("--steps", type=int, default=300, help="fine-tuning steps")
    parser.add_argument("--train-pairs", type=int, default=2000)
    parser.add_argument("--val-pairs", type=int, default=200)
    args = parser.parse_args()
    work = Path(args.work)

    general = args.general_val
    if args.base:
        base = args.base
    else:
        base_run, tokens = make_base(work, args.base_steps)
        base, general = str(base_run), general or str(tokens)
    train_file, val_file = write_sql_data(work / "data", args.train_pairs, args.val_pairs)
    print(f"\n{SCHEMA}\n{args.train_pairs} training and {args.val_pairs} validation questions in {work / 'data'}, e.g.")
    print("  " + val_file.read_text(encoding="utf-8").splitlines()[0])

    common = ["--template", "raw", f"finetune.val_data={val_file}", f"exact_match={args.val_pairs}",
              f"train.steps={args.steps}", "train.micro_batch=32", "train.eval_every=50", "train.early_stop_patience=3"]
    if general:
        common.append(f"general_val={general}")
    reports = {}
    for method, extra in (("full", ["train.lr=1e-3"]), ("lora", ["lora.rank=16", "lora.alpha=32", "train.lr=3e-3"])):
        out = work / "runs" / f"sql-{method}"
        if not (out / "finetune.json").is_file():
            run("finetune", base, "--data", str(train_file), "-o", str(out), "--method", method, *common, *extra)
        reports[method] = json.loads((out / "finetune.json").read_text(encoding="utf-8"))

    for method in reports:
        run("generate", str(work / "runs" / f"sql-{method}"), "--prompt", "-- all customers from Paris\\n",
            "--prompt", "-- the 3 most expensive products\\n", "--temperature", "0", "--max-new-tokens", "80",
            "--no-stream")

    print("\nbefore -> after fine-tuning (validation questions never seen in training):")
    print(f"{'method':8} {'trainable':>12} {'val loss':>17} {'exact match':>17} {'general loss':>17} {'steps':>6}")
    for method, r in reports.items():
        b, a = r["before"], r["after"]
        general_text = f"{b['general']['loss']:.3f} -> {a['general']['loss']:.3f}" if b["general"] else "-"
        print(f"{method:8} {r['parameters']['trainable_parameters']:>12,} "
              f"{b['val_loss']:>7.3f} -> {a['val_loss']:<6.3f} "
              f"{b['answers']['exact_match']:>7.1%} -> {a['answers']['exact_match']:<6.1%} "
              f"{general_text:>17} {r['steps']:>6}")


if __name__ == "__main__":
    main()
