"""`fer-mtl deploy`: create the InferenceService for a model artifact, or roll it out as a canary."""

from __future__ import annotations

import argparse
import json
import logging

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `deploy` subcommand."""
    parser = subparsers.add_parser(
        "deploy",
        help="deploy a model artifact as a KServe InferenceService (canary when it exists)",
        description=(
            "Creates the InferenceService, or patches it with --canary percent of traffic for the new "
            "revision, then waits until Ready and prints the URL. Credentials: in-cluster service "
            "account, else the kubeconfig. See docs/serving.md."
        ),
    )
    parser.add_argument("--storage-uri", required=True, help="the model artifact, e.g. gs://bucket/runs/42/model")
    parser.add_argument("--image", default=None, help="predictor image (default: components/_images PREDICTOR_IMAGE)")
    parser.add_argument("--name", default="fer-mtl", help="InferenceService name (default: fer-mtl)")
    parser.add_argument("--namespace", default="default", help="namespace (default: default)")
    parser.add_argument("--canary", type=int, default=10, help="traffic %% for the new revision (default: 10)")
    parser.add_argument("--min-replicas", type=int, default=1, help="default: 1 (0 allows scale to zero)")
    parser.add_argument("--max-replicas", type=int, default=3, help="default: 3")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for Ready (default: 600)")
    parser.add_argument("--poll-interval", type=float, default=5.0, help="seconds between status reads (default: 5)")
    parser.add_argument("--dry-run", action="store_true", help="print the manifest and the canary patch; touch nothing")
    parser.set_defaults(func=run)


def _default_image() -> str:
    # The pinned predictor image lives with the components; fall back to a plain name if they are absent.
    try:
        from components._images import PREDICTOR_IMAGE
    except ImportError:
        return "fer-mtl-predictor:latest"
    return PREDICTOR_IMAGE


def run(args: argparse.Namespace) -> int:
    """Build the config (validated), then print it (--dry-run) or deploy and print the outcome."""
    from fer_model.release.deploy import DeployConfig, build_inferenceservice, canary_patch, deploy

    config = DeployConfig(
        image=args.image or _default_image(),
        storage_uri=args.storage_uri,
        name=args.name,
        namespace=args.namespace,
        canary_traffic_percent=args.canary,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
    )
    if args.dry_run:
        print(json.dumps({"create": build_inferenceservice(config), "patch_if_exists": canary_patch(config)}, indent=2))
        return 0
    result = deploy(config=config, timeout_s=args.timeout, poll_interval_s=args.poll_interval)
    print(
        json.dumps(
            {
                "action": result.action,
                "name": result.name,
                "namespace": result.namespace,
                "url": result.url,
                "canary_traffic_percent": result.canary_traffic_percent,
            }
        )
    )
    return 0
