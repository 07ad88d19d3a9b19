"""Serving: the KServe predictor (`server`), the evaluation gate (`gate`), and deployment (`deploy`).

Importing this package is light; kserve, kubernetes and TensorFlow load inside the modules that need them.
"""
