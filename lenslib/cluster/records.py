"""Run records: what a run folder of ``lens run-notebook`` holds, its manifest, and its book page.

``lens run-notebook`` (:mod:`lenslib.cluster.notebook`) leaves the executed notebook (``run.ipynb``), a
manifest of every attempt (``run.json``: parameters, status, exit code, times, host, SLURM job ids), the
resolved config and the trainer's metrics and samples in the run folder; :func:`start_attempt` and
:func:`finish_attempt` keep the manifest. The executed notebook *is* the report: :func:`record_to_page`
prepends a summary (status, attempts and SLURM job ids, parameters, key config values, final metrics, a
loss curve and the last preview samples) and marks the page as not-to-be-executed, so the book shows the
outputs the cluster produced instead of re-running a 128-GPU job.

Used in chapter 7 and by ``lens run-notebook``, ``lens submit --wait`` and ``lens record``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import logging
import os
import re
import shutil
import socket
from pathlib import Path

import nbformat
import plotly.graph_objects as go
import plotly.io as pio
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_output

from lenslib.atomic import atomic_file, write_json_atomic
from lenslib.train.run_folder import read_metrics

__all__ = [
    "RECORD_NAME",
    "MANIFEST_NAME",
    "PARAMETERS_NAME",
    "CONFIG_NAME",
    "LOG_NAME",
    "ATTEMPTS_DIR",
    "PREEMPT_FLAG_NAME",
    "RESULTS_NAME",
    "read_manifest",
    "start_attempt",
    "finish_attempt",
    "read_run",
    "record_to_page",
    "check_record_args",
    "write_record_page",
    "summary_markdown",
]

log = logging.getLogger(__name__)

RECORD_NAME = "run.ipynb"  # the executed notebook: the run's record
MANIFEST_NAME = "run.json"  # every attempt: parameters, status, exit code, times, job ids
PARAMETERS_NAME = "parameters.yaml"
CONFIG_NAME = "config.yaml"
LOG_NAME = "run.log"
ATTEMPTS_DIR = "attempts"
PREEMPT_FLAG_NAME = ".preempt"  # touched when this process (or the job script) is asked to stop
#: An experiment's scored results in a run folder (e.g. the caption ablation's); copied beside the page.
RESULTS_NAME = "results.json"


# --------------------------------------------------------------------------------------------------
# The manifest: one entry per attempt
# --------------------------------------------------------------------------------------------------


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def read_manifest(run_dir: str | Path) -> dict:
    """The run folder's ``run.json`` (``{}`` when there is none yet)."""
    path = Path(run_dir) / MANIFEST_NAME
    return json.loads(path.read_text()) if path.is_file() else {}


def _slurm_env() -> dict:
    keys = (
        "SLURM_JOB_ID",
        "SLURM_ARRAY_JOB_ID",
        "SLURM_ARRAY_TASK_ID",
        "SLURM_RESTART_COUNT",
        "SLURM_JOB_NODELIST",
        "SLURM_JOB_NUM_NODES",
    )
    return {k.removeprefix("SLURM_").lower(): os.environ[k] for k in keys if k in os.environ}


def start_attempt(run_dir: Path, fields: dict) -> tuple[dict, dict]:
    """Begin an attempt: the earlier record moves to ``attempts/``, ``run.json`` gets a running attempt.

    ``fields`` (notebook, parameters, versions, ...) update the manifest. Returns (manifest, attempt), to
    be passed to :func:`finish_attempt`."""
    manifest = read_manifest(run_dir)
    attempts = manifest.get("attempts", [])
    record = run_dir / RECORD_NAME
    if record.exists():  # an earlier attempt (preempted, failed or completed): keep its record
        (run_dir / ATTEMPTS_DIR).mkdir(exist_ok=True)
        os.replace(record, run_dir / ATTEMPTS_DIR / f"run-{len(attempts) - 1 if attempts else 0:03d}.ipynb")
    attempt = {
        "attempt": len(attempts),
        "started": _now(),
        "status": "running",
        "host": socket.gethostname(),
        "slurm": _slurm_env(),
    }
    attempts.append(attempt)
    manifest.update(fields)
    manifest.update({"attempts": attempts, "status": "running"})
    write_json_atomic(run_dir / MANIFEST_NAME, manifest, indent=1)
    return manifest, attempt


def finish_attempt(run_dir: Path, manifest: dict, attempt: dict, outcome: dict) -> None:
    """Close ``attempt`` with ``outcome`` (seconds, status, exit code, error, stop signal) in ``run.json``."""
    attempt.update({"finished": _now(), **outcome})
    manifest["status"] = outcome["status"]
    write_json_atomic(run_dir / MANIFEST_NAME, manifest, indent=1)


# --------------------------------------------------------------------------------------------------
# The book page
# --------------------------------------------------------------------------------------------------


def read_run(run_dir: str | Path) -> dict:
    """Everything a report needs from a run folder: manifest, config, metrics, samples, record path.

    Metrics are read with the trainer's tolerant reader (:func:`lenslib.train.run_folder.read_metrics`): the
    metrics of a job killed mid-write still make a page, without their torn line."""

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"{run_dir} is {'a file' if run_dir.exists() else 'missing'}, not a run folder: give "
            "the RUN_DIR of a `lens run-notebook` run."
        )
    manifest_path = run_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder of `lens run-notebook` (no {MANIFEST_NAME}).")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(
            f"{manifest_path} is not valid JSON ({err}): the run folder is damaged; re-run it with "
            "`lens run-notebook` or restore run.json."
        ) from None
    record = run_dir / manifest.get("record", RECORD_NAME)
    if not record.is_file():
        raise FileNotFoundError(f"{record} is missing: the run has no executed notebook yet.")
    config_path = run_dir / CONFIG_NAME
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else None
    metrics, notes = read_metrics(run_dir)  # a killed job's torn last line is dropped and noted, not fatal
    for note in notes:
        log.warning("%s: %s", run_dir, note)
    samples = sorted((run_dir / "samples").glob("*.png")) if (run_dir / "samples").is_dir() else []
    return {
        "run_dir": run_dir,
        "manifest": manifest,
        "config": config,
        "metrics": metrics,
        "samples": samples,
        "record": record,
    }


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def summary_markdown(run: dict, title: str | None = None) -> str:
    """The page's first cell: what ran, how it ended, and what it produced."""
    m, cfg, metrics = run["manifest"], run["config"], run["metrics"]
    name = title or (cfg or {}).get("run", {}).get("name") or Path(m.get("run_dir", "run")).name
    attempts = m.get("attempts", [])
    total = sum(a.get("seconds") or 0 for a in attempts)
    lines = [
        f"# Run record: {name}",
        "",
        f"Executed headlessly by `lens run-notebook` from `{Path(m.get('notebook', '?')).name}`; "
        "this page shows the outputs stored in the run folder (it is not re-executed by the book build).",
        "",
        "| | |",
        "|---|---|",
        f"| status | **{m.get('status', '?')}** |",
        f"| attempts | {len(attempts)} (total {_fmt_seconds(total)}) |",
        f"| lenslib / papermill | {m.get('lenslib', '?')} / {m.get('papermill', '?')} |",
    ]
    if cfg:
        run_cfg, optim, dist = cfg.get("run", {}), cfg.get("optim", {}), cfg.get("dist", {})
        lines += [
            f"| model preset | {_cell(cfg.get('model', {}).get('preset'))} |",
            f"| steps | {run_cfg.get('steps')} |",
            f"| learning rate | {optim.get('lr')} |",
            f"| global batch | {optim.get('global_batch')} (micro-batch {optim.get('micro_batch')}) |",
            f"| strategy / precision | {dist.get('strategy')} / {dist.get('precision')} |",
        ]
    if metrics:
        last = metrics[-1]
        lines += [
            f"| last logged step | {last.get('step')} |",
            f"| loss (first → last) | {metrics[0].get('loss', float('nan')):.4f} → "
            f"{last.get('loss', float('nan')):.4f} |",
        ]
        if "samples_per_s" in last:
            lines.append(f"| throughput (last step) | {last['samples_per_s']:.1f} samples/s |")
    lines += ["", "**Parameters**", "", "| parameter | value |", "|---|---|"]
    for k, v in sorted(m.get("parameters", {}).items()):
        if k != "run_dir":
            lines.append(f"| `{k}` | `{_cell(json.dumps(v))}` |")
    lines += [
        "",
        "**Attempts**",
        "",
        "| # | status | exit | duration | SLURM job | restart | host |",
        "|---|---|---|---|---|---|---|",
    ]
    for a in attempts:
        slurm = a.get("slurm", {})
        job = slurm.get("job_id", "–")
        if "array_task_id" in slurm:
            job = f"{slurm.get('array_job_id')}_{slurm['array_task_id']}"
        lines.append(
            f"| {a.get('attempt')} | {a.get('status')} | {a.get('exit_code', '–')} "
            f"| {_fmt_seconds(a.get('seconds'))} | {job} | {slurm.get('restart_count', '0')} "
            f"| {_cell(a.get('host', '–'))} |"
        )
        if a.get("error"):
            lines.append(f"| | {_cell(a['error'])[:200]} | | | | | |")
    return "\n".join(lines) + "\n"


def _loss_figure_html(metrics: list[dict]) -> str | None:
    pts = [(m["step"], m["loss"]) for m in metrics if "step" in m and "loss" in m]
    if len(pts) < 2:
        return None
    fig = go.Figure(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines", name="loss"))
    fig.update_layout(
        title="Training loss (metrics.jsonl)",
        xaxis_title="step",
        yaxis_title="flow-matching loss",
        height=320,
        margin=dict(l=40, r=20, t=40, b=40),
    )
    return pio.to_html(fig, include_plotlyjs=True, full_html=False)


def _demote_headings(source: str) -> str:
    out, fence = [], False
    for line in source.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
        out.append("#" + line if not fence and re.match(r"^#{1,5} ", line) else line)
    return "\n".join(out)


def record_to_page(run_dir: str | Path, title: str | None = None, note: str | None = None):
    """The executed notebook with a summary in front, as an nbformat notebook marked ``execution_mode: off``.

    ``note`` (markdown) follows the summary under "Notes on this run": what the run folder cannot say
    itself, such as arms run side by side on a shared machine or resumed on another one.
    """
    run = read_run(run_dir)
    nb = nbformat.read(run["record"], as_version=4)
    head = [new_markdown_cell(summary_markdown(run, title))]
    if note and note.strip():
        head.append(new_markdown_cell("## Notes on this run\n\n" + _demote_headings(note.strip())))
    html = _loss_figure_html(run["metrics"])
    if html:
        cell = new_code_cell("# loss curve from metrics.jsonl", metadata={"tags": ["remove-input"]})
        cell.outputs = [new_output("display_data", data={"text/html": html})]
        head.append(cell)
    if run["samples"]:
        last = run["samples"][-1]
        cell = new_code_cell(
            f"# last preview samples: samples/{last.name}", metadata={"tags": ["remove-input"]}
        )
        cell.outputs = [
            new_output(
                "display_data",
                data={
                    "image/png": base64.b64encode(last.read_bytes()).decode(),
                    "text/plain": f"<samples/{last.name}>",
                },
            )
        ]
        head.append(cell)
    head.append(new_markdown_cell("## The executed notebook"))
    for c in nb.cells:
        if c.cell_type == "markdown":
            c.source = _demote_headings(c.source)
    nb.cells = head + nb.cells
    nb.metadata["mystnb"] = {
        "execution_mode": "off"
    }  # the book shows the cluster's outputs, never re-runs them
    nb.metadata["lens_record"] = {"run_dir": str(run["run_dir"]), "status": run["manifest"].get("status")}
    return nb


def check_record_args(run_dir: str | Path, out: str | Path) -> None:
    """Refuse a record that cannot be written, before the run is read: ``run_dir`` must be a run folder of
    ``lens run-notebook`` (with its ``run.json``) and ``out`` an ``.ipynb`` path whose folder can exist.
    ``lens record`` (chapter 7) calls it first."""
    run_dir, out = Path(run_dir), Path(out)
    if not run_dir.exists():
        raise FileNotFoundError(f"{run_dir} does not exist: give the RUN_DIR of a `lens run-notebook` run.")
    if not run_dir.is_dir():
        raise NotADirectoryError(f"{run_dir} is a file: give the RUN_DIR of a `lens run-notebook` run.")
    if not (run_dir / MANIFEST_NAME).is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder of `lens run-notebook` (no {MANIFEST_NAME}).")
    if out.suffix != ".ipynb":
        raise ValueError(f"{out}: a record page keeps the run's outputs, so it must be an .ipynb file.")
    if out.is_dir():
        raise IsADirectoryError(f"{out} is a folder: give the path of the .ipynb page to write.")
    above = next((p for p in out.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise NotADirectoryError(f"{out} cannot be written: {above} is a file; give another page path.")


def write_record_page(
    run_dir: str | Path, out: str | Path, title: str | None = None, note: str | None = None
) -> Path:
    """Write :func:`record_to_page` to ``out`` (an ``.ipynb`` inside the book, e.g. ``book/runs/NAME.ipynb``).

    A run folder holding an experiment's ``results.json`` also gets it copied to ``NAME.json`` beside the
    page, so a chapter can recompute the recorded run's tables (chapter 6 reads
    ``book/runs/captions-full.json``).
    """
    out = Path(out)
    if out.suffix != ".ipynb":
        raise ValueError(f"{out}: a record page keeps the run's outputs, so it must be an .ipynb file.")
    nb = record_to_page(run_dir, title, note)
    with atomic_file(out) as tmp:
        nbformat.write(nb, tmp)
        results = Path(run_dir) / RESULTS_NAME
        if results.is_file():
            with atomic_file(out.with_suffix(".json")) as tmp_json:
                shutil.copyfile(results, tmp_json)
    return out
