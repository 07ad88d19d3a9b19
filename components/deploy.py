"""KFP component: deploy the model artifact as a KServe InferenceService (create, or canary patch)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from components._images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def deploy(
    model: Input[Model],
    deployment: Output[Artifact],
    image: str,
    name: str = "fer-mtl",
    namespace: str = "kubeflow-user-example-com",
    canary_traffic_percent: int = 10,
    min_replicas: int = 1,
    max_replicas: int = 3,
    service_account: str = "",
    timeout_s: float = 900.0,
    poll_interval_s: float = 10.0,
    dry_run: bool = False,
) -> str:
    """Serve `model` from its storage URI; when the service exists, roll out as a canary.

    Args:
        model: The model artifact; its URI (gs://...) becomes the predictor's STORAGE_URI.
        deployment: Written as JSON: action, URL, canary share, the manifest, and final status.
        name: InferenceService name (also the model name in request paths).
        namespace: Namespace the pipeline's service account may deploy to (manifests/base/deploy-rbac.yaml).
        image: The predictor image (`fer-mtl serve`); no default here, because KFP ships only this
            function's source, where a module constant would be undefined (the pipeline passes
            `components._images.PREDICTOR_IMAGE`).
        canary_traffic_percent: Traffic share of the new revision when a service already exists;
            100 promotes at once.
        min_replicas, max_replicas: Autoscaling bounds.
        service_account: The predictor pod's service account (e.g. one with read access to the
            model bucket via Workload Identity); "" leaves the namespace's default.
        timeout_s, poll_interval_s: How long to wait for Ready, and how often to look.
        dry_run: Write the manifest without contacting the cluster (local pipeline runs).

    Returns:
        The service URL ("" on a dry run).
    """
    import json
    import logging
    from pathlib import Path

    from fer_model.release.deploy import DeployConfig, build_inferenceservice
    from fer_model.release.deploy import deploy as run_deploy

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    storage_uri = model.uri
    if dry_run and "://" not in storage_uri:
        storage_uri = "file://" + storage_uri  # a local run's artifact: only written down, never fetched
    config = DeployConfig(
        image=image,
        storage_uri=storage_uri,
        name=name,
        namespace=namespace,
        canary_traffic_percent=canary_traffic_percent,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        service_account_name=service_account or None,
    )
    record = {"manifest": build_inferenceservice(config), "dry_run": dry_run}
    url = ""
    if not dry_run:
        result = run_deploy(config=config, timeout_s=timeout_s, poll_interval_s=poll_interval_s)
        url = result.url or ""
        record.update(
            action=result.action, url=url, canary_traffic_percent=result.canary_traffic_percent, status=result.status
        )
    Path(deployment.path).parent.mkdir(parents=True, exist_ok=True)
    Path(deployment.path).write_text(json.dumps(record, indent=2))
    deployment.metadata["url"] = url
    return url
