"""Full-scale runs, headlessly: papermill-driven training notebooks, SLURM jobs and run records.

* :mod:`lenslib.cluster.params` — notebook parameters, checked against the notebook and turned into the run
  config's dotted overrides before anything executes.
* :mod:`lenslib.cluster.notebook` — ``lens run-notebook``: MyST notebook → papermill; the executed notebook
  is the run's record.
* :mod:`lenslib.cluster.launch` — inside a notebook, multi-process training runs as a ``torchrun``
  subprocess (``srun`` across the nodes of a SLURM job); its return code and log tail surface in the notebook.
* :mod:`lenslib.cluster.slurm` — ``lens submit --slurm``: sbatch scripts, job arrays for sweeps,
  preemption → checkpoint → requeue → resume.
* :mod:`lenslib.cluster.records` — the run folder's manifest of attempts, and a finished run rendered as a
  book page.
* :mod:`lenslib.cluster.training_compute` — training FLOPs of a run and the paper's GPU-hours per stage.

Used in chapter 7 ("From laptop to 128 GPUs"). Submodules are imported on demand so ``lens --help``
stays fast.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "run_notebook": "lenslib.cluster.notebook",
    "config_from_parameters": "lenslib.cluster.params",
    "ParameterError": "lenslib.cluster.params",
    "launch_training": "lenslib.cluster.launch",
    "RunPreempted": "lenslib.cluster.launch",
    "TrainingFailed": "lenslib.cluster.launch",
    "request_stop": "lenslib.cluster.launch",
    "check_result": "lenslib.cluster.launch",
    "SlurmResources": "lenslib.cluster.slurm",
    "render_sbatch": "lenslib.cluster.slurm",
    "submit_notebook": "lenslib.cluster.slurm",
    "wait_for_job": "lenslib.cluster.slurm",
    "read_run": "lenslib.cluster.records",
    "record_to_page": "lenslib.cluster.records",
    "write_record_page": "lenslib.cluster.records",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lenslib.cluster' has no attribute {name!r}")
