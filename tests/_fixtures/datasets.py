"""Dataset fixtures (synthetic sample data prepared into a dataset artifact)."""
