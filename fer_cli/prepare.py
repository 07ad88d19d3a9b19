"""`fer-mtl prepare`: read sources, align faces, write a dataset artifact."""

from __future__ import annotations

import argparse
import logging

from fer_cli._flags import add_settings_flags, settings_from
from fer_model.errors import ConfigError
from fer_model.readers import KINDS, SPLIT_MODES

logger = logging.getLogger(__name__)

_ALIGN_FLAGS = {
    "crop_eyes": "how face crops (FER2013, UTKFace) find their eyes: Haar eye cascade, or BlazeFace eye "
    "keypoints (~4x faster, more eye pairs found; recorded in the manifest)",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `prepare` subcommand."""
    from fer_model.alignment import AlignConfig

    parser = subparsers.add_parser(
        "prepare",
        help="sources -> aligned 50x50 faces -> dataset artifact",
        description="Read every source, detect and level faces (eye alignment, capped rotation), and "
        "write one dataset artifact with per-source counts, alignment statistics and every reject.",
    )
    parser.add_argument(
        "--source",
        action="append",
        required=True,
        metavar="KIND:PATH",
        help=f"a source (repeatable); KIND one of {', '.join(KINDS)}; PATH local or gs://",
    )
    parser.add_argument("--out", required=True, help="dataset artifact folder to write")
    parser.add_argument("--workers", type=int, default=1, help="alignment processes (default: %(default)s)")
    parser.add_argument("--no-eye-alignment", action="store_true", help="crop and resize only, no eye levelling")
    add_settings_flags(parser, AlignConfig, _ALIGN_FLAGS)
    parser.add_argument(
        "--split-mode",
        choices=SPLIT_MODES,
        default="official",
        help="official splits, or the paper's random 90/10 RAF-DB split (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for splits sources do not fix (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="read at most this many inputs per source")
    parser.add_argument(
        "--drop-training-copies",
        action="store_true",
        help="leave out training faces that copy validation or test faces (FER2013 repeats photos across its "
        "sets), so held-out figures measure unseen faces; counted per source in the manifest",
    )
    parser.add_argument(
        "--near-copies",
        action="store_true",
        help="also find near copies (the same photo re-cropped, re-encoded or re-lit) wherever exact copies are "
        "found: counted, dropped, and left out by `evaluate`; for photos, not drawn faces",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Prepare the dataset and print where it is and what it holds."""
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    from fer_model.alignment import AlignConfig
    from fer_model.dataset import load_dataset
    from fer_model.prepare import prepare_dataset
    from fer_model.readers import SourceSpec

    specs = [SourceSpec.parse(text) for text in args.source]  # bad KIND:PATH fails before any work
    out = prepare_dataset(
        sources=specs,
        out_dir=args.out,
        align=AlignConfig(eye_alignment=not args.no_eye_alignment, **settings_from(args, _ALIGN_FLAGS)),
        workers=args.workers,
        seed=args.seed,
        split_mode=args.split_mode,
        limit=args.limit,
        drop_training_copies=args.drop_training_copies,
        near_copies=args.near_copies,
    )
    manifest = load_dataset(out, verify=False).manifest
    counts = manifest["counts"]
    splits = ", ".join(f"{s} {counts[s]['total']}" for s in manifest["splits"])
    dropped = sum(s.get("train_copies_dropped", 0) for s in manifest["sources"])
    left_out = f"; {dropped} training copies of held-out faces left out" if args.drop_training_copies else ""
    print(f"dataset: {out} ({manifest['num_samples']} samples: {splits}; {manifest['num_rejects']} rejected{left_out})")
    return 0
