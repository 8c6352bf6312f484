"""Ground-truth renders of a suite in GenEval's folder layout: images correct by construction.

:func:`render_suite` draws, for each line of a suite, scenes that satisfy it and writes them where
GenEval's generation script would (``<index:05d>/samples/<k:04d>.png``). Judging such a folder with
:func:`lenslib.eval.geneval_folder.evaluate_folder` must give 100 %: chapter 5 uses it to show the
exact judge has no error, on our suites and on GenEval's published one. Also used by ``lens world render``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from lenslib.atomic import atomic_output_dir, check_output_dir
from lenslib.eval.geneval_folder import NOT_DRAWN
from lenslib.world.dataset import write_attribution
from lenslib.world.render import render
from lenslib.world.spec import VOCAB_MIN_SIDE, Scene, scene_from_metadata, within_limits
from lenslib.world.suites import LONG_TAG, MetadataReport, check_line, read_metadata, some

__all__ = ["render_suite"]


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
    show = progress if progress is not None else sys.stderr.isatty()
    with atomic_output_dir(out, overwrite) as tmp:
        if vocab == "emoji":
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
