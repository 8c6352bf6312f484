"""Judge a GenEval-layout image folder with the world's exact judge: one result row per image, never a crash.

GenEval's generation script writes one folder per prompt, ``<index:05d>/metadata.jsonl`` (the prompt's
metadata line) and ``<index:05d>/samples/<k:04d>.png``; its ``evaluate_images.py`` judges every image.
:func:`evaluate_folder` reads that layout (and ``not_drawn.jsonl``, the lines
:func:`lenslib.eval.ground_truth.render_suite` left out), replaces the learned detector with the exact
judge (``lenslib.eval.judge``; DPG-Bench's dependency rule, ``lenslib.eval.dependent``, for long-prompt
lines) and records a per-image error instead of crashing on bad input.
:func:`lenslib.eval.geneval.summarize` turns the rows into GenEval's numbers. Used in chapter 5 and by
``lens eval``.
"""

from __future__ import annotations

import json
import re
import sys
import warnings
from collections import Counter
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from lenslib.eval.dependent import score_long
from lenslib.eval.judge import judge
from lenslib.world.suites import LONG_TAG, MetadataReport, check_line, read_metadata, some

__all__ = ["NOT_DRAWN", "SAMPLE_RE", "evaluate_folder"]

SAMPLE_RE = re.compile(r"^(\d+)\.png$")  # GenEval's own filter on sample file names
#: What ``render_suite`` writes beside the prompt folders: the lines it could not draw.
NOT_DRAWN = "not_drawn.jsonl"


def _judge_image(image, line: dict, vocab: str) -> dict:
    """Fields of a result row for one readable image: ``correct``/``reason`` (and ``score`` for
    long-prompt lines)."""
    if line.get("tag") == LONG_TAG:
        result = score_long(image, line, vocab)
        return {
            "correct": result["score"] >= 1.0,
            "score": result["score"],
            "reason": result["reason"],
            "answers": result["answers"],
            "categories": result["categories"],
        }
    with warnings.catch_warnings():  # outside the limits: recorded per row instead of warned per image
        warnings.simplefilter("ignore", UserWarning)
        verdict = judge(image, line, vocab)
    row = {"correct": bool(verdict.correct), "reason": verdict.reason}
    if not verdict.within_limits:
        row["within_limits"] = False
    return row


def _load_image(path: Path, size: tuple[int, int] | None):
    """The RGB image at ``path``, or (None, kind, message) for a missing, corrupt or wrong-size file."""
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
    """``samples/<k:04d>.png`` (GenEval's README), or any ``<digits>.png`` naming k (its script
    writes 5 digits)."""
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
    return sys.stderr.isatty()
