"""Which words of a prompt does a model follow? Number, colour, class and place, read off one-object samples.

GenEval's verdict is all or nothing: a red blob asked to be a red star fails exactly as a blue square does, so
a score near zero cannot say what a young model has learned. For lines that ask for one object (GenEval's
``single_object`` and ``colors``), prompted in detail, the exact judge can say more. The detailed prompt
describes one concrete scene (``lenslib.world.suites.detailed_scene``: a colour, a size and a place for the
object), and the judge parses the sample into objects (``lenslib.eval.parse``); the largest one has a
class, a colour and a place whether or not they are the ones asked for. The share of samples that get each
right, beside the share a model that ignores the word would get by a uniform guess (1 in 10 classes, 1 in 10
colours, 1 in 9 ninths of the frame), says which words the model has learned to follow. Chapter 4 reports
it for its run.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from lenslib.eval.parse import parse
from lenslib.eval.stats import share_interval
from lenslib.world.captions import region
from lenslib.world.spec import COLORS, vocab_classes
from lenslib.world.suites import detailed_scene, infer_vocab

__all__ = ["WORDS", "asks_one_object", "word_following"]

#: What is checked, in the order reported: exactly one object drawn, then the largest object's
#: colour, class and ninth of the frame against the prompt's.
WORDS: tuple[str, ...] = ("one object", "colour", "class", "place")


def asks_one_object(line: dict) -> bool:
    """Whether a GenEval metadata line asks for exactly one object and nothing else."""
    include = line.get("include", [])
    return len(include) == 1 and include[0].get("count", 1) == 1 and not line.get("exclude")


def word_following(
    lines: Sequence[dict], rows: Sequence[dict], images: Sequence, seed: int = 0, n_boot: int = 1000
) -> list[dict]:
    """One row per word of :data:`WORDS`: ``{"word", "share", "ci95", "n", "chance"}``.

    ``rows`` and ``images`` are what ``lenslib.eval.generate.score_checkpoint(cfg, ckpt, lines,
    prompt="detailed", seed=seed, return_images=True)`` returns for ``lines`` (a row's ``index`` is its line's
    position in ``lines``); samples of lines that ask for more than one object are skipped. "one object" is
    counted over all one-object samples, the other words over those in which the judge found an object
    (``n``). ``chance`` is the share a uniform guess gets (None for "one object"); ``ci95`` resamples the
    samples (``lenslib.eval.stats.share_interval``). Raises ValueError when no line asks for one object.
    """
    if len(rows) != len(images):
        raise ValueError(
            f"got {len(rows)} rows but {len(images)} images: pass both from one score_checkpoint call"
        )
    asked = {  # line index -> (vocabulary, the object its detailed prompt describes)
        i: (infer_vocab(line), detailed_scene(line, seed).objects[0])
        for i, line in enumerate(lines)
        if asks_one_object(line)
    }
    scored = [(asked[row["index"]], image) for row, image in zip(rows, images) if row["index"] in asked]
    if not scored:
        raise ValueError(
            "none of the scored lines asks for one object: score single_object or colors lines "
            "(e.g. lenslib.experiments.captions.suite_lines)"
        )
    hits: dict[str, list[bool]] = {word: [] for word in WORDS}
    for (vocab, want), image in scored:
        found = parse(np.asarray(image), vocab)
        hits["one object"].append(len(found) == 1)
        if found:
            drawn = max(found, key=lambda d: d.area)
            hits["colour"].append(drawn.color == want.color)
            hits["class"].append(drawn.cls == want.cls)
            hits["place"].append(region(drawn.box) == region(want.box))
    n_classes = len(vocab_classes(vocab))
    chance = {"one object": None, "colour": 1 / len(COLORS), "class": 1 / n_classes, "place": 1 / 9}
    return [
        {
            "word": word,
            "share": float(np.mean(h)) if h else float("nan"),
            "ci95": share_interval(h, n_boot, seed),
            "n": len(h),
            "chance": chance[word],
        }
        for word, h in hits.items()
    ]
