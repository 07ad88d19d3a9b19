"""`fer-mtl` command line: one module per subcommand, each exposing `register(subparsers)`.

A subcommand module imports nothing heavy at module level, so `fer-mtl --help` stays fast.
Any `FerError` becomes one line on stderr and exit code 2; no traceback reaches the user.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from fer_model import __version__
from fer_model.errors import FerError

# Subcommand modules under fer_cli/, in the order `--help` lists them.
_COMMANDS: tuple[str, ...] = (
    "sample_data",
    "prepare",
    "teach",
    "train",
    "evaluate",
    "predict",
    "tune",
    "pipeline",
    "demo",
    "serve",
    "deploy",
    "experiment",
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr (exit 2), like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fer-mtl", description="Multi-task facial emotion recognition: data, training, tuning, serving."
    )
    parser.add_argument("--version", action="version", version=f"fer-mtl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(f"fer_cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except FerError as e:
        print(f"fer-mtl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fer-mtl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
