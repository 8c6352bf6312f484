"""``lens run-notebook``, ``lens submit`` and ``lens record``: headless full-scale runs.

    lens run-notebook book/04_training.md runs/stage1 -p preset lens-stage1 -p nodes 16 [-y params.yaml]
    lens submit book/04_training.md runs/stage1 -p preset lens-stage1 --slurm --nodes 16 --gpus-per-node 8 \\
        --time 2-00:00:00 --partition gpu [--sweep sweep.yaml] [--dry-run]
    lens record runs/stage1 book/runs/stage1.ipynb

Exit codes of run-notebook: 0 done, 75 preempted after a checkpoint (requeue me), 1 failed, 2 bad parameter
(nothing was executed). Used in chapter 7.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lenslib.cli import add_documented, fail

__all__ = ["register"]

# `lens --help` imports this module: each command imports the cluster modules when it runs, since they
# cost 1.0-1.5 s (papermill, jupytext, nbformat, the train config; measured) and --help needs none of them.


def _param_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("notebook", help="training notebook (.md MyST via jupytext, or .ipynb)")
    p.add_argument(
        "run_dir", metavar="RUN_DIR", help="run folder: record, config, metrics, samples, checkpoints"
    )
    for flags, value in (
        (("-p", "--parameters"), "; VALUE is read as papermill does (True/False/None, int, float, string)"),
        (("-r", "--parameters-raw"), " kept as a string"),
    ):
        p.add_argument(
            *flags,
            nargs=2,
            action="append",
            default=[],
            metavar=("KEY", "VALUE"),
            help=f"a notebook parameter{value}",
        )
    p.add_argument(
        "-y",
        "--parameters-yaml",
        action="append",
        default=[],
        metavar="YAML",
        help="a YAML file of parameters, or an inline YAML mapping (later values win; -p/-r win over -y)",
    )


def _collect(args) -> dict:
    from . import params as pm  # noqa: PLC0415  (lazy: see above)

    params: dict = {}
    for item in args.parameters_yaml:
        params.update(pm.read_parameters_file(item))
    for key, value in args.parameters:
        params[key] = pm.parse_value(value)
    for key, value in args.parameters_raw:
        params[key] = value
    return params


def _setup_logging(formatter: logging.Formatter) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    for name in ("papermill", "lenslib.cluster"):
        lg = logging.getLogger(name)
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
        lg.propagate = False


def _cmd_run_notebook(args) -> int:
    from . import notebook  # noqa: PLC0415  (lazy: see above)
    from .params import ParameterError  # noqa: PLC0415  (lazy: see above)

    try:
        params = _collect(args)
        if args.check:
            prep = notebook.prepare(
                args.notebook,
                args.run_dir,
                params,
                kernel=args.kernel,
                allow_config_change=args.allow_config_change,
            )
            print(f"lens run-notebook: parameters OK; prepared notebook at {prep.prepared_path}")
            return 0
        _setup_logging(notebook.OneLineFormatter("%(message)s"))
        result = notebook.run_notebook(
            args.notebook,
            args.run_dir,
            params,
            kernel=args.kernel,
            log_output=not args.no_log_output,
            execution_timeout=args.execution_timeout,
            allow_config_change=args.allow_config_change,
        )
    except (ParameterError, FileNotFoundError, RuntimeError) as err:
        return fail("run-notebook", err, notebook.EXIT_PARAMETER_ERROR)
    line = f"lens run-notebook: {result.status} in {result.seconds:.1f} s; record {result.record}"
    if result.error:
        line += f"\n  {result.error}"
    print(line, file=sys.stderr if result.exit_code else sys.stdout)
    return result.exit_code


def _cmd_submit(args) -> int:
    from . import records, slurm  # noqa: PLC0415  (lazy: see above)
    from .params import ParameterError  # noqa: PLC0415  (lazy: see above)

    if not args.slurm:
        return fail("submit", "choose a scheduler (--slurm), or run here with `lens run-notebook`.")
    try:
        params = _collect(args)
        nodes = args.nodes if args.nodes is not None else int(params.pop("nodes", 1) or 1)
        nproc = args.nproc_per_node if args.nproc_per_node is not None else params.pop("nproc_per_node", None)
        res = slurm.SlurmResources(
            nodes=nodes,
            gpus_per_node=args.gpus_per_node,
            nproc_per_node=nproc,
            cpus_per_task=args.cpus_per_task,
            mem=args.mem,
            time=args.time,
            partition=args.partition,
            account=args.account,
            qos=args.qos,
            constraint=args.constraint,
            signal_seconds=args.signal_seconds,
            requeue=not args.no_requeue,
            array_parallel=args.array_parallel,
            extra=args.sbatch_arg,
        )
        sweep = slurm.load_sweep(args.sweep) if args.sweep else None
        sub = slurm.submit_notebook(
            args.notebook,
            args.run_dir,
            params,
            res,
            sweep=sweep,
            name=args.name,
            dry_run=args.dry_run,
            python=args.python,
            prologue=args.prologue,
        )
    except (ParameterError, slurm.SlurmError, FileNotFoundError, ValueError) as err:
        return fail("submit", err)
    if args.dry_run:
        print(sub.script, end="")
        return 0
    print(
        f"submitted job {sub.job_id} ({len(sub.run_dirs)} run folder{'s' if len(sub.run_dirs) > 1 else ''}); "
        f"script {sub.script_path}"
    )
    if not args.wait:
        return 0
    try:
        tasks = slurm.wait_for_job(sub.job_id, timeout=args.timeout, expect_tasks=len(sub.run_dirs))
    except slurm.SlurmError as err:
        print(f"lens submit: {err}", file=sys.stderr)
        return 1
    for t in sorted(tasks, key=lambda t: int(t.get("ArrayTaskId", "0") or 0)):
        run_dir = (
            sub.run_dirs[int(t.get("ArrayTaskId", "0") or 0)] if len(sub.run_dirs) > 1 else sub.run_dirs[0]
        )
        attempts = records.read_manifest(run_dir).get("attempts", [])
        print(
            f"{t.get('JobId')} {t.get('JobState')} exit {t.get('ExitCode')} restarts {t.get('Restarts')}: "
            f"{run_dir} ({len(attempts)} attempt{'s' if len(attempts) != 1 else ''}, "
            f"{attempts[-1]['status'] if attempts else 'no record'})"
        )
    return 0 if all(t.get("JobState") == "COMPLETED" for t in tasks) else 1


def _cmd_record(args) -> int:
    from . import records  # noqa: PLC0415  (lazy: see above)

    try:
        records.check_record_args(args.run_dir, args.out)
        note = None
        if args.note is not None:
            if not Path(args.note).is_file():
                raise FileNotFoundError(
                    f"--note {args.note}: no such file; pass a markdown file describing how the run was made."
                )
            note = Path(args.note).read_text()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError) as err:
        return fail("record", err)
    page = records.write_record_page(args.run_dir, args.out, title=args.title, note=note)
    print(f"wrote {page}")
    return 0


def register(subparsers) -> None:
    p = add_documented(
        subparsers,
        "run-notebook",
        "validate parameters, then execute a training notebook headlessly",
        __doc__,
    )
    _param_args(p)
    p.add_argument("-k", "--kernel", default="python3", help="Jupyter kernel (default python3)")
    p.add_argument("--check", action="store_true", help="validate and prepare only; execute nothing")
    p.add_argument(
        "--allow-config-change",
        action="store_true",
        help="resume a run folder even though the resolved config changed",
    )
    p.add_argument("--execution-timeout", type=float, default=None, help="seconds per cell (default: none)")
    p.add_argument("--no-log-output", action="store_true", help="do not echo cell output to the log")
    p.set_defaults(func=_cmd_run_notebook)

    s = add_documented(
        subparsers,
        "submit",
        "submit a training notebook as a SLURM job (or a job array for a sweep)",
        __doc__,
    )
    _param_args(s)
    s.add_argument("--slurm", action="store_true", help="submit with sbatch")
    s.add_argument("--nodes", type=int, default=None, help="nodes (default: the nodes parameter, else 1)")
    s.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per node (0: CPU job)")
    s.add_argument(
        "--nproc-per-node",
        type=int,
        default=None,
        help="training processes per node (default: GPUs per node, else 1)",
    )
    s.add_argument("--cpus-per-task", type=int, default=None, help="CPUs per node (default: one per process)")
    s.add_argument("--mem", default=None, help="memory per node, e.g. 480G")
    s.add_argument("--time", default="01:00:00", help="time limit (HH:MM:SS or D-HH:MM:SS)")
    s.add_argument("--partition", default=None)
    s.add_argument("--account", default=None)
    s.add_argument("--qos", default=None)
    s.add_argument("--constraint", default=None)
    s.add_argument(
        "--signal-seconds",
        type=int,
        default=120,
        help="SIGUSR1 this long before the time limit (default 120)",
    )
    s.add_argument("--no-requeue", action="store_true", help="do not requeue after a preemption save")
    s.add_argument(
        "--sweep", default=None, help="YAML list of parameter sets: one array task and RUN_DIR/run-i each"
    )
    s.add_argument("--array-parallel", type=int, default=None, help="at most this many array tasks at once")
    s.add_argument("--name", default=None, help="job name (default: the run folder's name)")
    s.add_argument("--python", default=None, help="Python on the compute nodes (default: this one)")
    s.add_argument(
        "--prologue",
        action="append",
        default=[],
        help="shell line run before the notebook (e.g. 'module load cuda')",
    )
    s.add_argument("--sbatch-arg", action="append", default=[], help="extra sbatch option, e.g. --exclusive")
    s.add_argument("--dry-run", action="store_true", help="print the script; submit nothing")
    s.add_argument("--wait", action="store_true", help="wait for the job and report its state")
    s.add_argument("--timeout", type=float, default=24 * 3600, help="seconds to --wait (default 1 day)")
    s.set_defaults(func=_cmd_submit)

    r = subparsers.add_parser(
        "record", help="render a run folder (executed notebook + metrics) as a book page"
    )
    r.add_argument("run_dir", help="a run folder written by lens run-notebook")
    r.add_argument(
        "out",
        help="the page to write, an .ipynb in the book (an experiment's results.json is copied beside it "
        "as NAME.json)",
    )
    r.add_argument("--title", default=None)
    r.add_argument(
        "--note",
        default=None,
        metavar="FILE",
        help="a markdown file shown after the summary: how the run was made (machines, threads, resumes)",
    )
    r.set_defaults(func=_cmd_record)
