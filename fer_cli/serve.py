"""`fer-mtl serve`: the KServe predictor (V1 and V2 REST protocols) over a model artifact."""

from __future__ import annotations

import argparse
import logging

from fer_cli._flags import add_settings_flags, settings_from
from fer_model._settings import field_default
from fer_model.errors import ConfigError
from fer_model.face_detector import DETECTORS
from fer_model.serving.limits import MIB, RequestLimits

logger = logging.getLogger(__name__)

#: RequestLimits fields whose flag is `--field-name`, typed and defaulted from the dataclass.
_LIMIT_FLAGS = {
    "max_images": "most images per request",
    "max_pixels": "largest image, width x height",
    "max_pending_requests": (
        "most prediction requests admitted at once (computing or waiting for the inference thread); "
        "more get 503 with Retry-After"
    ),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `serve` subcommand."""
    parser = subparsers.add_parser(
        "serve",
        help="serve a model artifact over HTTP (KServe V1 and V2 protocols)",
        description=(
            "Serves /v1/models/NAME:predict, /v2/models/NAME/infer, health and readiness, /metrics, "
            "and a try-it page at / (--no-page turns it off). "
            "Binds 127.0.0.1 by default; in a container pass --host 0.0.0.0. See docs/serving.md."
        ),
    )
    parser.add_argument(
        "--model", default=None,
        help="model artifact folder (in a pod: /mnt/models; default: the pretrained model shipped with fer-mtl)",
    )
    parser.add_argument("--name", default="fer-mtl", help="model name in request paths (default: fer-mtl)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="HTTP port (default: 8080)")
    parser.add_argument(
        "--workers", type=int, default=1, help="HTTP worker processes, each with its own model copy (default: 1)"
    )
    parser.add_argument("--grpc-port", type=int, default=None, help="also serve gRPC on this port (default: off)")
    # Two limits keep their shorter spellings (and the body a friendlier unit) from before the
    # flags were derived; their defaults still come from RequestLimits.
    parser.add_argument(
        "--max-body-mb", type=float, default=field_default(RequestLimits, "max_body_bytes") / MIB,
        help="largest request body, MiB (default: %(default)s)",
    )
    add_settings_flags(parser, RequestLimits, _LIMIT_FLAGS)
    parser.add_argument(
        "--max-faces", dest="max_faces_per_image", metavar="MAX_FACES", type=int,
        default=field_default(RequestLimits, "max_faces_per_image"),
        help="most faces kept per image (default: %(default)s)",
    )
    parser.add_argument(
        "--detector", default=None, choices=DETECTORS,
        help="face detector (default: the model's alignment setting; blazeface when it names none)",
    )
    parser.add_argument(
        "--page", action=argparse.BooleanOptionalAction, default=True,
        help="serve the try-it web page at GET / (default: on; the InferenceService passes --no-page)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate the flags, then load the model and serve until interrupted."""
    if args.max_body_mb <= 0:
        raise ConfigError(f"--max-body-mb must be > 0, got {args.max_body_mb}")
    limits = RequestLimits(
        max_body_bytes=int(args.max_body_mb * MIB),
        max_faces_per_image=args.max_faces_per_image,
        **settings_from(args, _LIMIT_FLAGS),
    )
    from fer_model.predict import resolve_model_dir

    # Imported here: kserve and its web stack are not needed for `fer-mtl --help`.
    from fer_model.serving.server import serve

    serve(
        model_dir=resolve_model_dir(args.model),
        name=args.name,
        host=args.host,
        port=args.port,
        workers=args.workers,
        grpc_port=args.grpc_port,
        limits=limits,
        page=args.page,
        detector=args.detector,
    )
    return 0
