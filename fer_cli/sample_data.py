"""`fer-mtl sample-data`: write synthetic faces in the FER2013 CSV and RAF-DB formats, for demos."""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `sample-data` subcommand."""
    parser = subparsers.add_parser(
        "sample-data",
        help="write synthetic faces as a FER2013 CSV and a RAF-DB folder",
        description="Procedurally drawn faces with emotion, gender, race and age cues, written as "
        "DIR/fer2013.csv (half of them) and DIR/rafdb/ (the other half), including a few malformed CSV "
        "rows and one corrupt image on purpose, so `fer-mtl prepare` shows rejects.",
    )
    parser.add_argument("--out", required=True, help="folder to write into")
    parser.add_argument("--n", type=int, default=600, help="number of faces (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the sample data and print the `--source` arguments that `fer-mtl prepare` takes."""
    from fer_model.sample_data import write_sample_data

    info = write_sample_data(args.out, n=args.n, seed=args.seed)
    fer, raf = info["counts"]["fer2013"], info["counts"]["rafdb"]
    print(f"FER2013 CSV: {info['fer2013_csv']} ({fer['faces']} faces, {fer['malformed_rows']} malformed rows)")
    print(f"RAF-DB:      {info['rafdb_dir']} ({raf['faces']} faces, {raf['corrupt_images']} corrupt image)")
    print("prepare with: fer-mtl prepare " + " ".join(f"--source {s}" for s in info["sources"]) + " --out DATASET")
    return 0
