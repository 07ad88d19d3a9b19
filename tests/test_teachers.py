"""Teachers fill the missing labels: soft labels in the dataset, `fer-mtl teach`, a student that learns from them.

The synthetic task has two sources: A labels only emotion, B only age (the labels `pattern_images`
draws are all known to the test, so it can score what the teacher said about B's faces).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from pathlib import Path

import numpy as np
import pytest

from fer_cli import main
from fer_model.dataset import Dataset, load_dataset, sha256_file, write_dataset
from fer_model.errors import ArtifactError, ConfigError
from fer_model.records import SPLIT_CODES
from fer_model.tasks import MISSING, TASK_NAMES
from fer_model.teachers import TeachConfig, align_to_prior, teach, temper
from fer_model.training import TrainConfig
from tests._fixtures.models import pattern_images

keras = pytest.importorskip("keras")

N_A, N_B, N_VAL = 160, 160, 96
TEACHER_EPOCHS = 4


def _truth(seed: int = 11) -> dict[str, np.ndarray]:
    """Every face's true label of every task (what the sources partly hide)."""
    rng = np.random.default_rng(seed)
    n = N_A + N_B + N_VAL
    from fer_model.tasks import TASKS

    return {t.name: rng.integers(0, t.num_classes, size=n).astype(np.int8) for t in TASKS}


def _source_labels(truth: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Source A (train rows 0..N_A) keeps emotion only, source B (the next N_B) age only; validation keeps both."""
    labels = {t: np.full_like(v, MISSING) for t, v in truth.items()}
    a, b, val = slice(0, N_A), slice(N_A, N_A + N_B), slice(N_A + N_B, None)
    labels["emotion"][a] = truth["emotion"][a]
    labels["age"][b] = truth["age"][b]
    for task in ("emotion", "age"):
        labels[task][val] = truth[task][val]
    return labels


SPLIT = np.concatenate([np.full(N_A + N_B, SPLIT_CODES["train"]), np.full(N_VAL, SPLIT_CODES["validation"])]
                       ).astype(np.uint8)
B_ROWS = np.arange(N_A, N_A + N_B)


@pytest.fixture(scope="module")
def truth() -> dict[str, np.ndarray]:
    return _truth()


@pytest.fixture(scope="module")
def sources_dir(truth: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dataset artifact of sources A (emotion only) and B (age only), faces drawn with every true label."""
    images = pattern_images(truth, seed=12)
    return write_dataset(tmp_path_factory.mktemp("sources") / "dataset", images=images,
                         labels=_source_labels(truth), split=SPLIT, sources=[{"kind": "pattern", "path": "A+B"}])


@pytest.fixture(scope="module")
def teacher_dir(sources_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A single-task emotion model: trained on the only emotion labels there are, source A's."""
    from fer_model.model import ModelConfig
    from fer_model.train_run import train

    result = train(dataset_dir=sources_dir, out_dir=tmp_path_factory.mktemp("teacher") / "model",
                   model_config=ModelConfig(width=0.25, tasks=("emotion",)),
                   train_config=TrainConfig(epochs=TEACHER_EPOCHS, learning_rate=1e-3, verbose=0))
    return result.model_dir


@pytest.fixture(scope="module")
def taught_dir(sources_dir: Path, teacher_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return teach(dataset_dir=sources_dir, teachers={"emotion": teacher_dir},
                 out_dir=tmp_path_factory.mktemp("taught") / "dataset")


# --- the dataset artifact's soft labels ---------------------------------------------------------


def test_teacher_labels_only_faces_without_a_true_label(sources_dir, taught_dir, truth) -> None:
    taught, before = load_dataset(taught_dir), load_dataset(sources_dir)
    soft = taught.soft_labels["emotion"]
    labelled = ~np.isnan(soft).any(axis=1)
    # B's train faces (no true emotion) got targets; A's (true labels) and validation faces did not.
    np.testing.assert_array_equal(np.flatnonzero(labelled), B_ROWS)
    np.testing.assert_allclose(soft[labelled].sum(axis=1), 1.0, atol=1e-5)
    for task in TASK_NAMES:
        np.testing.assert_array_equal(taught.labels[task], before.labels[task])
    np.testing.assert_array_equal(taught.images, before.images)
    # Another manifest (teacher, time), the same faces and labels: the gate compares evaluations of the two.
    assert taught.manifest_sha256 != before.manifest_sha256
    assert all(taught.split_sha256(s) == before.split_sha256(s) for s in ("train", "validation", "test"))
    # The teacher learned emotion from A, so what it says about B's faces is mostly the hidden truth.
    agreement = float(np.mean(soft[B_ROWS].argmax(axis=1) == truth["emotion"][B_ROWS]))
    assert agreement > 0.5, f"teacher agrees with B's hidden emotion on {agreement:.2f} of faces"
    assert "emotion" not in before.soft_labels and set(taught.soft_labels) == {"emotion"}


def test_provenance_names_the_teacher_and_the_faces_it_labelled(sources_dir, teacher_dir, taught_dir) -> None:
    taught = load_dataset(taught_dir)
    assert taught.manifest["format_version"] == 2
    made = taught.manifest["soft_labels"]["emotion"]
    assert made["teacher"]["path"] == str(teacher_dir)
    assert made["teacher"]["model_sha256"] == sha256_file(teacher_dir / "model.keras")
    assert made["teacher"]["heads"] == ["emotion"]
    assert made["temperature"] == 1.0 and made["threshold"] == 0.0 and made["splits"] == ["train"]
    assert made["labelled_per_split"] == {"train": N_B, "validation": 0, "test": 0}
    assert made["candidates"] == N_B and made["below_threshold"] == 0
    assert made["source_dataset_manifest_sha256"] == load_dataset(sources_dir).manifest_sha256
    assert datetime.datetime.fromisoformat(made["created_at"]).tzinfo is not None
    assert taught.manifest["sources"] == [{"kind": "pattern", "path": "A+B"}]
    assert "soft_labels.npz" in taught.manifest["sha256"]


def test_include_labelled_gives_every_train_face_a_target(sources_dir, teacher_dir, truth, tmp_path, capsys
                                                         ) -> None:
    out = tmp_path / "all"
    assert main(["teach", "--dataset", str(sources_dir), "--teacher", f"emotion={teacher_dir}", "--out", str(out),
                 "--include-labelled"]) == 0
    assert f"{N_A + N_B} of {N_A + N_B} all faces of splits train got teacher targets" in capsys.readouterr().out
    taught = load_dataset(out)
    soft = taught.soft_labels["emotion"]
    np.testing.assert_array_equal(np.flatnonzero(~np.isnan(soft).any(axis=1)), np.arange(N_A + N_B))
    made = taught.manifest["soft_labels"]["emotion"]
    assert made["include_labelled"] is True and made["candidates"] == N_A + N_B
    # On A's faces the teacher saw their labels in training: it mostly repeats them.
    a_rows = np.arange(N_A)
    assert float(np.mean(soft[a_rows].argmax(axis=1) == truth["emotion"][a_rows])) > 0.5


def test_soft_labels_survive_pack_and_unpack(taught_dir, tmp_path) -> None:
    from fer_model.dataset_pack import pack_dataset, unpack_dataset

    pack_dataset(taught_dir, tmp_path / "pack.npz", codec="png")
    unpacked = load_dataset(unpack_dataset(tmp_path / "pack.npz", tmp_path / "unpacked"))
    taught = load_dataset(taught_dir)
    np.testing.assert_array_equal(unpacked.soft_labels["emotion"], taught.soft_labels["emotion"])
    assert unpacked.manifest["soft_labels"] == taught.manifest["soft_labels"]


def test_tampered_soft_labels_fail_the_hash_check(taught_dir, tmp_path) -> None:
    import shutil

    copy = Path(shutil.copytree(taught_dir, tmp_path / "copy"))
    soft = dict(np.load(copy / "soft_labels.npz"))
    soft["emotion"][B_ROWS[0]] = np.roll(soft["emotion"][B_ROWS[0]], 1)
    np.savez(copy / "soft_labels.npz", **soft)
    with pytest.raises(ArtifactError, match="soft_labels.npz fails its hash check"):
        load_dataset(copy)


def test_a_version_1_artifact_still_loads_and_can_be_taught(sources_dir, teacher_dir, tmp_path) -> None:
    import shutil

    old = Path(shutil.copytree(sources_dir, tmp_path / "v1"))
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["format_version"] = 1  # what `prepare` wrote before soft labels existed: the same files
    (old / "manifest.json").write_text(json.dumps(manifest))
    loaded = load_dataset(old)
    assert loaded.soft_labels == {} and loaded.soft_subset("train") == {}
    np.testing.assert_array_equal(loaded.labels["emotion"], load_dataset(sources_dir).labels["emotion"])
    out = tmp_path / "taught"
    assert main(["teach", "--dataset", str(old), "--teacher", f"emotion={teacher_dir}", "--out", str(out)]) == 0
    assert load_dataset(out).manifest["soft_labels"]["emotion"]["labelled_per_split"]["train"] == N_B


@pytest.mark.parametrize(
    ("soft", "provenance", "match"),
    [
        ({"emotion": np.full((N_A + N_B + N_VAL, 7), 0.5)}, {"emotion": {}}, "not probabilities summing to 1"),
        ({"emotion": np.full((3, 7), np.nan)}, {"emotion": {}}, r"must have shape \(416, 7\)"),
        ({"mood": np.full((416, 7), np.nan)}, {"mood": {}}, "unknown task 'mood'"),
        ({"emotion": np.full((416, 7), np.nan)}, {}, "without provenance"),
    ],
)
def test_bad_soft_labels_are_refused(truth, tmp_path, soft, provenance, match) -> None:
    with pytest.raises(ArtifactError, match=match):
        write_dataset(tmp_path / "ds", images=np.zeros((416, 50, 50), np.uint8), labels=_source_labels(truth),
                      split=SPLIT, soft_labels=soft, soft_label_provenance=provenance)


# --- teaching ------------------------------------------------------------------------------------


def test_temper_softens_without_reordering() -> None:
    p = np.array([[0.7, 0.2, 0.1, 0.0], [0.25, 0.25, 0.25, 0.25]])
    np.testing.assert_allclose(temper(p, 1.0), p)
    soft = temper(p, 3.0)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0)
    assert soft[0].max() < 0.7 and soft[0].argmax() == 0 and soft[0, 3] == 0.0
    np.testing.assert_allclose(soft[1], 0.25)
    np.testing.assert_allclose(temper(p, 0.5)[0, :3], np.array([0.49, 0.04, 0.01]) / 0.54)


def test_threshold_drops_low_confidence_targets(sources_dir, teacher_dir, taught_dir, tmp_path) -> None:
    confidence = load_dataset(taught_dir).soft_labels["emotion"][B_ROWS].max(axis=1)
    threshold = float(np.median(confidence))
    out = teach(dataset_dir=sources_dir, teachers={"emotion": teacher_dir}, out_dir=tmp_path / "strict",
                config=TeachConfig(threshold=threshold))
    strict = load_dataset(out)
    kept = ~np.isnan(strict.soft_labels["emotion"][B_ROWS]).any(axis=1)
    clear = np.abs(confidence - threshold) > 1e-4  # float32 storage may round faces right at the threshold
    np.testing.assert_array_equal(kept[clear], (confidence >= threshold)[clear])
    made = strict.manifest["soft_labels"]["emotion"]
    assert 0 < made["below_threshold"] < N_B and made["threshold"] == threshold
    assert made["labelled_per_split"]["train"] == N_B - made["below_threshold"] == int(kept.sum())


def test_temperature_is_applied_and_recorded(sources_dir, teacher_dir, taught_dir, tmp_path) -> None:
    out = teach(dataset_dir=sources_dir, teachers={"emotion": teacher_dir}, out_dir=tmp_path / "warm",
                config=TeachConfig(temperature=2.0))
    warm = load_dataset(out)
    plain = load_dataset(taught_dir).soft_labels["emotion"][B_ROWS]
    np.testing.assert_allclose(warm.soft_labels["emotion"][B_ROWS], temper(plain, 2.0), atol=1e-5)
    assert warm.manifest["soft_labels"]["emotion"]["temperature"] == 2.0


def test_align_to_prior_moves_the_mean_to_the_prior() -> None:
    # A teacher that puts a third of the faces in class 0, where the true labels put 5%.
    rng = np.random.default_rng(0)
    skewed = rng.dirichlet([4.0, 3.0, 3.0], size=600)
    skewed[:200] = rng.dirichlet([12.0, 1.0, 1.0], size=200)
    prior = np.array([0.05, 0.55, 0.40])
    aligned, weights = align_to_prior(skewed, prior)
    np.testing.assert_allclose(aligned.mean(axis=0), prior, atol=1e-5)
    np.testing.assert_allclose(aligned.sum(axis=1), 1.0)
    assert weights[0] < weights[1] and weights[0] < weights[2]
    assert (aligned.argmax(axis=1) == 0).mean() < (skewed.argmax(axis=1) == 0).mean() / 2
    # One weight per class, the same on every face: each row is the skewed row times the weights, renormalised.
    expected = skewed * weights
    np.testing.assert_allclose(aligned, expected / expected.sum(axis=1, keepdims=True), atol=1e-12)
    # Already aligned: unchanged. A class the prior never saw: weight 0.
    np.testing.assert_allclose(align_to_prior(aligned, prior)[0], aligned, atol=1e-5)
    assert align_to_prior(skewed, np.array([0.0, 0.5, 0.5]))[0][:, 0].max() == 0.0
    with pytest.raises(ConfigError, match="needs 3 non-negative shares"):
        align_to_prior(skewed, np.array([0.5, 0.5]))


def test_aligned_teacher_targets_match_the_true_label_shares(sources_dir, teacher_dir, tmp_path) -> None:
    out = teach(dataset_dir=sources_dir, teachers={"emotion": teacher_dir}, out_dir=tmp_path / "aligned",
                config=TeachConfig(align_distribution=True))
    taught = load_dataset(out)
    train = taught.indices("train")
    labels = taught.labels["emotion"][train]
    shares = np.bincount(labels[labels != MISSING], minlength=7) / (labels != MISSING).sum()
    np.testing.assert_allclose(taught.soft_labels["emotion"][B_ROWS].mean(axis=0), shares, atol=1e-4)
    made = taught.manifest["soft_labels"]["emotion"]["distribution_alignment"]
    np.testing.assert_allclose(made["prior"], shares, atol=1e-6)
    assert len(made["class_weights"]) == 7
    plain = teach(dataset_dir=sources_dir, teachers={"emotion": teacher_dir}, out_dir=tmp_path / "plain")
    assert load_dataset(plain).manifest["soft_labels"]["emotion"]["distribution_alignment"] is None


def test_one_model_teaching_several_tasks_runs_once_over_their_faces(sources_dir, tiny_model_dir, tmp_path,
                                                                    monkeypatch) -> None:
    """Emotion goes to B's train faces, age to A's: one load and one pass over A + B, the targets of two runs."""
    import fer_model.model_artifact
    import fer_model.predict

    alone = {task: load_dataset(teach(dataset_dir=sources_dir, teachers={task: tiny_model_dir},
                                      out_dir=tmp_path / task, config=TeachConfig(flip_average=True)))
             for task in ("emotion", "age")}
    loads, faces_run = [], []
    load, predict = fer_model.model_artifact.load_model_artifact, fer_model.predict.predict_probabilities
    monkeypatch.setattr(fer_model.model_artifact, "load_model_artifact", lambda d: loads.append(d) or load(d))
    monkeypatch.setattr(fer_model.predict, "predict_probabilities",
                        lambda model, faces, **kw: faces_run.append(len(faces)) or predict(model, faces, **kw))
    # The same artifact under two spellings of its path is one teacher.
    relative = Path(os.path.relpath(tiny_model_dir))
    both = load_dataset(teach(dataset_dir=sources_dir, out_dir=tmp_path / "both", config=TeachConfig(flip_average=True),
                              teachers={"emotion": tiny_model_dir, "age": relative}))
    assert len(loads) == 1
    assert sum(faces_run) == N_A + N_B
    for task, candidates in (("emotion", N_B), ("age", N_A)):
        np.testing.assert_allclose(both.soft_labels[task], alone[task].soft_labels[task], atol=1e-5)
        assert both.manifest["soft_labels"][task]["candidates"] == candidates
    assert set(both.soft_labels) == {"emotion", "age"}


def test_cli_refuses_a_teacher_without_the_head(sources_dir, teacher_dir, tmp_path, capsys) -> None:
    argv = ["teach", "--dataset", str(sources_dir), "--teacher", f"age={teacher_dir}", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "has no 'age' head" in capsys.readouterr().err
    assert main([*argv[:4], "emotion", "--out", str(tmp_path / "o")]) == 2
    assert "TASK=MODEL_DIR" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"temperature": 0.0}, "`temperature` must be a finite number > 0"), ({"threshold": 1.5}, r"`threshold`"),
     ({"splits": ("train", "holdout")}, "`splits` must name"), ({"batch_size": 0}, "`batch_size`")],
)
def test_teach_config_rejects_bad_values(kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        TeachConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"distill_weight": -1.0}, "`distill_weight`"), ({"distill_temperature": 0}, "`distill_temperature`"),
     ({"distill_threshold": 2.0}, r"`distill_threshold` must be in \[0, 1\]"),
     ({"distill_blend": 1.5}, r"`distill_blend` must be in \[0, 1\]")],
)
def test_train_config_rejects_bad_distillation_values(kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**kwargs)


# --- the student ---------------------------------------------------------------------------------


def test_pack_targets_prefers_true_labels_and_drops_unsure_teachers() -> None:
    from fer_model.distillation import pack_targets, soft_target_count

    hard = np.array([2, MISSING, MISSING, MISSING])
    soft = np.array([[0.1, 0.1, 0.8], [0.2, 0.7, 0.1], [0.4, 0.3, 0.3], [np.nan] * 3], dtype=np.float32)
    targets = pack_targets(hard, soft, threshold=0.5)
    np.testing.assert_array_equal(targets[:, 0], [2, -1, -1, -1])
    np.testing.assert_array_equal(targets[1, 1:], soft[1])
    assert np.isnan(targets[[0, 2, 3], 1:]).all()  # true label wins; 0.4 < 0.5; no teacher
    assert soft_target_count(targets) == 1


def test_pack_targets_keeps_teacher_rows_of_labelled_faces_when_blending() -> None:
    from fer_model.distillation import pack_targets, soft_target_count

    hard = np.array([2, MISSING, 0])
    soft = np.array([[0.1, 0.1, 0.8], [0.2, 0.7, 0.1], [0.4, 0.3, 0.3]], dtype=np.float32)
    targets = pack_targets(hard, soft, threshold=0.5, blend=0.3)
    np.testing.assert_array_equal(targets[:, 0], [2, -1, 0])
    np.testing.assert_array_equal(targets[:2, 1:], soft[:2])
    assert np.isnan(targets[2, 1:]).all()  # the threshold still applies: 0.4 < 0.5
    assert soft_target_count(targets) == 2


def test_distillation_loss_blends_true_label_and_teacher_on_faces_with_both() -> None:
    import tensorflow as tf

    from fer_model.distillation import MaskedDistillationLoss

    y_pred = tf.Variable([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4]])
    nan = float("nan")
    y_true = tf.constant([[0, 0.1, 0.8, 0.1], [-1, nan, nan, nan]])
    teacher_ce = -(np.array([0.1, 0.8, 0.1]) * np.log([0.7, 0.2, 0.1])).sum()
    for blend in (0.0, 0.25, 1.0):
        loss = MaskedDistillationLoss(weight=2.0, blend=blend)
        assert float(loss(y_true, y_pred)) == pytest.approx(
            (1 - blend) * -np.log(0.7) + blend * 2.0 * teacher_ce, rel=1e-5)  # one face counts
    # At blend 1 the true label no longer matters; at 0 the teacher does not.
    relabelled = tf.constant([[2, 0.1, 0.8, 0.1], [-1, nan, nan, nan]])
    only_teacher = MaskedDistillationLoss(blend=1.0)
    assert float(only_teacher(relabelled, y_pred)) == pytest.approx(float(only_teacher(y_true, y_pred)), rel=1e-6)
    config = MaskedDistillationLoss(blend=0.25).get_config()
    assert MaskedDistillationLoss.from_config(config).blend == 0.25


def test_distillation_loss_gives_gradient_on_faces_with_teacher_targets_only() -> None:
    import tensorflow as tf

    from fer_model.distillation import MaskedDistillationLoss

    y_pred = tf.Variable([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4], [0.2, 0.5, 0.3]])
    nan = float("nan")
    y_true = tf.constant([[0, nan, nan, nan], [-1, 0.1, 0.8, 0.1], [-1, nan, nan, nan]])
    loss = MaskedDistillationLoss(weight=0.5, temperature=2.0)
    with tf.GradientTape() as tape:
        value = loss(y_true, y_pred)
    grad = tape.gradient(value, y_pred).numpy()
    # Row 0 is a true label, row 1 a teacher target, row 2 has neither: two faces count.
    student = np.log(np.array([0.3, 0.3, 0.4])) / 2.0
    student = student - np.log(np.exp(student).sum())
    expected = (-np.log(0.7) + 0.5 * 4.0 * -(np.array([0.1, 0.8, 0.1]) * student).sum()) / 2
    assert float(value) == pytest.approx(expected, rel=1e-5)
    assert np.abs(grad[1]).max() > 1e-3 and np.abs(grad[2]).max() == 0.0
    unteachered = tf.constant([[0, nan, nan, nan], [-1, nan, nan, nan], [-1, nan, nan, nan]])
    assert float(loss(unteachered, y_pred)) == pytest.approx(-np.log(0.7), rel=1e-5)


def _without_true_emotion(dataset: Dataset) -> Dataset:
    """The dataset with every train face's true emotion hidden: only teacher targets can teach emotion."""
    labels = {t: np.array(v) for t, v in dataset.labels.items()}
    labels["emotion"][dataset.indices("train")] = MISSING
    return dataclasses.replace(dataset, labels=labels)


def test_student_learns_emotion_from_teacher_targets_alone(taught_dir) -> None:
    from fer_model.model import ModelConfig
    from fer_model.training import fit

    taught = _without_true_emotion(load_dataset(taught_dir, mmap=False))
    untaught = dataclasses.replace(taught, soft_labels={})
    settings = {"model_config": ModelConfig(width=0.25, tasks=("emotion", "age")),
                "train_config": TrainConfig(epochs=4, learning_rate=1e-3, verbose=0,
                                            loss_weights={"emotion": 1.0, "age": 1.0})}
    student = fit(taught, **settings)
    baseline = fit(untaught, **settings)
    learned = max(student.history["val_emotion_accuracy"])
    chance_like = max(baseline.history["val_emotion_accuracy"])
    # Validation faces carry true emotion labels; the train split has none, only B's teacher targets.
    assert learned > chance_like + 0.2, f"with teachers {learned:.2f}, without {chance_like:.2f}"
    assert student.history["emotion_loss"][0] > 0 and baseline.history["emotion_loss"][0] == 0


def test_blending_soft_labels_that_skip_labelled_faces_is_flagged(taught_dir, caplog) -> None:
    import logging

    from fer_model.model import ModelConfig
    from fer_model.training import fit

    with caplog.at_level(logging.WARNING, logger="fer_model.training"):
        fit(load_dataset(taught_dir, mmap=False), model_config=ModelConfig(width=0.25, tasks=("emotion",)),
            train_config=TrainConfig(epochs=1, verbose=0, distill_blend=0.5))
    assert "distill_blend changes nothing for emotion" in caplog.text
    assert "--include-labelled" in caplog.text


def test_blending_a_deliberate_mix_of_teacher_targets_logs_without_warning(taught_dir, truth, caplog) -> None:
    """Emotion re-taught on every face, age keeping gap-only targets: the blend reaches emotion, so no warning."""
    import logging

    from fer_model.model import ModelConfig
    from fer_model.training import fit

    taught = load_dataset(taught_dir, mmap=False)
    every_face = np.eye(7, dtype=np.float32)[truth["emotion"]]
    every_face[taught.split != SPLIT_CODES["train"]] = np.nan
    gap_only = np.full((len(taught), 5), np.nan, dtype=np.float32)
    gap_only[:N_A] = np.eye(5, dtype=np.float32)[truth["age"][:N_A]]
    provenance = dict(taught.manifest["soft_labels"])
    provenance["emotion"] = {**provenance["emotion"], "include_labelled": True}
    provenance["age"] = {**provenance["emotion"], "include_labelled": False}
    mixed = dataclasses.replace(taught, soft_labels={"emotion": every_face, "age": gap_only},
                                manifest={**taught.manifest, "soft_labels": provenance})
    with caplog.at_level(logging.INFO, logger="fer_model.training"):
        fit(mixed, model_config=ModelConfig(width=0.25, tasks=("emotion", "age")),
            train_config=TrainConfig(epochs=1, verbose=0, distill_blend=0.5))
    said = [r for r in caplog.records if "distill_blend changes nothing" in r.getMessage()]
    assert [(r.levelno, r.getMessage().split(":")[0]) for r in said] == [
        (logging.INFO, "distill_blend changes nothing for age")]


def test_student_follows_the_teacher_over_true_labels_at_full_blend(sources_dir, truth) -> None:
    from fer_model.model import ModelConfig
    from fer_model.training import fit

    # The teacher says each train face is the class after its true one: a full blend must learn that.
    dataset = load_dataset(sources_dir, mmap=False)
    train = dataset.indices("train")
    shifted = (truth["emotion"] + 1) % 7
    soft = np.full((len(dataset), 7), np.nan, dtype=np.float32)
    soft[train] = np.eye(7, dtype=np.float32)[shifted[train]]
    dataset = dataclasses.replace(dataset, soft_labels={"emotion": soft})
    result = fit(dataset, model_config=ModelConfig(width=0.25, tasks=("emotion",)),
                 train_config=TrainConfig(epochs=4, learning_rate=1e-3, verbose=0, distill_blend=1.0))
    a_rows = np.arange(N_A)
    predicted = result.model.predict(np.asarray(dataset.images[a_rows], np.float32)[..., None], verbose=0)
    predicted = predicted["emotion"].argmax(axis=1)
    to_teacher = float(np.mean(predicted == shifted[a_rows]))
    to_truth = float(np.mean(predicted == truth["emotion"][a_rows]))
    assert to_teacher > to_truth + 0.2, f"agrees with the teacher on {to_teacher:.2f}, the labels on {to_truth:.2f}"


# --- the pipeline's teacher stage ----------------------------------------------------------------


def _dataset_artifact(root: Path, name: str, path: Path | None = None):
    from kfp import dsl

    return dsl.Dataset(name=name, uri=str(path or root / name))


@pytest.mark.parametrize("with_teacher", [True, False], ids=["teacher", "no-teacher"])
def test_teach_component_labels_or_passes_the_dataset_through(sources_dir, teacher_dir, tmp_path, with_teacher
                                                              ) -> None:
    from components.teach import teach as teach_component

    taught = _dataset_artifact(tmp_path, "taught")
    teachers = json.dumps({"emotion": str(teacher_dir)}) if with_teacher else ""
    teach_component.python_func(dataset=_dataset_artifact(tmp_path, "in", sources_dir), taught=taught,
                                teachers=teachers, teach_config='{"threshold": 0.0}')
    out = load_dataset(taught.path)
    np.testing.assert_array_equal(out.labels["emotion"], load_dataset(sources_dir).labels["emotion"])
    if with_teacher:
        assert out.manifest["soft_labels"]["emotion"]["labelled_per_split"]["train"] == N_B
        assert taught.metadata["soft_labels"] == {"emotion": {"train": N_B, "validation": 0, "test": 0}}
    else:
        assert out.soft_labels == {} and "soft_labels" not in out.manifest
    assert taught.metadata["format"] == "fer-mtl-dataset/v2"
