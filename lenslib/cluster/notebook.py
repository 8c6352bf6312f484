"""``lens run-notebook``: a notebook, executed headlessly, whose executed copy is the run's record.

The Netflix pattern: the input notebook and its parameters are immutable inputs, the executed notebook
is the record and the log. What this adds to papermill:

1. the MyST notebook is converted with jupytext (``book/04_training.md`` runs as it is);
2. **every parameter is checked before anything executes** (:mod:`lenslib.cluster.params`): an unknown
   parameter or a value of the wrong type fails with the parameter named, and the parameters that
   describe a run become a :class:`~lenslib.train.config.TrainConfig` validated by the config itself
   (``-p preset lens-stage9`` or ``-p lr abc`` fails in about a second);
3. papermill runs with the ``python3`` kernel and logged cell output (the job log shows progress);
4. the run folder keeps the executed notebook, the resolved config, the parameters, a manifest of every
   attempt (:mod:`lenslib.cluster.records`) and whatever the notebook writes there (metrics, samples,
   checkpoints). Running again on the same folder resumes: the trainer continues from the latest
   checkpoint, and the earlier record moves to ``attempts/``.

Any notebook runs this way (a book chapter too); one without a ``run_dir`` parameter keeps only its
record in RUN_DIR. A stop request to this process (SIGUSR1/SIGTERM from SLURM) touches the run's preempt
flag, which the notebook's launcher (:mod:`lenslib.cluster.launch`) turns into a save and exit code 75
(:mod:`lenslib.train.signals`).

Used in chapters 4 and 7 and by ``lens submit``.
"""

from __future__ import annotations

import logging
import os
import platform
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import papermill
import yaml
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from papermill.exceptions import PapermillExecutionError

import lenslib
from lenslib.atomic import atomic_file, write_text_atomic
from lenslib.train.config import to_dict, to_yaml
from lenslib.train.signals import REQUEUE_EXIT_CODE, PreemptionHandler

from .params import ParameterError, check_parameters, describes_config, load_notebook, notebook_parameters
from .records import (
    CONFIG_NAME,
    LOG_NAME,
    PARAMETERS_NAME,
    PREEMPT_FLAG_NAME,
    RECORD_NAME,
    finish_attempt,
    start_attempt,
)

__all__ = ["Prepared", "RunResult", "OneLineFormatter", "EXIT_PARAMETER_ERROR", "prepare", "run_notebook"]

log = logging.getLogger("lenslib.cluster")

EXIT_PARAMETER_ERROR = 2
#: Signals that ask a running notebook to stop: SLURM's warning (``--signal=USR1``) and preemption.
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


@dataclass
class Prepared:
    """What :func:`prepare` checked: the notebook, the merged parameters and the run config."""

    notebook: Path
    run_dir: Path
    parameters: dict  # passed by the user (+ run_dir)
    merged: dict  # notebook defaults overlaid with the passed parameters
    config: Any  # TrainConfig, or None when the notebook describes no run config
    input_path: Path  # the converted (unexecuted) notebook
    prepared_path: Path  # papermill's prepare-only output


@dataclass
class RunResult:
    """Outcome of one :func:`run_notebook` attempt."""

    status: str  # completed | preempted | failed
    exit_code: int  # 0, the requeue code (75) or 1
    run_dir: Path
    record: Path
    seconds: float
    error: str | None = None
    attempt: int = 0


def _check_run_dir(run_dir: Path, passed: dict) -> None:
    if "\n" in str(run_dir):
        raise ParameterError(f"RUN_DIR {str(run_dir)!r} contains a newline; choose a plainer folder name.")
    above = next((p for p in (run_dir, *run_dir.parents) if p.exists()), None)
    if above is not None and not above.is_dir():
        raise ParameterError(
            f"RUN_DIR {run_dir}: {above} is a file; give a folder (existing or new) for the run."
        )
    if "run_dir" in passed and Path(str(passed["run_dir"])).resolve() != run_dir:
        raise ParameterError(
            f"parameter run_dir={passed['run_dir']!r} contradicts RUN_DIR {run_dir}: give the folder once, "
            "as RUN_DIR."
        )


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check_same_config(run_dir: Path, cfg) -> None:
    """Refuse to resume a run folder whose recorded config differs from ``cfg``."""
    old = run_dir / CONFIG_NAME
    if not old.is_file():
        return
    before = _flatten(yaml.safe_load(old.read_text()) or {})
    after = _flatten(to_dict(cfg))
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    if changed:
        shown = ", ".join(f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in changed[:6])
        raise ParameterError(
            f"{run_dir} holds a run with a different config ({shown}). Resuming would mix two runs: use a "
            "new RUN_DIR, or pass --allow-config-change to continue this one with the new values."
        )


def prepare(
    notebook, run_dir, parameters: dict | None = None, kernel: str = "python3", allow_config_change=False
) -> Prepared:
    """Convert, parameterise (papermill ``prepare_only``) and validate; executes nothing.

    Raises :class:`~lenslib.cluster.params.ParameterError` (bad parameter), :class:`FileNotFoundError`
    (notebook) or ``RuntimeError`` (no such kernel). Writes ``RUN_DIR/.lens/input.ipynb`` and
    ``prepared.ipynb``.
    """
    notebook = Path(notebook).resolve()
    run_dir = Path(run_dir).resolve()
    passed = dict(parameters or {})
    _check_run_dir(run_dir, passed)
    nb = load_notebook(notebook)
    declared = notebook_parameters(nb)
    if "run_dir" in declared:
        passed["run_dir"] = str(run_dir)
    else:  # a book chapter: RUN_DIR keeps the record, the notebook writes its outputs where it always does
        passed.pop("run_dir", None)
        log.info(
            "note: %s has no run_dir parameter; RUN_DIR holds the record, not the notebook's outputs",
            notebook.name,
        )
        if describes_config(declared):
            raise ParameterError(
                "the notebook has a preset but no run_dir parameter: add `run_dir = None` so its config, "
                "metrics and checkpoints go to RUN_DIR (and a re-run resumes there)."
            )
    merged, cfg = check_parameters(declared, passed)
    try:
        KernelSpecManager().get_kernel_spec(kernel)
    except NoSuchKernel:
        raise RuntimeError(
            f"no Jupyter kernel named {kernel!r}; install it with "
            f"`python -m ipykernel install --sys-prefix --name {kernel}`."
        ) from None
    if cfg is not None and not allow_config_change:
        _check_same_config(run_dir, cfg)

    work = run_dir / ".lens"
    input_path = work / "input.ipynb"
    with atomic_file(input_path) as tmp:
        nbformat.write(nb, tmp)
    prepared_path = work / "prepared.ipynb"
    papermill.execute_notebook(
        str(input_path),
        str(prepared_path),
        parameters=passed,
        prepare_only=True,
        kernel_name=kernel,
        progress_bar=False,
    )
    return Prepared(notebook, run_dir, passed, merged, cfg, input_path, prepared_path)


class OneLineFormatter(logging.Formatter):
    """papermill logs each output chunk with its trailing newline; do not add a second one."""

    def format(self, record):
        return super().format(record).rstrip("\n")


def _execute(prep: Prepared, record: Path, kernel: str, **options) -> tuple[str, int, str | None]:
    """Run papermill on the prepared notebook; (status, exit code, error), never raising for a cell error."""
    try:
        papermill.execute_notebook(
            str(prep.input_path),
            str(record),
            parameters=prep.parameters,
            kernel_name=kernel,
            progress_bar=False,
            request_save_on_cell_execute=True,
            **options,
        )
    except PapermillExecutionError as err:
        if err.ename == "RunPreempted":
            return "preempted", REQUEUE_EXIT_CODE, f"{err.ename}: {err.evalue}"
        return "failed", 1, f"{err.ename}: {err.evalue}"
    except Exception as err:  # dead kernel, timeout, ...: the record holds what ran
        return "failed", 1, f"{type(err).__name__}: {err}"
    return "completed", 0, None


def run_notebook(
    notebook: str | Path,
    run_dir: str | Path,
    parameters: dict | None = None,
    *,
    kernel: str = "python3",
    log_output: bool = True,
    execution_timeout: float | None = None,
    allow_config_change: bool = False,
    cwd: str | Path | None = None,
) -> RunResult:
    """Validate, then execute ``notebook`` with papermill into ``RUN_DIR/run.ipynb``; never raises for a cell
    error.

    The status is ``completed``, ``preempted`` (the notebook's training launcher raised ``RunPreempted``
    after a checkpoint: exit code 75, so the job script requeues) or ``failed`` (exit code 1, the error
    is in the record and in ``run.json``). Parameter problems raise
    :class:`~lenslib.cluster.params.ParameterError` before anything runs. ``cwd`` defaults to the
    notebook's folder (as in the book build).
    """
    prep = prepare(notebook, run_dir, parameters, kernel=kernel, allow_config_change=allow_config_change)
    run_dir = prep.run_dir
    write_text_atomic(run_dir / PARAMETERS_NAME, yaml.safe_dump(prep.parameters, sort_keys=True))
    if prep.config is not None:
        write_text_atomic(run_dir / CONFIG_NAME, to_yaml(prep.config))
    manifest, attempt = start_attempt(
        run_dir,
        {
            "notebook": str(prep.notebook),
            "run_dir": str(run_dir),
            "parameters": prep.parameters,
            "record": RECORD_NAME,
            "config": CONFIG_NAME if prep.config is not None else None,
            "kernel": kernel,
            "lenslib": lenslib.__version__,
            "papermill": papermill.__version__,
            "python": platform.python_version(),
        },
    )
    record = run_dir / RECORD_NAME
    flag = run_dir / PREEMPT_FLAG_NAME
    flag.unlink(missing_ok=True)

    env_keys = {"LENS_RUN_DIR": str(run_dir), "LENS_PREEMPT_FLAG": str(flag), "LENS_HEADLESS": "1"}
    saved_env = {k: os.environ.get(k) for k in env_keys}
    os.environ.update(env_keys)
    handler = logging.FileHandler(run_dir / LOG_NAME)
    handler.setFormatter(OneLineFormatter("%(asctime)s %(message)s"))
    pm_log = logging.getLogger("papermill")
    pm_log.addHandler(handler)
    old_level = pm_log.level
    pm_log.setLevel(logging.INFO)
    # papermill has no handler of its own: without one a SLURM `scancel -f --signal=USR1` kills it (exit 138)
    # and SIGTERM never reaches the kernel (papermill #508, #601). Here a stop request touches the preempt
    # flag, which the notebook's launcher turns into a save.
    stops = PreemptionHandler(STOP_SIGNALS, on_request=lambda _name: flag.touch())
    t0 = time.time()
    try:
        status, code, error = _execute(
            prep,
            record,
            kernel,
            log_output=log_output,
            cwd=str(cwd or prep.notebook.parent),
            execution_timeout=execution_timeout,
        )
    finally:
        stops.close()
        pm_log.removeHandler(handler)
        pm_log.setLevel(old_level)
        handler.close()
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    seconds = time.time() - t0
    outcome = {
        "seconds": round(seconds, 1),
        "status": status,
        "exit_code": code,
        "error": error,
        "stop_signal": stops.signal_name,
    }
    finish_attempt(run_dir, manifest, attempt, outcome)
    flag.unlink(missing_ok=True)
    return RunResult(status, code, run_dir, record, seconds, error, attempt["attempt"])
