"""A study's result as files: best_params.json, trials.csv and plots.html (self-contained, offline).

The HTML inlines plotly.js, so it renders in the KFP UI (which serves artifacts without internet
access) and from a laptop alike.
"""

from __future__ import annotations

import csv
import html
import io
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fer_model.tuning._storage import redact
from fer_model.tuning.study import load_study, summarize

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

BEST_PARAMS_FILE = "best_params.json"
TRIALS_FILE = "trials.csv"
PLOTS_FILE = "plots.html"
REPORT_FORMAT = "fer-mtl-study-report"
REPORT_FORMAT_VERSION = 1


def write_study_report(*, storage: str, study_name: str, out_dir: str | os.PathLike[str]) -> Path:
    """Write best_params.json, trials.csv and plots.html for a study into `out_dir`; return `out_dir`.

    `best_params.json` holds `best` = None when no trial completed (a caller then falls back to
    its defaults); the other two files are written regardless.
    """
    study = load_study(storage=storage, study_name=study_name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(study, storage=storage)
    best: dict[str, Any] | None = None
    if summary.best_trial is not None:
        best = {"trial": summary.best_trial, "value": summary.best_value, **dict(summary.best_params or {})}
    report = {
        "format": REPORT_FORMAT,
        "format_version": REPORT_FORMAT_VERSION,
        "study_name": study_name,
        "storage": redact(storage),
        "objective": summary.objective,
        "direction": "maximize",
        "epochs_per_trial": study.user_attrs.get("epochs_per_trial"),
        "n_trials": summary.n_trials,
        "states": dict(summary.states),
        "best": best,
    }
    _write_atomic(out / BEST_PARAMS_FILE, json.dumps(report, indent=2) + "\n")
    _write_atomic(out / TRIALS_FILE, trials_csv(study))
    _write_atomic(out / PLOTS_FILE, plots_html(study))
    logger.info("wrote study report for %s (%d trials) to %s", study_name, summary.n_trials, out)
    return out


def trials_csv(study: optuna.Study) -> str:
    """One row per trial: number, state, value, every param, epochs trained, timing, worker, failure reason."""
    trials = study.get_trials(deepcopy=False)
    param_names = sorted({name for t in trials for name in t.params})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["number", "state", "value", *param_names, "epochs_trained", "train_seconds", "worker",
                     "fail_reason"])
    for t in trials:
        writer.writerow([
            t.number,
            t.state.name,
            "" if t.value is None else repr(float(t.value)),
            *[t.params.get(name, "") for name in param_names],
            t.user_attrs.get("epochs_trained", ""),
            t.user_attrs.get("train_seconds", ""),
            t.user_attrs.get("worker", ""),
            t.user_attrs.get("fail_reason", ""),
        ])
    return buffer.getvalue()


def plots_html(study: optuna.Study) -> str:
    """One offline HTML page: optimization history, learning curves, parameter importances, slices.

    Importances use Optuna's default evaluator (PED-ANOVA in Optuna 5).
    """
    import optuna.visualization as vis
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    sections: list[tuple[str, Any | None, str]] = []
    if complete:
        sections.append(("Optimization history", vis.plot_optimization_history(study), ""))
    else:
        sections.append(("Optimization history", None, "No trial has completed yet."))
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        sections.append(("Per-epoch objective (pruned trials stop early)", vis.plot_intermediate_values(study), ""))
    if len(complete) >= 2:
        try:
            sections.append(("Parameter importances", vis.plot_param_importances(study), ""))
        except (RuntimeError, ValueError) as e:
            # e.g. every completed trial has the same value: nothing to attribute.
            sections.append(("Parameter importances", None, f"Not computable: {e}"))
    else:
        sections.append(("Parameter importances", None,
                         f"Skipped: needs at least 2 completed trials, the study has {len(complete)}."))
    if complete:
        sections.append(("Objective per parameter", vis.plot_slice(study), ""))
    title = html.escape(f"Study {study.study_name}: {len(study.trials)} trials, {len(complete)} completed")
    parts = [f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title></head><body>",
             f"<h1>{title}</h1>"]
    plotly_js_included = False
    for heading, figure, note in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if note:
            parts.append(f"<p>{html.escape(note)}</p>")
        if figure is not None:
            # plotly.js (about 4 MB) is inlined once, ahead of the first figure, and shared by the rest.
            parts.append(figure.to_html(full_html=False, include_plotlyjs=not plotly_js_included))
            plotly_js_included = True
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
