"""The pretrained model shipped in fer_model/pretrained/: it answers as its probe records, its metrics and
card agree, it finds and reads a real face."""

import hashlib
import json
import re
import shutil

import cv2
import numpy as np
import pytest
import skimage.data

from fer_model.artifact_files import EvaluationMetrics
from fer_model.errors import ArtifactError
from fer_model.metrics import macro_f1
from fer_model.model_artifact import read_model_config
from fer_model.model_card import CARD_FILE, render_model_card
from fer_model.model_probe import ProbeRecipe, check_probe, probe_faces, read_probe
from fer_model.predict import PRETRAINED_DIR, Predictor
from fer_model.tasks import TASK_NAMES
from tests._fixtures.models import rerecord_file_hashes

#: Manifest sha256 of the shipped model's training dataset as rebuilt on 2026-12-01 (`fer-mtl prepare`,
#: then `fer-mtl teach --align-distribution`; recipe in experiments/real_faces/README.md).
REBUILT_DATASET = "dc831f7457195f22300e1c50069f871bd23d2164655cb18050ae066c06c82bf1"


@pytest.fixture(scope="module")
def shipped():
    return Predictor()


def test_shipped_files_are_a_complete_artifact():
    config = read_model_config(PRETRAINED_DIR)
    assert tuple(config.tasks) == TASK_NAMES
    # Paper width (1.0) is 9.7 MB as float32 and 4.9 MB with its weights stored as float16
    # (fer_model/float16_weights.py): every shipped version stays in git history, so each must be small.
    assert (PRETRAINED_DIR / "model.keras").stat().st_size < 5_000_000
    assert read_probe(PRETRAINED_DIR)["faces"], "the shipped model needs its probe.json"


def test_shipped_model_answers_as_its_probe_records(shipped):
    # Re-runs model.keras on the regenerated probe faces: a retrained or damaged model fails here.
    check_probe(PRETRAINED_DIR)


@pytest.fixture()
def shipped_copy(tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(PRETRAINED_DIR, copy, ignore=shutil.ignore_patterns("saved_model"))
    return copy


def test_a_changed_model_fails_its_probe(shipped_copy, shipped):
    import keras

    model = keras.saving.load_model(shipped_copy / "model.keras", compile=False)
    kernel, bias = model.get_layer("emotion").get_weights()
    model.get_layer("emotion").set_weights([kernel, bias + np.linspace(0, 0.05, bias.size, dtype=bias.dtype)])
    model.save(shipped_copy / "model.keras")
    rerecord_file_hashes(shipped_copy)  # so the probe, not the hash check, must catch it
    with pytest.raises(ArtifactError, match=r"does not answer as its probe.json records.*face 0 emotion "):
        check_probe(shipped_copy)


def test_a_corrupted_model_file_fails_its_probe(shipped_copy):
    data = (shipped_copy / "model.keras").read_bytes()
    (shipped_copy / "model.keras").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match=r"model.keras fails its hash check.*truncated"):
        check_probe(shipped_copy)
    # With the hash re-recorded, reading the archive still refuses it.
    rerecord_file_hashes(shipped_copy)
    with pytest.raises(ArtifactError, match=r"model.keras is not a readable Keras 3 .keras archive.*truncated"):
        check_probe(shipped_copy)


def test_probe_faces_are_regenerated_bit_for_bit():
    probe = read_probe(PRETRAINED_DIR)
    recipe = ProbeRecipe(**{k: v for k, v in probe["recipe"].items() if k != "drawer"})
    images, drawn = probe_faces(recipe)
    assert images.shape == (recipe.n, recipe.size, recipe.size) and images.dtype == np.uint8
    assert hashlib.sha256(images.tobytes()).hexdigest() == probe["inputs_sha256"]
    assert drawn == [face["drawn"] for face in probe["faces"]]
    assert probe_faces(ProbeRecipe(seed=recipe.seed + 1))[0].tobytes() != images.tobytes()


def test_metrics_are_derived_from_their_confusion_matrices_and_the_card_shows_them():
    metrics = json.loads((PRETRAINED_DIR / "metrics.json").read_text())
    config = read_model_config(PRETRAINED_DIR)
    typed = EvaluationMetrics.read(PRETRAINED_DIR)
    # Scored on held-out data of the dataset this model was trained on: that dataset itself, or its
    # rebuild from the same sources (the float16 re-store was scored there). A rebuild's manifest
    # records another teacher path and creation time, so its hash differs although the data do not:
    # the float32 model scored on it reproduced every confusion matrix recorded on the original.
    assert typed.model.dataset_manifest_sha256 == config.dataset_manifest_sha256
    evaluated_on = typed.model.evaluated_dataset_manifest_sha256
    assert evaluated_on in {config.dataset_manifest_sha256, REBUILT_DATASET}
    assert typed.model.dataset_matches is (evaluated_on == config.dataset_manifest_sha256)
    # What the release gate compares a candidate's test set by (unchanged by rebuilds and teachers).
    assert re.fullmatch(r"[0-9a-f]{64}", typed.model.evaluated_split_sha256 or "")
    # FER2013 repeats photos across its sets: the scores without the test faces that copy training ones.
    copies = typed.training_copies
    assert copies is not None and 0 < copies.n < typed.num_samples
    for task, score in copies.without.items():
        assert typed.tasks[task].n_labelled - copies.n <= score.n_labelled < typed.tasks[task].n_labelled
    assert typed.split == "test" and set(typed.tasks) == set(TASK_NAMES)
    card = (PRETRAINED_DIR / CARD_FILE).read_text()
    assert card == render_model_card(PRETRAINED_DIR)
    for task, m in metrics["tasks"].items():
        cm = np.array(m["confusion_matrix"])
        assert m["classes"] == list(config.tasks[task]) and cm.shape == (len(m["classes"]),) * 2
        assert int(cm.sum()) == m["n_labelled"]
        assert m["accuracy"] == pytest.approx(np.trace(cm) / cm.sum(), abs=1e-12)
        assert m["macro_f1"] == pytest.approx(macro_f1(cm), abs=1e-12)
        assert f"| {task} | {100 * m['accuracy']:.2f}% | {100 * m['macro_f1']:.2f}% | {m['n_labelled']} |" in card
    assert "non-commercial" in card


def test_shipped_model_answers_for_a_real_photograph(shipped):
    astronaut = np.ascontiguousarray(skimage.data.astronaut()[:, :, ::-1])
    ok, jpeg = cv2.imencode(".jpg", astronaut)
    (faces,) = shipped.predict([jpeg.tobytes()])
    assert len(faces) == 1
    face = faces[0].to_dict()
    x, y, w, h = face["box"]
    assert 150 < x + w / 2 < 300 and 60 < y + h / 2 < 200  # on her face
    for task in TASK_NAMES:
        probabilities = face["predictions"][task]["probabilities"]
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        # A trained head commits: its top class stands well above uniform.
        assert max(probabilities.values()) > 1.5 / len(probabilities)
    # UTKFace labels gender male/female only: the head's untrained `unsure` class is switched off.
    assert read_model_config(shipped.model_dir).untrained_classes == {"gender": ("unsure",)}
    assert face["predictions"]["gender"]["probabilities"]["unsure"] == 0.0


def test_predict_cli_uses_the_shipped_model(tmp_path, capsys, shipped):
    from fer_cli import main

    image = tmp_path / "astronaut.png"
    cv2.imwrite(str(image), np.ascontiguousarray(skimage.data.astronaut()[:, :, ::-1]))
    assert main(["predict", str(image)]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    (face,) = result["faces"]
    direct = shipped.predict([cv2.imread(str(image))])[0][0].to_dict()
    assert face["predictions"]["emotion"]["label"] == direct["predictions"]["emotion"]["label"]
