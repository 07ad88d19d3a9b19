"""A model artifact's fingerprint: its answers on a small probe set that anyone can regenerate.

The probe faces are synthetic (seeded `fer_model.sample_data` drawings at the model's input size),
so `probe.json` stores their recipe and a hash of their pixels, not the pixels: the project commits
no real faces. `write_probe` records what the model answers for each; `check_probe` re-runs the
model and fails if any probability moved, so a retrained, changed or corrupted model.keras that
was shipped without a new probe cannot pass unnoticed.

    python -m fer_model.model_probe MODEL_DIR            # (re)write MODEL_DIR/probe.json
    python -m fer_model.model_probe --check MODEL_DIR    # compare the model with its probe.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fer_model.errors import ArtifactError, ConfigError, FerError
from fer_model.tasks import AGE, EMOTION, GENDER, RACE

PROBE_FILE = "probe.json"
PROBE_FORMAT = "fer-mtl-probe"
PROBE_FORMAT_VERSION = 1
#: Probabilities are stored with this many decimals: far below any tolerance worth checking.
DECIMALS = 6
#: Default largest difference a probability may show when re-run (other CPUs round differently).
TOLERANCE = 1e-4


@dataclass(frozen=True)
class ProbeRecipe:
    """How the probe faces are drawn: `n` gray faces of `size` px from `seed`, labels cycling per task."""

    seed: int = 0
    n: int = 16
    size: int = 50

    def __post_init__(self) -> None:
        for name, low in (("seed", 0), ("n", 1), ("size", 8)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"probe `{name}` must be an int >= {low}, got {value!r}")


def probe_faces(recipe: ProbeRecipe) -> tuple[np.ndarray, list[dict[str, str]]]:
    """The probe images, uint8 [n, size, size], and the labels each was drawn with."""
    # sample_data has no public face type; its drawing function reads these four labels.
    from fer_model.sample_data import _Face, render_face

    rng = np.random.default_rng(recipe.seed)
    images, drawn = [], []
    for i in range(recipe.n):
        # Only male/female: "unsure" is not a drawable appearance.
        face = _Face(emotion=EMOTION.classes[i % len(EMOTION.classes)], gender=GENDER.classes[i % 2],
                     race=RACE.classes[i % len(RACE.classes)], age=AGE.classes[i % len(AGE.classes)])
        image, _ = render_face(face, rng, size=recipe.size, gray=True)
        images.append(image)
        drawn.append(asdict(face))
    return np.stack(images), drawn


def _answers(model_dir: Path, images: np.ndarray) -> list[dict[str, dict[str, float]]]:
    from fer_model.predict import Predictor

    faces = Predictor(model_dir).predict_aligned(images)
    return [{task: {c: round(float(p), DECIMALS) for c, p in probs.items()} for task, probs in f.probabilities.items()}
            for f in faces]


def write_probe(model_dir: str | os.PathLike[str], *, recipe: ProbeRecipe | None = None) -> Path:
    """Run the artifact in `model_dir` on the probe faces and write its answers to `model_dir/probe.json`."""
    model_dir = Path(model_dir)
    recipe = recipe or ProbeRecipe()
    images, drawn = probe_faces(recipe)
    answers = _answers(model_dir, images)
    probe = {
        "format": PROBE_FORMAT,
        "format_version": PROBE_FORMAT_VERSION,
        "recipe": {"drawer": "fer_model.sample_data.render_face", **asdict(recipe)},
        "inputs_sha256": hashlib.sha256(images.tobytes()).hexdigest(),
        "faces": [
            {"drawn": labels, "predictions": {t: {"label": max(p, key=p.__getitem__), "probabilities": p}
                                              for t, p in answer.items()}}
            for labels, answer in zip(drawn, answers, strict=True)
        ],
    }
    out = model_dir / PROBE_FILE
    tmp = out.with_name(f".{PROBE_FILE}.tmp")
    tmp.write_text(json.dumps(probe, indent=1) + "\n")
    os.replace(tmp, out)
    return out


def read_probe(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The probe.json of `model_dir`, checked for format and version."""
    path = Path(model_dir) / PROBE_FILE
    try:
        probe = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing; write it with `python -m fer_model.model_probe {model_dir}`") from None
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path} is not valid JSON: {e}") from e
    if probe.get("format") != PROBE_FORMAT or probe.get("format_version") != PROBE_FORMAT_VERSION:
        raise ArtifactError(f"{path} is not a {PROBE_FORMAT} v{PROBE_FORMAT_VERSION} file: "
                            f"format {probe.get('format')!r} v{probe.get('format_version')!r}")
    return probe


def check_probe(model_dir: str | os.PathLike[str], *, tolerance: float = TOLERANCE) -> None:
    """Re-run the artifact on its probe faces; ArtifactError naming every answer that moved.

    Raises:
        ArtifactError: no or malformed probe.json, probe faces that no longer regenerate (a numpy or
            OpenCV upgrade changed the drawing), or a probability off by more than `tolerance`.
    """
    model_dir = Path(model_dir)
    probe = read_probe(model_dir)
    recipe = ProbeRecipe(**{k: v for k, v in probe["recipe"].items() if k != "drawer"})
    images, _ = probe_faces(recipe)
    if hashlib.sha256(images.tobytes()).hexdigest() != probe["inputs_sha256"]:
        raise ArtifactError(
            f"{model_dir / PROBE_FILE}: its probe faces no longer regenerate bit for bit (numpy or OpenCV "
            "changed the drawing), so the model cannot be compared; check the model another way, then "
            f"rewrite the probe with `python -m fer_model.model_probe {model_dir}`"
        )
    moved = _moved(probe["faces"], _answers(model_dir, images), tolerance=tolerance)
    if moved:
        shown = "; ".join(moved[:5]) + (f"; and {len(moved) - 5} more" if len(moved) > 5 else "")
        raise ArtifactError(f"{model_dir} does not answer as its {PROBE_FILE} records (tolerance {tolerance}): "
                            f"{shown}; a changed model needs a new probe (python -m fer_model.model_probe)")


def _moved(recorded: list[dict[str, Any]], answers: list[dict[str, dict[str, float]]], *, tolerance: float
           ) -> list[str]:
    """One line per probability that differs from its record by more than `tolerance`."""
    moved = []
    for i, (face, answer) in enumerate(zip(recorded, answers, strict=True)):
        for task, prediction in face["predictions"].items():
            now = answer.get(task)
            if now is None or now.keys() != prediction["probabilities"].keys():
                moved.append(f"face {i} {task}: classes {None if now is None else list(now)}, recorded "
                             f"{list(prediction['probabilities'])}")
                continue
            for cls, p in prediction["probabilities"].items():
                if abs(now[cls] - p) > tolerance:
                    moved.append(f"face {i} {task} {cls}: {now[cls]:.6f}, recorded {p:.6f}")
    return moved


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fer_model.model_probe", description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--check", action="store_true", help="compare with the recorded probe instead of writing it")
    args = parser.parse_args(argv)
    try:
        if args.check:
            check_probe(args.model_dir)
            print(f"{args.model_dir}: answers as its {PROBE_FILE} records")
        else:
            print(write_probe(args.model_dir))
    except FerError as e:
        raise SystemExit(f"{parser.prog}: error: {e}") from None


if __name__ == "__main__":
    main()
