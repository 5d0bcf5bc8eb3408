"""The plots of a sweep (PNG, with matplotlib when it is installed): loss history, importance, curves."""

from __future__ import annotations

import io
import math
from pathlib import Path

from lmsmith.core.atomic import write_bytes

PLOTS = {"history": "history.png", "importance": "importance.png", "curves": "curves.png"}


def save_figure(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    write_bytes(path, buffer.getvalue())


def write_plots(study, out: Path) -> dict[str, Path]:
    """The PNG plots; a plot that needs more finished trials than there are is left out."""
    try:
        import matplotlib
    except ImportError:  # the study and the best recipe are what matter; say how to get the plots
        return {}
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as optuna_plots

    written = {}
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    varied = {k for t in complete for k in t.params if len({repr(u.params.get(k)) for u in complete}) > 1}
    makers = {
        "history": (
            lambda: optuna_plots.plot_optimization_history(study, target_name="validation loss"),
            len(complete) >= 1,
        ),
        "importance": (lambda: optuna_plots.plot_param_importances(study, target_name="validation loss"),
                       len(complete) >= 2 and varied),
        "curves": (lambda: plot_curves(study), any(t.intermediate_values for t in study.get_trials(deepcopy=False))),
    }
    for name, (make, possible) in makers.items():
        if not possible:
            continue
        ax = make()
        fig = ax.figure
        save_figure(fig, out / PLOTS[name])
        plt.close(fig)
        written[name] = out / PLOTS[name]
    return written


def plot_curves(study):
    """Validation loss against step for every trial: finished ones solid, pruned ones dashed."""
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    fig, ax = plt.subplots(figsize=(7, 4.2))
    trials = [t for t in study.get_trials(deepcopy=False) if t.intermediate_values]
    best = study.best_trial.number if any(t.state == TrialState.COMPLETE for t in trials) else None
    for t in trials:
        steps = sorted(t.intermediate_values)
        losses = [t.intermediate_values[s] for s in steps]
        if t.number == best:
            ax.plot(
                steps, losses, color="tab:green", linewidth=2.2, marker="o", markersize=3,
                label=f"best (trial {t.number})", zorder=3,
            )
        elif t.state == TrialState.PRUNED:
            ax.plot(steps, losses, color="tab:red", alpha=0.6, linestyle="--", linewidth=1, marker="x", markersize=5)
        else:
            ax.plot(steps, losses, color="tab:blue", alpha=0.6, linewidth=1)
    ax.plot([], [], color="tab:blue", label="finished")
    ax.plot([], [], color="tab:red", linestyle="--", marker="x", label="pruned")
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (nats per token)")
    ax.set_title("Validation loss of each trial")
    ax.grid(alpha=0.3)
    ax.legend()
    values = [v for t in trials for v in t.intermediate_values.values() if math.isfinite(v)]
    last = [t.intermediate_values[max(t.intermediate_values)] for t in trials]
    last = [v for v in last if math.isfinite(v)]
    if values and last:  # first evaluations sit far above the rest: show down from where each trial ended
        low, high = min(values), max(last)
        ax.set_ylim(low - 0.05 * (high - low + 1e-9), high + 0.25 * (high - low + 1e-9))
    return ax
