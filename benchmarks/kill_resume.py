"""Random kills of a training job: every killed and resumed run must finish bit-identical to one never killed.

Trains the small run of :data:`lenslib.train.faults.TINY_OVERRIDES` (``cpu-tiny`` at 16 px, 2 layers, a save
after every step) once without interruption, then again and again through SIGKILLs at random moments of four
kinds (``startup``, ``training``, ``save``: inside a checkpoint write, ``torn``: in the middle of a metrics
line; see :mod:`lenslib.train.faults`), resuming after each kill like a requeued job, until ``--kills`` kills
have been made. Each run is compared with the uninterrupted one: the final checkpoint's model, EMA, AdamW and
RNG tensors and every logged step must be equal. ``tests/test_train_kill.py`` runs one short trial of the
same.

Run: ``.venv/bin/python benchmarks/kill_resume.py [--kills 30] [--per-run 5] [--steps 16] [--seed 0]``.
Writes ``benchmarks/results/kill_resume.json`` (the tally, then every kill); exit status 1 if a run differed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import tempfile
import time
from pathlib import Path

from lenslib.atomic import write_json_atomic
from lenslib.train import faults
from lenslib.train.config import load_config, to_dict

RESULTS = Path(__file__).resolve().parent / "results" / "kill_resume.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=30, help="kills in all (default 30)")
    parser.add_argument(
        "--per-run", type=int, default=5, help="kills per run before it may finish (default 5)"
    )
    parser.add_argument(
        "--steps", type=int, default=16, help="steps of each run (default 16; a save after each)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="OMP threads of every job (default 1)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    if args.kills < 1 or args.per_run < 1 or args.steps < 2 or args.threads < 1:
        parser.error("--kills, --per-run and --threads must be >= 1 and --steps >= 2")
    rng = random.Random(args.seed)
    t0 = time.monotonic()
    trials = []
    with tempfile.TemporaryDirectory(prefix="kill-resume-") as tmp:
        ref = faults.reference_run(Path(tmp) / "uninterrupted", args.steps, threads=args.threads)
        print(
            f"uninterrupted run: {ref.seconds:.1f} s (start-up {ref.startup_s:.1f} s, "
            f"{ref.step_s * 1000:.0f} ms a "
            f"step with its save; {min(ref.save_ticks)}-{max(ref.save_ticks)} file operations a save)",
            flush=True,
        )
        made = 0
        while made < args.kills:
            n = min(args.per_run, args.kills - made)
            first = len(trials) * args.per_run  # the kinds take turns over all runs
            kinds = [faults.KINDS[i % len(faults.KINDS)] for i in range(first, first + n)]
            rng.shuffle(kinds)
            result = faults.kill_trial(
                Path(tmp) / f"run-{len(trials)}", ref, kinds, seed=rng.randrange(2**31), threads=args.threads
            )
            trials.append(result)
            made += len(result["kills"])
            print(
                f"run {len(trials) - 1}: {len(result['kills'])} kills "
                f"({', '.join(k.kind for k in result['kills'])}), "
                f"{result['jobs']} jobs, {result['seconds']:.0f} s: "
                + (
                    "bit-identical"
                    if result["identical"]
                    else "DIFFERS: " + "; ".join(result["problems"][:3])
                ),
                flush=True,
            )
            for k in result["kills"]:
                print(
                    f"    {k.kind:<9} {k.moment}; checkpoint {k.latest_before} -> {k.latest_after}, "
                    f"next job from {k.resumed_at}",
                    flush=True,
                )
    tally = faults.tally(trials)
    detail = tally.pop("detail")
    out = {
        **tally,
        "all_identical": all(t["identical"] for t in trials),
        "runs_detail": [
            {
                "kills": len(t["kills"]),
                "jobs": t["jobs"],
                "seconds": round(t["seconds"], 1),
                "identical": t["identical"],
                "problems": t["problems"],
                "finished_early": t["finished_early"],
            }
            for t in trials
        ],
        "steps_per_run": args.steps,
        "overrides": faults.TINY_OVERRIDES,
        "config": to_dict(load_config("cpu-tiny", [*faults.TINY_OVERRIDES, f"run.steps={args.steps}"])),
        "uninterrupted": {
            "seconds": round(ref.seconds, 2),
            "startup_s": round(ref.startup_s, 2),
            "step_s": round(ref.step_s, 4),
            "file_operations_per_save": ref.save_ticks,
        },
        "seed": args.seed,
        "threads": args.threads,
        "seconds": round(time.monotonic() - t0, 1),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "kills_detail": detail,
    }
    print(
        f"{tally['kills']} kills ({', '.join(f'{k} {v}' for k, v in tally['by_kind'].items())}) over "
        f"{tally['runs']} runs: {tally['runs_identical']} of {tally['runs']} bit-identical to the "
        "uninterrupted run"
    )
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, out)
    print(f"wrote {path}")
    return 0 if out["all_identical"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
