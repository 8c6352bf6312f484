"""Prompt suites for the synthetic world, in GenEval's own ``evaluation_metadata.jsonl`` format.

GenEval (Ghosh et al., 2023; ``djghosh13/geneval``, ``prompts/create_prompts.py``) scores
prompt following with six tags (``GENEVAL_TAGS``), each a template over object classes, 10 colours
and 4 relations. Every line is a clause set that a judge checks on the image (the format, and its
one reader, are ``lenslib.world.metadata``)::

    {"tag": "position", "prompt": "a photo of a circle left of a square",
     "include": [{"class": "square", "count": 1},
                 {"class": "circle", "count": 1, "position": ["left of", 0]}]}

This module builds the same six tags from the world's own classes with GenEval's templates and
sampling scheme (one ``single_object`` line per class, then ``n`` draws per other tag, duplicates
removed), so our scores are comparable in spirit to GenEval's 553-prompt suite; ships them with the
*long-prompt* suite of ``lenslib.world.long_suite``; and reads any metadata file against what the
world can draw (``read_metadata``). GenEval's own published suite ships beside ours
(``geneval_metadata_path``) and is read as published: its lines that name a class the world has
no drawing for are *undrawable*, listed and counted, never silently dropped. Used in chapter 5.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lenslib.atomic import write_text_atomic
from lenslib.paths import REPO_ROOT, data_dir
from lenslib.world.captions import detailed
from lenslib.world.long_suite import LONG_TAG, generate_long_suite
from lenslib.world.metadata import Clause, MetadataLine, Problem, clause_problems
from lenslib.world.spec import COLORS, RELATIONS, VOCABS, scene_from_metadata
from lenslib.world.vocab import vocab_classes, world_class
from lenslib.world.wording import number_word, plural, with_article

COLOR_NAMES = list(COLORS)  # GenEval's 10 colours, in GenEval's order
GENEVAL_TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
GENEVAL_SEED = 43  # GenEval's own default in create_prompts.py
NO_COLOR_CLASSES = ("person",)  # GenEval writes no "a photo of a red person" prompts
SUITE_FILES = {  # shipped file -> (kind, vocab)
    "shapes_geneval.jsonl": ("geneval", "shapes"),
    "emoji_geneval.jsonl": ("geneval", "emoji"),
    "shapes_long.jsonl": ("long", "shapes"),
}


# --------------------------------------------------------------------------- GenEval's six tags
def _single_object(rng, classes):
    order = rng.choice(len(classes), size=len(classes), replace=False)
    return [
        MetadataLine(
            (Clause(classes[i]),), tag="single_object", prompt=f"a photo of {with_article(classes[i])}"
        )
        for i in order
    ]


def _two_object(rng, classes):
    a, b = (classes[i] for i in rng.choice(len(classes), size=2, replace=False))
    return MetadataLine(
        (Clause(a), Clause(b)), tag="two_object", prompt=f"a photo of {with_article(a)} and {with_article(b)}"
    )


def _counting(rng, classes, max_count=4):
    cls = classes[int(rng.choice(len(classes)))]
    n = int(rng.integers(2, max_count, endpoint=True))
    return MetadataLine(
        (Clause(cls, n),), (Clause(cls, n + 1),), "counting", f"a photo of {number_word(n)} {plural(cls)}"
    )


def _colors(rng, classes):
    classes = [c for c in classes if c not in NO_COLOR_CLASSES]
    cls = classes[int(rng.choice(len(classes)))]
    color = COLOR_NAMES[int(rng.choice(len(COLOR_NAMES)))]
    return MetadataLine(
        (Clause(cls, 1, color),), tag="colors", prompt=f"a photo of {with_article(color)} {cls}"
    )


def _position(rng, classes):
    a, b = (classes[i] for i in rng.choice(len(classes), size=2, replace=False))
    rel = RELATIONS[int(rng.choice(len(RELATIONS)))]
    # As in GenEval: the reference object is include group 0, the placed object refers to it.
    return MetadataLine(
        (Clause(b), Clause(a, position=(rel, 0))),
        tag="position",
        prompt=f"a photo of {with_article(a)} {rel} {with_article(b)}",
    )


def _color_attr(rng, classes):
    classes = [c for c in classes if c not in NO_COLOR_CLASSES]
    a, b = (classes[i] for i in rng.choice(len(classes), size=2, replace=False))
    ca, cb = (COLOR_NAMES[i] for i in rng.choice(len(COLOR_NAMES), size=2, replace=False))
    return MetadataLine(
        (Clause(a, 1, ca), Clause(b, 1, cb)),
        tag="color_attr",
        prompt=f"a photo of {with_article(ca)} {a} and {with_article(cb)} {b}",
    )


def generate_geneval_suite(
    vocab: str, seed: int = GENEVAL_SEED, n: int = 100, classes: list[str] | None = None
) -> list[dict]:
    """GenEval's six tags over ``vocab``'s classes: one single-object line per class, ``n`` draws
    for each other tag, exact duplicates removed (GenEval's procedure; its COCO suite has 553 lines).

    The random draws follow GenEval's script call for call, so with ``classes`` = the 80 COCO
    names (``lenslib.world.vocab.COCO_CLASSES``) and the default seed this gives GenEval's own
    suite. Deterministic for a given (vocab, seed, n). Used to build ``data/suites/*_geneval.jsonl``.
    """
    classes = list(classes) if classes is not None else list(vocab_classes(vocab))
    if len(classes) < 2:
        raise ValueError(f"vocabulary {vocab!r} has {len(classes)} classes; GenEval's suite needs at least 2")
    rng = np.random.default_rng(seed)
    lines = _single_object(rng, classes)
    for make in (_two_object, _counting, _colors, _position, _color_attr):
        lines.extend(make(rng, classes) for _ in range(n))
    return _dedupe([line.to_dict() for line in lines])


def _dedupe(lines: list[dict]) -> list[dict]:
    seen, unique = set(), []
    for line in lines:
        key = json.dumps(line, sort_keys=True)
        if key not in seen:
            seen.add(key)
            unique.append(line)
    return unique


def generate_suite(name: str) -> list[dict]:
    """A shipped suite by file name (``shapes_geneval.jsonl``, ...), freshly generated."""
    if name not in SUITE_FILES:
        raise KeyError(f"unknown suite {name!r}; known: {sorted(SUITE_FILES)}")
    kind, vocab = SUITE_FILES[name]
    return generate_geneval_suite(vocab) if kind == "geneval" else generate_long_suite(vocab)


def dumps_suite(lines: list[dict]) -> str:
    """JSONL text of a suite, one compact line per prompt (the shipped files' exact bytes)."""
    return "".join(json.dumps(line) + "\n" for line in lines)


def write_suites(folder: str | Path | None = None) -> list[Path]:
    """Regenerate every shipped suite into ``folder`` (default ``data/suites``), atomically."""
    folder = Path(folder) if folder is not None else REPO_ROOT / "data" / "suites"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in SUITE_FILES:
        path = folder / name
        write_text_atomic(path, dumps_suite(generate_suite(name)))
        written.append(path)
    return written


GENEVAL_METADATA = "geneval/evaluation_metadata.jsonl"  # GenEval's published suite, under data/ (MIT)


def geneval_metadata_path() -> Path:
    """GenEval's own published ``prompts/evaluation_metadata.jsonl`` (553 lines over its 80 COCO
    classes), shipped unchanged in ``data/geneval`` with GenEval's MIT licence. Chapter 5 renders
    and judges it in the emoji world."""
    path = data_dir() / GENEVAL_METADATA
    if not path.is_file():
        raise FileNotFoundError(f"GenEval's metadata file is missing at {path}")
    return path


def suite_path(name: str) -> Path:
    """Path of a shipped suite in ``data/suites`` (``shapes_geneval`` or ``shapes_geneval.jsonl``)."""
    name = name if name.endswith(".jsonl") else name + ".jsonl"
    path = data_dir() / "suites" / name
    if not path.is_file():
        raise FileNotFoundError(
            f"no shipped suite {path}; known: {sorted(SUITE_FILES)} "
            "(regenerate with lenslib.world.suites.write_suites())"
        )
    return path


# --------------------------------------------------------------------------- detailed prompts
def infer_vocab(line: dict) -> str:
    """The vocabulary that draws every class a metadata line names (GenEval's names included)."""
    names = {c["class"] for c in _all_clauses(line) if isinstance(c, dict) and "class" in c}
    for vocab in VOCABS:
        if all(isinstance(n, str) and world_class(n, vocab) is not None for n in names):
            return vocab
    raise ValueError(
        f"no vocabulary of the world contains all of {sorted(names)}; vocabularies: {list(VOCABS)}"
    )


def detailed_prompt(line: dict, seed: int = 0, vocab: str | None = None) -> str:
    """A suite line rewritten as a Lens-style detailed prompt.

    Lens's users (and its prompt "reasoner") give long, specific prompts; to evaluate a model
    "prompted in detail" we draw one concrete scene that satisfies the line (the world's
    ``scene_from_metadata``) and describe it with the detailed captioner. Long-suite lines are
    already detailed and are returned as they are. Deterministic in (line, seed); the scene's random
    draws (colours left open, sizes, places, wording) are seeded by both, so the lines of a suite get
    different scenes instead of all sharing seed's first draw (e.g. every object small and black).
    """
    if line.get("tag") == LONG_TAG:
        return line["prompt"]
    scene, line_seed = _prompted_scene(line, seed, vocab)
    return detailed(scene, line_seed)


def detailed_scene(line: dict, seed: int = 0, vocab: str | None = None):
    """The scene that :func:`detailed_prompt` ``(line, seed, vocab)`` describes: the colours, sizes and places
    its prompt asks for beyond the line's own words. Chapter 4 checks samples against it
    (``lenslib.eval.words``)."""
    if line.get("tag") == LONG_TAG:
        raise ValueError("a long-suite line is its own prompt: it was not drawn from a scene")
    return _prompted_scene(line, seed, vocab)[0]


def _prompted_scene(line: dict, seed: int, vocab: str | None):
    vocab = vocab or infer_vocab(line)
    key = json.dumps({k: line[k] for k in ("include", "exclude") if k in line}, sort_keys=True).encode()
    line_seed = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
    line_seed = int(np.random.SeedSequence([int(seed), line_seed]).generate_state(1)[0])
    return scene_from_metadata(line, vocab, line_seed), line_seed


# --------------------------------------------------------------------------- reading + validation
@dataclass
class MetadataReport:
    """What ``read_metadata`` found, line by line, so nothing is dropped silently.

    ``lines``: the drawable, valid lines with their 0-based index in the file. ``undrawable``: valid
    lines that name a known class (GenEval's, COCO's, or another vocabulary's) this world has no
    drawing for, one record ``{"line", "tag", "prompt", "classes", "why", "raw"}`` each; they can
    be neither rendered nor judged, so they are listed and counted. ``errors``: one record per bad
    line (bad JSON, unknown class, colour, relation or tag, bad format).
    """

    path: str
    vocab: str
    lines: list[tuple[int, dict]] = field(default_factory=list)
    undrawable: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)

    @property
    def n_lines(self) -> int:
        """Every line of the file (blank lines excepted)."""
        return len(self.lines) + len(self.undrawable) + len(self.errors)

    @property
    def n_undrawable(self) -> int:
        """Valid lines that name a class the world cannot draw."""
        return len(self.undrawable)

    @property
    def undrawable_classes(self) -> Counter:
        """Undrawable lines per class they name that the world cannot draw."""
        return Counter(c for u in self.undrawable for c in u["classes"])

    def summary(self) -> str:
        """One line: how many lines are drawable, undrawable (by class) and wrong."""
        text = (
            f"{self.path}: {self.n_lines} lines, {len(self.lines)} drawable in the {self.vocab} world, "
            f"{self.n_undrawable} not drawable, {len(self.errors)} with errors"
        )
        if self.undrawable:
            top = some(f"{c} ({n})" for c, n in self.undrawable_classes.most_common())
            text += f"; not drawable: lines naming {top}"
        return text

    def error_message(self) -> str:
        """One line for a refusal over bad lines: how many, and the first one."""
        first = self.errors[0]
        return (
            f"{self.path}: {len(self.errors)} of {self.n_lines} lines have errors; "
            f"first: line {first['line']}: {first['error']}; "
            "fix or remove these lines (or pick the right --vocab) and run again"
        )

    def undrawable_message(self) -> str:
        """One line for a refusal over undrawable lines (strict mode)."""
        first, classes = self.undrawable[0], some(self.undrawable_classes)
        return (
            f"{self.path}: {self.n_undrawable} of {self.n_lines} lines name classes the {self.vocab} world "
            f"cannot draw ({classes}); first: line {first['line']}: {first['why']}; "
            "drop --strict to render and judge only the drawable lines"
        )


def some(names, n: int = 8) -> str:
    """The first ``n`` of ``names``, comma-separated, and how many more: a refusal stays one readable
    line even when it names GenEval's 80 classes. Used by ``lens world render`` and ``lens eval``."""
    names = list(names)
    return ", ".join(map(str, names[:n])) + (f" and {len(names) - n} more" if len(names) > n else "")


def _all_clauses(line: dict) -> list:
    clauses = list(line.get("include", []) or []) + list(line.get("exclude", []) or [])
    for q in line.get("questions", []) or []:
        if isinstance(q, dict):
            clauses += list(q.get("include", []) or []) + list(q.get("exclude", []) or [])
    return clauses


def validate_line(line, vocab: str) -> list[Problem]:
    """Every problem with one metadata line as ``Problem(kind, message, class)``, empty when it is valid.

    The clauses are checked by ``lenslib.world.metadata.clause_problems``; this adds the file's own
    rules (a known ``tag``, a ``prompt``, long-prompt questions). Kinds: ``undrawable`` (a known
    class this vocabulary has no drawing for: the line is fine, the world just cannot render or
    judge it), and the errors ``bad_format``, ``unknown_tag``,
    ``unknown_class``, ``unknown_color``, ``unknown_relation``. GenEval's class names count as the
    world's own where it draws them (``lenslib.world.vocab.world_class``).
    """
    if vocab not in VOCABS:
        raise ValueError(f"unknown vocabulary {vocab!r}; choose one of {list(VOCABS)}")
    if not isinstance(line, dict):
        return [Problem("bad_format", f"a metadata line must be a JSON object, got {type(line).__name__}")]
    tag = line.get("tag")
    if tag not in (*GENEVAL_TAGS, LONG_TAG):
        return [Problem("unknown_tag", f"tag {tag!r} is not one of {', '.join((*GENEVAL_TAGS, LONG_TAG))}")]
    if not isinstance(line.get("prompt"), str) or not line["prompt"].strip():
        return [Problem("bad_format", "missing or empty 'prompt'")]
    if tag != LONG_TAG:
        return clause_problems(line.get("include"), line.get("exclude"), vocab)
    questions = line.get("questions")
    if not isinstance(questions, list) or not questions:
        return [Problem("bad_format", "a long-prompt line needs a non-empty 'questions' list")]
    problems, ids = [], set()
    for j, q in enumerate(questions):
        where = f"questions[{j}]."
        if not isinstance(q, dict) or not isinstance(q.get("id"), int) or q["id"] < 1:
            problems.append(Problem("bad_format", f"{where}id must be an integer >= 1"))
            continue
        deps = q.get("dependency", [0])
        if not isinstance(deps, list) or any(d != 0 and d not in ids for d in deps):
            message = f"{where}dependency {deps!r} must list ids of earlier questions, or [0] for none"
            problems.append(Problem("bad_format", message))
        ids.add(q["id"])
        problems += clause_problems(q.get("include"), q.get("exclude"), vocab, where)
    return problems


def check_line(report: MetadataReport, index: int, line, raw: str | None = None) -> None:
    """File one parsed line into ``report``: drawable, undrawable or an error (see ``MetadataReport``).

    The one place that decides what becomes of a line, shared by ``read_metadata`` (a file),
    ``render_suite`` (a list of lines) and ``evaluate_folder`` (a folder's own line). Chapter 5."""
    raw = json.dumps(line) if raw is None else raw
    problems = validate_line(line, report.vocab)
    kinds = list(dict.fromkeys(kind for kind, _, _ in problems))
    if not problems:
        report.lines.append((index, line))
    elif kinds == ["undrawable"]:
        classes = list(dict.fromkeys(cls for _, _, cls in problems))
        report.undrawable.append(
            {
                "line": index,
                "tag": line.get("tag"),
                "prompt": line.get("prompt"),
                "classes": classes,
                "why": "; ".join(msg for _, msg, _ in problems),
                "raw": raw,
            }
        )
    else:
        errors = [(kind, msg) for kind, msg, _ in problems if kind != "undrawable"]
        report.errors.append(
            {
                "line": index,
                "kind": errors[0][0],
                "kinds": kinds,
                "error": "; ".join(msg for _, msg in errors),
                "raw": raw,
            }
        )


def read_metadata(path: str | Path, vocab: str = "shapes") -> MetadataReport:
    """Read and validate a GenEval-format metadata file against the world.

    Nothing is dropped silently: every line is drawable, undrawable or an error record
    ``{"line": i, "kind": ..., "error": ..., "raw": ...}`` (``line`` is the 0-based prompt index,
    blank lines excepted, as GenEval numbers its image folders). Run on GenEval's own
    ``evaluation_metadata.jsonl`` in the emoji world, the lines naming its classes without a glyph
    (refrigerator, ...) are ``undrawable``, counted per class and reported by ``summary()``. Used in
    chapter 5, by ``lens world render`` and by ``lens eval``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metadata file {path} does not exist")
    report = MetadataReport(path=str(path), vocab=vocab)
    index = 0
    for raw in path.read_text(encoding="utf-8").splitlines():
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except json.JSONDecodeError as err:
            report.errors.append(
                {
                    "line": index,
                    "kind": "bad_json",
                    "kinds": ["bad_json"],
                    "error": f"not valid JSON ({err}); each line must be one JSON object",
                    "raw": raw,
                }
            )
        else:
            check_line(report, index, line, raw)
        index += 1
    return report
