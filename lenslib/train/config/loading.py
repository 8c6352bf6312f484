"""Run configs from files and the command line: shipped names or YAML paths, ``base:`` inheritance, overrides.

The shipped YAML files in ``lenslib/train/configs/`` name the paper's runs, and the command line
changes single values::

    lens train --config cpu-tiny optim.lr=3e-4 run.steps=200

:func:`load_config` reads one, applies the dotted ``key=value`` overrides, converts it
(:func:`~lenslib.train.config.schema.from_dict`) and checks it
(:func:`~lenslib.train.config.checks.validate`). Used in chapter 4 and by ``lens train``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .checks import validate
from .schema import ConfigError, TrainConfig, from_dict

__all__ = ["CONFIG_DIR", "available_configs", "load_config", "apply_overrides", "merge_config"]

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def available_configs() -> list[str]:
    """Names of the shipped configs (``lens train --config NAME``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _resolve_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    shipped = CONFIG_DIR / f"{Path(str(name_or_path)).stem}.yaml"
    if path.suffix in ("", ".yaml", ".yml") and shipped.exists() and not path.exists():
        return shipped
    if path.exists() and path.is_file():
        return path
    raise ConfigError(
        f"config {str(name_or_path)!r} not found: give a YAML file or one of the shipped names "
        f"({', '.join(available_configs())})."
    )


def merge_config(base: dict, over: dict) -> dict:
    """``over`` laid over ``base``, section by section (a copy; neither is changed)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_config(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(path: Path, seen: tuple = ()) -> dict:
    """Read a YAML config; a top-level ``base: NAME`` inherits from another config first.

    A file that cannot be read or parsed is a :class:`ConfigError` naming the file and, for a syntax error,
    the line and column."""
    if path in seen:
        raise ConfigError(f"config {path} inherits from itself through 'base'.")
    if not path.is_file():
        raise ConfigError(f"config {path} is not a file: give a YAML file or a shipped config name.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except UnicodeDecodeError:
        raise ConfigError(
            f"config {path} is not a text file: give a YAML file or a shipped config name."
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(
            f"config {path} is not valid YAML{where}: {problem}. Fix the file there (an unclosed "
            "bracket or quote, or a tab used for indentation, are the usual causes)."
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"config {path} must be a mapping of sections (run:, model:, ...), got {type(data).__name__}."
        )
    base = data.pop("base", None)
    if base is not None:
        data = merge_config(_read_yaml(_resolve_path(base), seen + (path,)), data)
    return data


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value (e.g. optim.lr=3e-4).")
    key, raw = item.split("=", 1)
    key = key.strip().lstrip("-")
    if not key:
        raise ConfigError(f"override {item!r} has an empty key.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``section.key=value`` strings (values parsed as YAML) to a nested dict."""
    data = merge_config({}, data)
    for item in overrides:
        path, value = _parse_override(item)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section.")
        node[path[-1]] = value
    return data


def load_config(
    name_or_path: str | Path | None = None, overrides: list[str] | None = None, world_size: int | None = None
) -> TrainConfig:
    """Load a shipped config by name (``"cpu-tiny"``) or a YAML path, apply overrides, validate.

    ``world_size`` (if given) also checks the batch arithmetic for that many ranks.
    """
    data = _read_yaml(_resolve_path(name_or_path)) if name_or_path is not None else {}
    data = apply_overrides(data, list(overrides or []))
    cfg = from_dict(TrainConfig, data)
    validate(cfg, world_size)
    return cfg
