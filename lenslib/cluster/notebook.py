"""``lens run-notebook``: a training notebook, executed headlessly, whose executed copy is the run's record.

The Netflix pattern: the input notebook and its parameters are immutable
inputs, the executed notebook is the record and the log. What this adds to papermill:

1. the MyST notebook is converted with jupytext (``book/04_training.md`` runs as it is);
2. **every parameter is validated before anything executes**: an unknown parameter (not in the notebook's
   ``parameters`` cell) or a value of the wrong type fails with the parameter named, and the parameters
   that describe the run are turned into a :class:`~lenslib.train.config.TrainConfig` and validated by
   the config itself (``-p preset lens-stage9`` or ``-p lr abc`` fails in about a second);
3. papermill runs with the ``python3`` kernel and logged cell output (the job log shows progress);
4. the run folder keeps the executed notebook (``run.ipynb``), the resolved config (``config.yaml``), the
   parameters, a manifest of every attempt (``run.json``) and whatever the notebook writes there
   (metrics, samples, checkpoints). Running again on the same folder resumes: the trainer continues
   from the latest checkpoint, and the earlier record moves to ``attempts/``.

Notebook parameters and the run config
--------------------------------------
A notebook whose parameters cell has a ``preset`` describes a run config; its parameters map to it when
their name is

* ``preset`` — a shipped config name (``cpu-tiny``, ``lens-stage1``, ...) or a YAML file;
* ``overrides`` — a list of dotted ``section.key=value`` strings;
* ``<section>_<key>`` — that key, e.g. ``optim_lr``, ``data_path``, ``model_preset``;
* a key name that occurs in exactly one section — ``lr`` (optim.lr), ``steps`` (run.steps),
  ``global_batch``, ... (``seed`` means run.seed);
* ``run_dir`` (always set to RUN_DIR; becomes run.out_dir), ``nodes`` and ``nproc_per_node``
  (world size = nodes × processes per node, which the batch arithmetic is checked against).

A notebook that also has an ``experiment`` parameter (chapter 6: ``experiment = "captions"``) names that
experiment's presets instead (``micro``, ``reduced``, ``full``); ``lenslib.experiments`` validates them and
the base arm's config is recorded. A value of ``None`` keeps the preset's value. Any other parameter belongs to the notebook alone and is
checked against the type of its default. Any notebook runs this way (a book chapter too: every parameter
is checked against its default's type); one without ``run_dir`` keeps only its record in RUN_DIR. Notebooks build their config with
:func:`config_from_parameters`, so what is validated here is exactly what runs.

Used in chapters 4 and 7 and by ``lens submit``.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime as _dt
import difflib
import json
import logging
import os
import platform
import re
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ParameterError",
    "RunResult",
    "RECORD_NAME",
    "MANIFEST_NAME",
    "PREEMPT_FLAG_NAME",
    "parse_value",
    "read_parameters_file",
    "load_notebook",
    "notebook_parameters",
    "config_key",
    "config_from_parameters",
    "prepare",
    "run_notebook",
]

log = logging.getLogger("lenslib.cluster")

RECORD_NAME = "run.ipynb"  # the executed notebook: the run's record
MANIFEST_NAME = "run.json"  # every attempt: parameters, status, exit code, times, job ids
PARAMETERS_NAME = "parameters.yaml"
CONFIG_NAME = "config.yaml"
LOG_NAME = "run.log"
ATTEMPTS_DIR = "attempts"
PREEMPT_FLAG_NAME = ".preempt"  # touched when this process (or the job script) is asked to stop

#: Parameters with a fixed meaning (see the module docstring).
CONTROL_PARAMETERS = ("run_dir", "preset", "overrides", "nodes", "nproc_per_node", "world_pool")
#: Key names that occur in several sections but have an obvious meaning as a notebook parameter.
ALIASES = {"seed": "run.seed"}

EXIT_PARAMETER_ERROR = 2


class ParameterError(ValueError):
    """A notebook parameter that cannot work; the message names the parameter and the fix."""


# --------------------------------------------------------------------------------------------------
# Parameters: parsing, the notebook's parameters cell, the run config
# --------------------------------------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """A ``-p KEY VALUE`` value, as papermill reads it: True/False/None, int, float, else the string."""
    if text == "True":
        return True
    if text == "False":
        return False
    if text == "None":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_parameters_file(path_or_yaml: str | Path) -> dict:
    """``-y``: a YAML file of parameters, or a YAML mapping given inline (papermill's ``-y``)."""
    text = str(path_or_yaml)
    inline = text.lstrip().startswith("{") or "\n" in text
    if not inline:
        path = Path(text)
        if path.is_file():
            text = path.read_text()
        elif path.suffix in (".yaml", ".yml", ".json"):
            raise ParameterError(f"parameters file {path} does not exist.")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ParameterError(f"parameters {path_or_yaml!r} are not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParameterError(
            f"parameters {path_or_yaml!r} must be a mapping of name: value, got {type(data).__name__}."
        )
    return data


def load_notebook(path: str | Path):
    """Read a notebook (``.ipynb``, or a jupytext ``.md``/``.py``) as an nbformat v4 notebook.

    A missing path is a ``FileNotFoundError``; a folder, a file of another kind or one that does not parse is a
    :class:`ParameterError` naming the file, so ``lens run-notebook`` and ``lens submit`` (chapter 7) refuse it
    in one line before anything runs."""
    import jupytext
    from jupytext.formats import NOTEBOOK_EXTENSIONS

    path = Path(path)
    if path.is_dir():
        raise ParameterError(f"notebook {path} is a folder: give a notebook file (.ipynb, or MyST .md).")
    if not path.is_file():
        raise FileNotFoundError(f"notebook {path} not found: give a notebook file (.ipynb, or MyST .md).")
    if path.suffix not in NOTEBOOK_EXTENSIONS:
        raise ParameterError(
            f"notebook {path}: {path.suffix or 'no extension'} is not a notebook format; give an "
            ".ipynb or a MyST .md file."
        )
    try:
        nb = jupytext.read(path)
    except (ValueError, UnicodeDecodeError) as err:  # NotJSONError, a jupytext format error, a binary file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ParameterError(
            f"notebook {path} cannot be read as a notebook ({first}); give an .ipynb or MyST .md file."
        ) from None
    for cell in nb.cells:  # papermill expects every cell to carry a tags list
        cell.metadata.setdefault("tags", [])
    return nb


def notebook_parameters(nb) -> dict[str, dict]:
    """The notebook's ``parameters`` cell as ``{name: {"default": value, "help": str, "source": str}}``.

    Uses papermill's own parser (what it will inject after). A default that is not a Python literal
    (an expression) is reported with ``default=None`` and ``literal=False``.
    """
    from papermill.inspection import _infer_parameters
    from papermill.utils import find_first_tagged_cell_index

    if find_first_tagged_cell_index(nb, "parameters") < 0:
        raise ParameterError(
            "the notebook has no cell tagged 'parameters', so nothing can be set with -p. Tag the first "
            "code cell that assigns the defaults with `:tags: [parameters]`."
        )
    inferred = _infer_parameters(nb)
    cell = nb.cells[find_first_tagged_cell_index(nb, "parameters")]
    assigned = re.findall(r"^([A-Za-z_]\w*)\s*(?::[^=\n]*)?=(?!=)", cell.source, flags=re.M)
    missed = [name for name in assigned if name not in {p.name for p in inferred}]
    if missed:  # papermill skips lines it cannot parse (e.g. a comment containing '='): they could not be set
        raise ParameterError(
            f"papermill cannot read the parameters-cell line(s) for {', '.join(missed)}: keep one plain "
            "`name = value  # comment` per line, with no '=' inside the comment."
        )
    out = {}
    for p in inferred:
        try:
            default, literal = ast.literal_eval(p.default), True
        except (ValueError, SyntaxError):
            default, literal = None, False
        out[p.name] = {"default": default, "literal": literal, "help": p.help, "source": p.default}
    return out


def _sections() -> dict[str, set[str]]:
    from lenslib.train.config import TrainConfig

    out = {}
    default = TrainConfig()
    for name in (f.name for f in dataclasses.fields(TrainConfig)):
        cls = type(getattr(default, name))
        out[name] = {f.name for f in dataclasses.fields(cls)}
    return out


def config_key(name: str) -> str | None:
    """The run-config key a notebook parameter stands for (``lr`` → ``optim.lr``), or None."""
    if name in CONTROL_PARAMETERS:
        return None
    if name in ALIASES:
        return ALIASES[name]
    sections = _sections()
    for section, keys in sections.items():
        prefix = section + "_"
        if name.startswith(prefix) and name[len(prefix) :] in keys:
            return f"{section}.{name[len(prefix) :]}"
    owners = [s for s, keys in sections.items() if name in keys]
    return f"{owners[0]}.{name}" if len(owners) == 1 else None


def _positive_int(params: dict, name: str) -> int:
    value = params.get(name, 1)
    value = 1 if value is None else value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParameterError(f"parameter {name}={value!r} must be a positive integer.")
    return value


def world_size_of(params: dict) -> int:
    """nodes × nproc_per_node (each defaults to 1)."""
    return _positive_int(params, "nodes") * _positive_int(params, "nproc_per_node")


def config_from_parameters(params: dict, world_size: int | None = None, for_training: bool = True):
    """The validated :class:`TrainConfig` that notebook ``params`` describe (see the module docstring).

    ``world_size`` defaults to ``nodes × nproc_per_node``; ``for_training`` also requires the inputs a
    run reads (data path, VAE, text encoder), so a job does not wait in the queue to fail. Raises :class:`ParameterError` naming the
    parameter (and the config key it maps to). Used by training notebooks and ``lens run-notebook``.
    """
    from lenslib.train.config import ConfigError, load_config

    if world_size is None:
        world_size = world_size_of(params)
    overrides = params.get("overrides") or []
    if isinstance(overrides, str):
        overrides = [overrides]
    if not isinstance(overrides, (list, tuple)) or not all(isinstance(o, str) for o in overrides):
        raise ParameterError(
            f"parameter overrides={overrides!r} must be a list of 'section.key=value' strings."
        )
    mapped = {}
    overrides = list(overrides)
    for name, value in params.items():
        key = config_key(name)
        if key is None or value is None:
            continue
        mapped[key] = name
        overrides.append(f"{key}={json.dumps(value)}")
    if params.get("run_dir"):
        overrides.append(f"run.out_dir={json.dumps(str(params['run_dir']))}")
    preset = params.get("preset")
    pool = params.get("world_pool")
    if (
        pool
    ):  # world presets train on a finite pool, rendered and encoded once (chapter 4); other sources ignore it
        if isinstance(pool, bool) or not isinstance(pool, int) or pool < 0:
            raise ParameterError(
                f"parameter world_pool={pool!r} must be a whole number of scenes (0: render every step)."
            )
        try:
            is_world = load_config(preset).data.source == "world"
        except ConfigError:
            is_world = False  # the preset's own error is reported below, naming the parameter
        if is_world:
            overrides.insert(0, f"data.num_scenes={pool}")
    try:
        cfg = load_config(preset, overrides, world_size=world_size)
        if for_training:
            from lenslib.train import config as config_module

            check_inputs = getattr(config_module, "check_inputs", None)  # data / VAE / encoder paths given?
            if check_inputs is not None:
                check_inputs(cfg)
        return cfg
    except ConfigError as err:
        text = str(err)
        if preset is not None and text.startswith("config ") and "not found" in text:
            raise ParameterError(f"parameter preset={preset!r}: {text}") from None
        for key, name in sorted(mapped.items(), key=lambda kv: -len(kv[0])):
            if key in text:
                raise ParameterError(f"parameter {name} (config key {key}): {text}") from None
        if "world size" in text:
            raise ParameterError(
                f"parameters nodes={params.get('nodes', 1)} x nproc_per_node="
                f"{params.get('nproc_per_node', 1)} (world size {world_size}): {text}"
            ) from None
        raise ParameterError(f"parameters give an invalid run config: {text}") from None


def _type_error(name: str, value: Any, default: Any) -> str | None:
    """Check a notebook-only parameter against its default's type; a message or None."""
    if default is None:
        return None
    kind = type(default)
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind in (list, tuple):
        ok = isinstance(value, (list, tuple))
    else:
        ok = isinstance(value, kind)
    if ok:
        return None
    return f"parameter {name}={value!r} should be of type {kind.__name__}, like its default ({default!r})."


def validate_parameters(declared: dict[str, dict], passed: dict) -> dict:
    """Check ``passed`` against the parameters cell; returns the merged parameters (defaults + passed)."""
    unknown = [k for k in passed if k not in declared]
    if unknown:
        lines = []
        for k in unknown:
            close = difflib.get_close_matches(k, list(declared), n=3)
            lines.append(f"{k}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        raise ParameterError(
            f"unknown notebook parameter{'s' if len(unknown) > 1 else ''}: {'; '.join(lines)}. "
            f"The notebook's parameters cell defines: {', '.join(declared)}."
        )
    merged = {k: v["default"] for k, v in declared.items() if v["literal"]}
    merged.update(passed)
    checked_by_config = _describes_config(declared)
    for name, value in passed.items():
        if not (checked_by_config and config_key(name) is not None) and name not in CONTROL_PARAMETERS:
            problem = _type_error(name, value, declared[name]["default"])
            if problem:
                raise ParameterError(problem)
    return merged


# --------------------------------------------------------------------------------------------------
# The run folder
# --------------------------------------------------------------------------------------------------


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_manifest(run_dir: str | Path) -> dict:
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


def _describes_config(declared: dict) -> bool:
    """A notebook describes a run config when its parameters cell names a ``preset``."""
    return "preset" in declared


def prepare(
    notebook: str | Path,
    run_dir: str | Path,
    parameters: dict | None = None,
    kernel: str = "python3",
    allow_config_change: bool = False,
) -> Prepared:
    """Convert, parameterise (papermill ``prepare_only``) and validate; executes nothing.

    Raises :class:`ParameterError` (bad parameter), :class:`FileNotFoundError` (notebook) or
    ``RuntimeError`` (no such kernel). Writes ``RUN_DIR/.lens/input.ipynb`` and ``prepared.ipynb``.
    """
    import nbformat
    import papermill

    notebook = Path(notebook).resolve()
    run_dir = Path(run_dir).resolve()
    if "\n" in str(run_dir):
        raise ParameterError(f"RUN_DIR {str(run_dir)!r} contains a newline; choose a plainer folder name.")
    above = next((p for p in (run_dir, *run_dir.parents) if p.exists()), None)
    if above is not None and not above.is_dir():
        raise ParameterError(
            f"RUN_DIR {run_dir}: {above} is a file; give a folder (existing or new) for the run."
        )
    passed = dict(parameters or {})
    if "run_dir" in passed and Path(str(passed["run_dir"])).resolve() != run_dir:
        raise ParameterError(
            f"parameter run_dir={passed['run_dir']!r} contradicts RUN_DIR {run_dir}: give the folder once, as RUN_DIR."
        )
    nb = load_notebook(notebook)
    declared = notebook_parameters(nb)
    if "run_dir" in declared:
        passed["run_dir"] = str(run_dir)
    else:  # e.g. a book chapter: RUN_DIR keeps the record, the notebook writes its outputs where it always does
        passed.pop("run_dir", None)
        log.info(
            "note: %s has no run_dir parameter; RUN_DIR holds the record, not the notebook's outputs",
            notebook.name,
        )
        if _describes_config(declared):
            raise ParameterError(
                "the notebook has a preset but no run_dir parameter: add `run_dir = None` so its config, metrics and "
                "checkpoints go to RUN_DIR (and a re-run resumes there)."
            )
    merged = validate_parameters(declared, passed)
    if "experiment" in declared and merged.get("experiment"):  # an experiment's presets (lenslib.experiments)
        from lenslib.experiments import check_notebook_parameters

        try:
            cfg = check_notebook_parameters(merged["experiment"], merged)
        except ValueError as err:
            raise ParameterError(str(err)) from None
    else:
        cfg = config_from_parameters(merged) if _describes_config(declared) else None
    world_size_of(merged)

    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(kernel)
    except NoSuchKernel:
        raise RuntimeError(
            f"no Jupyter kernel named {kernel!r}; install it with `python -m ipykernel install --sys-prefix --name {kernel}`."
        ) from None

    if cfg is not None:
        from lenslib.train.config import to_dict

        old = run_dir / CONFIG_NAME
        if old.is_file() and not allow_config_change:
            before = _flatten(yaml.safe_load(old.read_text()) or {})
            after = _flatten(to_dict(cfg))
            changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            if changed:
                shown = ", ".join(f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in changed[:6])
                raise ParameterError(
                    f"{run_dir} holds a run with a different config ({shown}). Resuming would mix two runs: use a "
                    "new RUN_DIR, or pass --allow-config-change to continue this one with the new values."
                )

    work = run_dir / ".lens"
    work.mkdir(parents=True, exist_ok=True)
    input_path = work / "input.ipynb"
    tmp = work / "input.ipynb.tmp"
    nbformat.write(nb, tmp)
    os.replace(tmp, input_path)
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


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# --------------------------------------------------------------------------------------------------
# Execution
# --------------------------------------------------------------------------------------------------


class _OneLine(logging.Formatter):
    """papermill logs each output chunk with its trailing newline; do not add a second one."""

    def format(self, record):
        return super().format(record).rstrip("\n")


class _StopRequests:
    """SIGUSR1/SIGTERM to this process touch the run's preempt flag (the notebook's launcher acts on it).

    papermill has no handler of its own: without this a SLURM ``scancel -f --signal=USR1`` kills it
    (exit 138) and SIGTERM never reaches the kernel (papermill #508, #601).
    """

    def __init__(self, flag: Path):
        self.flag = flag
        self.received: str | None = None
        self._old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGUSR1, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name
        self.flag.touch()

    def close(self):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _requeue_code() -> int:
    from lenslib.train.signals import REQUEUE_EXIT_CODE

    return REQUEUE_EXIT_CODE


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
    """Validate, then execute ``notebook`` with papermill into ``RUN_DIR/run.ipynb``; never raises for a cell error.

    The status is ``completed``, ``preempted`` (the notebook's training launcher raised ``RunPreempted``
    after a checkpoint: exit code 75, so the job script requeues) or ``failed`` (exit code 1, the error
    is in the record and in ``run.json``). Parameter problems raise :class:`ParameterError` before
    anything runs. ``cwd`` defaults to the notebook's folder (as in the book build).
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    prep = prepare(notebook, run_dir, parameters, kernel=kernel, allow_config_change=allow_config_change)
    run_dir = prep.run_dir
    from lenslib.train.config import to_yaml

    _write_atomic(run_dir / PARAMETERS_NAME, yaml.safe_dump(prep.parameters, sort_keys=True))
    if prep.config is not None:
        _write_atomic(run_dir / CONFIG_NAME, to_yaml(prep.config))

    manifest = read_manifest(run_dir)
    attempts = manifest.get("attempts", [])
    record = run_dir / RECORD_NAME
    if record.exists():  # an earlier attempt (preempted, failed or completed): keep its record
        (run_dir / ATTEMPTS_DIR).mkdir(exist_ok=True)
        os.replace(record, run_dir / ATTEMPTS_DIR / f"run-{len(attempts) - 1 if attempts else 0:03d}.ipynb")
    flag = run_dir / PREEMPT_FLAG_NAME
    flag.unlink(missing_ok=True)
    attempt = {
        "attempt": len(attempts),
        "started": _now(),
        "status": "running",
        "host": socket.gethostname(),
        "slurm": _slurm_env(),
    }
    attempts.append(attempt)
    import lenslib

    manifest.update(
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
            "attempts": attempts,
            "status": "running",
        }
    )
    _write_atomic(run_dir / MANIFEST_NAME, json.dumps(manifest, indent=1))

    env_keys = {"LENS_RUN_DIR": str(run_dir), "LENS_PREEMPT_FLAG": str(flag), "LENS_HEADLESS": "1"}
    saved_env = {k: os.environ.get(k) for k in env_keys}
    os.environ.update(env_keys)
    handler = logging.FileHandler(run_dir / LOG_NAME)
    handler.setFormatter(_OneLine("%(asctime)s %(message)s"))
    pm_log = logging.getLogger("papermill")
    pm_log.addHandler(handler)
    old_level = pm_log.level
    pm_log.setLevel(logging.INFO)
    stops = _StopRequests(flag)
    t0 = time.time()
    status, code, error = "completed", 0, None
    try:
        papermill.execute_notebook(
            str(prep.input_path),
            str(record),
            parameters=prep.parameters,
            kernel_name=kernel,
            log_output=log_output,
            progress_bar=False,
            request_save_on_cell_execute=True,
            cwd=str(cwd or prep.notebook.parent),
            execution_timeout=execution_timeout,
        )
    except PapermillExecutionError as err:
        error = f"{err.ename}: {err.evalue}"
        if err.ename == "RunPreempted":
            status, code = "preempted", _requeue_code()
        else:
            status, code = "failed", 1
    except Exception as err:  # dead kernel, timeout, ...: the record holds what ran
        status, code, error = "failed", 1, f"{type(err).__name__}: {err}"
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
    attempt.update(
        {
            "finished": _now(),
            "seconds": round(seconds, 1),
            "status": status,
            "exit_code": code,
            "error": error,
            "stop_signal": stops.received,
        }
    )
    manifest["status"] = status
    _write_atomic(run_dir / MANIFEST_NAME, json.dumps(manifest, indent=1))
    flag.unlink(missing_ok=True)
    return RunResult(status, code, run_dir, record, seconds, error, attempt["attempt"])
