"""fer_model.model_probe: a model artifact's answers on regenerable synthetic faces."""

from __future__ import annotations

import json
import shutil

import pytest

from fer_model.errors import ArtifactError, ConfigError
from fer_model.model_probe import PROBE_FILE, ProbeRecipe, check_probe, main, probe_faces, write_probe
from fer_model.predict import PRETRAINED_DIR


@pytest.mark.parametrize(("kwargs", "match"), [({"n": 0}, r"`n` must be an int >= 1, got 0"),
                                               ({"seed": -1}, r"`seed` must be an int >= 0"),
                                               ({"size": 2.5}, r"`size` must be an int >= 8, got 2.5")])
def test_recipe_rejects_bad_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ProbeRecipe(**kwargs)


def test_probe_faces_cycle_through_every_drawable_class():
    images, drawn = probe_faces(ProbeRecipe(n=14, size=32))
    assert images.shape == (14, 32, 32)
    assert {d["emotion"] for d in drawn} == {"surprise", "fear", "disgust", "happy", "sad", "angry", "neutral"}
    assert {d["gender"] for d in drawn} == {"male", "female"}


def test_write_then_check_round_trip_and_a_missing_probe(tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(PRETRAINED_DIR, model, ignore=shutil.ignore_patterns("saved_model", PROBE_FILE))
    with pytest.raises(ArtifactError, match=r"probe.json is missing; write it with `python -m fer_model.model_probe"):
        check_probe(model)
    main([str(model)])
    written = json.loads((model / PROBE_FILE).read_text())
    shipped = json.loads((PRETRAINED_DIR / PROBE_FILE).read_text())
    assert written["inputs_sha256"] == shipped["inputs_sha256"] and written["recipe"] == shipped["recipe"]
    main(["--check", str(model)])
    assert capsys.readouterr().out.strip().endswith("answers as its probe.json records")
    # A probe of other faces is another model's fingerprint: refused, not silently re-based.
    write_probe(model, recipe=ProbeRecipe(seed=7, n=2))
    (model / PROBE_FILE).write_text((model / PROBE_FILE).read_text().replace('"seed": 7', '"seed": 8'))
    with pytest.raises(SystemExit, match=r"error: .*probe faces no longer regenerate bit for bit"):
        main(["--check", str(model)])
