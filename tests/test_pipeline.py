"""The fer-mtl pipeline: compiled spec, compile cost, parameters, submission errors, and a local run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from components._images import CPU_IMAGE, GPU_IMAGE, PREDICTOR_IMAGE
from fer_cli import main
from fer_model.errors import ConfigError
from tests.test_html_page import decoded_images

EXECUTORS = {"prepare", "teach", "worker-indices", "tune-worker", "select-best", "train", "evaluate", "gate",
             "deploy"}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from pipelines.runner import compile_to

    path, _ = compile_to(tmp_path_factory.mktemp("compiled") / "pipeline.yaml")
    pipeline_spec, platform_spec = yaml.safe_load_all(path.read_text())
    return {**pipeline_spec, "_platform": platform_spec}


def _all_tasks(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every task of every DAG (root, loop body, conditions), by task name."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return tasks


def test_every_task_is_in_the_compiled_dag(spec: dict[str, Any]) -> None:
    assert {name.removeprefix("exec-") for name in spec["deploymentSpec"]["executors"]} == EXECUTORS
    assert set(_all_tasks(spec)) >= EXECUTORS


def test_train_requests_one_gpu_and_uses_the_gpu_image(spec: dict[str, Any]) -> None:
    train = spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert train["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert train["resources"]["accelerator"]["resourceCount"] == "1"
    assert train["image"] == GPU_IMAGE


@pytest.mark.parametrize("executor", sorted(EXECUTORS))
def test_every_task_has_resources_retries_and_a_pinned_image(spec: dict[str, Any], executor: str) -> None:
    container = spec["deploymentSpec"]["executors"][f"exec-{executor}"]["container"]
    res = container["resources"]
    for key in ("cpuRequest", "cpuLimit", "memoryRequest", "memoryLimit"):
        assert res[key] > 0, f"{executor} lacks {key}"
    assert res["cpuRequest"] <= res["cpuLimit"] and res["memoryRequest"] <= res["memoryLimit"]
    if executor != "train":
        assert container["image"] == CPU_IMAGE
        assert "accelerator" not in res
    # No pip install at run time: the image carries fer-mtl and kfp.
    assert "pip install" not in " ".join(container["command"])
    task = _all_tasks(spec)[executor]
    assert task["retryPolicy"]["maxRetryCount"] == 2


def test_caching_is_on_for_deterministic_steps_and_off_for_side_effects(spec: dict[str, Any]) -> None:
    tasks = _all_tasks(spec)
    cached = {name for name, t in tasks.items() if t.get("cachingOptions", {}).get("enableCache")}
    assert {"prepare", "train", "evaluate"} <= cached
    assert not cached & {"tune-worker", "select-best", "gate", "deploy"}


def test_dag_wiring(spec: dict[str, Any]) -> None:
    tasks = _all_tasks(spec)
    # Train's loss weights come from the tuning step, evaluation scores the trained model.
    lw = tasks["train"]["inputs"]["parameters"]["loss_weights"]["taskOutputParameter"]
    assert lw == {"outputParameterKey": "Output", "producerTask": "select-best"}
    assert "for-loop-1" in tasks["select-best"]["dependentTasks"]
    model = tasks["evaluate"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"]
    assert model == {"outputArtifactKey": "model", "producerTask": "train"}
    # deploy sits under both conditions and ships the predictor image.
    assert tasks["deploy"]["inputs"]["parameters"]["image"]["runtimeValue"]["constant"] == PREDICTOR_IMAGE
    conditions = [t["triggerPolicy"]["condition"] for t in tasks.values() if "triggerPolicy" in t]
    assert any("deploy_model" in c for c in conditions) and any("gate" in c for c in conditions)


def test_teacher_stage_feeds_tuning_training_and_evaluation(spec: dict[str, Any]) -> None:
    from fer_model.teachers import TeachConfig

    tasks = _all_tasks(spec)
    source = tasks["teach"]["inputs"]["artifacts"]["dataset"]["taskOutputArtifact"]
    assert source == {"outputArtifactKey": "dataset", "producerTask": "prepare"}
    taught = {"outputArtifactKey": "taught", "producerTask": "teach"}
    assert tasks["train"]["inputs"]["artifacts"]["dataset"]["taskOutputArtifact"] == taught
    assert tasks["evaluate"]["inputs"]["artifacts"]["dataset"]["taskOutputArtifact"] == taught
    loop_dataset = tasks["for-loop-1"]["inputs"]["artifacts"]
    assert {"outputArtifactKey": "taught", "producerTask": "teach"} in [
        a.get("taskOutputArtifact") for a in loop_dataset.values()
    ]
    params = tasks["teach"]["inputs"]["parameters"]
    assert params["teachers"] == {"componentInputParameter": "teachers"}
    assert params["teach_config"] == {"componentInputParameter": "teach_config"}
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    # No teacher unless the run names one; the settings default to the dataclass's.
    assert inputs["teachers"]["defaultValue"] == ""
    assert json.loads(inputs["teach_config"]["defaultValue"]) == TeachConfig().to_dict()


def test_teach_settings_are_validated_field_by_field() -> None:
    from pipelines.runner import coerce_params

    params = coerce_params({"teach_config.temperature": "2", "teachers": '{"emotion": "gs://b/teacher"}'})
    assert json.loads(params["teach_config"])["temperature"] == 2
    assert params["teachers"] == '{"emotion": "gs://b/teacher"}'
    with pytest.raises(ConfigError, match="`threshold` must be in"):
        coerce_params({"teach_config.threshold": "3"})


def _kubernetes_executors(spec: dict[str, Any]) -> dict[str, Any]:
    return spec["_platform"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_tune_workers_get_the_database_password_from_the_secret(spec: dict[str, Any]) -> None:
    (secret,) = _kubernetes_executors(spec)["exec-tune-worker"]["secretAsEnv"]
    assert secret["secretName"] == "fer-mtl-tuning-postgres"
    assert secret["secretNameParameter"] == {"runtimeValue": {"constant": "fer-mtl-tuning-postgres"}}
    assert secret["keyToEnv"] == [{"secretKey": "password", "envVar": "OPTUNA_DB_PASSWORD"}]
    # The Secret the manifests create is the one the pipeline reads.
    docs = yaml.safe_load_all((REPO / "manifests" / "base" / "tuning-postgres.yaml").read_text())
    names = [d["metadata"]["name"] for d in docs if d and d["kind"] == "Secret"]
    assert names == ["fer-mtl-tuning-postgres"]


def _gpu_placement(spec: dict[str, Any], executor: str) -> tuple[Any, Any]:
    """The node selector and tolerations of one executor, as the pipeline parameters they read."""
    config = _kubernetes_executors(spec)[executor]
    return config["nodeSelector"]["nodeSelectorJson"], [t["tolerationJson"] for t in config["tolerations"]]


def test_train_runs_on_gpu_nodes_named_by_pipeline_parameters(spec: dict[str, Any]) -> None:
    assert set(_kubernetes_executors(spec)) == {"exec-tune-worker", "exec-train"}
    selector, tolerations = _gpu_placement(spec, "exec-train")
    assert selector == {"componentInputParameter": "gpu_node_selector"}
    assert tolerations == [{"componentInputParameter": "gpu_tolerations"}]
    # Tuning trials stay on CPU nodes unless compiled with tune_on_gpu.
    assert set(_kubernetes_executors(spec)["exec-tune-worker"]) == {"secretAsEnv"}
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert inputs["gpu_node_selector"]["defaultValue"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
    assert inputs["gpu_tolerations"]["defaultValue"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    train = spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert train["image"] == GPU_IMAGE
    assert train["resources"]["accelerator"]["resourceCount"] == "1"


def test_deploy_gets_the_predictor_service_account_from_the_run(spec: dict[str, Any]) -> None:
    deploy_inputs = _all_tasks(spec)["deploy"]["inputs"]["parameters"]
    assert deploy_inputs["service_account"] == {"componentInputParameter": "pipelinechannel--service_account"}
    assert spec["root"]["inputDefinitions"]["parameters"]["service_account"]["defaultValue"] == ""


def test_tune_on_gpu_puts_trials_on_gpu_nodes(tmp_path: Path) -> None:
    out = tmp_path / "p.yaml"
    assert main(["pipeline", "compile", "--out", str(out), "--tune-on-gpu"]) == 0
    pipeline_spec, platform_spec = yaml.safe_load_all(out.read_text())
    spec = {**pipeline_spec, "_platform": platform_spec}
    # Inside the ParallelFor the run's parameters arrive through the loop's inputs.
    selector, tolerations = _gpu_placement(spec, "exec-tune-worker")
    assert selector == {"componentInputParameter": "pipelinechannel--gpu_node_selector"}
    assert tolerations == [{"componentInputParameter": "pipelinechannel--gpu_tolerations"}]
    loop_inputs = spec["root"]["dag"]["tasks"]["for-loop-1"]["inputs"]["parameters"]
    assert loop_inputs["pipelinechannel--gpu_node_selector"] == {"componentInputParameter": "gpu_node_selector"}
    assert loop_inputs["pipelinechannel--gpu_tolerations"] == {"componentInputParameter": "gpu_tolerations"}
    assert "secretAsEnv" in _kubernetes_executors(spec)["exec-tune-worker"]
    tune = spec["deploymentSpec"]["executors"]["exec-tune-worker"]["container"]
    assert tune["image"] == GPU_IMAGE
    assert tune["resources"]["accelerator"]["resourceCount"] == "1"


def test_compile_never_imports_tensorflow(tmp_path: Path) -> None:
    # What keeps compiling fast is not paying for TensorFlow; its speed itself is no test's business.
    out = tmp_path / "p.yaml"
    code = (
        "import sys\n"
        "from pipelines.runner import compile_to\n"
        f"compile_to({str(out)!r})\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    tf_loaded, keras_loaded = done.stdout.split()
    assert tf_loaded == "False" and keras_loaded == "False"
    assert next(yaml.safe_load_all(out.read_text()))["pipelineInfo"]["name"] == "fer-mtl"


def test_cli_compile_honours_image_overrides(tmp_path: Path) -> None:
    out = tmp_path / "p.yaml"
    env = {**os.environ, "FER_CPU_IMAGE": "registry.local/cpu:9"}
    done = subprocess.run(
        [sys.executable, "-m", "fer_cli", "pipeline", "compile", "--out", str(out),
         "--gpu-image", "registry.local/gpu:9"],
        cwd=REPO, capture_output=True, text=True, timeout=120, env=env,
    )
    assert done.returncode == 0, done.stderr
    executors = next(yaml.safe_load_all(out.read_text()))["deploymentSpec"]["executors"]
    assert executors["exec-train"]["container"]["image"] == "registry.local/gpu:9"
    assert executors["exec-prepare"]["container"]["image"] == "registry.local/cpu:9"


def test_unpinned_image_is_rejected() -> None:
    from pipelines.fer_pipeline import PipelineImages

    with pytest.raises(ConfigError, match="`gpu` image must be a pinned reference"):
        PipelineImages(gpu="tensorflow")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"sample_n": "3", "min_emotion_accuracy": "0.5", "deploy_model": "yes", "sources": "a:b,c:d"},
         {"sample_n": 3, "min_emotion_accuracy": 0.5, "deploy_model": True, "sources": "a:b,c:d"}),
        ({"deploy_model": False, "min_emotion_accuracy": 1}, {"deploy_model": False, "min_emotion_accuracy": 1.0}),
    ],
)
def test_params_are_coerced_to_the_pipeline_types(raw: dict[str, Any], expected: dict[str, Any]) -> None:
    from pipelines.runner import coerce_params

    assert coerce_params(raw) == expected


def test_step_config_defaults_are_the_dataclass_defaults(spec: dict[str, Any]) -> None:
    from fer_model.model import ModelConfig
    from fer_model.training import TrainConfig

    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert json.loads(inputs["train_config"]["defaultValue"]) == TrainConfig().to_dict()
    assert json.loads(inputs["model_config"]["defaultValue"]) == ModelConfig().to_dict()
    tune = json.loads(inputs["tune_config"]["defaultValue"])
    assert tune["epochs"] == 10 and tune["width"] is None and "study_name" not in tune


def test_prepare_gets_the_align_config_whose_defaults_are_the_dataclass_defaults(spec: dict[str, Any]) -> None:
    from fer_model.alignment import AlignConfig

    default = spec["root"]["inputDefinitions"]["parameters"]["align_config"]["defaultValue"]
    assert json.loads(default) == AlignConfig().to_dict()
    prepare_in = _all_tasks(spec)["prepare"]["inputs"]["parameters"]
    assert prepare_in["align_config"] == {"componentInputParameter": "align_config"}


def test_align_config_fields_are_set_one_at_a_time_and_checked() -> None:
    from pipelines.runner import coerce_params

    config = json.loads(coerce_params({"align_config.crop_eyes": "blazeface"})["align_config"])
    assert config["crop_eyes"] == "blazeface" and config["eye_alignment"] is True
    with pytest.raises(ConfigError, match="`crop_eyes` must be one of"):
        coerce_params({"align_config.crop_eyes": "dlib"})


def test_tune_and_train_steps_get_the_same_recipe(spec: dict[str, Any]) -> None:
    """The loss weights are tuned for the recipe that is trained: both steps read the same two JSON inputs."""
    tasks = _all_tasks(spec)
    train_in = tasks["train"]["inputs"]["parameters"]
    tune_in = tasks["tune-worker"]["inputs"]["parameters"]
    loop_in = tasks["for-loop-1"]["inputs"]["parameters"]
    for name in ("model_config", "train_config"):
        assert train_in[name] == {"componentInputParameter": name}
        # Inside the ParallelFor the worker reads the loop's channel, which is the pipeline input itself.
        channel = tune_in[name]["componentInputParameter"]
        assert loop_in[channel] == {"componentInputParameter": name}


def test_prepare_cache_key_includes_the_sources_fingerprint(spec: dict[str, Any]) -> None:
    """KFP caches a task on its inputs: the fingerprint must be one of prepare's."""
    prepare_in = _all_tasks(spec)["prepare"]["inputs"]["parameters"]
    assert prepare_in["sources_fingerprint"] == {"componentInputParameter": "sources_fingerprint"}
    assert spec["root"]["inputDefinitions"]["parameters"]["sources_fingerprint"]["parameterType"] == "STRING"


@pytest.mark.parametrize("name", ["drop_training_copies", "near_copies"])
def test_prepare_drops_training_copies_and_finds_near_ones_when_the_run_says_so(spec: dict[str, Any],
                                                                                 name: str) -> None:
    prepare_in = _all_tasks(spec)["prepare"]["inputs"]["parameters"]
    assert prepare_in[name] == {"componentInputParameter": name}
    param = spec["root"]["inputDefinitions"]["parameters"][name]
    assert (param["parameterType"], param["defaultValue"]) == ("BOOLEAN", False)


def test_run_arguments_carry_the_fingerprint_of_the_data_now(tmp_path: Path) -> None:
    from pipelines.runner import coerce_params, with_fingerprint

    csv = tmp_path / "fer2013.csv"
    csv.write_text("emotion,pixels,Usage\n")
    params = {"sources": f"fer2013-csv:{csv}"}
    first = with_fingerprint(coerce_params(params))["sources_fingerprint"]
    assert first.startswith("sha256:") and with_fingerprint(coerce_params(params))["sources_fingerprint"] == first
    csv.write_text("emotion,pixels,Usage\n0,1 2 3,Training\n")  # new data, same location
    assert with_fingerprint(coerce_params(params))["sources_fingerprint"] != first
    # One given explicitly (e.g. when the data cannot be listed from here) is kept as is.
    pinned = with_fingerprint(coerce_params({**params, "sources_fingerprint": "v7"}))
    assert pinned["sources_fingerprint"] == "v7"
    assert with_fingerprint(coerce_params({"sample_n": "10"}))["sources_fingerprint"] == ""


def test_step_settings_are_set_field_by_field_and_validated() -> None:
    from pipelines.runner import coerce_params

    out = coerce_params({"train_config.epochs": "3", "train_config.loss_weights": '{"emotion": 1}',
                         "tune_config.objective": "weighted_mean", "model_config.width": 0.5})
    train = json.loads(out["train_config"])
    assert train["epochs"] == 3 and train["loss_weights"] == {"emotion": 1.0} and train["batch_size"] == 32
    assert json.loads(out["tune_config"])["objective"] == "weighted_mean"
    assert json.loads(out["model_config"])["width"] == 0.5
    # A field laid over a whole JSON value given in the same call.
    out = coerce_params({"train_config": '{"epochs": 7, "seed": 2}', "train_config.seed": "5"})
    assert json.loads(out["train_config"])["epochs"] == 7 and json.loads(out["train_config"])["seed"] == 5


@pytest.mark.parametrize(
    ("raw", "match"),
    [({"epoch": "3"}, "unknown pipeline parameter 'epoch'"), ({"sample_n": "three"}, "`sample_n` must be Integer"),
     ({"deploy_model": "maybe"}, "`deploy_model` must be Boolean"), ({"sample_n": True}, "`sample_n` must be Integer"),
     ({"train_config.epoch": "3"}, r"unknown TrainConfig settings \['epoch'\]"),
     ({"train_config.epochs": "0"}, "`epochs` must be an int >= 1"),
     ({"tune_config.pruner": "sometimes"}, "`pruner` must be one of"),
     ({"model_config": "{not json"}, "`model_config` must be a JSON object")],
)
def test_bad_params_are_config_errors(raw: dict[str, Any], match: str) -> None:
    from pipelines.runner import coerce_params

    with pytest.raises(ConfigError, match=match):
        coerce_params(raw)


def test_demo_settings_are_valid_pipeline_parameters() -> None:
    from fer_cli.demo import DEMO_PARAMS
    from pipelines.runner import coerce_params

    params = coerce_params(DEMO_PARAMS)
    assert json.loads(params["train_config"])["epochs"] == DEMO_PARAMS["train_config.epochs"]
    assert json.loads(params["tune_config"])["width"] == DEMO_PARAMS["tune_config.width"]
    assert DEMO_PARAMS["sample_n"] > 0 and DEMO_PARAMS["deploy_dry_run"] is True


def test_submit_to_an_unreachable_host_fails_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc = main(["pipeline", "submit", "--host", f"http://127.0.0.1:{port}", "-p", "tuning_storage=postgresql://x/y"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fer-mtl pipeline: error: cannot reach Kubeflow Pipelines at") and "\n" not in err


def test_submit_needs_shared_tuning_storage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pipeline", "submit", "--host", "http://127.0.0.1:9"]) == 2
    assert "`tuning_storage` is required on a cluster" in capsys.readouterr().err


def test_run_without_local_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pipeline", "run", "-p", "train_config.epochs=1"]) == 2
    assert "add --local" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(("min_emotion_accuracy", "gate_passes"), [(0.0, True), (0.99, False)],
                         ids=["gate-passes", "gate-blocks"])
def test_local_run_produces_every_artifact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], min_emotion_accuracy: float, gate_passes: bool
) -> None:
    params = {
        "sample_n": 28, "prepare_workers": 1, "train_config.epochs": 1, "model_config.width": 0.125,
        "tune_config.n_trials": 1, "tune_workers": 1, "tune_config.epochs": 1,
        "min_emotion_accuracy": min_emotion_accuracy, "deploy_model": True, "deploy_dry_run": True, "seed": 3,
    }
    argv = ["pipeline", "run", "--local", "--out", str(tmp_path)]
    for k, v in params.items():
        argv += ["-p", f"{k}={v}"]
    assert main(argv) == 0
    printed = capsys.readouterr().out

    (run_dir,) = (tmp_path / "pipeline-root").iterdir()
    dataset = run_dir / "prepare" / "dataset"
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["format"] == "fer-mtl-dataset" and manifest["num_samples"] > 0

    config = json.loads((run_dir / "train" / "model" / "config.json").read_text())
    best = json.loads((run_dir / "select-best" / "best" / "best_params.json").read_text())
    # Train used the weights the tuning step selected.
    assert config["loss_weights"] == pytest.approx(best["best"]["loss_weights"])
    assert config["model"]["width"] == 0.125
    assert (run_dir / "for-loop-1-iteration-0" / "tune-worker" / "executor_output.json").is_file()

    metrics = json.loads((run_dir / "evaluate" / "metrics" / "metrics.json").read_text())
    assert metrics["split"] == "test" and set(metrics["tasks"]) == {"emotion", "gender", "race", "age"}
    # The report renders alone in the KFP UI: one HTML page, confusion matrices inlined.
    assert decoded_images((run_dir / "evaluate" / "report").read_text())
    # Progress of the long steps streams through kfp.local's console, not only at the step's end.
    assert re.search(r"epoch 1/1: \S+, loss [0-9.]+, val_", printed)
    assert re.search(r"fer2013: aligned \d+ images, [0-9.]+ images/s", printed)
    decision = json.loads((run_dir / "gate" / "decision").read_text())
    assert decision["deploy"] is gate_passes
    deployments = list(run_dir.rglob("deploy/deployment"))
    if gate_passes:
        (deployment,) = (json.loads(d.read_text()) for d in deployments)
        assert deployment["dry_run"] is True
        assert deployment["manifest"]["kind"] == "InferenceService"
    else:
        # The condition held the deploy task back: kfp.local never ran it.
        assert deployments == [] and not (run_dir / "deploy").exists()

    assert f"report: {run_dir / 'evaluate' / 'report'}" in printed
    assert str(dataset) in printed
