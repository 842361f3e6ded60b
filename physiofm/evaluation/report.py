"""Reports of a fine-tuning run: a table a paper could quote (markdown), confusion matrices and
training curves (matplotlib, PNG bytes). Input is the run's metrics document (metrics.json)."""
from __future__ import annotations

import io
import math
from typing import Any, Sequence

PROTOCOL_NAMES = {"subject-dependent": "subject-dependent, {k}-fold by trial", "loso": "leave-one-subject-out",
                  "cross-subject": "cross-subject, {k}-fold over subjects", "cross-corpus": "cross-corpus"}
SUBJECT_NOTE = (": each subject's trials are tested once across the k folds, and each subject's windows are "
                "scored together")
COLUMNS = (("accuracy", "Accuracy"), ("balanced_accuracy", "Balanced acc."), ("macro_f1", "Macro-F1"),
           ("weighted_f1", "Weighted-F1"), ("kappa", "Kappa"), ("auroc", "AUROC"))


def percent(mean: float | None, std: float | None = None, scale: float = 100.0) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    text = f"{scale * mean:.1f}" if scale == 100.0 else f"{mean:.3f}"
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        text += f" ± {scale * std:.1f}" if scale == 100.0 else f" ± {std:.3f}"
    return text


def _value(name: str, mean: float | None, std: float | None = None) -> str:
    return percent(mean, std, 1.0 if name == "kappa" else 100.0)


def protocol_name(doc: dict) -> str:
    text = PROTOCOL_NAMES[doc["protocol"]].format(k=doc["split"]["folds_requested"])
    if doc["split"].get("per_subject"):
        text += ", one model per subject"
    if doc["protocol"] == "cross-corpus":
        source = doc["data"].get("source", {}).get("dataset")
        adapt = doc["split"].get("adapt_fraction")
        text += (f" ({source} -> {doc['dataset']}" if source else f" (pretrained -> {doc['dataset']}") + \
            f"; each target subject's first {adapt:.0%} of trials adapt, the rest test)"
    return text


def encoder_name(doc: dict) -> str:
    """"spectral (no pretraining) for eeg, ecg; fine-tuned": modalities sharing an encoder named once."""
    groups: dict[tuple[str, str], list[str]] = {}
    for modality, enc in doc["encoders"].items():
        groups.setdefault((enc["family"], enc.get("source", "")), []).append(modality)
    parts = [f"{family}" + (f" ({source})" if source else "") + f" for {', '.join(mods)}"
             for (family, source), mods in groups.items()]
    return "; ".join(parts) + ("; frozen" if doc["frozen"] else "; fine-tuned")


def render_markdown(doc: dict, command: str = "") -> str:
    """The run's report.md: the headline table, how it was obtained, and the per-fold table."""
    metrics = [(k, title) for k, title in COLUMNS if k in doc["mean"]]
    head = ["Dataset", "Protocol", "Label", "Encoder", "Head", "Folds", *[t for _, t in metrics], "Chance (acc. / bal.)"]
    row = [doc["dataset"].upper() if doc["dataset"] != "seediv" else "SEED-IV", protocol_name(doc),
           f"{doc['label']['name']} ({', '.join(doc['classes'])})", encoder_name(doc),
           f"{doc['head']} ({' ⊕ '.join(doc['modalities'])})",
           str(len(doc["folds"])) + (f" ({len(doc['subjects'])} subjects)" if doc.get("subjects") else ""),
           *[_value(k, doc["mean"].get(k), doc["std"].get(k)) for k, _ in metrics],
           f"{percent(doc['chance'].get('accuracy'))} / {percent(doc['chance'].get('balanced_accuracy'))}"]
    lines = [f"# Emotion recognition: {doc['dataset']} {doc['label']['name']}, {doc['protocol']}", ""]
    if doc.get("shuffled_labels"):
        lines += ["**Control run: labels shuffled among each subject's trials; chance-level scores are expected.**", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), "| " + " | ".join(row) + " |", "",
              f"Mean ± std over {doc.get('averaged_over', 'folds')} (population std){SUBJECT_NOTE if doc.get('averaged_over') == 'subjects' else ''}; "
              "accuracy, F1 and AUROC in %, kappa as is. Chance: the same metrics of always answering the most "
              f"common class of each {'subject' if doc.get('averaged_over') == 'subjects' else 'test fold'}, averaged.", "",
              "## How these numbers were obtained", "",
              f"- Protocol: {protocol_name(doc)}; split seed {doc['split_seed']}; model selection on a validation "
              f"split carved from the training side ({doc['split']['validation_fraction']:.0%} of its "
              f"{doc['split']['unit']}s), best epoch by validation {doc['selection_metric']}; the test folds were "
              "never used to choose anything. The split (which trials / subjects went where) is in metrics.json.",
              f"- Label scheme: {doc['label']['description']}.",
              f"- Data: {doc['data']['windows']} windows of {doc['data']['trials']} trials from "
              f"{doc['data']['subjects']} subjects; preset `{doc['preset']}` {doc['preset_options'] or ''}.",
              f"- Encoders: {encoder_name(doc)}; head {doc['head']}, pooling {doc['pooling']}, hidden "
              f"{doc['hidden_dims']}."]
    for modality, enc in doc["encoders"].items():
        if enc.get("init"):
            lines.append(f"  - {modality}: `{enc['init']}` (sha256 {enc['sha256'][:16]}…)"
                         + (f", pretrained by `{enc['pretraining']}`" if enc.get("pretraining") else ""))
    recipe = doc["config"]
    lines.append(f"- Recipe: {recipe['epochs']} epochs, batch {recipe['batch_size']}, AdamW head lr {recipe['lr']:g}"
                 + ("" if doc["frozen"] else f", backbone lr {recipe['backbone_lr']:g}")
                 + f", weight decay {recipe['weight_decay']:g}, label smoothing {recipe['label_smoothing']:g}, "
                 f"cosine schedule, seed {recipe['seed']}.")
    if command:
        lines += ["", "Command:", "", "```", command, "```"]
    if doc.get("subjects"):
        lines += ["", "## Per subject", "", "| Subject | Test windows | " + " | ".join(t for _, t in metrics)
                  + " | Chance (bal.) |", "|" + "---|" * (3 + len(metrics))]
        for unit in doc["subjects"]:
            lines.append(f"| {unit['subject']} | {unit['windows']} | "
                         + " | ".join(_value(k, unit["metrics"].get(k)) for k, _ in metrics)
                         + f" | {percent(unit['chance'].get('balanced_accuracy'))} |")
    lines += ["", "## Per fold", "", "| Fold | Train / val / test windows | Best epoch | "
              + " | ".join(t for _, t in metrics) + " | Chance (bal.) |", "|" + "---|" * (4 + len(metrics))]
    for fold in doc["folds"]:
        m = fold.get("metrics", {})
        w = fold["windows"]
        lines.append(f"| {fold['name']} | {w['train']} / {w['validation']} / {w['test']} | {fold['best_epoch']} | "
                     + " | ".join(_value(k, m.get(k)) for k, _ in metrics)
                     + f" | {percent(fold.get('chance', {}).get('balanced_accuracy'))} |")
    return "\n".join(lines) + "\n"


def confusion_png(matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    figure, axes = plt.subplots(figsize=(3.2 + 0.4 * len(classes), 3.0 + 0.4 * len(classes)), dpi=100)
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=list(classes)).plot(ax=axes, colorbar=False,
                                                                                  cmap="Blues")
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    return _png(figure)


def curves_png(folds: Sequence[dict[str, Any]], selection_metric: str, title: str) -> bytes:
    """Training loss and validation score per epoch for every fold; the selected epochs marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axes, score_axes) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    for fold in folds:
        epochs = [p["epoch"] for p in fold["curve"]]
        (line,) = loss_axes.plot(epochs, [p["train_loss"] for p in fold["curve"]], lw=1, label=fold["name"])
        if any("val_loss" in p for p in fold["curve"]):
            loss_axes.plot(epochs, [p.get("val_loss", math.nan) for p in fold["curve"]], lw=1, ls="--",
                           color=line.get_color())
        key = f"val_{selection_metric}"
        score_axes.plot(epochs, [p.get(key, math.nan) for p in fold["curve"]], lw=1, color=line.get_color())
        best = [p for p in fold["curve"] if p["epoch"] == fold["best_epoch"]]
        if best and key in best[0]:
            score_axes.plot([best[0]["epoch"]], [best[0][key]], "o", color=line.get_color(), ms=4)
    loss_axes.set(xlabel="epoch", ylabel="loss (train solid, validation dashed)")
    score_axes.set(xlabel="epoch", ylabel=f"validation {selection_metric} (dot: selected epoch)")
    if len(folds) <= 12:
        loss_axes.legend(fontsize=6)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return _png(figure)


def _png(figure) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
