"""Seeded, clearly synthetic corpora in the datasets' exact native layouts, written through the
same libraries the real files come from (pickle, scipy.io.savemat, wfdb.wrsamp, MNE's EDF export).

Signals are physiologically plausible, not physiological: EEG with a 1/f background and an
occipital alpha rhythm (µV), ECG with P-QRS-T beats and heart-rate variability (mV), GSR with
skin-conductance responses (µS), respiration, plethysmograph and temperature. In the emotion
datasets each film clip (trial) also evokes a response shared by every subject who watched it
(an EEG theta response with a fixed scalp pattern, skin-conductance responses at fixed times, a
heart rate), so that methods aligning subjects on the same stimulus have something to find.
Each trial's ratings (or film class) also show in its stimulus seconds, as a `PlantedEffect`
(valence -> frontal alpha asymmetry; arousal -> beta power, skin-conductance level, heart rate),
so that emotion recognition can be shown to learn above chance, and at chance on shuffled labels.
"""
from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from scipy.signal import fftconvolve

from physiofm.data.channels import CBRAMOD_19, DEAP_EEG_32, ECG_12, EMOTIV_14, SEED_62
from physiofm.data.readers.matlab_layouts import AMIGOS_RATINGS

# P, Q, R, S, T waves: (centre s after the R peak, width s, amplitude per lead group).
_WAVES = ((-0.20, 0.025), (-0.03, 0.010), (0.0, 0.012), (0.03, 0.010), (0.25, 0.040))
_WAVE_GAIN = np.array([0.12, -0.10, 1.0, -0.25, 0.30])


def eeg(rng: np.random.Generator, names: tuple[str, ...] | list[str], seconds: float, sfreq: float) -> np.ndarray:
    """(channels, samples) in µV: 1/f background (~8 µV rms) + alpha (10 Hz) strongest occipitally."""
    n = int(round(seconds * sfreq))
    spectrum = np.fft.rfft(rng.standard_normal((len(names), n)), axis=1)
    freqs = np.fft.rfftfreq(n, 1 / sfreq)
    spectrum *= 1 / np.sqrt(np.maximum(freqs, 1.0))
    background = np.fft.irfft(spectrum, n, axis=1)
    background *= 8.0 / (background.std(axis=1, keepdims=True) + 1e-12)
    t = np.arange(n) / sfreq
    envelope = 1 + 0.5 * np.sin(2 * np.pi * 0.1 * t + rng.uniform(0, 2 * np.pi))
    occipital = np.array([2.0 if name.upper().startswith(("O", "PO", "P")) else 0.6 for name in names])
    alpha = np.sin(2 * np.pi * rng.uniform(9.5, 10.5) * t + rng.uniform(0, 2 * np.pi, (len(names), 1)))
    return background + 6.0 * occipital[:, None] * envelope * alpha


def beat_times(rng: np.random.Generator, seconds: float, bpm: float = 70.0) -> np.ndarray:
    intervals = 60.0 / bpm * (1 + 0.05 * rng.standard_normal(int(seconds * bpm / 60) + 4))
    return np.cumsum(intervals) - intervals[0] / 2


def ecg(rng: np.random.Generator, n_leads: int, seconds: float, sfreq: float, bpm: float = 70.0) -> np.ndarray:
    """(leads, samples) in mV: beats convolved with P-QRS-T waves, lead-specific projections."""
    n = int(round(seconds * sfreq))
    train = np.zeros(n)
    peaks = (beat_times(rng, seconds, bpm) * sfreq).astype(int)
    train[peaks[(peaks >= 0) & (peaks < n)]] = 1.0
    half = int(0.35 * sfreq)
    lags = np.arange(-half, half + 1) / sfreq
    kernels = np.stack([np.exp(-0.5 * ((lags - c) / w) ** 2) for c, w in _WAVES])
    waves = fftconvolve(np.broadcast_to(train, (len(_WAVES), n)), kernels, mode="same", axes=1)
    projection = _WAVE_GAIN * rng.uniform(0.4, 1.3, (n_leads, 1)) * rng.choice([1, -1], (n_leads, 1), p=[0.8, 0.2])
    t = np.arange(n) / sfreq
    wander = 0.05 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 2 * np.pi, (n_leads, 1)))
    return projection @ waves + wander + 0.01 * rng.standard_normal((n_leads, n))


def gsr(rng: np.random.Generator, seconds: float, sfreq: float, onsets_s: np.ndarray | None = None,
        shift: float = 0.0, shift_from_s: float = 0.0) -> np.ndarray:
    """(samples,) skin conductance in µS: a tonic level plus skin-conductance responses (at
    `onsets_s`, e.g. a stimulus's, or at random times), raised by `shift` from `shift_from_s` on
    (an arousing stimulus, rising over 2 s)."""
    n = int(round(seconds * sfreq))
    impulses = np.zeros(n)
    if onsets_s is None:
        onsets = rng.choice(n, size=max(1, int(seconds / 8)), replace=False)
    else:
        onsets = np.clip((np.asarray(onsets_s) * sfreq).astype(int), 0, n - 1)
    impulses[onsets] = rng.uniform(0.1, 0.6, onsets.size)
    lags = np.arange(int(10 * sfreq)) / sfreq
    response = np.exp(-lags / 3.0) - np.exp(-lags / 0.7)
    tonic = rng.uniform(2, 8) + 0.3 * np.sin(2 * np.pi * np.arange(n) / sfreq / 120)
    if shift:
        tonic = tonic + shift * np.clip((np.arange(n) / sfreq - shift_from_s) / 2.0, 0.0, 1.0)
    return tonic + np.convolve(impulses, response)[:n]


def peripheral(rng: np.random.Generator, seconds: float, sfreq: float, gsr_onsets_s: np.ndarray | None = None,
               bpm: float = 70.0, gsr_shift: float = 0.0, stimulus_from_s: float = 0.0) -> dict[str, np.ndarray]:
    n = int(round(seconds * sfreq))
    t = np.arange(n) / sfreq
    pulse = ecg(rng, 1, seconds, sfreq, bpm=bpm)[0]
    return {
        "gsr": gsr(rng, seconds, sfreq, gsr_onsets_s, shift=gsr_shift, shift_from_s=stimulus_from_s),
        "resp": np.sin(2 * np.pi * 0.25 * t) + 0.05 * rng.standard_normal(n),
        "ppg": np.convolve(np.clip(pulse, 0, None), np.hanning(int(0.3 * sfreq)), mode="same"),
        "temp": 33.0 + 0.01 * np.cumsum(rng.standard_normal(n)) / np.sqrt(n),
        "eog": 20.0 * rng.standard_normal(n),
        "emg": 5.0 * rng.standard_normal(n),
    }


# ---------------------------------------------------------------- planted emotional effect

@dataclass(frozen=True)
class PlantedEffect:
    """How strongly a trial's emotion shows in its stimulus seconds (0 switches a path off).

    Valence and arousal are taken to [-1, 1] from the dataset's rating scale (or a film class).
    - `alpha_asymmetry`: frontal alpha (8-13 Hz, ~6 µV) stronger over the right than the left
      hemisphere with valence (more left-frontal activity, i.e. less left alpha, when positive);
    - `beta_power`: 13-30 Hz activity over the scalp grows with arousal (0 to ~5 µV rms);
    - `gsr_level`: tonic skin conductance rises with arousal (up to +3 µS);
    - `heart_rate`: beats per minute rise with arousal (+-15 bpm; ECG and plethysmograph).
    `trial_noise` adds trial-level noise to the expressed emotion, drawn independently for the
    EEG and for the peripheral signals, so each modality carries an independent view of it.
    """

    alpha_asymmetry: float = 1.0
    beta_power: float = 1.0
    gsr_level: float = 1.0
    heart_rate: float = 1.0
    trial_noise: float = 0.25


NO_EFFECT = PlantedEffect(0.0, 0.0, 0.0, 0.0, 0.0)
_FRONTAL = re.compile(r"^(FP|AF|F)(\d+)$")


def frontal_side(name: str) -> int:
    """-1 for a left frontal electrode (odd number), +1 for a right one, 0 elsewhere."""
    match = _FRONTAL.match(name.strip().upper())
    return 0 if match is None else (1 if int(match[2]) % 2 == 0 else -1)


def band_noise(rng: np.random.Generator, n_rows: int, n: int, sfreq: float, band: tuple[float, float]) -> np.ndarray:
    """(rows, n) independent band-limited noise, unit rms per row."""
    spectrum = np.fft.rfft(rng.standard_normal((n_rows, n)), axis=1)
    freqs = np.fft.rfftfreq(n, 1 / sfreq)
    spectrum[:, (freqs < band[0]) | (freqs > band[1])] = 0
    wave = np.fft.irfft(spectrum, n, axis=1)
    return wave / (wave.std(axis=1, keepdims=True) + 1e-12)


@dataclass(frozen=True)
class Expressed:
    """The emotion one trial expresses, per modality, in [-1, 1]-ish units."""

    eeg_valence: float
    eeg_arousal: float
    body_arousal: float

    @classmethod
    def draw(cls, rng: np.random.Generator, valence: float, arousal: float, effect: PlantedEffect) -> "Expressed":
        noise = effect.trial_noise * rng.standard_normal(3)
        return cls(valence + noise[0], arousal + noise[1], arousal + noise[2])


def scaled(rating: float, low: float, high: float) -> float:
    """A rating on [low, high] mapped to [-1, 1]."""
    return 2.0 * (rating - low) / (high - low) - 1.0


def emotional_eeg(rng: np.random.Generator, names, seconds: float, sfreq: float, expressed: Expressed,
                  effect: PlantedEffect) -> np.ndarray:
    """(channels, samples) in µV added to a trial's stimulus seconds."""
    n = int(round(seconds * sfreq))
    out = np.zeros((len(names), n))
    side = np.array([frontal_side(name) for name in names], dtype=np.float64)
    if effect.alpha_asymmetry and side.any():
        gain = np.clip(1.0 + 0.6 * effect.alpha_asymmetry * side * expressed.eeg_valence, 0.0, None)
        out += 6.0 * (np.abs(side) * gain)[:, None] * band_noise(rng, 1, n, sfreq, (8.0, 13.0))
    if effect.beta_power:
        amplitude = 2.5 * max(0.0, 1.0 + effect.beta_power * expressed.eeg_arousal)
        out += amplitude * band_noise(rng, len(names), n, sfreq, (13.0, 30.0))
    return out


def heart_rate(base_bpm: float, expressed: Expressed, effect: PlantedEffect) -> float:
    return float(np.clip(base_bpm + 15.0 * effect.heart_rate * expressed.body_arousal, 40.0, 150.0))


def skin_conductance_shift(expressed: Expressed, effect: PlantedEffect) -> float:
    return float(1.5 * effect.gsr_level * (1.0 + np.clip(expressed.body_arousal, -1.0, 1.0)))


def effect_rng(seed: int, *keys: int) -> np.random.Generator:
    """Draws of the planted effect, apart from the signal's own (adding an effect leaves those as they were)."""
    return np.random.default_rng([seed, 104729, *keys])


# ---------------------------------------------------------------- emotion datasets

def stimulus(seed: int, trial: int) -> np.random.Generator:
    """The draws of what film clip `trial` evokes in everyone who watches it (same for all subjects)."""
    return np.random.default_rng([seed, 7919, trial])


def evoked_eeg(shared: np.random.Generator, n_channels: int, seconds: float, sfreq: float,
               band: tuple[float, float] = (4.0, 8.0), amplitude_uv: float = 6.0) -> np.ndarray:
    """(channels, samples) in µV: a band-limited response with a fixed scalp pattern."""
    n = int(round(seconds * sfreq))
    spectrum = np.fft.rfft(shared.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / sfreq)
    spectrum[(freqs < band[0]) | (freqs > band[1])] = 0
    wave = np.fft.irfft(spectrum, n)
    return amplitude_uv * shared.standard_normal((n_channels, 1)) * wave / (wave.std() + 1e-12)


def write_deap(out_dir: str | Path, subjects: tuple[int, ...] = (1,), n_trials: int = 4, seed: int = 0,
               effect: PlantedEffect = PlantedEffect(), stimulus_s: float = 60.0) -> list[Path]:
    """`data_preprocessed_python/sXX.dat`: pickle (protocol 2, latin-1 readable) of
    {'data': (trials, 40, 8064) float32 at 128 Hz with the 3-s baseline first, 'labels': (trials, 4)}
    (`stimulus_s` other than DEAP's 60 s gives shorter trials, for quick tests)."""
    folder = Path(out_dir) / "data_preprocessed_python"
    folder.mkdir(parents=True, exist_ok=True)
    seconds, onset = 3.0 + stimulus_s, 3.0
    start = int(onset * 128)
    paths = []
    for subject in subjects:
        rng = np.random.default_rng([seed, subject])
        planted = effect_rng(seed, subject)
        ratings = np.round(planted.uniform(1, 9, (n_trials, 4)), 2)
        base_bpm = planted.uniform(62.0, 78.0)
        trials = []
        for trial in range(n_trials):
            shared = stimulus(seed, trial)
            expressed = Expressed.draw(planted, scaled(ratings[trial, 0], 1, 9), scaled(ratings[trial, 1], 1, 9), effect)
            response = evoked_eeg(shared, len(DEAP_EEG_32), seconds, 128.0)
            other = peripheral(rng, seconds, 128.0, gsr_onsets_s=shared.uniform(onset, seconds, 6),
                               bpm=heart_rate(base_bpm, expressed, effect),
                               gsr_shift=skin_conductance_shift(expressed, effect), stimulus_from_s=onset)
            rows = [other[k] for k in ("eog", "eog", "emg", "emg", "gsr", "resp", "ppg", "temp")]
            brain = eeg(rng, DEAP_EEG_32, seconds, 128.0) + response
            brain[:, start:] += emotional_eeg(planted, DEAP_EEG_32, stimulus_s, 128.0, expressed, effect)
            trials.append(np.vstack([brain, np.stack(rows)]))
        content = {"data": np.stack(trials).astype(np.float32), "labels": ratings}
        path = folder / f"s{subject:02d}.dat"
        path.write_bytes(pickle.dumps(content, protocol=2))
        paths.append(path)
    return paths


SEED_LABELS = (1, 0, -1, -1, 0, 1, -1, 0, 1, 1, 0, -1, 0, 1, -1)
# (valence, arousal) a film class expresses: SEED -1/0/1, SEED-IV 0 neutral, 1 sad, 2 fear, 3 happy
SEED_EXPRESSED = {-1: (-1.0, 0.5), 0: (0.0, -0.5), 1: (1.0, 0.5)}
SEED_IV_EXPRESSED = {0: (0.0, -0.5), 1: (-1.0, -0.5), 2: (-1.0, 1.0), 3: (1.0, 0.5)}


def _seed_trials(rng: np.random.Generator, planted: np.random.Generator, prefix: str, classes: tuple[int, ...],
                 expressed_by_class: dict, trial_s: float, effect: PlantedEffect) -> dict[str, np.ndarray]:
    trials = {}
    for k, film in enumerate(classes, start=1):
        expressed = Expressed.draw(planted, *expressed_by_class[film], effect)
        trials[f"{prefix}_eeg{k}"] = eeg(rng, SEED_62, trial_s, 200.0) + emotional_eeg(
            planted, SEED_62, trial_s, 200.0, expressed, effect)
    return trials


def write_seed(out_dir: str | Path, subjects: tuple[int, ...] = (1,), trial_s: float = 4.0, seed: int = 0,
               effect: PlantedEffect = PlantedEffect()) -> list[Path]:
    """`Preprocessed_EEG/{subject}_{date}.mat` with 15 `*_eegN` trials (62, T) at 200 Hz, and `label.mat`."""
    folder = Path(out_dir) / "Preprocessed_EEG"
    folder.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(folder / "label.mat", {"label": np.array([SEED_LABELS], dtype=np.int16)})
    paths = []
    for subject in subjects:
        rng = np.random.default_rng([seed, subject])
        path = folder / f"{subject}_20140411.mat"
        scipy.io.savemat(path, _seed_trials(rng, effect_rng(seed, subject), f"s{subject}x", SEED_LABELS,
                                            SEED_EXPRESSED, trial_s, effect))
        paths.append(path)
    return paths


def write_seediv(out_dir: str | Path, sessions: tuple[int, ...] = (1,), subjects: tuple[int, ...] = (1,),
                 trial_s: float = 4.0, seed: int = 0, effect: PlantedEffect = PlantedEffect()) -> list[Path]:
    """`eeg_raw_data/{session}/{subject}_{date}.mat` with 24 `*_eegN` trials (62, T) at 200 Hz."""
    from physiofm.data.readers.matlab_layouts import SEED_IV_LABELS

    paths = []
    for session in sessions:
        folder = Path(out_dir) / "eeg_raw_data" / str(session)
        folder.mkdir(parents=True, exist_ok=True)
        for subject in subjects:
            rng = np.random.default_rng([seed, session, subject])
            path = folder / f"{subject}_2018061{session}.mat"
            scipy.io.savemat(path, _seed_trials(rng, effect_rng(seed, session, subject), f"p{subject}",
                                                SEED_IV_LABELS[str(session)], SEED_IV_EXPRESSED, trial_s, effect))
            paths.append(path)
    return paths


def _cells(arrays: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    cells = np.empty(shape, dtype=object)
    for index, array in enumerate(arrays):
        cells.flat[index] = array
    return cells


def write_dreamer(out_dir: str | Path, n_subjects: int = 2, n_trials: int = 18, stimulus_s: float = 6.0,
                  baseline_s: float = 3.0, seed: int = 0, effect: PlantedEffect = PlantedEffect()) -> Path:
    """`DREAMER.mat`: struct DREAMER.Data{subject}.EEG/ECG.{baseline,stimuli}{trial} (time × 14 at
    128 Hz, time × 2 at 256 Hz) and ScoreValence/Arousal/Dominance (18 × 1, 1-5)."""
    rng = np.random.default_rng(seed)
    shared = [stimulus(seed, trial) for trial in range(n_trials)]
    responses = [evoked_eeg(s, len(EMOTIV_14), stimulus_s, 128.0) for s in shared]
    film_bpm = [s.uniform(-4.0, 4.0) for s in shared]  # what each film does to everyone's heart rate
    subjects = []
    for index in range(n_subjects):
        planted = effect_rng(seed, index)
        scores = {f"Score{k}": planted.integers(1, 6, (n_trials, 1)).astype(float)
                  for k in ("Valence", "Arousal", "Dominance")}
        expressed = [Expressed.draw(planted, scaled(scores["ScoreValence"][t, 0], 1, 5),
                                    scaled(scores["ScoreArousal"][t, 0], 1, 5), effect) for t in range(n_trials)]
        base_bpm = planted.uniform(62.0, 78.0)
        signals = {"EEG": {}, "ECG": {}}
        for part, seconds in (("baseline", baseline_s), ("stimuli", stimulus_s)):
            stimuli = part == "stimuli"
            eeg_trials = []
            for t in range(n_trials):
                brain = eeg(rng, EMOTIV_14, seconds, 128.0)
                if stimuli:
                    brain += responses[t] + emotional_eeg(planted, EMOTIV_14, seconds, 128.0, expressed[t], effect)
                eeg_trials.append(brain.T + 4200.0)  # Emotiv DC offset
            bpm = [heart_rate(base_bpm + film_bpm[t], expressed[t], effect) if stimuli else base_bpm
                   for t in range(n_trials)]
            signals["EEG"][part] = _cells(eeg_trials, (n_trials, 1))
            signals["ECG"][part] = _cells([ecg(rng, 2, seconds, 256.0, bpm=bpm[t]).T for t in range(n_trials)],
                                          (n_trials, 1))
        subjects.append({"Age": "25", "Gender": "female", "EEG": signals["EEG"], "ECG": signals["ECG"], **scores})
    root = {"Data": _cells(subjects, (1, n_subjects)), "EEG_SamplingRate": 128.0, "ECG_SamplingRate": 256.0,
            "EEG_Electrodes": _cells(list(EMOTIV_14), (1, 14)), "noOfSubjects": float(n_subjects),
            "noOfVideoSequences": float(n_trials), "Disclaimer": "synthetic"}
    path = Path(out_dir) / "DREAMER.mat"
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"DREAMER": root})
    return path


def write_amigos(out_dir: str | Path, participants: tuple[int, ...] = (1,), n_trials: int = 20, trial_s: float = 4.0,
                 empty_trials: tuple[int, ...] = (20,), seed: int = 0, effect: PlantedEffect = PlantedEffect()) -> list[Path]:
    """`Data_Preprocessed_P{NN}.mat`: joined_data (1 × 20 cells, time × 17: 14 EEG, 2 ECG, GSR at
    128 Hz) and labels_selfassessment (1 × 20 cells of 12 ratings); `empty_trials` are 0 × 17."""
    paths = []
    for participant in participants:
        rng = np.random.default_rng([seed, participant])
        planted = effect_rng(seed, participant)
        base_bpm = planted.uniform(62.0, 78.0)
        trials, ratings = [], []
        for t in range(1, n_trials + 1):
            if t in empty_trials:
                trials.append(np.zeros((0, 17)))
                ratings.append(np.zeros((0, 12)))
                continue
            scores = np.round(planted.uniform(1, 9, (1, len(AMIGOS_RATINGS))), 2)  # arousal, valence, ...
            expressed = Expressed.draw(planted, scaled(scores[0, 1], 1, 9), scaled(scores[0, 0], 1, 9), effect)
            brain = eeg(rng, EMOTIV_14, trial_s, 128.0) + emotional_eeg(planted, EMOTIV_14, trial_s, 128.0,
                                                                         expressed, effect)
            trials.append(np.vstack([brain, ecg(rng, 2, trial_s, 128.0, bpm=heart_rate(base_bpm, expressed, effect)),
                                     gsr(rng, trial_s, 128.0, shift=skin_conductance_shift(expressed, effect))]).T)
            ratings.append(scores)
        path = Path(out_dir) / f"Data_Preprocessed_P{participant:02d}.mat"
        path.parent.mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(path, {"joined_data": _cells(trials, (1, n_trials)),
                                "labels_selfassessment": _cells(ratings, (1, n_trials))})
        paths.append(path)
    return paths


# ---------------------------------------------------------------- pretraining corpora

TUEG_EXTRA = ("A1", "A2")


def write_tueg(out_dir: str | Path, n_subjects: int = 2, duration_s: float = 60.0, sfreq: float = 250.0,
               montage: str = "01_tcp_ar", drop: tuple[str, ...] = (), seed: int = 0) -> list[Path]:
    """TUEG-like tree `edf/000/{subject}/s001_2015/{montage}/{subject}_s001_t000.edf` with labels
    `EEG FP1-REF` (`-LE` for 02_tcp_le), plus A1/A2 and an EKG channel, via MNE's EDF export."""
    import mne

    suffix = "LE" if "_le" in montage else "REF"
    names = [n for n in (*CBRAMOD_19, *TUEG_EXTRA) if n not in drop]
    labels = [f"EEG {n}-{suffix}" for n in names] + [f"EEG EKG1-{suffix}"]
    paths = []
    for index in range(n_subjects):
        rng = np.random.default_rng([seed, index])
        subject = "".join(chr(ord("a") + (index // 26 ** k) % 26) for k in range(8))[::-1]
        data = np.vstack([eeg(rng, names, duration_s, sfreq), 1000.0 * ecg(rng, 1, duration_s, sfreq)]) * 1e-6
        raw = mne.io.RawArray(data, mne.create_info(labels, sfreq, "eeg"), verbose="error")
        path = Path(out_dir) / "edf" / "000" / subject / "s001_2015" / montage / f"{subject}_s001_t000.edf"
        path.parent.mkdir(parents=True, exist_ok=True)
        mne.export.export_raw(path, raw, fmt="edf", overwrite=True, verbose="error")
        paths.append(path)
    return paths


def write_ptbxl(out_dir: str | Path, n_records: int = 3, sfreq: float = 500.0, duration_s: float = 10.0,
                seed: int = 0, leads: tuple[str, ...] = ECG_12) -> list[Path]:
    """PTB-XL-like `records500/00000/{id:05d}_hr.{hea,dat}` (WFDB format 16, 1000 adu/mV) and
    `ptbxl_database.csv`; returns the header paths."""
    import wfdb

    folder = Path(out_dir) / "records500" / "00000"
    folder.mkdir(parents=True, exist_ok=True)
    paths, rows = [], ["ecg_id,patient_id,filename_hr,strat_fold"]
    for ecg_id in range(1, n_records + 1):
        rng = np.random.default_rng([seed, ecg_id])
        signal = ecg(rng, len(leads), duration_s, sfreq, bpm=rng.uniform(55, 95)).T
        name = f"{ecg_id:05d}_hr"
        wfdb.wrsamp(name, fs=sfreq, units=["mV"] * len(leads), sig_name=list(leads), p_signal=signal,
                    fmt=["16"] * len(leads), adc_gain=[1000.0] * len(leads), baseline=[0] * len(leads),
                    comments=["synthetic PTB-XL-like record"], write_dir=str(folder))
        paths.append(folder / f"{name}.hea")
        rows.append(f"{ecg_id},{1000 + ecg_id},records500/00000/{name},{1 + ecg_id % 10}")
    (Path(out_dir) / "ptbxl_database.csv").write_text("\n".join(rows) + "\n")
    return paths


DEMO_KINDS = ("ecg", "eeg", "seed", "seed_iv", "deap", "dreamer")


def write_demo_corpus(kind: str, out_dir: str | Path, seed: int = 0, n_recordings: int = 4) -> Path:
    """A small corpus for jobs run without inputs, `n_recordings` subjects or records of:
    'ecg' PTB-XL-like tree; 'eeg' TUEG-like EDF tree long enough for the CBraMod recipe (6 min:
    300-s minimum, 60-s trims); 'seed' (15 trials of 8 s), 'seed_iv' (session 1, 24 trials of
    6 s), 'deap' (4 trials of 60 s) and 'dreamer' (6 films of 30 s) in their native layouts."""
    out_dir = Path(out_dir)
    subjects = tuple(range(1, n_recordings + 1))
    if kind == "ecg":
        write_ptbxl(out_dir, n_records=n_recordings, seed=seed)
    elif kind == "eeg":
        write_tueg(out_dir, n_subjects=n_recordings, duration_s=360.0, sfreq=250.0, seed=seed)
    elif kind == "seed":
        write_seed(out_dir, subjects=subjects, trial_s=8.0, seed=seed)
    elif kind == "seed_iv":
        write_seediv(out_dir, sessions=(1,), subjects=subjects, trial_s=6.0, seed=seed)
    elif kind == "deap":
        write_deap(out_dir, subjects=subjects, n_trials=4, seed=seed)
    elif kind == "dreamer":
        write_dreamer(out_dir, n_subjects=n_recordings, n_trials=6, stimulus_s=30.0, seed=seed)
    else:
        raise ValueError(f"kind must be one of {DEMO_KINDS}, got {kind!r}")
    return out_dir
