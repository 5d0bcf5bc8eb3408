"""The SQL task of the `sql-assistant` recipe: questions about a shop database, each with the one query that answers it.

    lmsmith build sql-assistant                       # the whole journey, from nothing, on a laptop CPU
    python examples/finetune_sql.py                   # prints that recipe and where its data is
    python examples/finetune_sql.py --write DIR       # writes the task again (the shipped files, byte for byte)
    python examples/finetune_sql.py --write-exam DIR  # writes the SQL exam again: the shop database, the questions

The recipe pretrains a small general model on the Python standard library, fine-tunes it on
these questions, scores its greedy answers to questions it never saw in training before and
after, and exports it for llama.cpp and Ollama. This file is how its data was made:

    {"prompt": "all customers from Paris", "response": "SELECT * FROM customers WHERE city = 'Paris';"}

The validation questions are new combinations (other cities, numbers, products, wordings), never
a training question.
"""

from __future__ import annotations

import argparse
import json
import random
from importlib import resources
from pathlib import Path

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
    for name, chunk in (("train.jsonl", items[n_val:]), ("val.jsonl", items[:n_val])):
        path = folder / name
        path.write_text("".join(json.dumps({"prompt": q, "response": sql}) + "\n" for q, sql in chunk),
                        encoding="utf-8")
        files.append(path)
    return files[0], files[1]


def write_shop_db(path: Path, seed: int = 0) -> Path:
    """The shop database the questions are about: 500 customers, 20 products, 3,000 orders.

    Every product has its own price, so "the k most expensive" has one right order.
    """
    import sqlite3

    rng = random.Random(seed)
    path.unlink(missing_ok=True)
    connection = sqlite3.connect(path)
    connection.executescript(
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, city TEXT, country TEXT, signup_year INTEGER);"
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, product TEXT, amount REAL, order_date TEXT);"
        "CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT, category TEXT, price REAL);")
    first = ["Ana", "Ben", "Chloe", "Dan", "Eva", "Finn", "Greta", "Hugo", "Ines", "Jonas", "Kara", "Luca", "Mia",
             "Nils", "Olga", "Paul", "Rosa", "Sven", "Tara", "Yusuf"]
    last = ["Berg", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Horvat", "Ivanova", "Jansen", "Kowalski",
            "Lopez", "Moreau", "Novak", "Olsen", "Rossi", "Silva", "Weber", "Young"]
    for i in range(1, 501):
        city = rng.choice(list(CITIES))
        connection.execute("INSERT INTO customers VALUES (?, ?, ?, ?, ?)",
                           (i, f"{rng.choice(first)} {rng.choice(last)}", city, CITIES[city], rng.randint(2015, 2024)))
    prices = rng.sample(range(300, 150000), len(PRODUCTS))
    for i, (name, cents) in enumerate(zip(PRODUCTS, prices), 1):
        connection.execute("INSERT INTO products VALUES (?, ?, ?, ?)", (i, name, rng.choice(CATEGORIES), cents / 100))
    for i in range(1, 3001):
        connection.execute("INSERT INTO orders VALUES (?, ?, ?, ?, ?)",
                           (i, rng.randint(1, 500), rng.choice(PRODUCTS), rng.randint(500, 150000) / 100,
                            f"{rng.randint(2015, 2024)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"))
    connection.commit()
    connection.execute("VACUUM")
    connection.close()
    return path


def answers_something(db: Path, sql: str) -> bool:
    """The reference query returns at least one row holding a value: a wrong query that returns nothing
    (or one NULL, as SUM of no rows does) must not tie with it by accident."""
    import sqlite3

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        rows = connection.execute(sql).fetchall()
    return any(value is not None for row in rows for value in row)


def write_sql_exam(folder: Path, val: Path) -> Path:
    """The SQL exam of the recipe: the validation questions whose reference returns rows on the shop's
    database, each scored by the rows its query returns."""
    folder.mkdir(parents=True, exist_ok=True)
    db = write_shop_db(folder / "shop.sqlite")
    pairs = [json.loads(line) for line in val.read_text(encoding="utf-8").splitlines()]
    pairs = [p for p in pairs if answers_something(db, p["response"])]
    path = folder / "sql.jsonl"
    path.write_text("".join(json.dumps({"prompt": p["prompt"], "sql": p["response"], "db": "shop.sqlite"}) + "\n"
                            for p in pairs), encoding="utf-8")
    return path


SHIPPED = resources.files("lmsmith") / "configs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="DIR", help="write train.jsonl and val.jsonl into DIR")
    parser.add_argument("--write-exam", metavar="DIR", help="write shop.sqlite and sql.jsonl (the SQL exam) into DIR")
    parser.add_argument("--train-pairs", type=int, default=2000)
    parser.add_argument("--val-pairs", type=int, default=200)
    args = parser.parse_args()
    if args.write_exam:
        print(f"wrote {write_sql_exam(Path(args.write_exam), Path(str(SHIPPED / 'sql-assistant' / 'val.jsonl')))}")
        return
    if args.write:
        train, val = write_sql_data(Path(args.write), args.train_pairs, args.val_pairs)
        print(f"wrote {train} and {val}")
        return
    print((SHIPPED / "sql-assistant.yaml").read_text(encoding="utf-8"))
    print(f"{SCHEMA}\nthe task: {SHIPPED / 'sql-assistant'}\nrun it:   lmsmith build sql-assistant")


if __name__ == "__main__":
    main()
