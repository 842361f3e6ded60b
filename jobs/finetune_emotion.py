"""Fine-tune and evaluate encoders on emotion labels under a leak-free protocol, folds in parallel on Ray.

    python jobs/finetune_emotion.py                       # demo DREAMER: EEG ⊕ ECG, valence, by trial
    python jobs/finetune_emotion.py --protocol loso --label arousal
    python jobs/finetune_emotion.py --dataset deap --root /data/DEAP/data_preprocessed_python --protocol loso \\
        --encoder cbramod --init pretrained_weights.pth --modalities eeg --freeze --output runs/deap-loso
    python jobs/finetune_emotion.py --dataset dreamer --root s3://bucket/DREAMER --encoder eeg=cbramod,ecg=ecg \\
        --init eeg=pretrained_weights.pth,ecg=runs/ecg/step_00010000/export/encoder.pt
    ray job submit --working-dir . -- python jobs/finetune_emotion.py --dataset seed --root s3://... \\
        --protocol cross-corpus --source seediv --source-root s3://... --label emotion3

Every window of a trial (subject-dependent) or of a subject (loso, cross-subject) stays on one side
of each fold; the best epoch is chosen on a validation split of the training side only. Writes
OUTPUT/metrics.json (mean, std and chance of accuracy, balanced accuracy, macro/weighted F1, kappa,
AUROC for binary labels; every fold; the split), report.md (the table to quote), split.json,
confusion_fold_NN.png, training_curves.png and folds/fold_NN/model.pt (the selected model).
"""
from __future__ import annotations

import argparse
import shlex
import sys

from physiofm.data.labels import DEFAULT_LABELS, SCHEMES
from physiofm.evaluation.protocols import PROTOCOLS
from physiofm.platform.config import ConfigError
from physiofm.platform.downstream import DATASET_MODALITIES, FAMILIES, HEADS
from physiofm.platform.finetune import FinetuneConfig

DEFAULTS = FinetuneConfig()


def _catalogue() -> str:
    lines = ["datasets, their modalities (channels) and labels (default first):"]
    for dataset, schemes in SCHEMES.items():
        labels = [DEFAULT_LABELS[dataset], *sorted(n for n in schemes if n != DEFAULT_LABELS[dataset])]
        modalities = ", ".join(f"{m} ({c})" for m, c in DATASET_MODALITIES[dataset].items())
        lines.append(f"  {dataset:8s} {modalities}; labels: {', '.join(labels)}")
    lines.append("label schemes: binary ratings are high when rating >= the threshold (DEAP/AMIGOS 5 of 1-9, DREAMER 3 "
                 "of 1-5; ties count as high); quadrant = valence x arousal; emotion3 = SEED's classes (SEED-IV: sad "
                 "and fear -> negative)")
    lines.append("protocols: " + ", ".join(PROTOCOLS))
    lines.append("encoders (--encoder NAME, or per modality eeg=cbramod,ecg=ecg):")
    lines += [f"  {name:10s} {family.description}" for name, family in FAMILIES.items()]
    lines.append("heads: " + "; ".join(f"{name}: {text}" for name, text in HEADS.items()))
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(description=__doc__, epilog=_catalogue(),
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    data = cli.add_argument_group("data and protocol")
    data.add_argument("--dataset", choices=list(SCHEMES), default=DEFAULTS.dataset,
                      help=f"dataset whose native layout --root holds (default {DEFAULTS.dataset})")
    data.add_argument("--root", default="", help="folder or s3:// URI in the dataset's native layout, as the readers "
                                                "take it (default: a small embedded demo corpus)")
    data.add_argument("--protocol", choices=list(PROTOCOLS), default=DEFAULTS.protocol,
                      help=f"evaluation protocol (default {DEFAULTS.protocol})")
    data.add_argument("--label", default="", help="label scheme of the dataset (default: valence; SEED/SEED-IV: "
                                                  "emotion); see the list below")
    data.add_argument("--modalities", default="", help="comma list, e.g. eeg,ecg (default: every modality of the "
                                                       "dataset that the encoders take)")
    data.add_argument("--folds", type=int, default=DEFAULTS.folds,
                      help=f"k of subject-dependent (by trial) and cross-subject k-fold (default {DEFAULTS.folds})")
    data.add_argument("--per-subject", action="store_true",
                      help="subject-dependent: one model per subject and fold (default: one per fold, all subjects)")
    data.add_argument("--source", default="", help="cross-corpus: the labelled source dataset trained on")
    data.add_argument("--source-root", default="", help="cross-corpus: the source's native layout")
    data.add_argument("--adapt-fraction", type=float, default=DEFAULTS.adapt_fraction,
                      help="cross-corpus: share of each target subject's first trials (in trial order) that adapt; "
                           f"the rest test (default {DEFAULTS.adapt_fraction})")
    data.add_argument("--validation-fraction", type=float, default=DEFAULTS.validation_fraction,
                      help="share of the training side's trials or subjects held out for model selection "
                           f"(default {DEFAULTS.validation_fraction})")
    data.add_argument("--window-s", type=float, default=DEFAULTS.window_s,
                      help=f"window length in s for patch encoders (default {DEFAULTS.window_s:g}; SCMM 1, PhysioSync 5)")
    data.add_argument("--shuffle-labels", action="store_true",
                      help="control run: permute each subject's trial labels (expect chance)")
    model = cli.add_argument_group("encoders and head")
    model.add_argument("--encoder", default=DEFAULTS.encoder, help="encoder family, or MODALITY=NAME pairs "
                                                                    f"(default {DEFAULTS.encoder})")
    model.add_argument("--init", default="", help="pretrained weights: a file (CBraMod's pretrained_weights.pth, a "
                                                  "physiofm export/encoder.pt), PhysioSync's export folder, or "
                                                  "MODALITY=PATH pairs")
    model.add_argument("--head", choices=list(HEADS), default=None, help="default concat (scmm with --encoder scmm)")
    model.add_argument("--freeze", action="store_true", help="keep the encoders' weights fixed (linear probe / MLP)")
    model.add_argument("--pooling", choices=["mean", "flatten"], default=None,
                       help="patch encoders' embedding (default: flatten for a trained CBraMod/ECG encoder, else mean)")
    model.add_argument("--hidden", default="", help="hidden widths of the MLP head, e.g. 256,64 (default: 128 for "
                                                    "spectral, 256 for mean pooling, N*200,200 for flatten; '' none)")
    model.add_argument("--dropout", type=float, default=DEFAULTS.dropout, help=f"(default {DEFAULTS.dropout})")
    optim = cli.add_argument_group("training")
    optim.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help=f"(default {DEFAULTS.epochs})")
    optim.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help=f"(default {DEFAULTS.batch_size})")
    optim.add_argument("--lr", type=float, default=DEFAULTS.lr,
                       help="head learning rate (default: 3e-3 with the spectral encoder, else 1e-3, CBraMod's)")
    optim.add_argument("--backbone-lr", type=float, default=DEFAULTS.backbone_lr,
                       help=f"learning rate of trained encoders (default {DEFAULTS.backbone_lr:g})")
    optim.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay,
                       help=f"AdamW weight decay (default {DEFAULTS.weight_decay:g})")
    optim.add_argument("--label-smoothing", type=float, default=DEFAULTS.label_smoothing,
                       help=f"(default {DEFAULTS.label_smoothing:g})")
    optim.add_argument("--selection-metric", default=DEFAULTS.selection_metric,
                       help=f"validation metric that picks the epoch (default {DEFAULTS.selection_metric})")
    optim.add_argument("--seed", type=int, default=DEFAULTS.seed, help="split, initialisation and batch order "
                                                                      f"(default {DEFAULTS.seed})")
    run = cli.add_argument_group("run")
    run.add_argument("--output", default="", help="folder or s3:// URI for the results (default "
                                                  "runs/finetune-DATASET-LABEL-PROTOCOL)")
    run.add_argument("--cpus-per-fold", type=float, default=DEFAULTS.cpus_per_fold,
                     help=f"CPUs of each fold's Ray task (default {DEFAULTS.cpus_per_fold:g})")
    run.add_argument("--gpus-per-fold", type=float, default=DEFAULTS.gpus_per_fold,
                     help=f"GPUs of each fold's Ray task (default {DEFAULTS.gpus_per_fold:g})")
    run.add_argument("--prepared-cache", default="", help="where prepared windows are kept (default: the cache "
                                                          "folder, $PHYSIOFM_CACHE or ~/.cache/physiofm)")
    run.add_argument("--no-models", action="store_true", help="do not write each fold's selected model")
    run.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a new local Ray)")
    return cli


def config_from_args(args: argparse.Namespace, argv: list[str]) -> FinetuneConfig:
    hidden = tuple(int(h) for h in args.hidden.split(",") if h.strip()) if args.hidden else ()
    label = args.label or DEFAULT_LABELS[args.dataset]
    output = args.output or f"runs/finetune-{args.dataset}-{label}-{args.protocol}"
    return FinetuneConfig(
        dataset=args.dataset, root=args.root, protocol=args.protocol, label=args.label, encoder=args.encoder,
        init=args.init, modalities=tuple(m for m in args.modalities.split(",") if m), head=args.head or "",
        freeze=args.freeze, pooling=args.pooling or "", hidden_dims=hidden, dropout=args.dropout, folds=args.folds,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, backbone_lr=args.backbone_lr,
        weight_decay=args.weight_decay, label_smoothing=args.label_smoothing, window_s=args.window_s, seed=args.seed,
        validation_fraction=args.validation_fraction, per_subject=args.per_subject,
        adapt_fraction=args.adapt_fraction, source=args.source, source_root=args.source_root,
        shuffle_labels=args.shuffle_labels, selection_metric=args.selection_metric, output=output,
        prepared_cache=args.prepared_cache, cpus_per_fold=args.cpus_per_fold, gpus_per_fold=args.gpus_per_fold,
        save_models=not args.no_models,
        command=" ".join(shlex.quote(a) for a in ["python", "jobs/finetune_emotion.py", *argv]))


def main(argv: list[str] | None = None) -> int:
    from physiofm.evaluation import ProtocolError
    from physiofm.evaluation.report import render_markdown
    from physiofm.platform.finetune import plan, run_protocol, write_outputs

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    cfg = config_from_args(args, argv)
    try:
        checked = plan(cfg)  # every check that needs no data: before Ray or any worker starts
        result = run_protocol(cfg, address=args.address, checked=checked)
    except (ConfigError, ProtocolError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    written = write_outputs(result, cfg.output)
    doc = result.document
    table = [line for line in render_markdown(doc).split("\n") if line.startswith("|")][:3]
    print("=" * 72)
    print(f"physiofm finetune: {doc['dataset']} {doc['label']['name']}, {doc['protocol']}, {len(doc['folds'])} folds "
          f"in {doc['seconds']:.0f} s")
    print("\n".join(table))
    print(f"  wrote {len(written)} files under {cfg.output}:")
    for name in ("metrics.json", "report.md", "split.json", "training_curves.png"):
        print(f"    {name}")
    print(f"    confusion_fold_NN.png x {sum('confusion_' in w for w in written)}"
          + (f", folds/fold_NN/model.pt x {sum(w.endswith('model.pt') for w in written)}" if cfg.save_models else ""))
    if not doc["shuffled_labels"]:
        print("  control: the same command with --shuffle-labels should score at chance")
    print("=" * 72)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
