"""English for the synthetic world: articles, plurals and number words.

Captions, prompt suites and the caption parser must agree on how a class name is written ("a
circle", "an apple", "two foxes"), so the rules live in one place. GenEval's own prompt script uses
a cruder plural (add "es" after a final "s", else "s"); ours also handles "-x/-ch/-sh" and "-y".
Used in chapters 1, 5 and 6.
"""

from __future__ import annotations

NUMBER_WORDS = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
)
WORD_NUMBERS = {word: i for i, word in enumerate(NUMBER_WORDS)}


def with_article(phrase: str) -> str:
    """'a circle', 'an orange square': the article follows the first letter, as in GenEval."""
    return f"an {phrase}" if phrase[:1].lower() in "aeiou" else f"a {phrase}"


# Words whose plural no rule gets right (COCO has a few).
IRREGULAR_PLURALS = {
    "person": "people",
    "mouse": "mice",
    "sheep": "sheep",
    "knife": "knives",
    "skis": "skis",
    "scissors": "scissors",
}


def plural(name: str) -> str:
    """Plural of a (possibly multi-word) class name: the last word is inflected."""
    head, _, last = name.rpartition(" ")
    if last in IRREGULAR_PLURALS:
        last = IRREGULAR_PLURALS[last]
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        last = last + "es"
    elif last.endswith("y") and len(last) > 1 and last[-2] not in "aeiou":
        last = last[:-1] + "ies"
    else:
        last = last + "s"
    return f"{head} {last}" if head else last


def number_word(n: int) -> str:
    """'two' for 2; digits beyond twelve."""
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def counted(n: int, name: str) -> str:
    """'a red circle' for 1, 'three red circles' for 3."""
    return with_article(name) if n == 1 else f"{number_word(n)} {plural(name)}"
