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
lists and counts them. Long-prompt lines
(``tag: "long"``, see ``lenslib.world.suites``) are scored with DPG-Bench's dependency rule and
reported beside, not inside, the GenEval overall. Used in chapter 5.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from lenslib.atomic import atomic_output_dir, check_output_dir
from lenslib.world.suites import GENEVAL_TAGS, LONG_TAG, MetadataReport, check_line, read_metadata, some

SAMPLE_RE = re.compile(r"^(\d+)\.png$")  # GenEval's own filter on sample file names
NOT_DRAWN = (
    "not_drawn.jsonl"  # what render_suite writes beside the prompt folders: the lines it could not draw
)
IMAGE_FAILURES = ("missing_image", "corrupt_image", "wrong_size", "judge_error")  # scored as failures
UNREADABLE = ("corrupt_image", "wrong_size", "judge_error")


# --------------------------------------------------------------------------- statistics
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


def bootstrap_ci(
    per_prompt, tags=None, n_boot: int = 2000, seed: int = 0, level: float = 0.95, resample: str = "both"
) -> dict:
    """Percentile bootstrap intervals for GenEval's summary numbers, resampling prompts and seeds.

    ``per_prompt`` is a list with one 1-D array per prompt of its images' scores (0/1, or a DPG
    fraction); ``tags`` the tag of each prompt. Each replicate draws prompts with replacement
    *within each tag* (the tag sizes are fixed by the suite), then draws that prompt's images
    with replacement (the sampling seeds), and recomputes every statistic. Returns
    ``{name: (low, high)}`` for ``overall`` (mean of GenEval tags present), ``pct_correct_images``,
    ``pct_prompts_any_correct`` and ``tag:<tag>`` for each tag. Seeded: same input, same intervals.

    ``resample`` = ``"both"`` (default) answers "another suite of this kind, and other seeds";
    it is slightly conservative, since the seed-to-seed noise is already inside the prompt-level
    spread and is counted again (Davison & Hinkley 1997, section 3.8). ``"prompts"`` resamples
    prompts only (the usual cluster bootstrap: close to nominal coverage for the suite mean);
    ``"seeds"`` only images within prompts (this fixed suite, other seeds). Chapter 5 compares them.
    """
    if resample not in ("both", "prompts", "seeds"):
        raise ValueError(f"resample must be 'both', 'prompts' or 'seeds', got {resample!r}")
    groups = [np.asarray(g, dtype=float).ravel() for g in per_prompt]
    if any(len(g) == 0 for g in groups):
        raise ValueError("every prompt needs at least one scored image for the bootstrap")
    if not groups:
        return {}
    tags = list(tags) if tags is not None else ["all"] * len(groups)
    if len(tags) != len(groups):
        raise ValueError(f"{len(tags)} tags for {len(groups)} prompts")
    rng = np.random.default_rng(seed)
    counts = np.array([len(g) for g in groups])
    scores = np.zeros((len(groups), counts.max()))
    for i, g in enumerate(groups):
        scores[i, : len(g)] = g

    tag_names = list(dict.fromkeys(tags))
    sums, imgs, anys, n_prompts = {}, {}, {}, {}
    for tag in tag_names:
        idx = np.flatnonzero(np.array(tags) == tag)
        if resample == "seeds":
            pick = np.broadcast_to(idx, (n_boot, len(idx)))
        else:
            pick = idx[rng.integers(0, len(idx), size=(n_boot, len(idx)))]  # (B, n_tag) prompts
        k = counts[pick]  # images of each drawn prompt
        if resample == "prompts":
            draw = np.broadcast_to(np.arange(counts.max()), (*pick.shape, counts.max()))
        else:
            draw = np.floor(rng.random((*pick.shape, counts.max())) * k[..., None]).astype(int)
        valid = np.arange(counts.max())[None, None, :] < k[..., None]
        vals = np.where(valid, scores[pick[..., None], draw], 0.0)
        sums[tag] = vals.sum(axis=(1, 2))
        imgs[tag] = k.sum(axis=1)
        anys[tag] = (np.where(valid, vals, -np.inf).max(axis=2) >= 1.0).sum(axis=1)
        n_prompts[tag] = len(idx)

    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]

    def interval(x):
        lo, hi = np.percentile(x, q)
        return float(lo), float(hi)

    out = {f"tag:{t}": interval(sums[t] / imgs[t]) for t in tag_names}
    geneval = [t for t in tag_names if t in GENEVAL_TAGS]
    if geneval:
        out["overall"] = interval(np.mean([sums[t] / imgs[t] for t in geneval], axis=0))
    out["pct_correct_images"] = interval(sum(sums.values()) / sum(imgs.values()))
    out["pct_prompts_any_correct"] = interval(sum(anys.values()) / sum(n_prompts.values()))
    return out


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


# --------------------------------------------------------------------------- judging a folder
def _judge_image(image, line: dict, vocab: str) -> dict:
    """Fields of a result row for one readable image: ``correct``/``reason`` (and ``score`` for
    long-prompt lines)."""
    if line.get("tag") == LONG_TAG:
        from lenslib.eval.dependent import score_long

        result = score_long(image, line, vocab)
        return {
            "correct": result["score"] >= 1.0,
            "score": result["score"],
            "reason": result["reason"],
            "answers": result["answers"],
            "categories": result["categories"],
        }
    import warnings

    from lenslib.eval.judge import judge

    with warnings.catch_warnings():  # outside the limits: recorded per row instead of warned per image
        warnings.simplefilter("ignore", UserWarning)
        verdict = judge(image, line, vocab)
    row = {"correct": bool(verdict.correct), "reason": verdict.reason}
    if not verdict.within_limits:
        row["within_limits"] = False
    return row


def _load_image(path: Path, size: tuple[int, int] | None):
    """The RGB image at ``path``, or (None, kind, message) for a missing, corrupt or wrong-size file."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        return None, "missing_image", f"image {path} is missing"
    try:
        with Image.open(path) as im:
            im.load()
            image = im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        return None, "corrupt_image", f"image {path} cannot be decoded ({err}); regenerate it"
    if size is not None and image.size != tuple(size):
        return (
            None,
            "wrong_size",
            (
                f"image {path} is {image.size[0]}x{image.size[1]} but the suite is judged "
                f"at {size[0]}x{size[1]}; regenerate it at that size or pass --size"
            ),
        )
    return image, None, None


def _sample_path(folder: Path, k: int) -> Path:
    """``samples/<k:04d>.png`` (GenEval's README), or any ``<digits>.png`` naming k (its script writes 5 digits)."""
    path = folder / "samples" / f"{k:04d}.png"
    if not path.is_file() and (folder / "samples").is_dir():
        for p in (folder / "samples").iterdir():
            if (m := SAMPLE_RE.match(p.name)) and int(m.group(1)) == k:
                return p
    return path


def _sample_indices(folder: Path) -> list[int]:
    samples = folder / "samples"
    if not samples.is_dir():
        return []
    return sorted(
        int(m.group(1)) for p in samples.iterdir() if (m := SAMPLE_RE.match(p.name)) and p.is_file()
    )


def evaluate_folder(
    images: str | Path,
    metadata: str | Path | None = None,
    vocab: str = "shapes",
    size: int | tuple[int, int] | None = None,
    per_prompt: int | None = None,
    progress: bool | None = None,
    strict: bool = False,
) -> list[dict]:
    """Judge every image of a GenEval-layout folder; one result row per image, never a crash.

    Rows: ``{"index", "k", "tag", "prompt", "correct", "reason"}`` (plus ``score``/``answers``
    for long-prompt lines), or ``{"index", "k", "tag", "prompt", "error", "kind"}`` when the
    line or image cannot be judged: an unknown class/colour/relation (``unknown_*``), a missing
    image or prompt folder (``missing_image``), a corrupt PNG (``corrupt_image``), an image of
    the wrong size (``wrong_size``); ``summarize`` scores the image kinds as failures. A line
    naming a class the world cannot draw gets one row ``{"index", "tag", "prompt", "not_judged",
    "kind": "undrawable", "classes"}`` instead of image rows; ``strict`` raises ``ValueError``
    for such a line before any image is judged.

    ``metadata`` (a suite file) is optional: without it each folder's own ``metadata.jsonl`` is
    used (and ``not_drawn.jsonl``, the lines ``render_suite`` left out); with it, folders are
    matched to its lines by index and a folder whose line differs is an error. ``size`` is the
    expected image size (default: the most common size in the folder); ``per_prompt`` the
    expected images per prompt (default: the most found in any prompt folder). Used in chapter 5
    and by ``lens eval``.
    """
    from tqdm.auto import tqdm

    images = Path(images)
    if not images.is_dir():
        raise FileNotFoundError(f"image folder {images} does not exist")
    folders = {int(p.name): p for p in images.iterdir() if p.is_dir() and p.name.isdigit()}
    suite: dict[int, dict] = {}
    suite_errors: dict[int, dict] = {}
    if metadata is not None:
        report = read_metadata(metadata, vocab)
        if not report.n_lines:
            raise ValueError(f"metadata file {metadata} has no lines; nothing to score")
        suite = dict(report.lines)
        suite_errors = {e["line"]: e for e in report.errors}
        undrawable = {u["line"]: u for u in report.undrawable}
    else:
        undrawable = {i: u for i, u in _read_not_drawn(images).items() if i not in folders}
    indices = sorted(set(folders) | set(suite) | set(suite_errors) | set(undrawable))
    if not indices:
        raise ValueError(f"{images} holds no GenEval prompt folders (<index:05d>/samples/<k>.png)")

    plan = []  # (index, line, error or not-judged fields) for every prompt, before any image is read
    for index in indices:
        if index in undrawable:
            u = undrawable[index]
            plan.append(
                (
                    index,
                    {"tag": u.get("tag"), "prompt": u.get("prompt")},
                    {
                        "not_judged": f"line {index}: {u['why']}",
                        "kind": "undrawable",
                        "classes": u["classes"],
                    },
                )
            )
        else:
            plan.append(
                (
                    index,
                    *_line_for(index, folders.get(index), suite, suite_errors, metadata is not None, vocab),
                )
            )
    skipped = [(index, err) for index, _, err in plan if err and "not_judged" in err]
    if strict and skipped:
        classes = Counter(c for _, err in skipped for c in err["classes"])
        raise ValueError(
            f"{len(skipped)} lines name classes the {vocab} world cannot draw "
            f"({some(classes)}); first: {skipped[0][1]['not_judged']}; "
            "drop --strict to judge the drawable lines and list these"
        )

    found = {i: _sample_indices(folders[i]) if i in folders else [] for i in indices}
    if per_prompt is None:
        per_prompt = max((max(ks) + 1 for ks in found.values() if ks), default=0)
    if size is None:
        size = _common_size(folders, found)
    elif isinstance(size, int):
        size = (size, size)

    rows: list[dict] = []
    show = progress if progress is not None else _interactive()
    for index, line, err in tqdm(plan, desc="judging prompts", disable=not show):
        base = {"index": index, "tag": (line or {}).get("tag"), "prompt": (line or {}).get("prompt")}
        if err is not None and "not_judged" in err:
            rows.append({**base, **err})
            continue
        ks = sorted(set(range(per_prompt)) | set(found[index]))
        for k in ks:
            row = {**base, "k": k}
            if err is not None:
                rows.append({**row, **err})
                continue
            folder = folders.get(index, images / f"{index:05d}")
            image, kind, message = _load_image(_sample_path(folder, k), size)
            if image is None:
                rows.append({**row, "error": message, "kind": kind})
                continue
            try:
                rows.append({**row, **_judge_image(image, line, vocab)})
            except ValueError as err:  # the judge refuses an input it cannot read (its own check)
                rows.append({**row, "error": f"judge refused the image: {err}", "kind": "judge_error"})
    return rows


def _read_not_drawn(images: Path) -> dict[int, dict]:
    """The lines ``render_suite`` could not draw, by index, from ``<images>/not_drawn.jsonl`` (if any)."""
    path = images / NOT_DRAWN
    if not path.is_file():
        return {}
    out = {}
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
            out[int(rec["index"])] = {
                "tag": rec.get("tag"),
                "prompt": rec.get("prompt"),
                "classes": list(rec["classes"]),
                "why": rec["why"],
            }
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"{path} line {n}: not a record of a line left out ({err}); "
                f"render the folder again or remove {path.name}"
            ) from None
    return out


def _line_for(index, folder, suite, suite_errors, have_suite, vocab):
    """The metadata line for a prompt index, or (None, error fields); (line, not-judged fields) for a
    line that names a class the world cannot draw."""
    if index in suite_errors:
        e = suite_errors[index]
        return None, {"error": f"metadata line {index}: {e['error']}", "kind": e["kind"]}
    own = None
    if folder is not None and (folder / "metadata.jsonl").is_file():
        try:
            own = json.loads((folder / "metadata.jsonl").read_text().strip().splitlines()[0])
        except (json.JSONDecodeError, IndexError) as err:
            if not have_suite:
                return None, {
                    "error": f"{folder}/metadata.jsonl is not a JSON line ({err})",
                    "kind": "bad_json",
                }
    if have_suite:
        line = suite.get(index)
        if line is None:
            return None, {
                "error": f"prompt folder {index:05d} has no line {index} in the metadata file",
                "kind": "unknown_prompt",
            }
        if own is not None and own != line:
            return line, {
                "error": f"{folder}/metadata.jsonl differs from line {index} of the metadata file; "
                "were the images generated from another suite?",
                "kind": "metadata_mismatch",
            }
        if folder is None:
            return line, {
                "error": f"no folder {index:05d}/ for prompt {index}: images are missing",
                "kind": "missing_image",
            }
        return line, None
    if own is None:
        return None, {"error": f"{folder}/metadata.jsonl is missing", "kind": "missing_metadata"}
    report = MetadataReport(path=str(folder / "metadata.jsonl"), vocab=vocab)
    check_line(report, index, own)
    if report.errors:
        return own, {"error": report.errors[0]["error"], "kind": report.errors[0]["kind"]}
    if report.undrawable:
        u = report.undrawable[0]
        return own, {"not_judged": f"line {index}: {u['why']}", "kind": "undrawable", "classes": u["classes"]}
    return own, None


def _common_size(folders, found):
    """The most common image size among the first few readable samples."""
    from PIL import Image

    sizes = Counter()
    for index, ks in found.items():
        for k in ks[:2]:
            try:
                with Image.open(_sample_path(folders[index], k)) as im:
                    sizes[im.size] += 1
            except (OSError, SyntaxError, ValueError):
                continue
        if sum(sizes.values()) >= 64:
            break
    return sizes.most_common(1)[0][0] if sizes else None


def _interactive() -> bool:
    import sys

    return sys.stderr.isatty()


def write_results(rows: list[dict], summary: dict, out: str | Path) -> tuple[Path, Path]:
    """Write ``results.jsonl`` and ``summary.json`` into ``out``, each atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "results.jsonl", out / "summary.json"
    texts = "".join(json.dumps(r) + "\n" for r in rows), json.dumps(summary, indent=2) + "\n"
    for path, text in zip(paths, texts):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return paths


# --------------------------------------------------------------------------- ground-truth renders
def render_suite(
    metadata,
    out: str | Path,
    per_prompt: int = 4,
    vocab: str = "shapes",
    size: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool | None = None,
    strict: bool = False,
) -> Path:
    """Render ground-truth images for a suite in GenEval's folder layout.

    ``metadata`` is a path or a list of lines. Image ``k`` of prompt ``index`` is the world's
    scene for that line drawn with seed ``(seed, index, k)`` (long-prompt lines carry their scene
    and are drawn as is). Every image is correct by construction, so judging this folder must
    give 100 %; chapter 5 uses it to show the judge has no error, on our suites and on GenEval's
    own published one. Folders keep the line's index in the file, as GenEval's do.

    A line naming a known class the world cannot draw (GenEval's refrigerator in the emoji world)
    gets no folder; it is listed in ``not_drawn.jsonl`` beside the folders (index, tag, prompt,
    classes, why, the line itself), which ``evaluate_folder`` reads, so it is counted, never lost.
    ``strict`` refuses such lines instead. ``ValueError`` before any work, with one line saying
    why, for bad lines, an empty suite, a suite with nothing drawable, or an unknown vocabulary or
    too small a ``size``. ``size`` defaults to the vocabulary's smallest exact size (64 px
    shapes, 128 px emoji). Refuses a non-empty ``out`` unless ``overwrite``; builds in a
    temporary folder beside ``out`` and renames it into place, so no partial folder is left.
    """
    from tqdm.auto import tqdm

    from lenslib.world.render import render
    from lenslib.world.spec import VOCAB_MIN_SIDE, Scene, scene_from_metadata, within_limits

    if vocab not in VOCAB_MIN_SIDE:
        raise ValueError(f"unknown vocabulary {vocab!r}; choose one of {list(VOCAB_MIN_SIDE)}")
    size = VOCAB_MIN_SIDE[vocab] if size is None else size
    if not within_limits(vocab, size, size):
        raise ValueError(
            f"size {size} px is below the {vocab} world's limit of {VOCAB_MIN_SIDE[vocab]} px, where "
            "the judge is no longer exact; render at a larger size"
        )
    if per_prompt < 1:
        raise ValueError(f"per_prompt must be >= 1, got {per_prompt}")

    if isinstance(metadata, (str, Path)):
        report = read_metadata(metadata, vocab)
    else:
        report = MetadataReport(path="metadata lines", vocab=vocab)
        for i, line in enumerate(metadata):
            check_line(report, i, line)
    if report.errors:
        raise ValueError(report.error_message())
    if not report.n_lines:
        raise ValueError(f"{report.path} has no lines; nothing to render")
    if report.undrawable and strict:
        raise ValueError(report.undrawable_message())
    if not report.lines:
        raise ValueError(
            f"{report.path}: none of its {report.n_lines} lines can be drawn in the {vocab} world "
            f"(they name {some(report.undrawable_classes)}); pick the right --vocab"
        )
    check_output_dir(out, overwrite)
    show = progress if progress is not None else _interactive()
    with atomic_output_dir(out, overwrite) as tmp:
        if vocab == "emoji":
            from lenslib.world.dataset import write_attribution

            write_attribution(tmp)  # OpenMoji's CC BY-SA 4.0 travels with its renders
        if report.undrawable:
            (tmp / NOT_DRAWN).write_text(
                "".join(
                    json.dumps(
                        {
                            "index": u["line"],
                            "tag": u["tag"],
                            "prompt": u["prompt"],
                            "classes": u["classes"],
                            "why": u["why"],
                            "metadata": json.loads(u["raw"]),
                        }
                    )
                    + "\n"
                    for u in report.undrawable
                )
            )
        for index, line in tqdm(report.lines, desc="rendering", disable=not show):
            folder = tmp / f"{index:05d}"
            (folder / "samples").mkdir(parents=True)
            (folder / "metadata.jsonl").write_text(json.dumps(line) + "\n")
            for k in range(per_prompt):
                if line.get("tag") == LONG_TAG:
                    scene = Scene.from_dict(line["scene"])
                else:
                    sub_seed = int(np.random.SeedSequence([seed, index, k]).generate_state(1)[0])
                    scene = scene_from_metadata(line, vocab, sub_seed)
                render(scene, size, size).save(folder / "samples" / f"{k:04d}.png")
    return Path(out)
