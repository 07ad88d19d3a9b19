"""Pipeline steps under faults: SIGKILLed mid-run and retried, and artifacts that fail their hash checks.

Each killed step is the real one (`fer-mtl prepare`, `fer-mtl train`, the `train` component) in a
child process that dies by SIGKILL, as on a pre-empted node: no clean-up code runs. The kill lands
at a known point, either from inside (a hook that kills its own process while the artifact is being
written) or from outside once the step's epoch checkpoint has reached storage. Then: no reader
accepts what the dead step left, and the retry completes, reusing what the dead one had finished.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from fer_model.dataset import load_dataset, write_dataset
from fer_model.errors import ArtifactError
from fer_model.model_artifact import load_model_artifact, read_model_config
from tests import test_storage
from tests._fixtures.models import pattern_dataset

# Fixtures: the GCS emulator, and a fresh bucket on it.
emulator_url, bucket = test_storage.emulator_url, test_storage.bucket

keras = pytest.importorskip("keras")

def _env() -> dict[str, str]:
    """The environment now (with a test's STORAGE_EMULATOR_HOST), TensorFlow's chatter off."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _run_child(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=600, env=_env())


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ds = pattern_dataset(n_train=96, n_val=32, seed=5)
    return write_dataset(tmp_path_factory.mktemp("faults") / "dataset", images=ds.images, labels=ds.labels,
                         split=ds.split)


def _leftovers(folder: Path, name: str) -> list[Path]:
    """The temporary folders a killed atomic write left beside `folder/name`."""
    return [p for p in folder.iterdir() if p.name.startswith(f".{name}.")]


# --- prepare ---------------------------------------------------------------------------------

# `fer-mtl prepare` whose process SIGKILLs itself right after the first array file of the new
# artifact is on disk: the kill lands inside the artifact write, the riskiest moment.
_PREPARE_KILLED_WHILE_WRITING = """
    import os, signal, sys
    import numpy as np
    real_save = np.save
    def save_then_die(file, *args, **kwargs):
        real_save(file, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
    np.save = save_then_die
    from fer_cli import main
    main(sys.argv[1:])
"""


def test_prepare_killed_while_writing_leaves_no_dataset_and_the_rerun_completes(
    sample_data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "dataset"
    flags = ["prepare", "--source", f"fer2013-csv:{sample_data_dir / 'fer2013.csv'}", "--out", str(out),
             "--no-eye-alignment", "--limit", "60"]
    killed = _run_child(_PREPARE_KILLED_WHILE_WRITING, *flags)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    # Nothing at `out`; what the dead write left is a hidden temporary folder no reader accepts.
    assert not out.exists()
    (partial,) = _leftovers(tmp_path, "dataset")
    assert any(partial.iterdir())
    for folder in (out, partial):
        with pytest.raises(ArtifactError, match="manifest.json is missing"):
            load_dataset(folder)

    rerun = _run_child("import sys\nfrom fer_cli import main\nsys.exit(main(sys.argv[1:]))", *flags)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert len(load_dataset(out)) > 0


# --- fer-mtl train ---------------------------------------------------------------------------

# `fer-mtl train` dies after its last epoch, while the model artifact is being written (after
# model.keras, in the SavedModel export): the epochs are done, the artifact is not.
_TRAIN_KILLED_WHILE_WRITING = """
    import os, signal, sys
    import fer_model.model_artifact as artifact
    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)
    artifact.export_saved_model = die
    from fer_cli import main
    main(sys.argv[1:])
"""


class _FitSpy:
    """Wraps `keras.Model.fit` to record the epoch each call starts from."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.initial_epochs: list[int] = []
        real = keras.Model.fit

        def fit(model: keras.Model, *args: object, **kwargs: object) -> object:
            self.initial_epochs.append(int(kwargs.get("initial_epoch", 0)))
            return real(model, *args, **kwargs)

        monkeypatch.setattr(keras.Model, "fit", fit)


def test_train_killed_while_writing_the_artifact_is_finished_on_resume_without_training_again(
    small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fer_cli import main
    from fer_cli.train import CHECKPOINT_FOLDER
    from fer_model.checkpoint import CHECKPOINT_FILE

    out = tmp_path / "model"
    flags = ["train", "--dataset", str(small_dataset), "--out", str(out), "--epochs", "2", "--width", "0.125",
             "--tasks", "emotion", "--resume"]
    killed = _run_child(_TRAIN_KILLED_WHILE_WRITING, *flags)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    # The epochs are saved, the artifact is not: `out` holds only the checkpoint, and no reader takes it.
    assert sorted(p.name for p in out.iterdir()) == [CHECKPOINT_FOLDER]
    assert (out / CHECKPOINT_FOLDER / CHECKPOINT_FILE).is_file()
    with pytest.raises(ArtifactError, match="config.json is missing"):
        read_model_config(out)
    (partial,) = _leftovers(tmp_path, "model")
    with pytest.raises(ArtifactError, match="config.json is missing"):
        read_model_config(partial)

    spy = _FitSpy(monkeypatch)
    assert main(flags) == 0
    assert spy.initial_epochs == []  # both epochs were reused from the checkpoint, none trained again
    artifact = load_model_artifact(out)
    assert artifact.config.epochs_run == 2 and not (out / CHECKPOINT_FOLDER).exists()


# --- the train component, retried by KFP -----------------------------------------------------

_EPOCHS = 3

_COMPONENT_CHILD = f"""
    import sys
    from kfp import dsl
    from components.train import train
    train.python_func(dataset=dsl.Dataset(uri=sys.argv[1]), model=dsl.Model(uri=sys.argv[2]),
                      metrics=dsl.Metrics(uri=sys.argv[3]), model_config='{{"width": 0.125, "tasks": ["emotion"]}}',
                      train_config='{{"epochs": {_EPOCHS}, "batch_size": 8, "verbose": 0}}', checkpoint_uri=sys.argv[4])
"""


def test_train_component_killed_mid_run_resumes_from_its_gs_checkpoint_on_retry(
    small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bucket: str
) -> None:
    from kfp import dsl

    from components.train import train
    from fer_model import storage
    from fer_model.checkpoint import CHECKPOINT_FILE

    checkpoint_uri = f"gs://{bucket}/runs/1/train/model.checkpoint"
    args = [str(small_dataset), str(tmp_path / "model"), str(tmp_path / "metrics"), checkpoint_uri]
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_COMPONENT_CHILD), *args], env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    remote = f"{checkpoint_uri}/{CHECKPOINT_FILE}"
    try:
        # Killed once the first epoch's checkpoint is in the bucket: the pod's own disk is then lost.
        deadline = time.monotonic() + 300
        while not storage.exists(remote):
            assert child.poll() is None, child.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint reached the bucket"
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL, "the step finished before it could be killed"
    assert not (tmp_path / "model").exists()
    saved = json.loads(_checkpoint_meta(storage.download(remote, tmp_path / "saved.npz")))
    assert 1 <= saved["epochs_done"] < _EPOCHS and not saved["finished"]

    spy = _FitSpy(monkeypatch)
    model = dsl.Model(uri=str(tmp_path / "model"))  # the retried pod: a fresh local disk, the same bucket
    train.python_func(dataset=dsl.Dataset(uri=str(small_dataset)), model=model,
                      metrics=dsl.Metrics(uri=str(tmp_path / "metrics")),
                      model_config='{"width": 0.125, "tasks": ["emotion"]}',
                      train_config=f'{{"epochs": {_EPOCHS}, "batch_size": 8, "verbose": 0}}',
                      checkpoint_uri=checkpoint_uri)
    assert spy.initial_epochs == [saved["epochs_done"]]
    history = json.loads((tmp_path / "model" / "history.json").read_text())
    assert len(history["loss"]) == _EPOCHS and history["loss"][: saved["epochs_done"]] == saved["history"]["loss"]
    finished = json.loads(_checkpoint_meta(storage.download(remote, tmp_path / "final.npz")))
    assert finished["finished"] and finished["epochs_done"] == _EPOCHS


def _checkpoint_meta(path: Path) -> bytes:
    with np.load(path) as data:
        return bytes(data["meta"])


def test_checkpoint_location_sits_beside_the_model_output() -> None:
    from fer_model.train_run import checkpoint_location

    assert checkpoint_location(model_uri="gs://b/root/run-1/train/model", model_path="/gcs/b/root/run-1/train/model"
                               ) == "gs://b/root/run-1/train/model.checkpoint"
    assert checkpoint_location(model_uri="/tmp/out/train/model/", model_path="/tmp/out/train/model/"
                               ) == "/tmp/out/train/model.checkpoint"
    # A MinIO root is not written by fer_model.storage: the local path it is then.
    assert checkpoint_location(model_uri="minio://mlpipeline/v2/x/model", model_path="/minio/mlpipeline/v2/x/model"
                               ) == "/minio/mlpipeline/v2/x/model.checkpoint"


# --- artifacts whose files do not match their recorded hashes ----------------------------------


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["images.npy", "labels.npz", "split.npy"])
def test_a_dataset_file_with_a_flipped_byte_is_refused(small_dataset: Path, tmp_path: Path, name: str) -> None:
    copy = Path(shutil.copytree(small_dataset, tmp_path / "dataset"))
    _flip_a_byte(copy / name)
    with pytest.raises(ArtifactError, match=rf"{name} fails its hash check .*re-run `fer-mtl prepare`"):
        load_dataset(copy)


def test_a_model_file_with_a_flipped_byte_or_missing_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = read_model_config(tiny_model_dir)
    assert config.sha256 is not None and "model.keras" in config.sha256 and "history.json" in config.sha256
    copy = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    _flip_a_byte(copy / "model.keras")
    with pytest.raises(ArtifactError, match=r"model\.keras fails its hash check .*re-run `fer-mtl train`"):
        load_model_artifact(copy)
    shutil.copy2(tiny_model_dir / "model.keras", copy / "model.keras")
    variables = next(name for name in config.sha256 if name.startswith("saved_model/") and "variables.data" in name)
    (copy / variables).unlink()
    with pytest.raises(ArtifactError, match=rf"is incomplete: {variables} is missing"):
        load_model_artifact(copy)


def test_artifacts_tampered_with_in_the_bucket_are_refused_after_download(
    small_dataset: Path, tiny_model_dir: Path, tmp_path: Path, bucket: str
) -> None:
    from google.cloud import storage as gcs

    from fer_model import storage

    remote = gcs.Client().bucket(bucket)
    for kind, src, name in (("dataset", small_dataset, "images.npy"), ("model", tiny_model_dir, "model.keras")):
        uri = f"gs://{bucket}/tampered/{kind}"
        storage.upload(src, uri)
        tampered = tmp_path / name
        shutil.copy2(src / name, tampered)
        _flip_a_byte(tampered)
        # Replaced in the bucket by someone else, after the artifact was published.
        remote.blob(f"tampered/{kind}/{name}").upload_from_filename(str(tampered))
        local = storage.local_source(uri, cache_dir=tmp_path / "cache")
        load = load_dataset if kind == "dataset" else load_model_artifact
        with pytest.raises(ArtifactError, match=rf"{name} fails its hash check"):
            load(local)
