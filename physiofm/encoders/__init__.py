"""Encoders: CBraMod criss-cross transformer, SCMM CNN, PhysioSync transformers, fusion heads (pure torch)."""
