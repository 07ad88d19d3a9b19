"""Importing kserve without letting it read our command line."""

from __future__ import annotations

import sys


def import_kserve() -> None:
    """Import kserve with `sys.argv` hidden.

    `kserve.model_server` parses `sys.argv` with its own flags at import time (any `import kserve`
    triggers it): our flags are not its business, `--model` would be read as an abbreviation of its
    `--model_name`, and a value of the wrong type for one of its flags would exit the process.
    """
    if "kserve.model_server" in sys.modules:
        return
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        import kserve  # noqa: F401
    finally:
        sys.argv = saved
