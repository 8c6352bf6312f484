"""Kills inside a training job: at a chosen file operation of a save, or in the middle of a metrics line.

:func:`child_main` is what a job of :mod:`lenslib.train.faults` runs instead of ``python -m lenslib.train``:
the same training job, with the kill planned in :data:`PLAN_ENV` (JSON) installed. A ``save`` plan kills the
job before or after one of the file operations of :func:`~lenslib.train.checkpoint.save_checkpoint` (the
tensor files, the RNG file, the trainer state, the checksums, an fsync, a rename, the ``latest`` pointer, the
rotation of old checkpoints), counted by wrapping the functions those modules call (``os`` of the checkpoint
modules and of :mod:`lenslib.atomic`, ``shutil``, DCP); a ``count`` plan reports each save's number of
operations; a ``torn`` plan writes part of a metrics line, flushes it and dies.

Used by :mod:`lenslib.train.faults` (``tests/test_train_kill.py``, ``benchmarks/kill_resume.py``): the
evidence behind chapter 4's statement that a killed run resumes bit for bit.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import sys
from pathlib import Path

from lenslib import atomic

from . import checkpoint
from .checkpoint import layout, saving
from .cli import main_train
from .logger import RunLogger

__all__ = ["PLAN_ENV", "child_main"]

PLAN_ENV = "LENS_FAULT_PLAN"


def _die(report: str | None, moment: str) -> None:
    """Record where the job dies (one JSON line, written straight to the file), then SIGKILL this process."""
    if report:
        fd = os.open(report, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (json.dumps({"moment": moment}) + "\n").encode())
        finally:
            os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


class _Proxy:
    """A module whose chosen functions are replaced (``os.replace`` counted inside the checkpoint modules
    only)."""

    def __init__(self, module, replaced: dict):
        self._module, self._replaced = module, replaced

    def __getattr__(self, name):
        return self._replaced[name] if name in self._replaced else getattr(self._module, name)


def _install_save_hooks(plan: dict) -> None:
    """Count the file operations of every save (``kind == "count"``: report the counts) or kill the job before
    or after the ``plan["tick"]``-th operation of its ``plan["save"]``-th save (``kind == "save"``)."""
    # lazy: torch.distributed.checkpoint costs 0.6 s on top of torch (python -X importtime); only these hooks
    # wrap it, and a save imports it anyway
    import torch.distributed.checkpoint as dcp  # noqa: PLC0415

    state = {"save": 0, "tick": 0, "inside": False, "ticks": []}
    planned = plan.get("kind") == "save"

    def tick(moment: str) -> None:
        if not state["inside"]:
            return
        state["tick"] += 1
        if planned and state["save"] == plan["save"] and state["tick"] == plan["tick"]:
            _die(plan.get("report"), f"save {state['save']} of the job, operation {state['tick']}: {moment}")

    def counted(fn, what: str):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            name = f" {Path(args[0]).name}" if args and isinstance(args[0], (str, Path)) else ""
            tick(f"before {what}{name}")
            out = fn(*args, **kwargs)
            tick(f"after {what}{name}")
            return out

        return wrapper

    saving.save_file = counted(saving.save_file, "writing the RNG file")
    saving.hash_files = counted(saving.hash_files, "hashing the files")
    dcp.save = counted(dcp.save, "writing the tensor files")
    # The renames and fsyncs of a save: its own, its folders' (layout.fsync_dir) and its files'
    # (lenslib.atomic).
    counted_os = _Proxy(
        os, {"replace": counted(os.replace, "renaming"), "fsync": counted(os.fsync, "an fsync")}
    )
    for module in (saving, layout, atomic):
        module.os = counted_os
    saving.shutil = _Proxy(shutil, {"rmtree": counted(shutil.rmtree, "removing")})
    real_save = checkpoint.save_checkpoint

    def save_checkpoint(*args, **kwargs):
        state["save"] += 1
        state["tick"], state["inside"] = 0, True
        try:
            out = real_save(*args, **kwargs)
        finally:
            state["inside"] = False
            state["ticks"].append(state["tick"])
        if planned and state["save"] == plan["save"]:  # a save with fewer operations than planned: after it
            _die(plan.get("report"), f"save {state['save']} of the job, after its last operation")
        if plan.get("kind") == "count" and plan.get("report"):
            Path(plan["report"]).write_text(json.dumps({"ticks": state["ticks"]}))
        return out

    checkpoint.save_checkpoint = save_checkpoint  # the trainer calls it through the package


def _install_torn_metrics(plan: dict) -> None:
    """Kill the job after writing the first ``plan["cut"]`` share of its ``plan["line"]``-th metrics line."""
    real_log = RunLogger.log
    count = {"n": 0}

    def log(self, rec):
        if self.is_main and self.file is not None:
            count["n"] += 1
            if count["n"] == plan["line"]:
                line = json.dumps(rec) + "\n"
                cut = max(1, min(len(line) - 2, int(len(line) * plan.get("cut", 0.5))))
                self.file.write(line[:cut])
                self.file.flush()
                _die(
                    plan.get("report"),
                    f"metrics line {count['n']} of the job, after {cut} of {len(line)} characters",
                )
        return real_log(self, rec)

    RunLogger.log = log


def child_main() -> None:
    """``python -c "from lenslib.train.fault_hooks import child_main; child_main()" --config ... KEY=VALUE
    ...``: the training job of ``python -m lenslib.train`` with the kill planned in :data:`PLAN_ENV` (JSON)
    installed."""
    plan = json.loads(os.environ.get(PLAN_ENV) or "{}")
    if plan.get("kind") in ("save", "count"):
        _install_save_hooks(plan)
    elif plan.get("kind") == "torn":
        _install_torn_metrics(plan)
    sys.exit(main_train(sys.argv[1:]))
