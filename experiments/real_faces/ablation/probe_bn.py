"""Why a model scores below chance on validation emotion: inference vs training mode, BN statistics.

    python experiments/real_faces/ablation/probe_bn.py DATA_DIR/mixed MODEL_DIR

Prints, on the validation faces with an emotion label: accuracy and predicted-class histogram in
inference mode (BN moving averages), in training mode (batch statistics; dropout on too), and after
recomputing every BN layer's statistics in inference mode on 3,000 training faces (the mix, FER2013
only) or on the validation faces themselves; then, per BN layer, the moving mean/variance next to
the statistics of its inputs on the training mix (medians over channels).
"""

from __future__ import annotations

import sys

import keras
import numpy as np

from fer_model.model import recalibrate_batch_norm
from fer_model.model_artifact import load_model_artifact
from fer_model.tasks import MISSING


def main(data: str, model_dir: str) -> None:
    x = np.load(f"{data}/images.npy", mmap_mode="r")
    emotion = np.load(f"{data}/labels.npz")["emotion"]
    split = np.load(f"{data}/split.npy")
    rng = np.random.default_rng(0)
    val = np.where((split == 1) & (emotion != MISSING))[0]
    mix = np.sort(rng.choice(np.where(split == 0)[0], 3000, replace=False))
    fer = np.sort(rng.choice(np.where((split == 0) & (emotion != MISSING))[0], 3000, replace=False))

    def faces(idx: np.ndarray) -> np.ndarray:
        return np.asarray(x[idx], dtype=np.float32)[..., None]

    model = load_model_artifact(model_dir).model
    xv, yv = faces(val), emotion[val]

    def report(what: str, training: bool = False) -> None:
        p = np.concatenate([keras.ops.convert_to_numpy(model(xv[i:i + 256], training=training)["emotion"])
                            for i in range(0, len(xv), 256)]).argmax(1)
        print(f"{what}: accuracy {(p == yv).mean():.3f}, predicted classes {np.bincount(p, minlength=7).tolist()}")

    print(f"validation faces with emotion: {len(val)}, true classes {np.bincount(yv, minlength=7).tolist()}")
    report("inference mode (moving averages)")
    report("training mode (batch statistics, dropout on)", training=True)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    original = [layer.get_weights() for layer in bns]
    for what, idx in (("training mix", mix), ("FER2013 training faces", fer), ("validation faces", val)):
        recalibrate_batch_norm(model, faces(idx))
        report(f"BN statistics recomputed on {what}")
        for layer, weights in zip(bns, original, strict=True):
            layer.set_weights(weights)
    images = faces(mix)
    for layer in bns:
        f = keras.ops.convert_to_numpy(keras.Model(model.input, layer.input).predict(images, verbose=0))
        f = f.reshape(-1, f.shape[-1])
        _, _, mean, var = layer.get_weights()
        print(f"{layer.name}: moving mean |{np.median(np.abs(mean)):.3f}|"
              f" vs inputs |{np.median(np.abs(f.mean(0))):.3f}|,"
              f" moving variance {np.median(var):.3f} vs inputs {np.median(f.var(0)):.3f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
