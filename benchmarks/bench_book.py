"""Wall time of ``make book`` and each chapter's execution time, against the book's CPU budget.

Every chapter must run on a laptop CPU with its default parameters: the goal is the whole book in
15 minutes and every chapter in 5. ``make book`` executes the chapters and the book's extension
writes ``_build/html/execution_times.json``. This script measures a first build, as on a fresh
machine: it removes ``_build`` (Sphinx builds incrementally, so an unchanged book would not execute
again) and points ``LENS_CACHE`` at an empty folder (chapters cache their data and finished runs;
chapter 6 runs in seconds on a warm cache). It then runs the build, reads that file, prints the
table with each chapter's verdict and saves it with the machine it ran on.

Run: ``.venv/bin/python benchmarks/bench_book.py`` (after ``make install``; about 8 minutes on
2 cores). ``--from-build`` reads the times of the last build instead of building again.
Writes ``benchmarks/results/book.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from lenslib.atomic import write_json_atomic

ROOT = Path(__file__).resolve().parent.parent
TIMES = ROOT / "_build" / "html" / "execution_times.json"
RESULTS = Path(__file__).resolve().parent / "results" / "book.json"
CHAPTER_GOAL_S = 5 * 60
BOOK_GOAL_S = 15 * 60


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--from-build",
        action="store_true",
        help="read the last build's execution_times.json instead of running make book",
    )
    parser.add_argument(
        "--warm-cache",
        action="store_true",
        help="build with the usual LENS_CACHE (finished runs and data reused)",
    )
    args = parser.parse_args()
    wall, cache = None, "unknown (read from an earlier build)"
    if not args.from_build:
        shutil.rmtree(ROOT / "_build", ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix="lens-cache-") as empty:
            env = dict(os.environ) if args.warm_cache else {**os.environ, "LENS_CACHE": empty}
            cache = "warm" if args.warm_cache else "cold"
            start = time.perf_counter()
            subprocess.run(["make", "book"], cwd=ROOT, check=True, env=env)
            wall = time.perf_counter() - start
    if not TIMES.exists():
        parser.error(f"{TIMES} not found: run `make book` first, or drop --from-build")
    times = json.loads(TIMES.read_text())
    chapters = times["chapters"]
    rows = {
        name: {**c, "within_goal": c["succeeded"] and c["seconds"] <= CHAPTER_GOAL_S}
        for name, c in chapters.items()
    }
    total = times["total_seconds"]
    print(f"{'chapter':32s} {'seconds':>8s}  goal <= {CHAPTER_GOAL_S} s")
    for name, row in rows.items():
        print(f"{name:32s} {row['seconds']:8.1f}  {'ok' if row['within_goal'] else 'OVER'}")
    print(
        f"{'total execution':32s} {total:8.1f}  goal <= {BOOK_GOAL_S} s: "
        f"{'ok' if total <= BOOK_GOAL_S else 'OVER'}"
    )
    if wall is not None:
        print(f"{'make book wall time':32s} {wall:8.1f}")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    write_json_atomic(
        RESULTS,
        {
            "chapters": rows,
            "cache": cache,
            "total_execution_s": total,
            "make_book_wall_s": None if wall is None else round(wall, 1),
            "goals_s": {"chapter": CHAPTER_GOAL_S, "book": BOOK_GOAL_S},
            "all_within_goal": total <= BOOK_GOAL_S and all(r["within_goal"] for r in rows.values()),
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
            },
            "commit": commit,
            "date": dt.date.today().isoformat(),
        },
    )
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
