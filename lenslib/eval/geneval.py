"""GenEval scoring of an image folder with the world's exact judge, plus confidence intervals.

GenEval's generation script writes one folder per prompt, ``<index:05d>/metadata.jsonl`` (the
prompt's metadata line) and ``<index:05d>/samples/<k:04d>.png``; its ``evaluate_images.py`` judges
every image and ``summary_scores.py`` reports per-tag accuracy, the overall score (unweighted mean
of the six tags), % correct images and % prompts with at least one correct image. We keep that
layout and those numbers, replace the learned detector with the exact judge
(``lenslib.eval.judge``), and add what GenEval lacks: a per-image error record instead of a crash
for bad input, and bootstrap 95 % intervals over prompts and seeds. An image that should be there
but is missing or unreadable scores as a failure (a headline never rises because images are
lost), and is counted. Lines naming a class the world cannot draw (GenEval's refrigerator in the
emoji world) are neither rendered nor judged: each gets one ``not_judged`` row and the summary
lists and counts them. Long-prompt lines (``tag: "long"``, see ``lenslib.world.suites``) are
scored with DPG-Bench's dependency rule and reported beside, not inside, the GenEval overall.

This module is GenEval's API in one import and the home of the summary (:func:`summarize`,
:func:`format_summary`, :func:`failure_kinds`, :func:`write_results`). The other steps have their
own modules: judging a folder (``lenslib.eval.geneval_folder.evaluate_folder``), ground-truth
renders (``lenslib.eval.ground_truth.render_suite``) and the bootstrap
(``lenslib.eval.stats.bootstrap_ci``). Used in chapters 4, 5 and 6 and by ``lens eval``.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from lenslib.atomic import write_text_atomic
from lenslib.eval.geneval_folder import NOT_DRAWN, SAMPLE_RE, evaluate_folder
from lenslib.eval.ground_truth import render_suite
from lenslib.eval.stats import bootstrap_ci
from lenslib.world.suites import GENEVAL_TAGS, LONG_TAG, some

__all__ = [
    "IMAGE_FAILURES",
    "NOT_DRAWN",
    "SAMPLE_RE",
    "UNREADABLE",
    "bootstrap_ci",
    "evaluate_folder",
    "failure_kinds",
    "format_summary",
    "render_suite",
    "summarize",
    "write_results",
]

IMAGE_FAILURES = ("missing_image", "corrupt_image", "wrong_size", "judge_error")  # scored as failures
UNREADABLE = ("corrupt_image", "wrong_size", "judge_error")


_FAILURES = (  # GenEval's reason lines -> a failure kind (evaluate_images.py wording, kept by our judge)
    (re.compile(r"^expected \S.* (left of|right of|above|below) target"), "wrong position"),
    (re.compile(r"^no target for "), "position target missing"),
    (re.compile(r"^expected \S+ .+>=\d+, found \d+ \S+; and"), "wrong colour"),
    (re.compile(r"^expected .+>=\d+, found \d+$"), "missing object"),
    (re.compile(r"^expected .+<\d+, found \d+$"), "too many objects"),
)


def failure_kinds(reason: str) -> list[str]:
    """The kinds of failure named by a GenEval ``reason`` (one per line): missing object, wrong
    colour, wrong position, position target missing, too many objects; "other" otherwise."""
    kinds = []
    for line in filter(None, (x.strip() for x in (reason or "").splitlines())):
        if line.startswith("Q") and " -> no (" in line:  # a long-prompt question: classify its judge reason
            kinds += failure_kinds(line.split(" -> no (", 1)[1].rstrip(")"))
            continue
        kinds.append(next((kind for pattern, kind in _FAILURES if pattern.search(line)), "other"))
    return kinds


def summarize(results: list[dict], n_boot: int = 2000, seed: int = 0) -> dict:
    """GenEval's summary of per-image results, with bootstrap intervals and an error census.

    An image that should exist but is missing or unreadable (``kind`` in ``IMAGE_FAILURES``) scores
    as a failure of its prompt, so losing images can only lower a score; ``n_missing`` and
    ``n_unreadable`` count them. Rows whose metadata line cannot be read (a bad line, a folder from
    another suite) are not scored: they are counted under ``errors``. ``not_judged`` rows (lines
    the world cannot draw) are listed under ``lines_not_judged`` and counted, outside every score.
    Long-prompt rows score their DPG fraction ``score``. ``overall`` is the unweighted mean of the
    GenEval tags present, as in GenEval's ``summary_scores.py``.
    """
    not_judged = [r for r in results if "not_judged" in r]
    images = [r for r in results if "not_judged" not in r]
    judged = [r for r in images if "error" not in r]
    errors = [r for r in images if "error" in r]
    failed = [r for r in errors if r.get("kind") in IMAGE_FAILURES and r.get("tag")]
    by_prompt: dict[int, list[float]] = defaultdict(list)
    tag_of: dict[int, str] = {}
    for r in judged:
        by_prompt[r["index"]].append(float(r["score"]) if r["tag"] == LONG_TAG else float(bool(r["correct"])))
        tag_of[r["index"]] = r["tag"]
    for r in failed:
        by_prompt[r["index"]].append(0.0)
        tag_of[r["index"]] = r["tag"]
    order = sorted(by_prompt)
    per_prompt = [by_prompt[i] for i in order]
    tags = [tag_of[i] for i in order]

    summary: dict = {
        "n_prompts": len({r["index"] for r in images}),
        "n_images": len(images),
        "n_judged": len(judged),
        "n_scored": len(judged) + len(failed),
        "n_errors": len(errors),
        "errors": dict(Counter(r.get("kind", "error") for r in errors)),
        "n_missing": sum(1 for r in failed if r["kind"] == "missing_image"),
        "n_unreadable": sum(1 for r in failed if r["kind"] in UNREADABLE),
        "n_outside_limits": sum(1 for r in judged if r.get("within_limits") is False),
        "n_lines_not_judged": len(not_judged),
        "not_judged_classes": dict(
            Counter(c for r in not_judged for c in r.get("classes", [])).most_common()
        ),
        "lines_not_judged": [
            {
                "index": r["index"],
                "tag": r.get("tag"),
                "prompt": r.get("prompt"),
                "classes": r.get("classes", []),
            }
            for r in not_judged
        ],
        "tags": {},
    }
    tag_order = [t for t in (*GENEVAL_TAGS, LONG_TAG) if t in tags] + [
        t for t in dict.fromkeys(tags) if t not in (*GENEVAL_TAGS, LONG_TAG)
    ]
    ci = bootstrap_ci(per_prompt, tags, n_boot=n_boot, seed=seed) if per_prompt else {}
    for t in tag_order:
        vals = [v for g, tg in zip(per_prompt, tags) if tg == t for v in g]
        summary["tags"][t] = {
            "accuracy": float(np.mean(vals)),
            "n_images": len(vals),
            "n_prompts": tags.count(t),
            "ci95": ci.get(f"tag:{t}"),
        }
    for t in tag_order:  # why images failed, per tag (GenEval prints only the raw reasons)
        failures = Counter(
            k
            for r in judged
            if r["tag"] == t and not r["correct"]
            for k in (r["failures"] if "failures" in r else failure_kinds(r["reason"]))
        )
        failures.update(r["kind"].replace("_", " ") for r in failed if r["tag"] == t)
        summary["tags"][t]["failures"] = dict(failures.most_common())
    long_rows = [r for r in judged if r["tag"] == LONG_TAG and "categories" in r]
    if long_rows:  # DPG-style per-category answers (before the dependency rule, as DPG-Bench reports them)
        cats = sorted({c for r in long_rows for c in r["categories"]})
        summary["tags"][LONG_TAG]["categories"] = {
            c: float(np.mean([r["categories"][c] for r in long_rows if c in r["categories"]])) for c in cats
        }
    geneval = [t for t in tag_order if t in GENEVAL_TAGS]
    if geneval:
        summary["overall"] = {
            "score": float(np.mean([summary["tags"][t]["accuracy"] for t in geneval])),
            "ci95": ci.get("overall"),
            "tags": geneval,
        }
    if per_prompt:
        flat = [v for g in per_prompt for v in g]
        summary["pct_correct_images"] = {"value": float(np.mean(flat)), "ci95": ci["pct_correct_images"]}
        summary["pct_prompts_any_correct"] = {
            "value": float(np.mean([max(g) >= 1.0 for g in per_prompt])),
            "ci95": ci["pct_prompts_any_correct"],
        }
    summary["bootstrap"] = {
        "n_boot": n_boot,
        "seed": seed,
        "level": 0.95,
        "resampling": "prompts within each tag, then images within each prompt",
    }
    return summary


def format_summary(summary: dict) -> str:
    """A GenEval-style text table of ``summarize``'s output."""

    def ci(c):
        return f"[{c[0]:.1%}, {c[1]:.1%}]" if c else ""

    lines = [
        f"images: {summary['n_images']}  judged: {summary.get('n_judged', summary['n_scored'])}  "
        f"errors: {summary['n_errors']}" + (f" {summary['errors']}" if summary["errors"] else "")
    ]
    lost = {"missing": summary.get("n_missing", 0), "unreadable": summary.get("n_unreadable", 0)}
    if any(lost.values()):
        lines.append(
            " and ".join(f"{n} {what}" for what, n in lost.items() if n) + " images are scored as failures"
        )
    if summary.get("n_lines_not_judged"):
        classes = some(f"{c} ({n})" for c, n in summary["not_judged_classes"].items())
        lines.append(
            f"{summary['n_lines_not_judged']} lines not judged: they name classes this world cannot draw "
            f"({classes})"
        )
    if summary.get("n_outside_limits"):
        lines.append(f"({summary['n_outside_limits']} scored images are outside the judge's exact limits)")
    for t, s in summary["tags"].items():
        why = ", ".join(f"{k} {n}" for k, n in list(s.get("failures", {}).items())[:3])
        lines.append(
            f"{t:<16} {s['accuracy']:7.2%} {ci(s['ci95']):>18}  ({s['n_images']} images)"
            + (f"  failures: {why}" if why else "")
        )
    if "overall" in summary:
        o = summary["overall"]
        lines.append(
            f"{'overall':<16} {o['score']:7.2%} {ci(o['ci95']):>18}  (mean of {len(o['tags'])} tags)"
        )
    if "pct_correct_images" in summary:
        lines.append(f"% correct images           {summary['pct_correct_images']['value']:.2%}")
        lines.append(f"% prompts with >=1 correct {summary['pct_prompts_any_correct']['value']:.2%}")
    return "\n".join(lines)


def write_results(rows: list[dict], summary: dict, out: str | Path) -> tuple[Path, Path]:
    """Write ``results.jsonl`` and ``summary.json`` into ``out``, each atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "results.jsonl", out / "summary.json"
    texts = "".join(json.dumps(r) + "\n" for r in rows), json.dumps(summary, indent=2) + "\n"
    for path, text in zip(paths, texts):
        write_text_atomic(path, text)
    return paths
