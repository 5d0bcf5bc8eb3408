"""The PNG pictures of an explanation, drawn from its dict (explain.json) and nothing else."""

from __future__ import annotations

import unicodedata

import numpy as np

from lmsmith.explain.labels import DPI, every_nth, readable_pt, spread_out
from lmsmith.report.page import _pyplot, draw_each


def shown(text: str) -> str:
    """A token as a label: spaces, line breaks and tabs made visible, other control characters as \\xNN."""
    text = text.replace(" ", "\u2423").replace("\n", "\u21b5").replace("\t", "\u21e5")
    return "".join(f"\\x{ord(c):02x}" if unicodedata.category(c) == "Cc" else c for c in text) or "\u2205"


def _token_ticks(ax, labels: list[str], axis: str, font_pt: float, axis_in: float) -> None:
    """Name the heatmap's tokens along one axis, as many as fit at a size readable on the page."""
    step = every_nth(len(labels), axis_in, font_pt)
    where = list(range(0, len(labels), step))
    names = [labels[i] for i in where]
    if axis == "x":
        ax.set_xticks(where, names, rotation=90, fontsize=font_pt)
    else:
        ax.set_yticks(where, names, fontsize=font_pt)


def attention_layer(explanation: dict, layer: int):
    """Every head of one layer: row t is where token t looks (its weights over tokens 0..t)."""
    plt = _pyplot()
    weights = np.asarray(explanation["attention"][layer])  # (heads, T, T)
    heads, T = weights.shape[0], weights.shape[-1]
    labels = [shown(t["text"]) for t in explanation["tokens"]]
    cols = min(heads, 2)  # two heads a row: four side by side shrink to unreadable on the page
    rows = int(np.ceil(heads / cols))
    size = min(3.6 + 0.06 * T, 5.5)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols + 1.2, size * rows), squeeze=False)
    font_pt = readable_pt(size * cols + 1.2)
    for h in range(rows * cols):
        ax = axes[h // cols][h % cols]
        if h >= heads:
            ax.axis("off")
            continue
        ax.grid(False)
        image = ax.imshow(np.ma.masked_where(np.triu(np.ones((T, T)), 1) > 0, weights[h]), cmap="Blues",
                          vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(f"layer {layer}, head {h}", fontsize=font_pt * 1.2)
        _token_ticks(ax, labels, "x", font_pt, size * 0.7)  # the axes take about 70% of their cell
        _token_ticks(ax, labels, "y", font_pt, size * 0.7)
    fig.colorbar(image, ax=axes, shrink=0.6, label="attention weight")
    fig.suptitle(f"Attention in layer {layer}: each row is one token, its colours where it looks", fontsize=11)
    return fig


def focus_bars(explanation: dict):
    """The earlier tokens the focus token looks at, averaged over every head of every layer."""
    plt = _pyplot()
    focus, tokens = explanation["focus"], explanation["tokens"]
    ranked = focus["all_heads"]
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(ranked), 2) + 1.2))
    names = [f"{shown(tokens[r['position']]['text'])}  (#{r['position']})" for r in ranked][::-1]
    ax.barh(names, [r["weight"] for r in ranked][::-1], color="tab:blue")
    ax.set_xlabel("attention weight, mean over all heads")
    ax.set_title(f"What {shown(focus['text'])!s} (#{focus['position']}) looks at")
    return fig


def logit_lens(explanation: dict, last: int = 16):
    """Each layer's top guess for the next token at the last `last` positions, coloured by its probability."""
    plt = _pyplot()
    lens, vocab = explanation["logit_lens"], explanation["vocab"]
    ids, probs = np.asarray(lens["ids"])[:, :, 0], np.asarray(lens["probs"])[:, :, 0]  # (layers+1, T)
    T = ids.shape[1]
    start = max(0, T - last)
    width = 1.0 + 0.75 * (T - start)
    fig, ax = plt.subplots(figsize=(width, 0.5 * ids.shape[0] + 1.6))
    font_pt = readable_pt(width)
    ax.grid(False)
    image = ax.imshow(probs[:, start:], cmap="Greens", vmin=0, vmax=1, aspect="auto")
    for layer in range(ids.shape[0]):
        for col, t in enumerate(range(start, T)):
            ax.text(col, layer, shown(vocab.get(str(int(ids[layer, t])), "?"))[:8], ha="center", va="center",
                    fontsize=font_pt * 0.9, color="white" if probs[layer, t] > 0.6 else "black")
    ax.set_yticks(range(ids.shape[0]), lens["layers"], fontsize=font_pt)
    ax.set_xticks(range(T - start), [shown(explanation["tokens"][t]["text"]) for t in range(start, T)],
                  rotation=90, fontsize=font_pt)
    ax.set_xlabel("input token (each column: the guess for the token after it)")
    fig.colorbar(image, ax=ax, label="probability of the top guess", shrink=0.8)
    ax.set_title("Logit lens: the guess after each layer")
    return fig


def next_token_bars(explanation: dict):
    """The top next-token probabilities after the last token."""
    plt = _pyplot()
    nxt, vocab = explanation["next_token"], explanation["vocab"]
    ids, probs = np.asarray(nxt["ids"])[-1], np.asarray(nxt["probs"])[-1]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(ids) + 1.2))
    ax.barh([shown(vocab.get(str(int(i)), "?")) for i in ids][::-1], probs[::-1], color="tab:green")
    ax.set_xlabel("probability")
    ax.set_title(f"Next token after {shown(explanation['tokens'][-1]['text'])}")
    return fig


def embedding_map(explanation: dict):
    """The most frequent tokens on the first two principal components of their embeddings."""
    plt = _pyplot()
    m, vocab = explanation["embeddings"]["map"], explanation["vocab"]
    xy = np.asarray(m["xy"])
    fig, ax = plt.subplots(figsize=(9, 7))
    ax.scatter(xy[:, 0], xy[:, 1], s=8, color="tab:gray", alpha=0.5)
    font_pt = readable_pt(9)
    names = [shown(vocab.get(str(int(i)), "?")) for i in m["ids"]]
    labelled = label_without_overlap(fig, ax, xy, names, font_pt)
    ax.set_title(f"Embedding map: {len(m['ids'])} frequent tokens ({labelled} named; the rest would overlap)")
    v = m["variance"]
    ax.set_xlabel(f"first principal component ({100 * v[0]:.0f}% of the variance)")
    ax.set_ylabel(f"second principal component ({100 * v[1]:.0f}%)")
    return fig


def label_without_overlap(fig, ax, xy: np.ndarray, names: list[str], font_pt: float) -> int:
    """Name the points of a scatter, most frequent first, leaving out a name that would cover another; returns
    how many were named."""
    fig.canvas.draw()  # fixes the axes' limits, so data coordinates map to pixels
    points = ax.transData.transform(xy)
    height = font_pt * DPI / 72
    sizes = [(0.62 * height * max(len(name), 1), height) for name in names]
    kept = spread_out(points, sizes)
    for i in kept:
        ax.annotate(names[i], tuple(xy[i]), fontsize=font_pt, alpha=0.9)
    return len(kept)


def head_scores(heads: dict):
    """The four scores of every head, as layer-by-head grids."""
    plt = _pyplot()
    names = (("previous", "previous token"), ("first", "first token (sink)"), ("induction", "induction"),
             ("distance", "mean distance back"))
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), layout="constrained")  # 2 x 2: wide enough to read
    font_pt = readable_pt(10)
    for ax, (key, title) in zip(axes.flat, names):
        grid = np.asarray(heads["scores"][key])
        ax.grid(False)
        vmax = 1.0 if key != "distance" else max(float(grid.max()), 1.0)
        image = ax.imshow(grid, cmap="Purples", vmin=0, vmax=vmax, aspect="auto")
        for (layer, head), value in np.ndenumerate(grid):
            ax.text(head, layer, f"{value:.2f}" if key != "distance" else f"{value:.1f}", ha="center", va="center",
                    fontsize=font_pt * 0.9, color="white" if value > 0.6 * vmax else "black")
        ax.set_title(title, fontsize=font_pt * 1.2)
        ax.set_xlabel("head", fontsize=font_pt)
        ax.set_ylabel("layer", fontsize=font_pt)
        ax.set_xticks(range(grid.shape[1]), [str(h) for h in range(grid.shape[1])], fontsize=font_pt)
        ax.set_yticks(range(grid.shape[0]), [str(n) for n in range(grid.shape[0])], fontsize=font_pt)
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle("What each head does, measured", fontsize=font_pt * 1.3)
    return fig


def draw_all(explanation: dict) -> dict[str, bytes]:
    """Every picture the explanation has data for: {file name: PNG bytes}."""
    plt = _pyplot()
    makers = {}
    if "attention" in explanation:
        for layer in range(len(explanation["attention"])):
            makers[f"attention_layer{layer}.png"] = lambda layer=layer: attention_layer(explanation, layer)
        makers["logit_lens.png"] = lambda: logit_lens(explanation)
        makers["next_token.png"] = lambda: next_token_bars(explanation)
        makers["embedding_map.png"] = lambda: embedding_map(explanation)
    if explanation.get("focus"):
        makers["focus.png"] = lambda: focus_bars(explanation)
    if explanation.get("heads"):
        makers["heads.png"] = lambda: head_scores(explanation["heads"])
    return draw_each(makers, plt)
