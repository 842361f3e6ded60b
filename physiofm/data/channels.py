"""Channel names: 10-20 EEG labels and ECG leads in canonical form, channel types from labels,
and the channel lists of the datasets' native layouts."""
from __future__ import annotations

import re

# CBraMod's pretraining montage, in its order (old 10-20 temporal names T3..T6).
CBRAMOD_19 = ("FP1", "FP2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2",
              "F7", "F8", "T3", "T4", "T5", "T6", "FZ", "CZ", "PZ")
ECG_12 = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

# The same scalp positions under the old and the new (10-10) names.
EEG_SYNONYMS = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8",
                "T7": "T3", "T8": "T4", "P7": "T5", "P8": "T6"}

DEAP_EEG_32 = ("Fp1", "AF3", "F3", "F7", "FC5", "FC1", "C3", "T7", "CP5", "CP1", "P3", "P7",
               "PO3", "O1", "Oz", "Pz", "Fp2", "AF4", "Fz", "F4", "F8", "FC6", "FC2", "Cz",
               "C4", "T8", "CP6", "CP2", "P4", "P8", "PO4", "O2")
DEAP_PERIPHERAL = (("hEOG", "eog", "uV"), ("vEOG", "eog", "uV"), ("zEMG", "emg", "uV"),
                   ("tEMG", "emg", "uV"), ("GSR", "gsr", "NU"), ("Respiration", "resp", "NU"),
                   ("Plethysmograph", "ppg", "NU"), ("Temperature", "temp", "NU"))
SEED_62 = ("FP1", "FPZ", "FP2", "AF3", "AF4", "F7", "F5", "F3", "F1", "FZ", "F2", "F4", "F6",
           "F8", "FT7", "FC5", "FC3", "FC1", "FCZ", "FC2", "FC4", "FC6", "FT8", "T7", "C5", "C3",
           "C1", "CZ", "C2", "C4", "C6", "T8", "TP7", "CP5", "CP3", "CP1", "CPZ", "CP2", "CP4",
           "CP6", "TP8", "P7", "P5", "P3", "P1", "PZ", "P2", "P4", "P6", "P8", "PO7", "PO5",
           "PO3", "POZ", "PO4", "PO6", "PO8", "CB1", "O1", "OZ", "O2", "CB2")
EMOTIV_14 = ("AF3", "F7", "F3", "FC5", "T7", "P7", "O1", "O2", "P8", "T8", "FC6", "F4", "F8", "AF4")

_TYPE_WORDS = {
    "EEG": "eeg", "ECG": "ecg", "EKG": "ecg", "EOG": "eog", "HEOG": "eog", "VEOG": "eog",
    "EMG": "emg", "RESP": "resp", "RESPIRATION": "resp", "GSR": "gsr", "EDA": "gsr",
    "PLETH": "ppg", "PPG": "ppg", "TEMP": "temp", "TEMPERATURE": "temp", "STATUS": "stim",
    "STI": "stim", "TRIGGER": "stim", "VX": "ecg", "VY": "ecg", "VZ": "ecg",  # Frank leads
}
_EEG_PREFIX = re.compile(r"^EEG[\s_:-]+", re.IGNORECASE)
_REFERENCE_SUFFIX = re.compile(r"[-_](REF|LE|AR|AVG|A1|A2|M1|M2)$", re.IGNORECASE)
_ECG_PREFIX = re.compile(r"^(ECG|EKG)[\s_:-]*(LEAD[\s_]*)?", re.IGNORECASE)
_LEADS = {lead.upper(): lead for lead in ECG_12} | {"DI": "I", "DII": "II", "DIII": "III"}


def canonical_eeg(label: str) -> str:
    """`EEG FP1-REF`, `EEG Fp1`, `FP1-LE`, `Fp1.` → `FP1`."""
    name = _EEG_PREFIX.sub("", label.strip()).strip(". ")
    return _REFERENCE_SUFFIX.sub("", name).strip().upper()


def canonical_lead(label: str) -> str | None:
    """`ii`, `ECG II`, `MLII`, `avr`, `V1` → the 12-lead name; None for anything else."""
    name = _ECG_PREFIX.sub("", label.strip()).strip().upper()
    name = re.sub(r"^ML(?=I{1,3}$)", "", name)  # Holter "modified lead" MLII ≈ II
    return _LEADS.get(name)


def type_from_label(label: str, default: str = "misc") -> str:
    """Channel type from the first word of the label that names one (`ECG ECG`, `foot GSR`)."""
    for word in re.split(r"[^A-Za-z]+", label.upper()):
        if word in _TYPE_WORDS:
            return _TYPE_WORDS[word]
    if canonical_lead(label) is not None or label.strip().upper() == "V":
        return "ecg"
    return default


def find_channels(wanted: tuple[str, ...], labels: list[str], kind: str) -> list[int | None]:
    """Index in `labels` of each wanted canonical name (None where absent).

    kind 'eeg' matches 10-20 names, also under the old/new temporal synonyms; 'ecg' matches leads.
    """
    if kind == "eeg":
        canonical = [canonical_eeg(label) for label in labels]
        wanted_keys = [w.upper() for w in wanted]
    elif kind == "ecg":
        canonical = [canonical_lead(label) for label in labels]
        wanted_keys = list(wanted)
    else:
        raise ValueError(f"kind must be 'eeg' or 'ecg', got {kind!r}")
    position = {}
    for index, name in enumerate(canonical):
        if name is not None:
            position.setdefault(name, index)
    found = []
    for name in wanted_keys:
        index = position.get(name)
        if index is None and kind == "eeg":
            index = position.get(EEG_SYNONYMS.get(name, ""))
        found.append(index)
    return found
