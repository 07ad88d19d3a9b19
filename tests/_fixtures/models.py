"""Model fixtures (a tiny model trained on the sample dataset)."""
