"""KFP component: the evaluation gate (thresholds, and not worse than the serving model)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Output

from components._images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def gate(
    candidate_metrics: Input[Metrics],
    decision: Output[Artifact],
    min_emotion_accuracy: float,
    serving_metrics_uri: str,
) -> bool:
    """Decide whether the candidate model may be deployed.

    Args:
        candidate_metrics: The evaluate step's metrics: a metrics.json file, or a folder holding one.
        decision: Written as JSON: `{"deploy": bool, "reasons": [...], "numbers": {...}}`.
        min_emotion_accuracy: The candidate's test emotion accuracy must reach this.
        serving_metrics_uri: metrics.json (file, folder or gs:// URI) of the model serving now,
            evaluated on the same test split; "" when nothing serves yet.

    Returns:
        True when the candidate passes; the pipeline deploys only then.
    """
    import json
    from pathlib import Path

    from fer_model.release.gate import decide, load_metrics

    serving = load_metrics(serving_metrics_uri) if serving_metrics_uri else None
    result = decide(
        candidate=load_metrics(candidate_metrics.path),
        thresholds={"emotion_accuracy": min_emotion_accuracy},
        serving=serving,
    )
    Path(decision.path).parent.mkdir(parents=True, exist_ok=True)
    Path(decision.path).write_text(json.dumps(result.to_dict(), indent=2))
    decision.metadata["deploy"] = result.deploy
    return result.deploy
