"""physiofm: distributed pretraining for physiological foundation encoders."""

__version__ = "0.1.0"
