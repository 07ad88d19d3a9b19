"""`fer-mtl predict`: detect faces in image files and print per-face predictions as JSON."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from fer_model.errors import ConfigError, DataError
from fer_model.face_detector import DETECTORS

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `predict` subcommand."""
    parser = subparsers.add_parser(
        "predict",
        help="predict emotion (and gender, race, age) for every face in image files",
        description='Prints JSON: [{"image": path, "faces": [{"box", "eyes_found", "angle", "predictions"}]}].',
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    parser.add_argument("--model", default=None, help="model artifact folder (default: the shipped pretrained model)")
    parser.add_argument("--max-faces", type=int, default=None, help="at most this many faces per image, largest first")
    parser.add_argument(
        "--detector", default=None, choices=DETECTORS,
        help="face detector (default: the model's alignment setting; blazeface when it names none)",
    )
    parser.add_argument("--flip-average", action="store_true",
                        help="answer with the mean of each face and its mirror image (test-time augmentation)")
    parser.add_argument(
        "--annotate", default=None, metavar="OUT",
        help="also write the image with boxes and labels drawn to OUT (.jpg, .png, ...); one IMAGE only",
    )
    parser.set_defaults(func=run)


def _read(path: str) -> bytes:
    file = Path(path)
    if not file.is_file():
        raise DataError(f"image {path} does not exist or is not a file")
    try:
        return file.read_bytes()
    except OSError as e:
        raise DataError(f"image {path} cannot be read: {e.strerror or e}") from e


def run(args: argparse.Namespace) -> int:
    """Read every image first (a typo fails before the model loads), then predict them in one batch."""
    if args.max_faces is not None and args.max_faces < 1:
        raise ConfigError(f"--max-faces must be >= 1, got {args.max_faces}")
    if args.annotate is not None and len(args.images) != 1:
        raise ConfigError(f"--annotate writes one picture: pass one IMAGE, got {len(args.images)} (run once per image)")
    if args.annotate is not None:
        from fer_model.annotate import check_output

        check_output(args.annotate)
    from fer_model.images import decode_image

    # Decode here rather than in Predictor so an error names the file, not its position.
    arrays = []
    for path in args.images:
        data = _read(path)
        try:
            arrays.append(decode_image(data))
        except DataError as e:
            raise DataError(f"image {path}: {e}") from e
    from fer_model.predict import Predictor

    predictor = Predictor(args.model, flip_average=args.flip_average, detector=args.detector)
    results = predictor.predict(arrays, max_faces_per_image=args.max_faces)
    out = [
        {"image": path, "faces": [f.to_dict() for f in faces]}
        for path, faces in zip(args.images, results, strict=True)
    ]
    if args.annotate is not None:
        from fer_model.annotate import write_annotated

        write_annotated(args.annotate, arrays[0], results[0])
    print(json.dumps(out, indent=2))
    return 0
