"""Notebook parameters: read from the ``parameters`` cell, checked, and turned into the run config.

``lens run-notebook`` and ``lens submit`` (chapter 7) check every parameter before anything executes, with
the functions here; training notebooks (chapter 4, ``lenslib/cluster/templates/train_run.md``) build their
config with :func:`config_from_parameters`, so what is validated is exactly what runs.

How a notebook's parameters become a run config
-----------------------------------------------
A notebook whose parameters cell has a ``preset`` describes a run config. Its parameters become the
config's own dotted overrides (the ``section.key=value`` strings ``lens train`` accepts) by one rule read
off the schema (:class:`~lenslib.train.config.TrainConfig`):

* ``preset`` — a shipped config name (``cpu-tiny``, ``lens-stage1``, ...) or a YAML file;
* ``overrides`` — a list of dotted ``section.key=value`` strings, passed on as they are;
* ``<section>_<key>`` — that key: ``optim_lr`` is ``optim.lr``, ``data_path`` is ``data.path``;
* ``<key>`` — the key of that name in the ``run`` section if it has one (``seed`` is ``run.seed``,
  ``steps`` is ``run.steps``), else in the one section that has it (``lr`` is ``optim.lr``); a name two
  other sections share (``every``: ``ema.every``, ``eval.every``) is no config key;
* ``run_dir`` (becomes ``run.out_dir``), ``nodes`` and ``nproc_per_node`` (world size = nodes × processes
  per node, which the batch arithmetic is checked against), ``world_pool`` (a world preset's
  ``data.num_scenes``).

A value of ``None`` keeps the preset's value. Any other parameter belongs to the notebook alone and is
checked against the type of its default. Passing a config key the notebook does not declare is refused
with the dotted override to use instead.

A notebook whose parameters cell declares ``experiment`` (chapter 6: ``experiment = "captions"``) is
checked by that experiment instead: :func:`lenslib.experiments.check_notebook_parameters` validates its
parameters and returns the config that is recorded. ``experiment = None`` names no experiment.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import json
import logging
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jupytext
import nbformat
import papermill
import yaml
from jupytext.formats import NOTEBOOK_EXTENSIONS

import lenslib.experiments
from lenslib.train.config import ConfigError, TrainConfig, check_inputs, load_config

__all__ = [
    "ParameterError",
    "CONTROL_PARAMETERS",
    "parse_value",
    "read_parameters_file",
    "load_notebook",
    "notebook_parameters",
    "config_key",
    "world_size_of",
    "config_from_parameters",
    "describes_config",
    "validate_parameters",
    "run_config",
    "check_parameters",
]

#: Parameters with a fixed meaning (see the module docstring).
CONTROL_PARAMETERS = ("run_dir", "preset", "overrides", "nodes", "nproc_per_node", "world_pool")


class ParameterError(ValueError):
    """A notebook parameter that cannot work; the message names the parameter and the fix."""


# --------------------------------------------------------------------------------------------------
# Reading parameters: the command line, YAML, the notebook's parameters cell
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

    A missing path is a ``FileNotFoundError``; a folder, a file of another kind or one that does not parse is
    a :class:`ParameterError` naming the file, so ``lens run-notebook`` and ``lens submit`` (chapter 7)
    refuse it in one line before anything runs."""
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


@contextmanager
def _papermill_quiet() -> Iterator[None]:
    """Hide papermill's INFO lines ("Input Notebook: <temporary file>") while it only inspects."""
    pm_log = logging.getLogger("papermill")
    old = pm_log.level
    pm_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        pm_log.setLevel(old)


def notebook_parameters(nb) -> dict[str, dict]:
    """The notebook's ``parameters`` cell as ``{name: {"default", "literal", "help", "source"}}``.

    Read with papermill's public :func:`papermill.inspect_notebook` (the parser whose names it injects
    after). A default that is not a Python literal (an expression) is reported with ``default=None`` and
    ``literal=False``.
    """
    cell = next((c for c in nb.cells if "parameters" in c.metadata.get("tags", [])), None)
    if cell is None:
        raise ParameterError(
            "the notebook has no cell tagged 'parameters', so nothing can be set with -p. Tag the first "
            "code cell that assigns the defaults with `:tags: [parameters]`."
        )
    with tempfile.TemporaryDirectory(prefix="lens-params-") as tmp:  # inspect_notebook reads a path
        path = Path(tmp) / "parameters.ipynb"  # the parameters cell alone: all that papermill reads
        nbformat.write(nbformat.v4.new_notebook(cells=[cell], metadata=nb.metadata), path)
        with _papermill_quiet():
            inferred = papermill.inspect_notebook(str(path))
    assigned = re.findall(r"^([A-Za-z_]\w*)\s*(?::[^=\n]*)?=(?!=)", cell.source, flags=re.M)
    missed = [name for name in assigned if name not in inferred]
    if missed:  # papermill skips lines it cannot parse (e.g. a comment containing '='): they could not be set
        raise ParameterError(
            f"papermill cannot read the parameters-cell line(s) for {', '.join(missed)}: keep one plain "
            "`name = value  # comment` per line, with no '=' inside the comment."
        )
    out = {}
    for name, p in inferred.items():
        try:
            default, literal = ast.literal_eval(p["default"]), True
        except (ValueError, SyntaxError):
            default, literal = None, False
        out[name] = {"default": default, "literal": literal, "help": p["help"], "source": p["default"]}
    return out


# --------------------------------------------------------------------------------------------------
# Parameters -> dotted overrides -> the run config
# --------------------------------------------------------------------------------------------------


def _sections() -> dict[str, set[str]]:
    """The config's sections and their keys: ``{"run": {"seed", "steps", ...}, "optim": {...}, ...}``."""
    default = TrainConfig()
    out = {}
    for name in (f.name for f in dataclasses.fields(TrainConfig)):
        out[name] = {f.name for f in dataclasses.fields(type(getattr(default, name)))}
    return out


def _candidate_keys(name: str) -> list[str]:
    """Every dotted key a parameter name could stand for (``every`` -> ``ema.every``, ``eval.every``)."""
    sections = _sections()
    keys = [f"{s}.{name[len(s) + 1 :]}" for s in sections if name.startswith(s + "_")]
    keys = [k for k in keys if k.split(".", 1)[1] in sections[k.split(".", 1)[0]]]
    return keys or [f"{s}.{name}" for s, names in sections.items() if name in names]


def config_key(name: str) -> str | None:
    """The dotted run-config key a notebook parameter stands for (``lr`` -> ``optim.lr``), or None."""
    if name in CONTROL_PARAMETERS:
        return None
    keys = _candidate_keys(name)
    if len(keys) > 1 and f"run.{name}" in keys:  # the run's own key: seed is run.seed (eval.seed: eval_seed)
        return f"run.{name}"
    return keys[0] if len(keys) == 1 else None


def _positive_int(params: dict, name: str) -> int:
    value = params.get(name, 1)
    value = 1 if value is None else value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParameterError(f"parameter {name}={value!r} must be a positive integer.")
    return value


def world_size_of(params: dict) -> int:
    """nodes × nproc_per_node (each defaults to 1)."""
    return _positive_int(params, "nodes") * _positive_int(params, "nproc_per_node")


def _is_world_preset(preset) -> bool:
    try:
        return load_config(preset).data.source == "world"
    except ConfigError:
        return False  # the preset's own error is reported by config_from_parameters, naming the parameter


def config_from_parameters(params: dict, world_size: int | None = None, for_training: bool = True):
    """The validated :class:`TrainConfig` that notebook ``params`` describe (see the module docstring).

    ``world_size`` defaults to ``nodes × nproc_per_node``; ``for_training`` also requires the inputs a run
    reads (data path, VAE, text encoder), so a job does not wait in the queue to fail. Raises
    :class:`ParameterError` naming the parameter (and the config key it maps to). Used by training
    notebooks (chapters 4 and 7) and ``lens run-notebook``.
    """
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
    # world presets train on a finite pool, rendered and encoded once (chapter 4); data sets ignore it
    if pool:
        if isinstance(pool, bool) or not isinstance(pool, int) or pool < 0:
            raise ParameterError(
                f"parameter world_pool={pool!r} must be a whole number of scenes (0: render every step)."
            )
        if _is_world_preset(preset):
            overrides.insert(0, f"data.num_scenes={pool}")
    try:
        cfg = load_config(preset, overrides, world_size=world_size)
        if for_training:
            check_inputs(cfg)  # data / VAE / text encoder given?
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


# --------------------------------------------------------------------------------------------------
# Checking passed parameters against the notebook
# --------------------------------------------------------------------------------------------------


def describes_config(declared: dict) -> bool:
    """A notebook describes a run config when its parameters cell names a ``preset``."""
    return "preset" in declared


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


def _unknown(name: str, value: Any, declared: dict) -> str:
    """How an undeclared parameter is named in the error: close names, or the dotted override to use."""
    close = difflib.get_close_matches(name, list(declared), n=3)
    if close:
        return f"{name} (did you mean {', '.join(close)}?)"
    keys = []
    if describes_config(declared) and "overrides" in declared:
        keys = [config_key(name)] if config_key(name) else _candidate_keys(name)
    if keys:
        shown = " or ".join(f"-p overrides '[\"{k}={json.dumps(value)}\"]'" for k in keys)
        return f"{name} (a config key the notebook does not declare: pass {shown})"
    return name


def validate_parameters(declared: dict[str, dict], passed: dict) -> dict:
    """Check ``passed`` against the parameters cell; returns the merged parameters (defaults + passed)."""
    unknown = [k for k in passed if k not in declared]
    if unknown:
        lines = [_unknown(k, passed[k], declared) for k in unknown]
        raise ParameterError(
            f"unknown notebook parameter{'s' if len(unknown) > 1 else ''}: {'; '.join(lines)}. "
            f"The notebook's parameters cell defines: {', '.join(declared)}."
        )
    merged = {k: v["default"] for k, v in declared.items() if v["literal"]}
    merged.update(passed)
    checked_by_config = describes_config(declared)
    for name, value in passed.items():
        if not (checked_by_config and config_key(name) is not None) and name not in CONTROL_PARAMETERS:
            problem = _type_error(name, value, declared[name]["default"])
            if problem:
                raise ParameterError(problem)
    return merged


def run_config(declared: dict[str, dict], merged: dict):
    """The validated config that a notebook's merged parameters describe, or None when they describe none.

    A notebook that declares ``experiment`` is checked by that experiment
    (:func:`lenslib.experiments.check_notebook_parameters`, chapter 6); one that declares ``preset`` by
    :func:`config_from_parameters`. Raises :class:`ParameterError`.
    """
    experiment = merged.get("experiment") if "experiment" in declared else None
    if experiment:
        try:
            return lenslib.experiments.check_notebook_parameters(experiment, merged)
        except ValueError as err:
            raise ParameterError(str(err)) from None
    return config_from_parameters(merged) if describes_config(declared) else None


def check_parameters(declared: dict[str, dict], passed: dict) -> tuple[dict, Any]:
    """Everything ``lens run-notebook`` checks about parameters: returns (merged parameters, run config)."""
    merged = validate_parameters(declared, passed)
    cfg = run_config(declared, merged)
    world_size_of(merged)
    return merged, cfg
