"""The pretrained model shipped in fer_model/pretrained/: it loads, its card matches it, it answers."""

import json

import cv2
import numpy as np
import pytest
import skimage.data

from fer_model.artifact_files import EvaluationMetrics
from fer_model.model_artifact import read_model_config
from fer_model.model_card import CARD_FILE, render_model_card
from fer_model.predict import PRETRAINED_DIR, Predictor
from fer_model.tasks import TASK_NAMES


@pytest.fixture(scope="module")
def shipped():
    return Predictor()


def test_shipped_files_are_a_complete_artifact():
    config = read_model_config(PRETRAINED_DIR)
    assert tuple(config.tasks) == TASK_NAMES
    assert (PRETRAINED_DIR / "model.keras").stat().st_size < 5 * 2**20  # a few MB, fit for a package
    metrics = EvaluationMetrics.read(PRETRAINED_DIR)
    # The metrics were computed on held-out data of the very dataset this model was trained on.
    assert metrics.model.dataset_manifest_sha256 == config.dataset_manifest_sha256
    assert metrics.model.dataset_matches is True
    assert metrics.split == "test" and set(metrics.tasks) == set(TASK_NAMES)


def test_model_card_is_the_rendering_of_its_metrics_and_config():
    card = (PRETRAINED_DIR / CARD_FILE).read_text()
    assert card == render_model_card(PRETRAINED_DIR)
    metrics = json.loads((PRETRAINED_DIR / "metrics.json").read_text())
    for task, m in metrics["tasks"].items():
        assert f"| {task} | {100 * m['accuracy']:.2f}% |" in card
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
