"""The bias report: counts against an independent count, languages, the mix, and nothing changed."""

from __future__ import annotations

import json
import random
import re
from collections import Counter

import pyarrow.parquet as pq

from lmsmith.cli import main
from lmsmith.data.bias import GENDERED
from lmsmith.data.bias_pictures import plot_bias
from lmsmith.data.pipeline import curate
from lmsmith.report import page as report_page
from lmsmith.schema.curate import DEFAULT_IDENTITY_TERMS
from lmsmith.text.curated_dir import split_files
from tests.data.test_pipeline import SENTENCES

PEOPLE = ["She said her sister would come.", "He told his brother and the king.", "The woman and the man met.",
          "They asked their teacher, a Muslim nurse, about the elderly.", "The deaf girl and her mother laughed."]
GERMAN = ("Der Leuchtturmwärter schrieb jeden Morgen das Wetter auf, bevor er die Treppe hinaufstieg. "
          "Die meisten Leute im Dorf hatten das Innere des Turms nie gesehen, obwohl sie jeden Tag vorbeigingen. "
          "Im Winter kam das Versorgungsschiff nur zweimal im Monat und manchmal gar nicht. "
          "Sie lernte, den Mechanismus der Lampe aus einem Handbuch zu reparieren, das älter war als ihre Großmutter. "
          "Eine gute Karte ist mehr wert als ein schnelles Pferd, wenn die Straßen neu sind und die Schilder fehlen.")
FRENCH = ("Le gardien du phare notait le temps chaque matin avant de monter les escaliers. "
          "La plupart des habitants du village n'avaient jamais vu l'intérieur de la tour. "
          "En hiver, le bateau de ravitaillement ne venait que deux fois par mois, et parfois pas du tout. "
          "Elle apprit à réparer le mécanisme de la lampe grâce à un manuel plus ancien que sa grand-mère. "
          "Une bonne carte vaut plus qu'un cheval rapide quand les routes sont neuves et que les panneaux manquent.")


# Code names a `children` list and a `she` function; only its docstring and comment speak of people.
TOOL_WORDS = "Return the children her mother named."
TOOL = f'def she(children):\n    """{TOOL_WORDS}"""\n    return children  # a man wrote this\n'
TOOL_WORDS += " a man wrote this"


def corpus(folder):
    rng = random.Random(2)
    folder.mkdir()
    for i in range(12):
        body = rng.sample(SENTENCES, 6) + rng.sample(PEOPLE, 3)
        rng.shuffle(body)
        (folder / f"story{i}.txt").write_text(" ".join(body) + "\n")
    (folder / "de.txt").write_text(GERMAN)
    (folder / "fr.md").write_text(FRENCH)
    (folder / "tool.py").write_text(TOOL)


def reference_counts(texts: list[str], identity: dict[str, list[str]]) -> Counter:
    """An independent count: every word of every category, by splitting on non-letters."""
    counts: Counter = Counter()
    categories = dict(GENDERED) | {f"identity:{g}": t for g, t in identity.items()}
    for text in texts:
        words = Counter(w for w in re.split(r"[^a-z']+", text.lower()) if w)
        for category, terms in categories.items():
            counts[category] += sum(words[t] for t in set(terms))
    return counts


def test_the_bias_report_counts_what_an_independent_count_finds(tmp_path):
    corpus(tmp_path / "in")
    identity = {"religion": ["muslim", "christian"], "care": ["nurse", "teacher"]}
    report = curate([tmp_path / "in"], tmp_path / "out",
                    {"bias": {"enabled": True, "identity_terms": identity},
                     "quality": {"prose": {"min_stop_words": 0}},  # the English stop-word rule would drop de and fr
                     "split": {"val_fraction": 0.2, "test_fraction": 0.0}}, quiet=True, workers=1)
    bias = report["bias"]
    for split in ("train", "val"):
        rows = [row for path in split_files(tmp_path / "out", split) for row in pq.read_table(path).to_pylist()]
        data = bias["splits"][split]
        assert data["docs"] == len(rows)
        texts = [TOOL_WORDS if json.loads(r["meta"]).get("kind") == "code" else r["text"] for r in rows]
        expected = reference_counts(texts, identity)
        assert {c: v["count"] for c, v in data["gender"].items()} == {c: expected[c] for c in GENDERED}
        assert {g: v["count"] for g, v in data["identity"].items()} == {g: expected[f"identity:{g}"] for g in identity}
        she, he = expected["pronouns_female"], expected["pronouns_male"]
        assert data["female_share_of_gendered_pronouns"] == (round(she / (she + he), 4) if she + he else None)
        assert not any("_bias" in r["meta"] for r in rows)  # it measures, it does not write
    everywhere = Counter()
    for split in bias["splits"].values():
        everywhere.update({k: v["docs"] for k, v in split["languages"].items()})
    assert everywhere["de"] == 1 and everywhere["fr"] == 1 and everywhere["code"] == 1 and everywhere["en"] == 12
    kinds = Counter()
    for split in bias["splits"].values():
        kinds.update({k: v["docs"] for k, v in split["kinds"].items()})
    assert kinds == {"prose/text": 13, "prose/markdown": 1, "code/python": 1}
    assert set(bias["identity_groups"]) == set(identity)
    assert bias["safety_flagged"] == {"docs": {}, "counters": {}}
    # lmsmith report draws it: a picture and a table, one row per split
    plt = report_page._pyplot()
    fig = plot_bias(bias, plt)
    png = report_page.png_bytes(fig)
    plt.close(fig)
    assert png.startswith(b"\x89PNG")
    section = report_page.bias_section(bias, png)
    assert section.count("<tr>") == 1 + len(bias["splits"]) and "data:image/png" in section
    (tmp_path / "bias.png").write_bytes(png)


def test_bias_report_flag_prints_the_table_and_is_off_by_default(tmp_path, capsys):
    corpus(tmp_path / "in")
    assert main(["curate", str(tmp_path / "in"), "-o", str(tmp_path / "plain"), "--workers", "1"]) in (0, None)
    assert "bias" not in json.loads((tmp_path / "plain" / "report.json").read_text())
    capsys.readouterr()
    assert main(
        ["curate", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--bias-report", "--workers", "1"]
    ) in (0, None)
    out = capsys.readouterr().out
    assert "bias report" in out and "female" in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert set(report["bias"]["identity_groups"]) == set(DEFAULT_IDENTITY_TERMS)
