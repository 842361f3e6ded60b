"""The report of a hyperparameter sweep: `summary.md` and PNG plots (matplotlib), from plain rows.

A trial row: {"trial", "config" (its values), "status", "value" (the validation metric of its last
report), "epoch" (its last epoch), "stopped_early", "seconds", "curve" [(epoch, value)], "validation"
(every validation metric it reported)}. No Ray, no platform: the platform gathers the rows.
"""
from __future__ import annotations

import io
import json
import math
from collections import Counter
from typing import Any, Callable, Sequence

from physiofm.evaluation.report import _png, percent


def summarize(*, name: str, space, metric: str, epochs: int, trials: list[dict], best: dict, best_command: str,
              test: dict | None, sessions: list[dict], settings: dict, top_k: int = 5) -> dict[str, Any]:
    """The sweep's summary document (summary.json; summary.md renders it)."""
    finished = [t for t in trials if t["value"] is not None]
    ranked = sorted(finished, key=lambda t: -t["value"])
    stops = Counter(t["epoch"] for t in trials if t["stopped_early"])
    wall = sum(max(0.0, s["ended"] - s["started"]) for s in sessions)
    searched = list(space.searched)
    summary = {
        "name": name, "metric": metric, "epochs": epochs, "searched": searched,
        "space": {n: space.parameters[n].describe() for n in space.parameters},
        "pretraining": list(space.groups), "settings": settings,
        "trials": {"total": len(trials), "finished": len(finished),
                   "completed": sum(1 for t in finished if not t["stopped_early"]),
                   "stopped_early": sum(stops.values()), "errored": sum(t["status"] == "ERROR" for t in trials)},
        "asha_stops": {str(epoch): count for epoch, count in sorted(stops.items())},
        "best": {"trial": best["trial"], "config": {n: best["config"].get(n) for n in space.parameters},
                 "value": best["value"], "validation": best["validation"], "epoch": best["epoch"],
                 "command": best_command},
        "top": [{"trial": t["trial"], "value": t["value"], "epoch": t["epoch"], "stopped_early": t["stopped_early"],
                 "config": {n: t["config"].get(n) for n in searched}} for t in ranked[:top_k]],
        "wall_s": wall, "trial_hours": sum(t["seconds"] for t in trials) / 3600.0,
        "sessions": len(sessions), "resumed": sum(bool(s.get("resumed")) for s in sessions),
        "interrupted": sum(bool(s.get("interrupted")) for s in sessions),
    }
    if test is not None:
        summary["test"] = {"mean": test.get("mean", {}), "std": test.get("std", {}), "chance": test.get("chance", {}),
                           "validation": test.get("validation", {}), "averaged_over": test.get("averaged_over", ""),
                           "output": settings.get("sweep_uri", "") + "/best"}
    return summary


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _metric(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def render_markdown(s: dict[str, Any]) -> str:
    st = s["settings"]
    lines = [f"# Sweep `{s['name']}`: {st['dataset']} {st['label']}, {st['protocol']} ({st['folds']} folds)", ""]
    b = s["best"]
    lines += ["## Best configuration", "",
              f"**{b['trial']}**: validation {s['metric'].replace('validation_', '')} **{_metric(b['value'])}** "
              f"(mean over the folds of each fold's selected epoch, {b['epoch']} epochs trained)", "",
              "| parameter | value |", "|---|---|"]
    lines += [f"| `{n}` | {_fmt(v)} |" for n, v in b["config"].items()]
    lines += ["", "Its validation metrics: " + ", ".join(f"{k} {_metric(v)}" for k, v in sorted(b["validation"].items())
                                                       if isinstance(v, (int, float))), ""]
    test = s.get("test")
    if test:
        mean, std, chance = test["mean"], test["std"], test["chance"]
        keys = [k for k in ("accuracy", "balanced_accuracy", "macro_f1", "kappa", "auroc") if mean.get(k) is not None]
        lines += ["## Its test metric (computed once, after the sweep)", "",
                  "The test folds were predicted only here, by the best configuration, never by a trial. "
                  f"Averaged over {test['averaged_over'] or 'folds'}; outputs in `{test['output']}`.", "",
                  "| " + " | ".join(keys) + " | chance (bal. acc.) |", "|" + "---|" * (len(keys) + 1),
                  "| " + " | ".join(percent(mean[k], std.get(k), 1.0 if k == "kappa" else 100.0) for k in keys)
                  + f" | {percent(chance.get('balanced_accuracy'))} |", ""]
        again = test["validation"].get(s["metric"].replace("validation_", ""))
        if again is not None:
            lines += [f"Validation {s['metric'].replace('validation_', '')} of that run: {_metric(again)} (the trial "
                      f"reported {_metric(b['value'])}).", ""]
    lines += ["Re-run it with the fine-tuning job (same validation metric, bit for bit on CPU):", "", "```",
              b["command"], "```", ""]
    lines += [f"## Top {len(s['top'])} trials", "",
              "| rank | trial | " + s["metric"] + " | epochs | " + " | ".join(f"`{n}`" for n in s["searched"]) + " |",
              "|" + "---|" * (4 + len(s["searched"]))]
    for rank, t in enumerate(s["top"], 1):
        lines.append(f"| {rank} | {t['trial']} | {_metric(t['value'])} | {t['epoch']}"
                     + (" (stopped)" if t["stopped_early"] else "") + " | "
                     + " | ".join(_fmt(t["config"].get(n)) for n in s["searched"]) + " |")
    tr = s["trials"]
    lines += ["", "## The sweep", "",
              f"- trials: {tr['total']} ({tr['completed']} ran all {s['epochs']} epochs, {tr['stopped_early']} stopped "
              f"early by ASHA, {tr['errored']} failed)"]
    if st.get("asha"):
        a = st["asha"]
        stops = ", ".join(f"{c} at epoch {e}" for e, c in s["asha_stops"].items()) or "none"
        lines.append(f"- ASHA on {s['metric']} (grace period {a['grace_period']}, reduction factor "
                     f"{a['reduction_factor']}, max {a['max_t']} epochs): stopped {stops}")
    lines += [f"- search: {st['search']}" + (f" (Optuna TPE, seed {st['seed']}; study `{st['study_name']}` in "
                                             f"`{st['study']}`)" if st["search"] == "optuna" else
                                             f" (seed {st['seed']})"),
              f"- at most {st['max_concurrent']} trials at a time; wall time {s['wall_s'] / 60:.1f} min over "
              f"{s['sessions']} run(s) of the command ({s['resumed']} resumed, {s.get('interrupted', 0)} interrupted); {s['trial_hours']:.3f} trial-hours",
              "- searched: " + "; ".join(f"`{n}` {d}" for n, d in s["space"].items())]
    if s["pretraining"]:
        lines.append(f"- each trial pretrained {', '.join(s['pretraining'])} briefly with its values first")
    if st.get("command"):
        lines += ["", "Command: `" + st["command"] + "`"]
    lines += ["", "Plots: `metric_vs_parameters.png`, `parallel_coordinates.png`, `learning_curves.png`.", ""]
    return "\n".join(lines)


def write(summary: dict[str, Any], trials: list[dict], output: str,
          put: Callable[[str, bytes], None] | None = None) -> list[str]:
    """summary.md, summary.json and the plots under `output`; returns what was written."""
    if put is None:
        from physiofm.data import storage

        def put(uri: str, data: bytes) -> None:
            storage.write_bytes(uri, data)

    written = []
    files = {"summary.md": render_markdown(summary).encode(),
             "summary.json": json.dumps(summary, indent=1, default=str).encode(),
             "metric_vs_parameters.png": metric_vs_parameters_png(trials, summary["searched"], summary["metric"]),
             "parallel_coordinates.png": parallel_coordinates_png(trials, summary["searched"], summary["metric"]),
             "learning_curves.png": learning_curves_png(trials, summary["metric"], len(summary["top"]) or 5)}
    for name, data in files.items():
        uri = f"{output.rstrip('/')}/{name}"
        put(uri, data)
        written.append(uri)
    return written


# ---------------------------------------------------------------- plots

def _axes_grid(n: int, width: float = 3.2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(n, 3)
    rows = max(1, math.ceil(n / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(width * columns, 2.8 * rows), dpi=100, squeeze=False)
    for extra in axes.flat[n:]:
        extra.set_visible(False)
    return figure, list(axes.flat)


def _categorical(values: Sequence[Any]) -> bool:
    return any(isinstance(v, (str, bool)) for v in values)


def metric_vs_parameters_png(trials: list[dict], parameters: Sequence[str], metric: str) -> bytes:
    """The metric of every finished trial against each searched parameter (stopped trials hollow)."""
    done = [t for t in trials if t["value"] is not None]
    figure, axes = _axes_grid(max(1, len(parameters)))
    for ax, name in zip(axes, parameters):
        values = [t["config"].get(name) for t in done]
        if _categorical(values):
            levels = sorted({str(v) for v in values})
            xs = [levels.index(str(v)) for v in values]
            ax.set_xticks(range(len(levels)), levels)
        else:
            xs = values
            if name in ("lr", "backbone_lr", "weight_decay") and all(v and v > 0 for v in values):
                from matplotlib.ticker import NullFormatter

                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
        for x, t in zip(xs, done):
            ax.plot([x], [t["value"]], "o", ms=5, mfc="none" if t["stopped_early"] else "C0", mec="C0")
        ax.set(xlabel=name, ylabel=metric)
    figure.suptitle("metric against each searched parameter (hollow: stopped early by ASHA)", fontsize=9)
    figure.tight_layout()
    return _png(figure)


def parallel_coordinates_png(trials: list[dict], parameters: Sequence[str], metric: str) -> bytes:
    """One line per finished trial through every searched parameter (scaled to [0, 1]) and the metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in trials if t["value"] is not None]
    columns = [*parameters, metric]
    scaled, ticks = [], []
    for name in columns:
        values = [t["value"] if name == metric else t["config"].get(name) for t in done]
        if _categorical(values):
            levels = sorted({str(v) for v in values})
            positions = [levels.index(str(v)) / max(1, len(levels) - 1) for v in values]
            ticks.append(", ".join(levels))
        else:
            numbers = [float(v) for v in values]
            if name in ("lr", "backbone_lr", "weight_decay") and all(v > 0 for v in numbers):
                numbers = [math.log10(v) for v in numbers]
            low, high = (min(numbers), max(numbers)) if numbers else (0.0, 1.0)
            positions = [(v - low) / (high - low) if high > low else 0.5 for v in numbers]
            ticks.append(f"{_fmt(min(values)) if values else ''} .. {_fmt(max(values)) if values else ''}")
        scaled.append(positions)
    figure, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(columns)), 3.8), dpi=100)
    cmap = plt.get_cmap("viridis")
    order = sorted(range(len(done)), key=lambda i: done[i]["value"])
    top = max((t["value"] for t in done), default=1.0)
    low = min((t["value"] for t in done), default=0.0)
    for i in order:
        shade = (done[i]["value"] - low) / (top - low) if top > low else 1.0
        ax.plot(range(len(columns)), [scaled[c][i] for c in range(len(columns))], color=cmap(shade), lw=1.2,
                ls="--" if done[i]["stopped_early"] else "-", alpha=0.9)
    ax.set_xticks(range(len(columns)), [f"{c}\n{t}" for c, t in zip(columns, ticks)], fontsize=7)
    ax.set_yticks([0, 1], ["low", "high"])
    ax.set_title("parallel coordinates (colour: metric; dashed: stopped early)", fontsize=9)
    figure.tight_layout()
    return _png(figure)


def learning_curves_png(trials: list[dict], metric: str, top_k: int = 5) -> bytes:
    """The validation metric per epoch of the top trials (and, faint, of the others)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranked = sorted((t for t in trials if t["value"] is not None and t["curve"]), key=lambda t: -t["value"])
    figure, ax = plt.subplots(figsize=(6.4, 3.8), dpi=100)
    for t in ranked[top_k:]:
        ax.plot(*zip(*t["curve"]), color="0.8", lw=0.8)
    for t in ranked[:top_k]:
        ax.plot(*zip(*t["curve"]), marker=".", lw=1.4, label=f"{t['trial']} ({t['value']:.3f})")
    ax.set(xlabel="fine-tuning epoch", ylabel=f"{metric} (best epoch so far, mean over folds)")
    ax.set_title(f"learning curves of the top {min(top_k, len(ranked))} trials (grey: the others)", fontsize=9)
    if ranked:
        ax.legend(fontsize=7)
    figure.tight_layout()
    return _png(figure)

