"""Shared fixtures live in tests/_fixtures/, one module per kind of artifact."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

pytest_plugins = ["tests._fixtures.datasets", "tests._fixtures.models"]
