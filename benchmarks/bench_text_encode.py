"""CPU time to encode one training batch of world captions with MiniLM, by ``group_size``.

The caption ablation (chapter 6) trains on captions of very different lengths: detailed ones run to 160
MiniLM tokens (median 81), brief ones to about 20, and the mixed arm has both in one batch. One padded pass
encodes every caption at the batch's longest length; ``MiniLMEncoder(group_size=k)`` sorts the batch by
length and encodes groups of ``k`` each at their own longest. This script times both on real batches of
the arms' captions (``WorldSource`` with each caption kind, the ablation's 160-token limit) and reports
the tokens the encoder actually ran over.

Run: ``.venv/bin/python benchmarks/bench_text_encode.py [--batch 32] [--repeats 5] [--threads 2]``.
Writes ``benchmarks/results/text_encode.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from lenslib.atomic import write_json_atomic
from lenslib.data.sources import WorldSource
from lenslib.model.text_encoders import get_text_encoder

RESULTS = Path(__file__).resolve().parent / "results" / "text_encode.json"
KINDS = ("brief", "detailed", "mixed")
MAX_LENGTH = 160  # the caption ablation's WHOLE_CAPTIONS


def encoder_tokens(lengths: list[int], group_size: int) -> int:
    """Token positions the encoder runs over: each group padded to its longest caption."""
    ordered = sorted(lengths)
    step = group_size or len(ordered)
    return sum(max(ordered[i : i + step]) * len(ordered[i : i + step]) for i in range(0, len(ordered), step))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="captions per batch (cpu-tiny's global batch)")
    parser.add_argument("--batches", type=int, default=4, help="distinct batches per caption kind")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the batches")
    parser.add_argument("--groups", type=int, nargs="+", default=[0, 4, 8, 16])
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    if args.batch < 1 or args.batches < 1 or args.repeats < 1 or any(g < 0 for g in args.groups):
        parser.error("--batch, --batches and --repeats must be >= 1 and every --groups value >= 0")
    torch.set_num_threads(args.threads)

    enc = get_text_encoder("minilm", max_length=MAX_LENGTH)  # one model; each variant sets its group_size
    tokenizer = enc.tokenizer
    rows = []
    for kind in KINDS:
        source = WorldSource(0, "shapes", kind)
        batches = [
            [e.caption for e in source.examples(range(b * args.batch, (b + 1) * args.batch), (64, 64))]
            for b in range(args.batches)
        ]
        lengths = [
            [min(len(ids), MAX_LENGTH) for ids in tokenizer(captions)["input_ids"]] for captions in batches
        ]
        enc.encode(batches[0])  # warm-up
        times = {g: [] for g in args.groups}
        for _ in range(args.repeats):
            for g in args.groups:  # interleaved, so a busy machine slows every variant alike
                enc.group_size = g
                t0 = time.perf_counter()
                for captions in batches:
                    enc.encode(captions)
                times[g].append((time.perf_counter() - t0) / len(batches))
        for g in args.groups:
            rows.append(
                {
                    "captions": kind,
                    "group_size": g,
                    "batch_s_median": statistics.median(times[g]),
                    "batch_s_all": times[g],
                    "valid_tokens": sum(map(sum, lengths)) / len(batches),
                    "encoded_tokens": sum(encoder_tokens(ls, g) for ls in lengths) / len(batches),
                }
            )
    base = {r["captions"]: r["batch_s_median"] for r in rows if r["group_size"] == args.groups[0]}
    print(f"{'captions':<10}{'group_size':>11}{'ms/batch':>10}{'vs first':>10}{'tokens run':>12}{'valid':>8}")
    for r in rows:
        print(
            f"{r['captions']:<10}{r['group_size']:>11}{r['batch_s_median'] * 1000:>10.0f}"
            f"{r['batch_s_median'] / base[r['captions']]:>10.2f}"
            f"{r['encoded_tokens']:>12.0f}{r['valid_tokens']:>8.0f}"
        )
    result = {
        "batch": args.batch,
        "batches": args.batches,
        "repeats": args.repeats,
        "max_length": MAX_LENGTH,
        "rows": rows,
        "torch": torch.__version__,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RESULTS, result)
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
