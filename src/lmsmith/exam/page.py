"""exam.html: the table of models by tasks, the comparisons, and the items where models disagree.

One self-contained page (no scripts, no files beside it), written from exam.json's record: for
each task and each later model, the items the first model got right and it got wrong, and the
other way round, with the prompt and both answers, so a reader sees what changed, not only by
how much.
"""

from __future__ import annotations

from html import escape

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right;vertical-align:top}td.l,th.l{text-align:left}
pre{white-space:pre-wrap;overflow-wrap:anywhere;margin:0;font-size:.85em;max-width:30em;max-height:12em;overflow:auto}h3{margin-top:1.5em}"""
SHOWN = 20  # disagreements listed per direction; the count says how many there are


def _score(summary: dict) -> str:
    if summary["score"] is None:
        return "-"
    error = f" ± {summary['stderr']:.3f}" if summary["stderr"] is not None else ""
    return f"{summary['score']:.3f}{error}"


def _table(models: dict) -> str:
    tasks = list(next(iter(models.values())))
    first = next(iter(models.values()))
    head = "".join(f"<th>{escape(t)} (n={first[t]['n']})<br>{escape(first[t]['metric'])}</th>" for t in tasks)
    rows = "".join(f"<tr><td class=l>{escape(m)}</td>" + "".join(f"<td>{_score(by[t])}</td>" for t in tasks) + "</tr>"
                   for m, by in models.items())
    return f"<table><tr><th class=l>model</th>{head}</tr>{rows}</table>"


def _answer(item: dict) -> str:
    if "outputs" in item:
        return item["outputs"][0]
    lls = item["loglikelihoods"]
    return f"choice {max(range(len(lls)), key=lls.__getitem__)}"


def _differences(task: str, a_name: str, a: dict, b_name: str, b: dict) -> str:
    parts = []
    for winner, w, loser, lo in ((a_name, a, b_name, b), (b_name, b, a_name, a)):
        pairs = [(wi, li) for wi, li in zip(w["items"], lo["items"])
                 if wi is not None and li is not None and wi["score"] > li["score"]]
        rows = "".join(f"<tr><td class=l>{escape(wi['where'])}</td><td class=l><pre>{escape(_answer(wi))}</pre></td>"
                       f"<td class=l><pre>{escape(_answer(li))}</pre></td></tr>" for wi, li in pairs[:SHOWN])
        more = f" (the first {SHOWN})" if len(pairs) > SHOWN else ""
        parts.append(f"<h3>{escape(task)}: {len(pairs)} items {escape(winner)} got right and {escape(loser)} "
                     f"did not{more}</h3>" + (f"<table><tr><th class=l>item</th><th class=l>{escape(winner)}</th>"
                                              f"<th class=l>{escape(loser)}</th></tr>{rows}</table>" if rows else ""))
    return "".join(parts)


def exam_page(record: dict, comparison_lines: list[str]) -> str:
    models = record["models"]
    names = list(models)
    body = [f"<h1>lmsmith exam</h1>{_table(models)}"]
    body += [f"<p>{escape(line)}</p>" for line in comparison_lines]
    for other in names[1:]:
        for task in models[names[0]]:
            body.append(_differences(task, names[0], models[names[0]][task], other, models[other][task]))
    return (f"<!doctype html><html><head><meta charset=utf-8><title>lmsmith exam</title><style>{STYLE}</style>"
            f"</head><body>{''.join(body)}</body></html>")
