"""The pictures and table of the bias report, for `lmsmith report` (drawn from report.json's "bias")."""

from __future__ import annotations


def _grouped_bars(ax, groups: list[str], series: dict[str, list[float]], horizontal: bool = False) -> None:
    width = 0.8 / max(1, len(series))
    for k, (label, values) in enumerate(series.items()):
        positions = [i + (k - (len(series) - 1) / 2) * width for i in range(len(groups))]
        (ax.barh if horizontal else ax.bar)(positions, values, width, label=label, alpha=0.85)
    (ax.set_yticks if horizontal else ax.set_xticks)(range(len(groups)), groups)
    ax.legend(fontsize=8)


def plot_bias(bias: dict, plt):
    """Three panels per split: the female share of gendered words, identity terms per 1k words, languages."""
    splits = list(bias["splits"])
    data = [bias["splits"][s] for s in splits]
    fig, (ax_gender, ax_identity, ax_lang) = plt.subplots(1, 3, figsize=(13, 3.8))
    _grouped_bars(ax_gender, splits, {
        "pronouns (she vs he)": [d["female_share_of_gendered_pronouns"] or 0.0 for d in data],
        "terms (woman vs man, ...)": [d["female_share_of_gendered_terms"] or 0.0 for d in data]})
    ax_gender.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax_gender.set_ylim(0, 1)
    ax_gender.set_title("female share of gendered words", fontsize=10)
    groups = list(bias.get("identity_groups") or (data[0]["identity"] if data else {}))
    _grouped_bars(ax_identity, groups, {s: [d["identity"].get(g, {}).get("per_1000_words", 0.0) for g in groups]
                                        for s, d in zip(splits, data)}, horizontal=True)
    ax_identity.set_title("identity terms per 1,000 words", fontsize=10)
    languages: list[str] = []
    for d in data:
        languages += [lang for lang in list(d["languages"])[:5] if lang not in languages]
    _grouped_bars(ax_lang, languages[:8],
                  {s: [d["languages"].get(lang, {}).get("share") or 0.0 for lang in languages[:8]]
                   for s, d in zip(splits, data)})
    ax_lang.set_title("documents by language", fontsize=10)
    fig.suptitle("Bias report: who and which languages the data speaks of", y=1.02)
    fig.tight_layout()
    return fig


def bias_rows(bias: dict) -> tuple[list[str], list[list[str]]]:
    """The per-split table of the report page: header and rows."""
    def percent(share) -> str:
        return "-" if share is None else f"{100 * share:.0f}%"

    def top(shares: dict) -> str:
        return ", ".join(f"{k} {percent(v['share'])}" for k, v in list(shares.items())[:3]) or "-"

    header = ["split", "docs", "female pronouns", "female terms", "identity /1k words", "languages", "sources",
              "kinds"]
    rows = []
    for split, d in bias["splits"].items():
        identity = ", ".join(f"{g} {v['per_1000_words']:.2f}" for g, v in
                             sorted(d["identity"].items(), key=lambda kv: -kv[1]["per_1000_words"])[:3] if v["count"])
        rows.append([split, f"{d['docs']:,}", percent(d["female_share_of_gendered_pronouns"]),
                     percent(d["female_share_of_gendered_terms"]), identity or "none", top(d["languages"]),
                     top(d["sources"]), top(d["kinds"])])
    return header, rows
