"""Embedded demo corpora for jobs run without `--corpus`: small synthetic trees in native layouts,
written once into a cache folder and read back through the real readers and pipeline."""
from __future__ import annotations

from pathlib import Path


def _demo(kind: str, folder: Path, n_recordings: int) -> str:
    from physiofm.data.synthetic import write_demo_corpus

    done = folder.parent / f".{folder.name}.complete"  # beside the tree, not a file the pipeline walks
    if not done.exists():
        write_demo_corpus(kind, folder, n_recordings=n_recordings)
        done.write_text("written by physiofm.data.synthetic.write_demo_corpus\n")
    return str(folder)


def ecg_demo_corpus(folder: Path) -> str:
    """PTB-XL-like WFDB tree: 48 12-lead, 500 Hz, 10-s records (one window each)."""
    return _demo("ecg", folder, 48)


def eeg_demo_corpus(folder: Path) -> str:
    """TUEG-like EDF tree: 4 six-minute recordings (8 windows of 30 s each after the recipe's trims)."""
    return _demo("eeg", folder, 4)


def scmm_demo_corpus(source: str, folder: Path) -> str:
    """The source corpus of an SCMM pair in its native layout: SEED (2 subjects x 15 trials of 8 s),
    SEED-IV (2 subjects x 24 trials of 6 s) or DEAP (2 subjects x 4 trials of 60 s)."""
    return _demo(source, folder, 2)


def physiosync_demo_corpus(dataset: str, folder: Path) -> str:
    """DEAP (4 subjects x 4 trials of 60 s) or DREAMER (4 subjects x 6 films of 30 s), with
    stimulus-locked responses shared by the subjects of a trial."""
    return _demo(dataset, folder, 4)
