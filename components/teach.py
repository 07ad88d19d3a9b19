"""KFP component: dataset artifact -> the same with teacher soft labels (the optional teacher stage)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components._images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def teach(
    dataset: Input[Dataset],
    taught: Output[Dataset],
    teachers: str = "",
    teach_config: str = "",
) -> None:
    """Label the faces without a task's true label with that task's teacher model.

    Args:
        dataset: A dataset artifact folder (from `prepare`).
        taught: The dataset artifact with soft labels and their provenance (format 2).
        teachers: JSON object {task: model artifact URI (gs:// prefix or local folder)}; "" or "{}"
            runs no teacher and passes the dataset through unchanged.
        teach_config: `TeachConfig` as a JSON object (temperature, threshold, splits, ...); "" = its defaults.
    """
    import logging

    from fer_model._settings import parse_json_object
    from fer_model.dataset import load_dataset
    from fer_model.teachers import TeachConfig
    from fer_model.teachers import teach as teach_faces

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    models = parse_json_object(teachers, name="teachers")
    teach_faces(dataset_dir=dataset.path, teachers=models, out_dir=taught.path,
                config=TeachConfig.from_json(teach_config))
    manifest = load_dataset(taught.path, verify=False).manifest
    taught.metadata["format"] = f"{manifest['format']}/v{manifest['format_version']}"
    made = manifest.get("soft_labels") or {}
    taught.metadata["soft_labels"] = {task: p["labelled_per_split"] for task, p in made.items()}
