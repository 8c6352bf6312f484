"""The captioning instructions, in our own words, versioned (paper §3.3).

Lens asked GPT-4.1 for one long English paragraph per image, under 500 words, covering: the salient
objects with their attributes and interactions, counts, the background, visible text quoted verbatim in
its original language (and no remark when there is none), and world knowledge such as landmarks,
celebrities or dishes. The mean caption came out at about 109 words. The exact wording of the paper's
prompt is not public; :data:`DETAILED` is ours. :data:`BRIEF` matches the paper's "Brief" ablation arm
("a photo of a cat"). Every caption stores the version string, so datasets captioned with different
wordings can be told apart. Used in chapter 1.
"""

DETAILED_VERSION = "lens-detailed-v1"
DETAILED = """\
Describe this image for someone who will redraw it without seeing it. Write one paragraph of plain \
English prose, under 500 words, with no lists, headings or preamble.
Cover, in order of importance:
1. The main subjects: what each one is, its colour, material, size, pose or state, and how the subjects \
relate to or interact with each other.
2. How many there are of each kind of thing, whenever the number is clear.
3. Where things are in the frame, and the setting and background behind them.
4. Any writing that is visible (signs, labels, captions, screens): quote it exactly, in its original \
language and script. If there is no writing, say nothing about writing.
5. What can be recognised with general knowledge, such as a famous landmark, a well-known person, a \
dish, a brand, an artwork or a species, named as specifically as you are confident.
6. The style of the image (photograph, illustration, render, screenshot, poster), the lighting and the \
viewpoint.
State only what is visible; do not guess at things you cannot see."""

BRIEF_VERSION = "lens-brief-v1"
BRIEF = """\
Describe this image in one short English phrase of at most 12 words naming its main subject, \
like "a photo of a cat on a sofa". No punctuation at the end."""

INSTRUCTIONS = {"detailed": (DETAILED, DETAILED_VERSION), "brief": (BRIEF, BRIEF_VERSION)}


def instruction(kind: str = "detailed") -> tuple[str, str]:
    """(text, version) for a caption kind: ``"detailed"`` or ``"brief"``."""
    if kind not in INSTRUCTIONS:
        raise ValueError(f"unknown caption kind {kind!r}; choose one of {sorted(INSTRUCTIONS)}")
    return INSTRUCTIONS[kind]
