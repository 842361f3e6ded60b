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


EMOTION_DEMO_SOURCE = {"dreamer": "deap", "deap": "dreamer", "amigos": "dreamer", "seed": "seediv", "seediv": "seed"}


def emotion_demo_corpus(dataset: str, folder: Path, seed: int = 0) -> str:
    """A labelled corpus in `dataset`'s native layout with the synthetic writers' planted effect
    (valence -> frontal alpha asymmetry; arousal -> beta power, skin conductance, heart rate):
    DEAP 6 subjects x 10 trials of 60 s; DREAMER 6 x 12 films of 20 s; AMIGOS 6 x 12 trials of
    20 s (one empty); SEED 4 subjects x 15 trials of 12 s; SEED-IV 4 subjects x 24 trials of 8 s."""
    from physiofm.data import synthetic

    writers = {
        "deap": lambda out: synthetic.write_deap(out, subjects=tuple(range(1, 7)), n_trials=10, seed=seed),
        "dreamer": lambda out: synthetic.write_dreamer(out, n_subjects=6, n_trials=12, stimulus_s=20.0, seed=seed),
        "amigos": lambda out: synthetic.write_amigos(out, participants=tuple(range(1, 7)), n_trials=12, trial_s=20.0,
                                                     empty_trials=(12,), seed=seed),
        "seed": lambda out: synthetic.write_seed(out, subjects=(1, 2, 3, 4), trial_s=12.0, seed=seed),
        "seediv": lambda out: synthetic.write_seediv(out, sessions=(1,), subjects=(1, 2, 3, 4), trial_s=8.0, seed=seed),
    }
    if dataset not in writers:
        raise ValueError(f"dataset must be one of {sorted(writers)}, got {dataset!r}")
    done = folder.parent / f".{folder.name}.complete"
    if not done.exists():
        writers[dataset](folder)
        done.write_text("written by physiofm.platform.demo.emotion_demo_corpus\n")
    return str(folder)
