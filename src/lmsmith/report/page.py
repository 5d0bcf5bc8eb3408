"""`lmsmith report RUN_OR_WORKDIR`: how a model learned, in one self-contained HTML page.

It reads only what the stages wrote, and runs nothing:

    RUN/metrics.jsonl, RUN/manifest.json    train and validation loss, learning rate, tokens/s, MFU
    the curated directory's report.json     documents and bytes through each curation step
    WORKDIR/eval/result.json                held-out loss, perplexity, bits per byte (lmsmith build)
    WORKDIR/samples/samples.json            the texts the model wrote (lmsmith build)
    WORKDIR/*/exam.json                     the exam's scores, models by tasks (an exam step)
    WORKDIR/build.json                      how long each stage took

and writes OUT/report.html (every picture inside it as a base64 PNG: no file or network access
is needed to view it, so it can be mailed or attached to a ticket) and the same pictures as PNGs
beside it. The curated directory is found by following the manifests back: run -> tokens -> data.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lmsmith.core.atomic import write_bytes, write_text
from lmsmith.core.counts import human_count
from lmsmith.core.errors import UserError
from lmsmith.core.extras import require
from lmsmith.core.manifest import MANIFEST, recorded_input
from lmsmith.report.compression import compression_bars, plot_compression
from lmsmith.schema.train import run_summary

REPORT_HTML = "report.html"
RUN_STAGE = "train"
PNGS = {"loss": "loss.png", "lr": "learning_rate.png", "throughput": "throughput.png", "funnel": "curation_funnel.png"}
OPTIONAL_PNGS = {"bias": "curation_bias.png",  # only when the data was curated with --bias-report
                 "compression": "compression.png"}  # only when the eval recorded the compressors


# ---------------------------------------------------------------------------------------------
# Finding what there is to report


@dataclass
class ReportInputs:
    """Everything the report shows, as read from disk."""

    run: Path
    workdir: Path | None
    manifest: dict
    train_lines: list[dict]  # metrics.jsonl lines with a training loss
    val_lines: list[dict]  # metrics.jsonl lines with a validation loss
    curation: dict | None = None  # a curated directory's report.json
    curation_path: Path | None = None
    eval_result: dict | None = None
    samples: list[dict] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    exams: dict[str, dict] = field(default_factory=dict)  # exam step -> its exam.json

    @property
    def config(self) -> dict:
        return self.manifest.get("config", {})

    @property
    def counts(self) -> dict:
        return self.manifest.get("counts", {})

    @property
    def tokens_per_step(self) -> int | None:
        return (self.config.get("train") or {}).get("batch_tokens")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _stage_of(directory: Path) -> str | None:
    manifest = _read_json(directory / MANIFEST)
    return manifest.get("stage") if isinstance(manifest, dict) else None


def find_run(path: Path) -> tuple[Path, Path | None]:
    """(run directory, build work directory or None) for a run or a work directory."""
    if not path.is_dir():
        raise UserError(f"{path} is not a directory: give a training run (runs/NAME) or a build's work directory")
    if _stage_of(path) == RUN_STAGE:
        workdir = path.parent.parent if (path.parent.parent / "build.json").is_file() else None
        return path, workdir
    runs = sorted(p for p in (path / "runs").glob("*") if p.is_dir() and _stage_of(p) == RUN_STAGE) \
        if (path / "runs").is_dir() else []
    if not runs:
        raise UserError(f"{path} holds no training run "
                        f"(no manifest.json of a training run here or in {path / 'runs'}/*): "
                        "give a run directory made by `lmsmith train` or a work directory made by `lmsmith build`")
    chosen = next((r for r in runs if r.name == "main"), None)
    if chosen is None and len(runs) > 1:
        raise UserError(
            f"{path} holds several runs ({', '.join(r.name for r in runs)}): give one of them, e.g. {runs[0]}"
        )
    return chosen or runs[0], path


def read_metrics(run: Path) -> tuple[list[dict], list[dict]]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run} has no metrics.jsonl: the run has not logged a step yet")
    train, val, skipped = [], [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1  # a line cut short by a crash
            continue
        # A line that is not one of ours (garbage, another tool's, a damaged disk) is skipped like a cut one.
        if not isinstance(record, dict) or not _is_number(record.get("step")):
            skipped += 1
            continue
        if _is_number(record.get("val_loss")):
            val.append(record)
        elif _is_number(record.get("loss")):
            train.append(record)
    if not train and not val:
        raise UserError(f"{path} holds no training or validation loss yet: report again once the run has logged a step")
    if skipped:  # said, so a damaged log is not mistaken for a short run
        print(f"note: skipped {skipped} line{'s' if skipped != 1 else ''} of {path} that are not training records",
              file=sys.stderr)
    return train, val


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def curated_dir_of(run: Path, run_manifest: dict, workdir: Path | None) -> Path | None:
    """The curated directory behind a run: the build's data/, or the one its tokens were made from."""
    if workdir is not None and (workdir / "data" / "report.json").is_file():
        return workdir / "data"
    tokens_path = recorded_input(run, run_manifest, "tokens")
    if not tokens_path:
        return None
    tokens_manifest = _read_json(tokens_path / MANIFEST) or {}
    data_path = recorded_input(tokens_path, tokens_manifest, "data")
    if data_path and (data_path / "report.json").is_file():
        return data_path
    return None


def gather(path: str | Path) -> ReportInputs:
    run, workdir = find_run(Path(path))
    manifest = _read_json(run / MANIFEST) or {}
    train, val = read_metrics(run)
    inputs = ReportInputs(run, workdir, manifest, train, val)
    curated = curated_dir_of(run, manifest, workdir)
    if curated is not None:
        inputs.curation, inputs.curation_path = _read_json(curated / "report.json"), curated
    if workdir is not None:
        inputs.eval_result = _read_json(workdir / "eval" / "result.json")
        samples = _read_json(workdir / "samples" / "samples.json")
        inputs.samples = [s for s in samples if isinstance(s, dict)] if isinstance(samples, list) else []
        for found in sorted(workdir.glob("*/exam.json")):
            record = _read_json(found)
            if isinstance(record, dict) and isinstance(record.get("models"), dict) and record["models"]:
                inputs.exams[found.parent.name] = record
        stages = (_read_json(workdir / "build.json") or {}).get("stages", {})
        inputs.stage_seconds = {
            k: v["seconds"] for k, v in stages.items() if isinstance(v, dict) and _is_number(v.get("seconds"))
        }
    return inputs


# ---------------------------------------------------------------------------------------------
# Pictures


def _pyplot():
    matplotlib = require("matplotlib", extra="report", purpose="lmsmith report's pictures")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
                         "axes.spines.right": False, "font.size": 10})
    return plt


def draw_each(makers: dict, plt) -> dict[str, bytes]:
    """{name: PNG bytes} of each figure maker, each figure closed once drawn (pyplot keeps them otherwise)."""
    pngs = {}
    for name, make in makers.items():
        fig = make()
        pngs[name] = png_bytes(fig)
        plt.close(fig)
    return pngs


def png_bytes(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def smooth(values: list[float], half_width: int) -> list[float]:
    """A centred moving average: each point is the mean of itself and up to `half_width` points on
    each side, as many on the left as on the right. A trailing average would lag behind a falling
    loss and draw it higher than it is."""
    out = []
    for i in range(len(values)):
        k = min(half_width, i, len(values) - 1 - i)
        window = values[i - k:i + k + 1]
        out.append(sum(window) / len(window))
    return out


def tokens_at(record: dict, tokens_per_step: int | None) -> float:
    if _is_number(record.get("tokens")):
        return record["tokens"]
    return record["step"] * (tokens_per_step or 1)


def plot_loss(inputs: ReportInputs):
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(8, 4.4))
    per_step = inputs.tokens_per_step
    train_x = [tokens_at(r, per_step) for r in inputs.train_lines]
    train_y = [r["loss"] for r in inputs.train_lines]
    if len(train_y) > 10:
        ax.plot(train_x, train_y, color="tab:blue", alpha=0.25, linewidth=1)
        half_width = max(1, len(train_y) // 20)  # windows of about a tenth of the curve
        ax.plot(train_x, smooth(train_y, half_width), color="tab:blue", linewidth=1.8, label="train (smoothed)")
    elif train_y:  # too few points to smooth: show each one
        ax.plot(train_x, train_y, color="tab:blue", marker="o", markersize=4, linewidth=1.5, label="train")
    val_x = [tokens_at(r, per_step) for r in inputs.val_lines]
    val_y = [r["val_loss"] for r in inputs.val_lines]
    if val_y:
        best = min(range(len(val_y)), key=val_y.__getitem__)
        ax.plot(val_x, val_y, color="tab:orange", marker="o", markersize=4, linewidth=1.8,
                label=f"validation (best {val_y[best]:.4f} at step {inputs.val_lines[best]['step']:,})")
    everything = train_y + val_y
    if len(everything) > 4:  # the first steps sit far above the rest; show where the learning happens
        low = min(everything)
        high = max(val_y + [sorted(train_y)[int(0.95 * (len(train_y) - 1))]] if train_y else val_y)
        ax.set_ylim(low - 0.05 * (high - low), high + 0.08 * (high - low))
    ax.xaxis.set_major_formatter(FuncFormatter(human_count))
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title("Loss")
    ax.legend()
    return fig


def plot_learning_rate(inputs: ReportInputs):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3))
    lines = [r for r in inputs.train_lines if _is_number(r.get("lr"))]
    ax.plot([r["step"] for r in lines], [r["lr"] for r in lines], color="tab:purple", linewidth=1.8)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.set_title("Learning-rate schedule" + (f" ({schedule_name(inputs)})" if schedule_name(inputs) else ""))
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.set_ylim(bottom=0)
    return fig


def schedule_name(inputs: ReportInputs) -> str:
    train = inputs.config.get("train") or {}
    parts = [str(train.get("schedule") or "")]
    if train.get("warmup_steps"):
        parts.append(f"{train['warmup_steps']} warmup steps")
    return ", ".join(p for p in parts if p)


def plot_throughput(inputs: ReportInputs):
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(8, 3))
    lines = [r for r in inputs.train_lines if _is_number(r.get("tokens_per_s"))]
    steps = [r["step"] for r in lines]
    rate = [r["tokens_per_s"] for r in lines]
    ax.plot(steps, rate, color="tab:green", linewidth=1.5)
    title = "Throughput"
    if rate:
        median = sorted(rate)[len(rate) // 2]
        ax.axhline(median, color="tab:green", linestyle=":", linewidth=1)
        ax.set_ylim(0, max(rate) * 1.1)
        title += f": median {median:,.0f} tokens/s"
    # MFU is tokens/s times a constant, so it goes in the title rather than on a second, identical curve.
    mfu = sorted(100 * r["mfu"] for r in lines if _is_number(r.get("mfu")))
    if mfu and mfu[-1] > 0:
        title += f", {mfu[len(mfu) // 2]:.1f}% MFU"
    ax.yaxis.set_major_formatter(FuncFormatter(human_count))
    ax.set_xlabel("step")
    ax.set_ylabel("tokens per second")
    ax.set_title(title)
    return fig


def axis_to_data(ax, largest: float) -> None:
    """End the x axis (its line and ticks) at the largest value: the room kept on the right for labels is not
    part of the scale, and an axis running to 3,500 over counts of at most 1,789 misleads."""
    from matplotlib.ticker import MaxNLocator

    if largest <= 0:
        return
    ticks = [t for t in MaxNLocator(nbins=4).tick_values(0, largest) if 0 <= t <= largest]
    ax.set_xticks(ticks)
    ax.spines["bottom"].set_bounds(0, largest)
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)


def plot_funnel(curation: dict):
    """Documents and megabytes left after each curation step, with what each step dropped and why."""
    plt = _pyplot()
    steps = curation.get("steps") or []
    names = ["input"] + [s["name"] for s in steps]
    docs = [steps[0]["docs_in"]] + [s["docs_kept"] for s in steps]
    mb = [steps[0]["bytes_in"] / 1e6] + [s["bytes_kept"] / 1e6 for s in steps]
    fig, (ax_docs, ax_mb) = plt.subplots(1, 2, figsize=(11, 0.45 * len(names) + 1.4), sharey=True,
                                         gridspec_kw={"width_ratios": [1.8, 1]})  # the wide one holds the reasons
    positions = list(range(len(names)))[::-1]  # the first step at the top
    for ax, values, color, unit in ((ax_docs, docs, "tab:blue", "documents"), (ax_mb, mb, "tab:cyan", "MB")):
        ax.barh(positions, values, color=color, alpha=0.8)
        ax.set_xlim(0, max(values) * 1.25 if max(values) > 0 else 1)
        ax.set_xlabel(unit + " kept")
        ax.grid(axis="y", alpha=0)
        for y, value in zip(positions, values):
            ax.annotate(f"{value:,.0f}" if unit == "documents" else f"{value:,.2f}", (value, y),
                        textcoords="offset points", xytext=(3, 3), va="center", fontsize=8)
    ax_docs.set_yticks(positions, names)
    ax_docs.set_xlim(0, max(docs) * 2.2 if max(docs) > 0 else 1)  # room for the reasons
    for ax, values in ((ax_docs, docs), (ax_mb, mb)):
        axis_to_data(ax, max(values))
    for y, step, kept in zip(positions[1:], steps, docs[1:]):
        dropped = sum(step.get("dropped_docs", {}).values())
        if dropped:
            reasons = sorted(step["dropped_docs"].items(), key=lambda kv: -kv[1])[:2]
            why = ", ".join(f"{reason} {n:,}" for reason, n in reasons)
            ax_docs.annotate(f"dropped {dropped:,}: {why}", (kept, y), textcoords="offset points", xytext=(3, -10),
                             va="center", fontsize=7.5, color="tab:red")
    fig.suptitle("Curation funnel: what each step kept", y=1.0)
    return fig


# ---------------------------------------------------------------------------------------------
# The page


STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 980px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.1em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
.sub { color: #666; margin-top: 0; }
.cards { display: flex; flex-wrap: wrap; gap: 0.8em; margin: 1.2em 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.6em 0.9em; min-width: 9em; }
.card .v { font-size: 1.35em; font-weight: 600; } .card .k { color: #666; font-size: 0.85em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border-bottom: 1px solid #e4e4e4; padding: 0.3em 0.8em; text-align: right; }
th:first-child, td:first-child { text-align: left; } th { background: #f6f6f6; }
img { max-width: 100%; }
pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; border-radius: 6px; font-size: 0.88em; }
.prompt { font-weight: 700; color: #0a58ca; } .note { color: #666; font-size: 0.9em; }
.warn { background: #fff4e5; border-left: 4px solid #f0a020; padding: 0.5em 0.8em; }
"""


def esc(value) -> str:
    return html.escape(str(value))


def card(label: str, value: str) -> str:
    return f'<div class="card"><div class="v">{esc(value)}</div><div class="k">{esc(label)}</div></div>'


def html_table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def image(png: bytes, alt: str) -> str:
    return f'<p><img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}"></p>'


def model_parameters(model_config: dict) -> int | None:
    """The parameter count of the run's model, from its config (built on the meta device: no memory)."""
    try:
        import torch

        from lmsmith.core.config import parse_section
        from lmsmith.model.transformer import GPT
        from lmsmith.schema.model import ModelConfig

        config = parse_section(ModelConfig, model_config, "model")
        with torch.device("meta"):
            return GPT(config).num_params()
    except Exception:  # a config from another version of lmsmith: the count is a nicety, not worth failing for
        return None


def headline_cards(inputs: ReportInputs, n_params: int | None) -> str:
    counts, cards = inputs.counts, []
    val = [r["val_loss"] for r in inputs.val_lines]
    if inputs.eval_result:
        e = inputs.eval_result
        cards += [card(f"{e.get('split', 'held-out')} perplexity", f"{e['perplexity']:.2f}"),
                  card(f"{e.get('split', 'held-out')} bits per byte", f"{e['bits_per_byte']:.3f}")]
    if val:
        cards += [card("best validation loss", f"{min(val):.4f}"), card("last validation loss", f"{val[-1]:.4f}")]
    if n_params:
        cards.append(card("parameters", human_count(n_params)))
    steps = counts.get("steps") or (inputs.train_lines[-1]["step"] if inputs.train_lines else None)
    if steps:
        cards.append(card("steps", f"{steps:,}"))
    tokens = counts.get("tokens") or (
        tokens_at(inputs.train_lines[-1], inputs.tokens_per_step) if inputs.train_lines else None
    )
    if tokens:
        cards.append(card("tokens trained on", human_count(tokens)))
    seconds = counts.get("seconds") or (inputs.train_lines[-1].get("elapsed_s") if inputs.train_lines else None)
    if _is_number(seconds):
        cards.append(card("training time", duration(seconds)))
    rates = sorted(r["tokens_per_s"] for r in inputs.train_lines if _is_number(r.get("tokens_per_s")))
    if rates:
        cards.append(card("median tokens/s", f"{rates[len(rates) // 2]:,.0f}"))
    return f'<div class="cards">{"".join(cards)}</div>'


def duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def model_summary(inputs: ReportInputs) -> str:
    model, train = inputs.config.get("model") or {}, inputs.config.get("train") or {}
    shape = [("layers", model.get("n_layer")), ("heads", model.get("n_head")), ("width", model.get("n_embd")),
             ("context", model.get("block_size")), ("vocabulary", model.get("vocab_size")),
             ("positions", model.get("position")), ("norm", model.get("norm")),
             ("feed-forward", model.get("feed_forward"))]
    muon_lr = train.get("muon_lr") if train.get("optimizer") == "muon" else None
    how = [("optimizer", train.get("optimizer")), ("peak lr", train.get("lr")), ("Muon peak lr", muon_lr),
           ("batch tokens", train.get("batch_tokens")),
           ("schedule", train.get("schedule")), ("precision", train.get("precision")),
           ("weight decay", train.get("weight_decay"))]
    shape_text = ", ".join(f"{k} {v}" for k, v in shape if v is not None)
    how_text = ", ".join(f"{k} {v}" for k, v in how if v is not None)
    return f"<p><b>Model:</b> {esc(shape_text)}.<br><b>Training:</b> {esc(how_text)}.</p>"


def how_long_section(inputs: ReportInputs) -> str:
    """What training got through, and, for a run much shorter than its recipe's reference, that it was short,
    why, and what to do; with the shape the machine chose when the run was sized to it."""
    if not inputs.counts.get("tokens"):
        return ""
    summary = run_summary(inputs.manifest)
    short = "expect a weaker model" in summary
    text = esc(summary[:1].upper() + summary[1:] + ".") + esc(sizing_sentence(inputs.run))
    return f'<p class="warn"><b>A short run.</b> {text}</p>' if short else f'<p class="note">{text}</p>'


def sizing_sentence(run: Path) -> str:
    """How the run was sized to the machine (its sizing.json), or nothing for a run of a fixed shape."""
    sized = _read_json(run / "sizing.json")
    try:
        m = sized["measured"][sized["chosen"]]
        return (f" Before training it measured this machine ({sized['precision']} on {sized['device']}) and chose "
                f"{m['shape']} of {sized['candidates']} candidates: at {m['tokens_per_s']:,.0f} tokens/s, the "
                "largest whose budget trains enough tokens for its parameters.")
    except (KeyError, IndexError, TypeError):  # no sizing, or a sizing.json of another version
        return ""


def eval_section(result: dict, compression_png: bytes | None = None) -> str:
    rows = [["split", result.get("split", "")], ["loss (nats per token)", f"{result['loss']:.4f}"],
            ["perplexity", f"{result['perplexity']:.3f}"], ["bits per byte", f"{result['bits_per_byte']:.4f}"],
            ["tokens scored", f"{result.get('tokens', 0):,}"], ["bytes they stand for", f"{result.get('bytes', 0):,}"],
            ["context / stride", f"{result.get('context')} / {result.get('stride')}"]]
    note = ('<p class="note">Every token of the split is scored once, with a sliding window of the stated context. '
            'Bits per byte does not depend on the tokenizer, so it compares models with different vocabularies.</p>')
    picture = ""
    if compression_png:
        picture = ('<p class="note">A language model is a compressor: with arithmetic coding it would store the '
                   "text in about its bits per byte. The bars put it beside the compressors every machine has, "
                   "run at their strongest settings on the same bytes.</p>" + image(compression_png, "compression"))
    return "<h2>Held-out evaluation</h2>" + html_table(["", "value"], rows) + note + picture


def exam_section(step: str, record: dict) -> str:
    """The exam's table: models by tasks, each score with its standard error, and the paired comparisons."""
    models = record["models"]
    tasks = list(next(iter(models.values())))

    def cell(summary: dict) -> str:
        if summary.get("score") is None:
            return "-"
        error = f" ± {summary['stderr']:.3f}" if summary.get("stderr") is not None else ""
        return f"{summary['score']:.3f}{error}"

    first = next(iter(models.values()))
    header = ["model"] + [f"{t} ({first[t]['metric']}, n={first[t]['n']})" for t in tasks]
    rows = [[model] + [cell(by[t]) for t in tasks] for model, by in models.items()]
    notes = [f"{c['model']} vs {c['against']} on {c['task']}: {c['difference']:+.3f}, p = {c['p_value']:.3g}"
             for c in record.get("comparisons", []) if c.get("difference") is not None and c.get("p_value") is not None]
    return (f"<h2>Exam ({esc(step)})</h2>" + html_table(header, rows)
            + "".join(f'<p class="note">{esc(n)}</p>' for n in notes))


def samples_section(samples: list[dict]) -> str:
    blocks = []
    for sample in samples:
        prompt, text = str(sample.get("prompt", "")), str(sample.get("text", ""))
        title = f"prompt {prompt!r}" if prompt else "from scratch"
        blocks.append(
            f'<p class="note">{esc(title)}</p><pre><span class="prompt">{esc(prompt)}</span>{esc(text)}</pre>'
        )
    return "<h2>Samples</h2>" + "".join(blocks)


def curation_section(curation: dict, path: Path | None, funnel_png: bytes | None) -> str:
    totals = curation.get("totals", {})
    parts = ["<h2>Data: the curation funnel</h2>"]
    if path is not None:
        parts.append(f'<p class="note">From {esc(path / "report.json")}.</p>')
    if funnel_png:
        parts.append(image(funnel_png, "curation funnel"))
    rows = []
    for step in curation.get("steps", []):
        dropped = step.get("dropped_docs", {})
        why = ", ".join(f"{reason} {n:,}" for reason, n in sorted(dropped.items(), key=lambda kv: -kv[1])) or "-"
        rows.append([step["name"], f"{step['docs_in']:,}", f"{step['docs_kept']:,}", f"{sum(dropped.values()):,}",
                     f"{step['bytes_kept'] / 1e6:,.2f}", why])
    parts.append(html_table(["step", "docs in", "kept", "dropped", "MB kept", "why dropped"], rows))
    splits = curation.get("splits") or {}
    if splits:
        split_rows = [[name, f"{s.get('docs', 0):,}", f"{s.get('bytes', 0) / 1e6:,.2f}"] for name, s in splits.items()]
        parts.append(html_table(["split", "documents", "MB"], split_rows))
    extra = []
    if curation.get("redactions"):
        extra.append("redacted: " + ", ".join(f"{k} {v:,}" for k, v in sorted(curation["redactions"].items())))
    dup = curation.get("duplicates") or {}
    if dup:
        extra.append(f"duplicates removed: {dup.get('exact_dropped', 0):,} exact, {dup.get('near_dropped', 0):,} near")
    if totals:
        extra.append(f"{totals.get('docs_in', 0):,} documents ({totals.get('bytes_in', 0) / 1e6:,.2f} MB) in, "
                     f"{totals.get('docs_out', 0):,} ({totals.get('bytes_out', 0) / 1e6:,.2f} MB) out")
    if extra:
        parts.append(f'<p class="note">{esc("; ".join(extra))}.</p>')
    return "".join(parts)


def bias_section(bias: dict, png: bytes | None) -> str:
    from lmsmith.data.bias_pictures import bias_rows

    flagged = (bias.get("safety_flagged") or {}).get("docs") or {}
    parts = ["<h2>Data: the bias report</h2>",
             '<p class="note">Counted in the curated splits; curation measured these and changed nothing. '
             f"Safety step flagged: {esc(', '.join(f'{k} {v:,}' for k, v in sorted(flagged.items())) or 'none')}.</p>"]
    if png:
        parts.append(image(png, "bias report"))
    parts.append(html_table(*bias_rows(bias)))
    return "".join(parts)


def render_html(inputs: ReportInputs, pngs: dict[str, bytes], n_params: int | None) -> str:
    title = f"lmsmith report: {inputs.workdir.name if inputs.workdir else inputs.run.name}"
    made = inputs.manifest.get("created", "")
    body = [f"<h1>{esc(title)}</h1>",
            f'<p class="sub">Run {esc(inputs.run)}{", trained " + esc(made) if made else ""}; '
            f"report made {esc(time.strftime('%Y-%m-%d %H:%M'))}.</p>",
            headline_cards(inputs, n_params), model_summary(inputs), how_long_section(inputs)]
    if inputs.eval_result:
        body.append(eval_section(inputs.eval_result, pngs.get("compression")))
    for step, record in inputs.exams.items():
        body.append(exam_section(step, record))
    if inputs.samples:
        body.append(samples_section(inputs.samples))
    body.append("<h2>How it learned</h2>")
    body.append('<p class="note">Training loss is measured on each step\'s batch '
                "(light line; the dark line smooths it); "
                "validation loss on the same held-out windows at every evaluation. "
                "A widening gap between them is overfitting.</p>")
    for key, alt in (("loss", "loss against tokens"), ("lr", "learning rate"), ("throughput", "tokens per second")):
        if key in pngs:
            body.append(image(pngs[key], alt))
    if inputs.curation:
        body.append(curation_section(inputs.curation, inputs.curation_path, pngs.get("funnel")))
        if inputs.curation.get("bias"):
            body.append(bias_section(inputs.curation["bias"], pngs.get("bias")))
    if inputs.stage_seconds:
        body.append("<h2>Build stages</h2>" + html_table(
            ["stage", "time"], [[stage, duration(seconds)] for stage, seconds in inputs.stage_seconds.items()]))
    config = inputs.config
    if config:
        import yaml

        body.append("<h2>Configuration</h2><details><summary>the run's resolved recipe</summary><pre>"
                    + esc(yaml.safe_dump(config, sort_keys=False)) + "</pre></details>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


# ---------------------------------------------------------------------------------------------
# The command


def draw_all(inputs: ReportInputs) -> dict[str, bytes]:
    plt = _pyplot()
    makers = {"loss": lambda: plot_loss(inputs)}
    if any(_is_number(r.get("lr")) for r in inputs.train_lines):
        makers["lr"] = lambda: plot_learning_rate(inputs)
    if any(_is_number(r.get("tokens_per_s")) for r in inputs.train_lines):
        makers["throughput"] = lambda: plot_throughput(inputs)
    if inputs.eval_result and compression_bars(inputs.eval_result):
        makers["compression"] = lambda: plot_compression(inputs.eval_result, plt)
    if inputs.curation and inputs.curation.get("steps"):
        makers["funnel"] = lambda: plot_funnel(inputs.curation)
    if inputs.curation and inputs.curation.get("bias"):
        from lmsmith.data.bias_pictures import plot_bias

        makers["bias"] = lambda: plot_bias(inputs.curation["bias"], plt)
    return draw_each(makers, plt)


STAGE = "report"


def write_report(path: str | Path, out: str | Path | None = None) -> Path:
    """Render the report of a run or work directory; returns the path of report.html."""
    from lmsmith.core.output import check_output, stage_directory, write_manifest

    inputs = gather(path)
    out = Path(out) if out is not None else (inputs.workdir or inputs.run) / "report"
    check_output(out, STAGE, reads=[path])
    pngs = draw_all(inputs)
    page = render_html(inputs, pngs, model_parameters(inputs.config.get("model") or {}))
    with stage_directory(out, STAGE, reads=[path]) as tmp:
        for name, data in pngs.items():
            write_bytes(tmp / {**PNGS, **OPTIONAL_PNGS}[name], data)
        write_text(tmp / REPORT_HTML, page)
        write_manifest(tmp, STAGE, inputs={"run": str(inputs.run), "workdir": str(inputs.workdir or "")},
                       counts={"pictures": len(pngs)})
    return out / REPORT_HTML


def run(config, inputs: dict, out: str | Path | None = None, *, quiet: bool = False) -> dict:
    """The report stage: report.html and its pictures for a run or a build's work directory."""
    written = write_report(inputs["path"], out)
    if not quiet:
        print(f"report written to {written} (and its pictures as PNGs beside it)")
    return json.loads((written.parent / MANIFEST).read_text(encoding="utf-8"))
