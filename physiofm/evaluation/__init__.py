"""Emotion-recognition evaluation: protocols (folds by trial, subject or corpus), metrics from
scikit-learn, and reports (tables, plots). Pure numpy / scikit-learn / matplotlib: no Ray and no
platform imports; the platform runs the folds."""
from physiofm.evaluation.metrics import METRICS, chance_metrics, classification_metrics, summarize
from physiofm.evaluation.protocols import (PROTOCOLS, Fold, ProtocolConfig, ProtocolError, WindowTable, make_folds,
                                           split_document)

__all__ = ["METRICS", "PROTOCOLS", "Fold", "ProtocolConfig", "ProtocolError", "WindowTable", "chance_metrics",
           "classification_metrics", "make_folds", "split_document", "summarize"]
