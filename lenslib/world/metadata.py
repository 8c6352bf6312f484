"""GenEval metadata lines: what a prompt asks of an image, as clauses, read and checked in one place.

GenEval (``prompts/evaluation_metadata.jsonl``) writes one JSON object per prompt::

    {"tag": "position", "include": [{"class": "square", "count": 1},
     {"class": "circle", "count": 1, "position": ["left of", 0]}], "prompt": "a photo of ..."}

``include`` clauses must all hold (``count`` means "at least"); ``exclude`` clauses fail when
``count`` or more objects of the class are seen; ``color`` names one of GenEval's ten colours;
``position: [relation, i]`` places the clause's objects relative to include clause ``i``.

:class:`Clause` and :class:`MetadataLine` are those objects as frozen values, and
:meth:`MetadataLine.from_dict` is the one reader of them: the scene builder
(``lenslib.world.spec.scene_from_metadata``, so the renders), the judge (``lenslib.eval.judge``),
the suites' file check (``lenslib.world.suites.read_metadata``) and the rule reasoner
(``lenslib.reasoner``) all go through it. :func:`clause_problems` lists every problem of a clause
set with its kind, for reports that must not stop at the first one; ``from_dict`` raises the first.
``to_dict`` writes a line back exactly as GenEval (and ``data/suites``) lay it out. Used in
chapters 5 and 6.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, NamedTuple

from lenslib.world.vocab import COLORS, RELATIONS, vocab_classes, why_not_drawn, world_class

__all__ = ["Clause", "MetadataLine", "MetadataError", "Problem", "clause_problems"]


class MetadataError(ValueError):
    """A metadata line the world cannot use; the message names the clause and the problem."""


class Problem(NamedTuple):
    """One problem of a metadata line: ``kind`` is ``undrawable`` (a known class this vocabulary has
    no drawing for) or an error (``bad_format``, ``unknown_class``, ``unknown_color``,
    ``unknown_relation``); ``cls`` is the class name for the class kinds."""

    kind: str
    message: str
    cls: str | None = None


@dataclasses.dataclass(frozen=True)
class Clause:
    """One include or exclude clause: ``count`` objects of class ``cls`` (of ``color`` if given);
    ``position = (relation, i)`` puts them in that relation to the objects of include clause ``i``."""

    cls: str
    count: int = 1
    color: str | None = None
    position: tuple[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        """GenEval's layout: ``class``, ``count``, then ``color`` and ``position`` when set."""
        out: dict[str, Any] = {"class": self.cls, "count": self.count}
        if self.color is not None:
            out["color"] = self.color
        if self.position is not None:
            out["position"] = [self.position[0], self.position[1]]
        return out


def _read_clause(
    raw, part: str, i: int, vocab: str | None, where: str
) -> tuple[Clause | None, list[Problem]]:
    """One clause and its problems; the class is the world's own name when ``vocab`` is given."""
    if not isinstance(raw, dict) or not isinstance(raw.get("class"), str):
        return None, [Problem("bad_format", f"{where}{part}[{i}] must be an object with a 'class' name")]
    at = f"{where}{part}[{i}] {json.dumps(raw, ensure_ascii=False)}"
    problems = []
    name = cls = raw["class"]
    if vocab is not None:
        cls = world_class(name, vocab)
        if cls is None:
            why = why_not_drawn(name, vocab)
            if why:
                problems.append(
                    Problem("undrawable", f"{at}: the {vocab} world cannot draw {name!r} ({why})", name)
                )
            else:
                classes = sorted(vocab_classes(vocab))
                problems.append(
                    Problem(
                        "unknown_class",
                        f"{at}: unknown {vocab} class {name!r}; choose one of {classes}",
                        name,
                    )
                )
    count = raw.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        problems.append(Problem("bad_format", f"{at}: count must be a positive integer, got {count!r}"))
    color = raw.get("color")
    if "color" in raw and color not in COLORS:
        problems.append(
            Problem("unknown_color", f"{at}: unknown colour {color!r}; choose one of {list(COLORS)}")
        )
    position = None
    if "position" in raw:
        pos = raw["position"]
        if part == "exclude":
            problems.append(Problem("bad_format", f"{at}: exclude clauses take no position"))
        elif not (isinstance(pos, (list, tuple)) and len(pos) == 2):
            problems.append(
                Problem("bad_format", f"{at}: position must be [relation, include_index], got {pos!r}")
            )
        else:
            rel, target = pos
            if rel not in RELATIONS:
                problems.append(
                    Problem("unknown_relation", f"{at}: unknown relation {rel!r}; choose one of {RELATIONS}")
                )
            if not (isinstance(target, int) and not isinstance(target, bool) and 0 <= target < i):
                problems.append(
                    Problem(
                        "bad_format",
                        f"{at}: position target {target!r} must index an earlier include clause",
                    )
                )
            position = (rel, target)
    if problems:
        return None, problems
    return Clause(cls, count, color, position), []


def _read_clauses(include, exclude, vocab: str | None, where: str = ""):
    """(include clauses, exclude clauses, problems) of a clause set."""
    if not isinstance(include, (list, tuple)) or not include:
        message = (
            f"{where}no 'include' clause: 'include' must be a non-empty list of clauses, got {include!r}"
        )
        return (), (), [Problem("bad_format", message)]
    if exclude is not None and not isinstance(exclude, (list, tuple)):
        return (), (), [Problem("bad_format", f"{where}'exclude' must be a list of clauses, got {exclude!r}")]
    problems: list[Problem] = []
    parts: dict[str, list[Clause]] = {"include": [], "exclude": []}
    for part, raws in (("include", include), ("exclude", exclude or ())):
        for i, raw in enumerate(raws):
            clause, found = _read_clause(raw, part, i, vocab, where)
            problems += found
            if clause is not None:
                parts[part].append(clause)
    return tuple(parts["include"]), tuple(parts["exclude"]), problems


def clause_problems(include, exclude, vocab: str, where: str = "") -> list[Problem]:
    """Every problem of a clause set (``include`` and ``exclude`` as in a metadata line), in order.

    ``where`` prefixes each message (``"questions[2]."`` for a long-prompt question). GenEval's class
    names count as the world's own where it draws them (``lenslib.world.vocab.world_class``)."""
    return _read_clauses(include, exclude, vocab, where)[2]


@dataclasses.dataclass(frozen=True)
class MetadataLine:
    """A metadata line: its ``include`` and ``exclude`` clauses, ``tag`` and ``prompt``."""

    include: tuple[Clause, ...]
    exclude: tuple[Clause, ...] = ()
    tag: str | None = None
    prompt: str | None = None

    @classmethod
    def from_dict(cls, line, vocab: str | None = None) -> MetadataLine:
        """Read a line (a dict as in the JSONL file). With ``vocab``, every class must be one the
        world draws and is stored under the world's own name ("computer keyboard" is the emoji
        world's ``keyboard``); without, names stay as written. Raises :class:`MetadataError` naming
        the clause (``include[1] {...}: unknown relation 'behind'; ...``) for the first problem."""
        if isinstance(line, MetadataLine):
            line = line.to_dict()
        if not isinstance(line, dict):
            raise MetadataError(
                f"a metadata line must be a JSON object with 'include'/'exclude', got {type(line).__name__}"
            )
        include, exclude, problems = _read_clauses(line.get("include"), line.get("exclude"), vocab)
        if problems:
            raise MetadataError(problems[0].message)
        return cls(include, exclude, line.get("tag"), line.get("prompt"))

    def to_dict(self) -> dict[str, Any]:
        """GenEval's layout: ``tag``, ``include``, ``exclude`` (when not empty), ``prompt``."""
        out: dict[str, Any] = {} if self.tag is None else {"tag": self.tag}
        out["include"] = [c.to_dict() for c in self.include]
        if self.exclude:
            out["exclude"] = [c.to_dict() for c in self.exclude]
        if self.prompt is not None:
            out["prompt"] = self.prompt
        return out
