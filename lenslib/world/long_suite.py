"""The long-prompt suite: a Lens-style detailed prompt per scene, with DPG-Bench-style questions.

DPG-Bench scores long prompts by questions that depend on one another. Here each prompt is the
detailed caption (``lenslib.world.captions.detailed``) of a sampled scene, and each question is a
GenEval clause set (``lenslib.world.metadata``), so the same exact judge answers it. Shipped as
``data/suites/shapes_long.jsonl`` by ``lenslib.world.suites``; scored with DPG's dependency rule by
``lenslib.eval.dependent``. Used in chapter 5.

Long-prompt line format (``tag: "long"``)
----------------------------------------
::

    {"tag": "long", "id": "shapes_long_0000", "seed": 123, "prompt": "<detailed paragraph>",
     "scene": {<Scene.to_dict()>},
     "questions": [
        {"id": 1, "category": "entity",    "dependency": [0], "question": "Is there a circle?",
         "include": [{"class": "circle", "count": 1}]},
        {"id": 2, "category": "count",     "dependency": [1], "question": "Are there exactly two circles?",
         "include": [{"class": "circle", "count": 2}], "exclude": [{"class": "circle", "count": 3}]},
        {"id": 3, "category": "attribute", "dependency": [1], "question": "Is there a red circle?",
         "include": [{"class": "circle", "count": 1, "color": "red"}]},
        {"id": 7, "category": "relation",  "dependency": [3, 5],
         "question": "Is the red circle left of the blue square?",
         "include": [{"class": "square", "count": 1, "color": "blue"},
                     {"class": "circle", "count": 1, "color": "red", "position": ["left of", 0]}]}]}

Each question is itself a GenEval clause set (``include``/``exclude``, positions indexing the
question's own ``include`` list), so the same exact judge answers it. As in DPG-Bench, ids start
at 1, ``dependency`` lists parent ids (``[0]`` = no parent), and a question whose parent is
answered "no" scores 0 whatever its own answer. Categories follow DPG's broad ones: ``entity``,
``count``, ``attribute``, ``relation``. ``scene`` is the ground truth the prompt was written from,
so the suite can be rendered exactly.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from lenslib.world.captions import detailed
from lenslib.world.metadata import Clause
from lenslib.world.position import relation
from lenslib.world.spec import sample_scene
from lenslib.world.wording import number_word, plural, with_article

__all__ = ["LONG_TAG", "long_questions", "generate_long_suite"]

LONG_TAG = "long"


def long_questions(scene) -> list[dict]:
    """DPG-style dependent questions for a scene, each a GenEval clause set the exact judge answers.

    Per class: an entity question (root), a count question and one attribute question per colour
    (children of the entity). Per pair of (colour, class) groups that are alone of their kind and
    stand in a definite relation: a relation question, child of both attribute questions.
    """
    questions: list[dict] = []

    def add(category, dependency, question, include, exclude=()):
        q = {
            "id": len(questions) + 1,
            "category": category,
            "dependency": dependency,
            "question": question,
            "include": [c.to_dict() for c in include],
        }
        if exclude:
            q["exclude"] = [c.to_dict() for c in exclude]
        questions.append(q)
        return q["id"]

    by_class = Counter(o.cls for o in scene.objects)
    by_group = Counter((o.color, o.cls) for o in scene.objects)
    attr_id: dict[tuple[str, str], int] = {}
    for cls in sorted(by_class, key=lambda c: [o.cls for o in scene.objects].index(c)):
        n = by_class[cls]
        ent = add("entity", [0], f"Is there {with_article(cls)}?", [Clause(cls)])
        if n > 1:
            add(
                "count",
                [ent],
                f"Are there exactly {number_word(n)} {plural(cls)}?",
                [Clause(cls, n)],
                [Clause(cls, n + 1)],
            )
        for (color, c), k in by_group.items():
            if c != cls:
                continue
            text = (
                f"Is there {with_article(color + ' ' + cls)}?"
                if k == 1
                else f"Are there {number_word(k)} {color} {plural(cls)}?"
            )
            attr_id[(color, cls)] = add("attribute", [ent], text, [Clause(cls, k, color)])
    singles = [o for o in scene.objects if by_group[(o.color, o.cls)] == 1]
    for i, a in enumerate(singles):
        for b in singles[i + 1 :]:
            if a.cls == b.cls:
                continue  # a same-class pair cannot be told apart by GenEval's per-class clauses
            rels = sorted(relation(a, b))
            if len(rels) != 1:
                continue  # ask only about clear, single-direction relations
            rel = rels[0]
            add(
                "relation",
                [attr_id[(a.color, a.cls)], attr_id[(b.color, b.cls)]],
                f"Is the {a.color} {a.cls} {rel} the {b.color} {b.cls}?",
                [Clause(b.cls, 1, b.color), Clause(a.cls, 1, a.color, (rel, 0))],
            )
    return questions


def generate_long_suite(vocab: str = "shapes", n: int = 60, seed: int = 0) -> list[dict]:
    """``n`` long-prompt lines: a sampled scene of 2-5 objects, its detailed caption as the prompt,
    and the DPG-style questions of ``long_questions``. Deterministic for (vocab, n, seed).

    The prompt also states background, texture and any text; the questions cover only what the
    exact judge reads (objects, colours, counts, positions), so every question is checkable."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        scene_seed = int(rng.integers(2**31 - 1))
        scene = sample_scene(scene_seed, vocab, min_objects=2, max_objects=5)
        lines.append(
            {
                "tag": LONG_TAG,
                "id": f"{vocab}_long_{i:04d}",
                "seed": scene_seed,
                "prompt": detailed(scene, scene_seed),
                "scene": scene.to_dict(),
                "questions": long_questions(scene),
            }
        )
    return lines
