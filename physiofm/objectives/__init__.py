"""Self-supervised and supervised objectives (pure torch, no Ray)."""
