"""The prompt reasoner: expand a user's brief prompt into the detailed kind the model was trained on.

Lens scores GenEval 0.843 with prompts as users type them and 0.930 when GPT-5.5 first rewrites each
prompt into a dense description (paper, reasoner ablation). A model trained on ~109-word captions meets
its training distribution only when prompts are long too; the reasoner closes that gap at inference.

Two kinds of reasoner share the call ``reasoner(prompts, ...) -> list[str]``:

- :class:`RuleReasoner` (here) reads the prompt with the synthetic world's grammar (classes, colours,
  counts, the four GenEval relations), lays out one scene that satisfies it and describes that scene
  with the world's detailed captioner. It adds only detail consistent with the prompt (sizes, places,
  background), never a new object, which is what the official rewriter instruction asks for. Exact,
  offline and instant: the reasoner of the caption experiment.
- :class:`lenslib.model.prompt_reasoner.PromptReasoner`, the official backends: any OpenAI-compatible
  chat-completions endpoint (what the paper did with GPT-5.5) or a local GPT-OSS.

A prompt the reasoner cannot expand comes back unchanged, as in the official code. Used in chapter 6.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from lenslib.world.caption_reading import RELATION_PATTERNS, read_mentions
from lenslib.world.metadata import Clause
from lenslib.world.suites import detailed_prompt


def prompt_to_metadata(prompt: str, vocab: str = "shapes") -> dict | None:
    """Read a prompt as a GenEval metadata line (include clauses with class, count, colour, position).

    "a photo of a red circle left of two stars" -> include [{class: star, count: 2},
    {class: circle, count: 1, color: red, position: ["left of", 0]}]. Returns None when the prompt names
    no object of the world.
    """
    mentions = read_mentions(prompt, vocab)
    if not mentions:
        return None
    include = [
        Clause(m.cls, m.count if m.count is not None else (2 if m.plural else 1), m.color) for m in mentions
    ]
    if len(mentions) >= 2:
        between = prompt.lower()[mentions[0].end : mentions[1].start]
        for pattern, rel in RELATION_PATTERNS:
            if pattern.search(between):
                # GenEval's layout: the reference object first, the positioned one relative to it
                placed = dataclasses.replace(include[0], position=(rel, 0))
                include = [include[1], placed, *include[2:]]
                break
    return {"tag": "reasoner", "prompt": prompt, "include": [c.to_dict() for c in include], "exclude": []}


class RuleReasoner:
    """Expand prompts with the world's grammar and detailed captioner (exact, offline, instant)."""

    name = "rule"

    def __init__(self, vocab: str = "shapes"):
        self.vocab = vocab

    def rewrite(self, prompt: str, seed: int = 0) -> str:
        line = prompt_to_metadata(prompt, self.vocab)
        if line is None:
            return prompt
        try:
            return detailed_prompt(line, seed=seed, vocab=self.vocab)
        except ValueError:  # e.g. more objects than the world holds: leave the prompt as it is
            return prompt

    def __call__(self, prompts: Sequence[str], seed: int = 0) -> list[str]:
        return [self.rewrite(p, seed + i) for i, p in enumerate(prompts)]
