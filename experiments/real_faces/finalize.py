"""Turn one experiment run into a complete model artifact, re-scored here on the original pixels.

    python experiments/real_faces/finalize.py RUN_DIR MODEL_KERAS DATASET OUT [--float16-weights]

RUN_DIR is a run folder as `fer-mtl experiment run` or the GPU script left it (model/config.json,
history.json, result.json); MODEL_KERAS its model.keras; DATASET the dataset artifact it trained on
(for GPU runs, the one the transport pack was made from). The model (trained under JAX or
TensorFlow) is loaded under TensorFlow, its classes without a training label are silenced as `fit`
does, it gets its SavedModel export, is scored on DATASET's test split (original pixels, not a lossy
transport copy), its model card is rendered and its probe (fer_model/model_probe.py) recorded.
`--float16-weights` stores the weights as float16 first (fer_model/float16_weights.py), so that
everything recorded describes the file as shipped: the shipped model uses it, to stay under 5 MB.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("model_keras", type=Path)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--no-saved-model", action="store_true", help="skip the TF SavedModel export")
    parser.add_argument("--float16-weights", action="store_true",
                        help="store model.keras's large weight arrays as float16 (half the size)")
    args = parser.parse_args()

    import dataclasses

    import keras

    from fer_model.artifact_files import HISTORY_FILE, KERAS_FILE, METRICS_FILE, SAVED_MODEL_DIR
    from fer_model.dataset import load_dataset
    from fer_model.evaluation import evaluate
    from fer_model.float16_weights import store_float16_weights
    from fer_model.model import silence_classes
    from fer_model.model_artifact import export_saved_model, read_model_config
    from fer_model.model_card import EXPERIMENT_FILE, write_model_card
    from fer_model.model_probe import write_probe
    from fer_model.training import untrained_classes

    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    shutil.copy(args.run_dir / "model" / HISTORY_FILE, args.out / HISTORY_FILE)
    result = json.loads((args.run_dir / "result.json").read_text())
    # Provenance of the figures measured where it trained (on the transport copy of the pixels).
    (args.out / EXPERIMENT_FILE).write_text(json.dumps(result, indent=2) + "\n")
    config = read_model_config(args.run_dir / "model")
    # Runs trained before `fit` silenced label-less classes get the same treatment here (idempotent).
    dataset = load_dataset(args.dataset)  # images stay memory-mapped: only the labels are read here
    train = dataset.indices("train")
    silenced = untrained_classes({t: dataset.labels[t][train] for t in config.tasks})
    model = keras.saving.load_model(args.model_keras)
    silence_classes(model, silenced)
    model.save(args.out / KERAS_FILE)
    if args.float16_weights:
        store_float16_weights(args.out / KERAS_FILE)
        model = keras.saving.load_model(args.out / KERAS_FILE)  # the SavedModel must hold the same weights
    saved_model = None
    if not args.no_saved_model:
        export_saved_model(model, args.out / SAVED_MODEL_DIR, tasks=list(config.tasks), image_size=config.input_size)
        saved_model = SAVED_MODEL_DIR
    # The re-saved model.keras differs from the one the run's config.json hashed: record the new files.
    config = dataclasses.replace(config, untrained_classes={t: tuple(c) for t, c in silenced.items()},
                                 saved_model=saved_model, sha256=_file_hashes(args.out))
    config.write(args.out)
    evaluation = args.out.parent / f".{args.out.name}-evaluation"
    metrics = evaluate(model_dir=args.out, dataset_dir=args.dataset, out_dir=evaluation, split="test")
    shutil.copy(evaluation / METRICS_FILE, args.out / METRICS_FILE)
    shutil.rmtree(evaluation)
    write_model_card(args.out)
    # The model's answers on the regenerable probe faces, which tests/test_pretrained.py re-checks.
    write_probe(args.out)
    print(json.dumps({t: m.accuracy for t, m in metrics.tasks.items()}))

def _file_hashes(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `root` (config.json is written after, so never among them)."""
    from fer_model.dataset import sha256_file

    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


if __name__ == "__main__":
    main()
