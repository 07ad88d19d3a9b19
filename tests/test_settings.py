"""fer_model._settings: one JSON round trip, one set of value checks, one loss-weight parser for every config."""

from __future__ import annotations

import json

import pytest

from fer_model._settings import defaults, field_default, is_number, parse_loss_weights
from fer_model.alignment import AlignConfig
from fer_model.errors import ConfigError
from fer_model.model import ModelConfig
from fer_model.training import TrainConfig
from fer_model.tuning import SearchSpace, TuneConfig

CONFIGS = [
    ModelConfig(width=0.5, tasks=("emotion", "age"), augment=True, l2=1e-4),
    TrainConfig(epochs=3, learning_rate=1e-3, loss_weights={"emotion": 1.0}, label_smoothing=0.1),
    AlignConfig(size=48, eye_alignment=False),
    SearchSpace(loss_weights={"emotion": (0.5, 5.0)}, learning_rate=(1e-4, 1e-2), batch_sizes=(32, 64)),
    TuneConfig(study_name="s", storage="s.journal", epochs=3, width=0.25, timeout=60.0),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: type(c).__name__)
def test_settings_survive_a_json_round_trip(config):
    text = config.to_json()
    assert type(config).from_dict(json.loads(text)) == config
    assert type(config).from_json(text) == config


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: type(c).__name__)
def test_unknown_settings_are_an_error(config):
    cls = type(config)
    with pytest.raises(ConfigError, match=rf"unknown {cls.__name__} settings \['colour'\]"):
        cls.from_dict({**config.to_dict(), "colour": 1})


def test_from_json_checks_values_and_shape():
    assert TrainConfig.from_json("") == TrainConfig() == TrainConfig.from_json("{}")
    with pytest.raises(ConfigError, match="`batch_size` must be an int >= 1"):
        TrainConfig.from_json('{"batch_size": 0}')
    with pytest.raises(ConfigError, match="must be a JSON object"):
        TrainConfig.from_json("[1, 2]")


def test_defaults_come_from_the_fields():
    assert field_default(TrainConfig, "loss_weights") == {"emotion": 2.0, "gender": 0.1, "race": 1.5, "age": 4.0}
    assert defaults(TrainConfig) == TrainConfig().to_dict()
    # Required fields (the study's name and storage) have no default to offer.
    assert "study_name" not in defaults(TuneConfig) and defaults(TuneConfig)["epochs"] == 10


@pytest.mark.parametrize("text", ["emotion=2, age=4", '{"emotion": 2, "age": 4}', "emotion=2,,age=4,"])
def test_loss_weights_parse_from_either_form(text):
    assert parse_loss_weights(text) == {"emotion": 2.0, "age": 4.0}


@pytest.mark.parametrize(
    ("text", "match"),
    [("emotion", "must be TASK=WEIGHT"), ("emotion=x", "not a number"), ("mood=1", "unknown task 'mood'"),
     ('{"emotion": -1}', r"`loss_weights\['emotion'\]` must be a finite number >= 0"),
     ('{"emotion": "2"}', "finite number"), ("{oops", "must be a JSON object"), ("emotion=nan", "finite number")],
)
def test_bad_loss_weights_name_the_problem(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_loss_weights(text)


@pytest.mark.parametrize(("value", "ok"), [(1, True), (0.5, True), (True, False), (float("nan"), False),
                                           (float("inf"), False), ("1", False)])
def test_is_number_is_a_finite_real(value, ok):
    assert is_number(value) is ok


def test_tune_width_overrides_only_the_width():
    model = ModelConfig(width=1.0, augment=True)
    assert TuneConfig(study_name="s", storage="j").trial_model(model) is model
    narrow = TuneConfig(study_name="s", storage="j", width=0.25).trial_model(model)
    assert narrow == ModelConfig(width=0.25, augment=True)
