"""The report's compression picture: the model's bits per byte among gzip's, bzip2's and xz's on the same bytes.

A learner reads bits per byte best against things they know: a bar for each compressor and one
for the model, shortest (best) at the top, the model's bar in its own colour.
"""

from __future__ import annotations

MODEL_LABEL = "this model"


def compression_bars(result: dict) -> list[tuple[str, float]]:
    """(label, bits per byte) of the compressors and the model, best first; empty without compressors."""
    compressors = result.get("compressors") or {}
    if not compressors:
        return []
    entries = {**compressors, MODEL_LABEL: result["bits_per_byte"]}
    return sorted(entries.items(), key=lambda kv: kv[1])


def plot_compression(result: dict, plt):
    """Horizontal bars of bits per byte, the model's highlighted, each bar labelled with its value."""
    bars = compression_bars(result)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(bars) + 0.9))
    labels = [label for label, _ in bars][::-1]  # matplotlib draws the first bar at the bottom
    values = [value for _, value in bars][::-1]
    colours = ["tab:orange" if label == MODEL_LABEL else "tab:gray" for label in labels]
    ax.barh(labels, values, color=colours, height=0.6)
    for y, value in enumerate(values):
        ax.text(value, y, f" {value:.3f}", va="center", fontsize=9)
    ax.set_xlim(0, max(values) * 1.15)
    ax.set_xlabel("bits per byte (lower is better)")
    ax.grid(axis="y", visible=False)
    ax.set_title(f"Compression of the same {result.get('bytes', 0):,} bytes")
    return fig
