"""The checkers: each kind's answer judged right or wrong, on real queries, real JSON and real code."""

from __future__ import annotations

import itertools
import math
import sqlite3

import pytest

from lmsmith.core.errors import UserError
from lmsmith.exam import checkers
from lmsmith.exam.items import Item


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    db = tmp_path_factory.mktemp("db") / "shop.sqlite"
    with sqlite3.connect(db) as c:
        c.executescript("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, city TEXT);"
                        "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, amount REAL);"
                        "INSERT INTO customers VALUES (1, 'Ana', 'Paris'), (2, 'Ben', 'Oslo'), (3, 'Eva', 'Paris');"
                        "INSERT INTO orders VALUES (1, 1, 10.5), (2, 1, 4.5), (3, 3, 20.0), (4, 2, 7.25);")
    c.close()
    return str(db)


def sql_item(db, reference):
    return Item("sql", {"prompt": "q", "sql": reference, "db": db}, "t.jsonl:1")


EQUIVALENT = [
    ("SELECT name FROM customers WHERE city = 'Paris';",
     ["select name from customers where city='Paris'", "SELECT c.name FROM customers AS c WHERE c.city IN ('Paris')",
      "SELECT name FROM customers WHERE city = 'Paris' ORDER BY name DESC",
      "```sql\nSELECT name FROM customers WHERE NOT city <> 'Paris';\n```"]),
    ("SELECT SUM(amount) FROM orders WHERE customer_id = 1;",
     ["SELECT TOTAL(amount) FROM orders WHERE customer_id = 1", "SELECT 15", "SELECT 15.0",
      "SELECT SUM(o.amount) FROM orders o JOIN customers c ON c.id = o.customer_id WHERE c.name = 'Ana'"]),
    ("SELECT name FROM customers ORDER BY id DESC;",
     ["SELECT name FROM (SELECT * FROM customers ORDER BY id) ORDER BY id DESC",
      "SELECT name FROM customers ORDER BY name DESC"]),  # Eva, Ben, Ana either way
]
WRONG = [
    ("SELECT name FROM customers WHERE city = 'Paris';",
     ["SELECT name FROM customers", "SELECT name, city FROM customers WHERE city = 'Paris'",
      "SELECT DISTINCT name FROM customers WHERE city = 'Oslo'", "SELEC name FROM customers",
      "SELECT name FROM nowhere", "", "DELETE FROM customers", "SELECT 1; DELETE FROM customers"]),
    ("SELECT name FROM customers ORDER BY id DESC;",  # the reference orders: another order is wrong
     ["SELECT name FROM customers ORDER BY id", "SELECT name FROM customers"]),
    ("SELECT COUNT(*) FROM customers;", ["SELECT COUNT(*) FROM customers WHERE city = 'Paris'"]),
]


@pytest.mark.parametrize("reference,answers", EQUIVALENT)
def test_equivalent_queries_written_differently_score_1(shop, reference, answers):
    for answer in answers:
        assert checkers.check_sql(sql_item(shop, reference), answer) == 1.0, answer


@pytest.mark.parametrize("reference,answers", WRONG)
def test_wrong_failing_and_writing_queries_score_0_and_change_nothing(shop, reference, answers):
    for answer in answers:
        assert checkers.check_sql(sql_item(shop, reference), answer) == 0.0, answer
    assert checkers.sql_rows(shop, "SELECT COUNT(*) FROM customers") == [(3,)]  # the DELETEs were refused


def test_a_reference_that_fails_is_the_tasks_mistake(shop):
    with pytest.raises(UserError, match="t.jsonl:1: the reference"):
        checkers.check_sql(sql_item(shop, "SELECT nothing FROM nowhere"), "SELECT 1")


def test_order_by_counts_only_in_the_outermost_select():
    assert checkers.ordered("SELECT a FROM t ORDER BY a")
    assert checkers.ordered("select a from t order\n by a desc limit 3")
    assert not checkers.ordered("SELECT a FROM (SELECT a FROM t ORDER BY a LIMIT 3)")
    assert not checkers.ordered("SELECT a FROM t WHERE b = 'order by'")


def test_exact_match_normalises_whitespace_and_optionally_case():
    item = Item("generation", {"prompt": "p", "answer": "New  York\n"}, "t:1")
    assert checkers.check_generation(item, "  New York") == 1.0
    assert checkers.check_generation(item, "NewYork") == 0.0
    assert checkers.check_generation(item, "new york") == 0.0
    assert checkers.check_generation(item, "new york", ignore_case=True) == 1.0
    pattern = Item("generation", {"prompt": "p", "regex": r"\b4\d\b"}, "t:1")
    assert checkers.check_generation(pattern, "it is 42.") == 1.0
    assert checkers.check_generation(pattern, "it is 420") == 0.0


def test_json_answers_must_parse_and_follow_the_schema():
    item = Item("json", {"prompt": "p", "schema": {"type": "object", "required": ["n"],
                                                   "properties": {"n": {"type": "integer"}}}}, "t:1")
    assert checkers.check_json(item, '{"n": 3}') == 1.0
    assert checkers.check_json(item, 'Here:\n```json\n{"n": 3, "x": 1}\n```') == 1.0
    assert checkers.check_json(item, '{"n": "3"}') == 0.0
    assert checkers.check_json(item, '{"n": 3') == 0.0
    assert checkers.check_json(item, "[]") == 0.0
    bad = Item("json", {"prompt": "p", "schema": {"type": "no such type"}}, "t:7")
    with pytest.raises(UserError, match="t:7: the item's JSON schema is invalid"):
        checkers.check_json(bad, "{}")


def test_pass_at_k_equals_the_fraction_of_k_subsets_holding_a_pass():
    for n, c, k in [(5, 0, 1), (5, 2, 1), (5, 2, 3), (6, 1, 6), (4, 4, 2), (7, 3, 2)]:
        runs = [1] * c + [0] * (n - c)
        subsets = list(itertools.combinations(runs, k))
        assert math.isclose(checkers.pass_at_k(n, c, k), sum(any(s) for s in subsets) / len(subsets))


def test_choice_scores_follow_the_harness_definitions():
    item = Item("choice", {"question": "q", "choices": ["a", "bbbb", "é"], "answer": 1}, "t:1")
    # per character: -1, -0.75, -1.5; per byte: -1, -0.75, -0.75 (é is two bytes, so the tie goes to the first)
    scores = checkers.choice_scores(item, [-1.0, -3.0, -1.5])
    assert scores == {"acc": 0.0, "acc_norm": 1.0, "acc_bytes": 1.0}
    assert checkers.choice_scores(item, [-2.0, -1.0, -1.5])["acc"] == 1.0
