"""Serving runtime: the KServe predictor (`server`), its request protocols (`protocol`) and limits (`limits`).

Importing this package is light; kserve and TensorFlow load inside the modules that need them.
The release steps that decide and roll out a model (gate, deploy) live one layer up, in `fer_model.release`.
"""
