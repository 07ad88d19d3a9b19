"""`fer-mtl pipeline`: compile the Kubeflow pipeline, run it locally, or submit it to a cluster.

    fer-mtl pipeline compile --out pipeline.yaml
    fer-mtl pipeline run --local --out runs/local -p sample_n=200 -p train_config.epochs=3
    fer-mtl pipeline submit --host http://localhost:8080 -p sources=fer2013-csv:gs://b/fer2013.csv \
        -p tuning_storage='postgresql://optuna:${OPTUNA_DB_PASSWORD}@optuna-postgres:5432/optuna'

Nothing heavy is imported until a subcommand runs; compiling never imports TensorFlow.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from fer_model.errors import ConfigError

logger = logging.getLogger(__name__)

# Compile-time image overrides: flag, else environment variable, else components/_images.py.
_IMAGE_ENV = {"cpu": "FER_CPU_IMAGE", "gpu": "FER_GPU_IMAGE", "predictor": "FER_PREDICTOR_IMAGE"}


def _add_param_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-p", "--param", action="append", default=[], metavar="NAME=VALUE",
        help="a pipeline parameter (repeatable), e.g. -p train_config.epochs=3 -p sample_n=200; "
        "`fer-mtl pipeline params` lists them",
    )


def _add_image_flags(parser: argparse.ArgumentParser, *, tuning_secret: bool = True) -> None:
    if tuning_secret:  # a cluster setting: local runs read no Secret
        parser.add_argument(
            "--tuning-secret", default="fer-mtl-tuning-postgres", metavar="NAME",
            help="Secret whose `password` key tune workers get as OPTUNA_DB_PASSWORD (default: %(default)s; "
            "'' for none)",
        )
        parser.add_argument(
            "--tune-on-gpu", action="store_true",
            help="tuning trials run on GPU nodes too (gpu_node_selector / gpu_tolerations), not on CPU nodes",
        )
    for role, env in _IMAGE_ENV.items():
        parser.add_argument(
            f"--{role}-image", metavar="IMAGE", help=f"{role} image (default: ${env}, else the pinned one)"
        )


def _add_credential_flags(parser: argparse.ArgumentParser) -> None:
    from pipelines.kfp_auth import COOKIE_ENV, TOKEN_ENV

    auth = parser.add_argument_group("credentials (multi-user Kubeflow; never printed)")
    auth.add_argument(
        "--token", help=f"bearer token for the API, e.g. from `kubectl create token` (default: ${TOKEN_ENV}, which "
        "keeps it out of shell history)",
    )
    auth.add_argument(
        "--sa-token", nargs="?", const="", metavar="PATH",
        help="use the projected service-account token file inside the cluster (default path: "
        "$KF_PIPELINES_SA_TOKEN_PATH, else /var/run/secrets/kubeflow/pipelines/token)",
    )
    auth.add_argument(
        "--cookie", metavar="NAME=VALUE",
        help=f"session cookie of the Kubeflow login, e.g. authservice_session=... (default: ${COOKIE_ENV})",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `pipeline` subcommand and its actions."""
    parser = subparsers.add_parser(
        "pipeline",
        help="compile, run locally, or submit the Kubeflow pipeline",
        description="The fer-mtl Kubeflow Pipelines v2 DAG: prepare -> tune -> train -> evaluate -> gate -> deploy.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    compile_p = actions.add_parser("compile", help="write the pipeline as KFP IR YAML")
    compile_p.add_argument("--out", default="pipeline.yaml", help="output file (default: %(default)s)")
    _add_image_flags(compile_p)
    compile_p.set_defaults(func=_compile)

    run_p = actions.add_parser("run", help="run the pipeline on this machine (kfp.local)")
    run_p.add_argument("--local", action="store_true", help="run on this machine with kfp.local (required)")
    run_p.add_argument("--out", default="pipeline-out", help="folder for the run's artifacts (default: %(default)s)")
    run_p.add_argument(
        "--runner", choices=("subprocess", "docker"), default="subprocess",
        help="subprocess: tasks run in this Python environment; docker: each task in its image, "
        "built by `make images` (default: %(default)s)",
    )
    _add_image_flags(run_p, tuning_secret=False)
    _add_param_flag(run_p)
    run_p.set_defaults(func=_run)

    submit_p = actions.add_parser("submit", help="submit the pipeline to a Kubeflow Pipelines cluster")
    submit_p.add_argument(
        "--host", default=os.environ.get("KF_PIPELINES_ENDPOINT"),
        help="KFP API URL, e.g. http://localhost:8080 (default: $KF_PIPELINES_ENDPOINT)",
    )
    submit_p.add_argument("--experiment", default="fer-mtl", help="experiment name (default: %(default)s)")
    submit_p.add_argument("--run-name", help="run name (default: chosen by KFP)")
    submit_p.add_argument("--namespace", help="Kubeflow profile namespace (multi-user clusters)")
    submit_p.add_argument(
        "--service-account", default="fer-mtl-pipeline",
        help="Kubernetes service account of the run (manifests/base/pipeline-rbac.yaml; default: %(default)s; "
        "'' for the cluster default)",
    )
    submit_p.add_argument("--package", help="a compiled pipeline YAML (default: compile now)")
    submit_p.add_argument("--no-cache", action="store_true", help="disable caching for every task of this run")
    _add_credential_flags(submit_p)
    _add_param_flag(submit_p)
    _add_image_flags(submit_p)
    submit_p.set_defaults(func=_submit)

    params_p = actions.add_parser("params", help="list the pipeline's parameters with their types and defaults")
    params_p.set_defaults(func=_params)


def _images(args: argparse.Namespace) -> Any:
    from pipelines.fer_pipeline import PipelineImages

    chosen = {}
    for role, env in _IMAGE_ENV.items():
        value = getattr(args, f"{role}_image", None) or os.environ.get(env)
        if value:
            chosen[role] = value
    return PipelineImages(**chosen)


def _compile(args: argparse.Namespace) -> int:
    from pipelines.runner import compile_to

    path, seconds = compile_to(
        args.out, images=_images(args), tuning_secret=args.tuning_secret or None, tune_on_gpu=args.tune_on_gpu
    )
    print(f"compiled the fer-mtl pipeline to {path} in {seconds:.2f}s")
    return 0


def _run(args: argparse.Namespace) -> int:
    from pipelines.runner import parse_assignments, run_local

    if not args.local:
        raise ConfigError("`pipeline run` runs on this machine only: add --local (use `pipeline submit` for a cluster)")
    run = run_local(parse_assignments(args.param), out_dir=args.out, runner=args.runner, images=_images(args))
    print_local_run(run)
    return 0


def print_local_run(run: Any) -> None:
    """Print where each task's artifacts are, then the headline metrics and the report."""
    print(f"\nrun folder: {run.run_dir}")
    for task, outputs in run.tasks.items():
        print(f"  {task}:")
        for name, path in outputs.items():
            print(f"    {name}: {path}")
    if run.metrics:
        accuracy = {t: m.accuracy for t, m in run.metrics.tasks.items()}
        shown = ", ".join(f"{t} {a:.3f}" for t, a in accuracy.items() if a is not None)
        print(f"{run.metrics.split} accuracy ({run.metrics.num_samples} samples): {shown}")
    if run.report:
        print(f"report: {run.report}")


def _submit(args: argparse.Namespace) -> int:
    import tempfile

    from pipelines.kfp_auth import credentials_from
    from pipelines.runner import compile_to, parse_assignments, submit

    if not args.host:
        raise ConfigError("--host is required (or set KF_PIPELINES_ENDPOINT), e.g. --host http://localhost:8080")
    credentials = credentials_from(token=args.token, sa_token=args.sa_token, cookie=args.cookie)
    params = parse_assignments(args.param)
    with tempfile.TemporaryDirectory() as tmp:
        package = args.package or compile_to(
            os.path.join(tmp, "pipeline.yaml"), images=_images(args), tuning_secret=args.tuning_secret or None,
            tune_on_gpu=args.tune_on_gpu,
        )[0]
        run_id = submit(
            host=args.host,
            package=package,
            params=params,
            experiment=args.experiment,
            run_name=args.run_name,
            namespace=args.namespace,
            service_account=args.service_account,
            enable_caching=False if args.no_cache else None,
            credentials=credentials,
        )
    print(f"submitted run {run_id} to {args.host} (experiment {args.experiment!r})")
    return 0


def _params(args: argparse.Namespace) -> int:
    from pipelines.runner import pipeline_inputs

    for name, (kind, default) in pipeline_inputs().items():
        print(f"{name:24s} {kind:8s} {default!r}")
    return 0
