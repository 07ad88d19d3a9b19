"""One exception family for the library; the CLI turns any of them into one line and exit code 2."""

from __future__ import annotations


class FerError(Exception):
    """Base class of every error fer_model raises on purpose.

    Messages name the input, what is wrong, and how to fix it.
    """


class ConfigError(FerError, ValueError):
    """A configuration value (dataclass field, CLI flag) is out of range or inconsistent."""


class DataError(FerError):
    """An input source (CSV, folder, image, label file) cannot be read or is malformed."""


class ArtifactError(FerError):
    """A dataset or model artifact is missing, of another format version, or fails its hash check."""


class StorageError(FerError):
    """A local or remote (gs://) location cannot be read or written."""


class InvalidInput(FerError):
    """A prediction request carries input that cannot be served (maps to HTTP 400)."""
