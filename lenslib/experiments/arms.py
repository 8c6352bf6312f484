"""The arms of an ablation, each run once: keyed by its config, kept as it finishes, written atomically.

An ablation trains and scores several *arms* that differ in a few settings. :func:`run_arms` runs the
arms whose result is missing or was made under another config and takes the others from the store, so
a stopped run continues at the arm it was on and a changed config re-runs only the arms it changes.
A finished arm is one record, ``{"key": <its config as JSON>, **result}``; a store keeps the records:

* :class:`ArmFolder` — one JSON file per arm, ``<folder>/<name>.json``: chapter 6's caption ablation
  (``lenslib.experiments.caption_runs``);
* :class:`ArmTable` — one JSON file with every arm under ``"arms"`` and fields of the whole run beside
  them: the learning ablation of chapter 4 (``benchmarks/learning_ablation.py``).

Both write through ``lenslib.atomic``: a record is the old one or the new one, never a part.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lenslib.atomic import write_json_atomic, write_text_atomic

__all__ = ["Arm", "ArmFolder", "ArmStore", "ArmTable", "config_key", "run_arms"]


@dataclass(frozen=True)
class Arm:
    """One arm: a name (its place in the store) and the config its result depends on (JSON-able)."""

    name: str
    config: Any


def config_key(config: Any) -> Any:
    """The cache key of a config: its JSON form (tuples become lists), so a key read back compares equal."""
    return json.loads(json.dumps(config))


class ArmStore(Protocol):
    def get(self, name: str) -> dict | None: ...

    def put(self, name: str, record: dict) -> None: ...


class ArmFolder:
    """Records as one JSON file per arm in ``folder`` (``indent`` as ``json.dumps``)."""

    def __init__(self, folder: str | Path, indent: int | None = None):
        self.folder, self.indent = Path(folder), indent

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def get(self, name: str) -> dict | None:
        path = self.path(name)
        return json.loads(path.read_text()) if path.exists() else None

    def put(self, name: str, record: dict) -> None:
        write_text_atomic(self.path(name), json.dumps(record, indent=self.indent))


class ArmTable:
    """Records in one JSON file, ``{"arms": {name: record}, ...}``.

    Every write reads the file again (another run may have added arms) and sets the fields of the whole
    run from ``run_fields()`` (the machine, the date), then writes with ``indent``."""

    def __init__(self, path: str | Path, run_fields: Callable[[], dict] | None = None, indent: int = 1):
        self.path, self.run_fields, self.indent = Path(path), run_fields, indent

    def read(self) -> dict:
        return json.loads(self.path.read_text()) if self.path.is_file() else {"arms": {}}

    def get(self, name: str) -> dict | None:
        return self.read()["arms"].get(name)

    def put(self, name: str, record: dict) -> None:
        doc = self.read()
        doc["arms"][name] = record
        if self.run_fields is not None:
            doc.update(self.run_fields())
        write_json_atomic(self.path, doc, indent=self.indent)


def run_arms(
    arms: Iterable[Arm],
    store: ArmStore,
    run: Callable[[Arm, dict | None], dict],
    key: Callable[[Any], Any] = config_key,
    reused: Callable[[Arm, dict], None] | None = None,
) -> dict[str, dict]:
    """Run every arm the store does not hold under its key; ``{name: record}`` in the arms' order.

    ``run(arm, previous)`` computes an arm's result (a dict, stored after ``"key"``); ``previous`` is
    the arm's record under another key, or None, for a caller that can reuse part of it (an arm whose
    training is unchanged is only scored again). ``key(config)`` gives the cache key; stored keys pass
    through it too, so a key that leaves out a field (a run folder's path) still matches records
    written with it. ``reused(arm, record)`` is called for each arm taken from the store.
    """
    out = {}
    for arm in arms:
        want = key(arm.config)
        record = store.get(arm.name)
        if record is not None and "key" in record and key(record["key"]) == want:
            if reused is not None:
                reused(arm, record)
        else:
            record = {"key": want, **run(arm, record)}
            store.put(arm.name, record)
        out[arm.name] = record
    return out
