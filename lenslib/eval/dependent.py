"""DPG-Bench's dependency rule, with the exact judge answering each question.

DPG-Bench (ELLA, ``dpg_bench/compute_dpg_bench.py``) scores a long prompt by asking a VQA model
one question per proposition; a question whose *parent* (``dependency``) was answered "no" scores
0 whatever its own answer ("Is the cat black?" means nothing if there is no cat). The image's score
is the mean over its questions. Here each question of a long-prompt line (format in
``lenslib.world.suites``) is a GenEval clause set, so the exact judge answers it and no VQA error
enters the score. As in DPG-Bench, zeroing uses the parents' own answers, and ``categories``
reports answers before zeroing (DPG's per-category quirk) while ``score`` is after. Used in chapter 5.
"""

from __future__ import annotations

import warnings
from collections import defaultdict

from lenslib.eval.judge import judge
from lenslib.eval.parse import parse


def question_line(question: dict) -> dict:
    """A long-prompt question as a GenEval metadata line the judge can check."""
    tag = "counting" if question.get("category") == "count" else "long_question"
    line = {"tag": tag, "prompt": question["question"], "include": question["include"]}
    if question.get("exclude"):
        line["exclude"] = question["exclude"]
    return line


def apply_dependencies(questions: list[dict], answers: dict[int, bool]) -> dict[int, float]:
    """DPG's rule: a question scores 0 if any parent's own answer is "no", else its answer (1/0)."""
    scored = {}
    for q in questions:
        parents = [p for p in q.get("dependency", [0]) if p != 0]
        scored[q["id"]] = 0.0 if any(not answers[p] for p in parents) else float(answers[q["id"]])
    return scored


def score_long(image, line: dict, vocab: str = "shapes") -> dict:
    """Score one image against a long-prompt line.

    Returns ``score`` (mean over questions after the dependency rule, in [0, 1]), ``answers``
    (question id -> the judge's yes/no), ``categories`` (mean raw answer per category) and a
    ``reason`` listing the failed questions with the judge's reasons.
    """
    detections = parse(image, vocab)  # read the image once, answer every question from it
    answers, reasons = {}, []
    for q in line["questions"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            verdict = judge(image, question_line(q), vocab, detections=detections)
        answers[q["id"]] = bool(verdict.correct)
        if not verdict.correct:
            reasons.append(f"Q{q['id']} {q['question']} -> no ({verdict.reason})")
    scored = apply_dependencies(line["questions"], answers)
    by_cat = defaultdict(list)
    for q in line["questions"]:
        by_cat[q.get("category", "other")].append(float(answers[q["id"]]))
    return {
        "score": sum(scored.values()) / len(scored),
        "answers": {str(k): v for k, v in answers.items()},
        "categories": {c: sum(v) / len(v) for c, v in by_cat.items()},
        "reason": "\n".join(reasons),
    }
