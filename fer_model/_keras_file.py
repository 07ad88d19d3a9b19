"""Open a `.keras` file without running code from it.

A model file is data from elsewhere (a bucket, a colleague, a download), and a Keras file can carry
code: a `Lambda` layer holds marshalled Python bytecode, a config can name any importable module and
class, and a file that is not a `.keras` zip is handed to the legacy HDF5 loader. Keras's
`safe_mode` refuses lambdas; we also read the archive ourselves first and accept only what fer-mtl
writes: a zip of config.json, metadata.json and model.weights.h5 whose config names only Keras's
own classes (or fer-mtl's registered ones) and no code-carrying layer. Nothing in the file is
deserialised before it passes.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fer_model.errors import ArtifactError

if TYPE_CHECKING:
    import keras

#: The members `Model.save("x.keras")` writes; anything else (assets, pickles, npz stores) is refused.
ARCHIVE_MEMBERS = frozenset({"config.json", "metadata.json", "model.weights.h5"})
#: Keras classes that hold Python code or load another model format: never deserialised.
CODE_CLASSES = frozenset({"Lambda", "__lambda__", "TFSMLayer", "function"})
#: Packages a config may name: Keras, and fer-mtl's own registered objects (a compiled training
#: model's loss). Any other module is an import Keras would perform on the file's behalf.
_TRUSTED_PACKAGES = ("keras", "fer_model")


def check_keras_file(path: str | os.PathLike[str]) -> None:
    """Refuse `path` unless it is a plain Keras 3 archive that names only Keras's own classes.

    Raises:
        ArtifactError: naming the file, what was found, and that the model must be re-saved.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise ArtifactError(
            f"{path} is not a readable Keras 3 .keras archive (a zip): it is truncated or corrupt (copy it "
            "again), or another format (legacy HDF5, pickles), which is not loaded because it can run code "
            "(re-save the model with `model.save('model.keras')`)"
        )
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        foreign = sorted(names - ARCHIVE_MEMBERS)
        if foreign or "config.json" not in names:
            raise ArtifactError(
                f"{path} holds {foreign or 'no config.json'}; a fer-mtl model file holds only "
                f"{sorted(ARCHIVE_MEMBERS)}: re-save the model with `model.save('model.keras')`"
            )
        try:
            config = json.loads(archive.read("config.json"))
        except ValueError as e:
            raise ArtifactError(f"{path}: config.json cannot be parsed ({e}); re-save the model") from e
    for where, obj in _objects(config, "config"):
        _check_object(path, where, obj)


def load_keras_model(path: str | os.PathLike[str]) -> keras.Model:
    """Load an uncompiled model from a `.keras` file after `check_keras_file`, with Keras's safe mode on.

    Raises:
        ArtifactError: the file is refused by the check or Keras cannot load it.
    """
    check_keras_file(path)
    import keras

    try:
        # safe_mode=True is Keras's default; stated so that no later edit can flip it silently.
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # Keras raises many types for a corrupt or foreign file
        raise ArtifactError(f"{path} cannot be loaded: {e}") from e


def _objects(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every serialised object (a dict with `class_name`) in a Keras config, with its key path."""
    if isinstance(node, dict):
        if "class_name" in node:
            yield where, node
        for key, value in node.items():
            yield from _objects(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _objects(value, f"{where}[{i}]")


def _check_object(path: Path, where: str, obj: dict[str, Any]) -> None:
    class_name = obj.get("class_name")
    module = obj.get("module")
    if class_name in CODE_CLASSES:
        raise ArtifactError(
            f"{path}: {where} is a {class_name!r}, which carries Python code; fer-mtl loads no code from a "
            "model file: rebuild the model without it"
        )
    if module is not None and not _trusted(str(module), "."):
        raise ArtifactError(
            f"{path}: {where} names {module}.{class_name}, outside Keras; fer-mtl imports nothing a model file "
            "names: rebuild the model from Keras layers"
        )
    registered = obj.get("registered_name")
    if registered is not None and registered != class_name and not _trusted(str(registered), ">"):
        raise ArtifactError(
            f"{path}: {where} is the custom object {registered!r}; fer-mtl model files hold Keras's own "
            "classes only: rebuild the model from Keras layers"
        )


def _trusted(name: str, separator: str) -> bool:
    return any(name == package or name.startswith(package + separator) for package in _TRUSTED_PACKAGES)
