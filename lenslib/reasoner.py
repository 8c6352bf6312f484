"""The prompt reasoner: expand a user's brief prompt into the detailed kind the model was trained on.

Lens scores GenEval 0.843 with prompts as users type them and 0.930 when GPT-5.5 first rewrites each
prompt into a dense description (paper, reasoner ablation). A model trained on ~109-word captions meets
its training distribution only when prompts are long too; the reasoner closes that gap at inference.

Three backends behind one call, ``reasoner(prompts, seed) -> list[str]``:

- :class:`RuleReasoner` reads the prompt with the synthetic world's grammar (classes, colours, counts,
  the four GenEval relations), lays out one scene that satisfies it and describes that scene with the
  world's detailed captioner. It adds only detail consistent with the prompt (sizes, places,
  background), never a new object, exactly what the official rewriter instruction asks for.
- :class:`ChatReasoner` sends the prompt to any OpenAI-compatible chat-completions endpoint with
  :data:`REWRITER_INSTRUCTION` (what the paper did with GPT-5.5).
- :class:`LocalLMReasoner` runs a local ``transformers`` chat model from a folder.

A prompt the backend cannot expand comes back unchanged, as in the official code. Used in chapter 6.
"""

from __future__ import annotations

import re
from typing import Sequence

from lenslib.world.captions import _REL_PATTERNS, parse_mentions
from lenslib.world.suites import detailed_prompt

# The rewriter's system prompt, in our words, following the official instruction's gist (reference §7).
REWRITER_INSTRUCTION = (
    "Rewrite the user's request as one concrete, descriptive prompt for a text-to-image model. "
    "Keep every object, attribute, count, action, relation and setting the user states; add only visual "
    "detail that is consistent with it (appearance, colour, size, shape, material, position) and no new "
    "important objects. When there are several subjects of one kind, describe each one. Cover the whole "
    "scene, including the background. Turn simple inferences into explicit visuals. If the request is "
    "already detailed, change it as little as possible. Answer in the request's language. Output exactly "
    "one prompt: no explanations, questions, options, lists, markup or quotes."
)


def prompt_to_metadata(prompt: str, vocab: str = "shapes") -> dict | None:
    """Read a prompt as a GenEval metadata line (include clauses with class, count, colour, position).

    "a photo of a red circle left of two stars" -> include [{class: star, count: 2},
    {class: circle, count: 1, color: red, position: ["left of", 0]}]. Returns None when the prompt names
    no object of the world.
    """
    mentions = parse_mentions(prompt, vocab)
    if not mentions:
        return None
    include = []
    for m in mentions:
        clause = {"class": m.cls, "count": m.count if m.count is not None else (2 if m.plural else 1)}
        if m.color is not None:
            clause["color"] = m.color
        include.append(clause)
    if len(mentions) >= 2:
        between = prompt.lower()[mentions[0].end:mentions[1].start]
        for pattern, rel in _REL_PATTERNS:
            if pattern.search(between):
                # GenEval's layout: the reference object first, the positioned one relative to it
                include = [include[1], {**include[0], "position": [rel, 0]}, *include[2:]]
                break
    return {"tag": "reasoner", "prompt": prompt, "include": include, "exclude": []}


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


_HARMONY_FINAL = re.compile(r"<\|channel\|>final<\|message\|>(.*?)(?:<\|end\|>|<\|return\|>|$)", re.S)


def clean_output(text: str) -> str:
    """Reduce a model's answer to the rewritten prompt (the official reasoner's clean-up, reference §7).

    Takes the harmony "final" channel when present, drops ``<think>`` blocks and special tokens, returns
    "" for an answer that is still reasoning, unwraps a code fence or quotes, and collapses whitespace.
    """
    match = _HARMONY_FINAL.search(text)
    if match:
        text = match.group(1)
    text = re.sub(r"<think>.*?</think>", " ", text, flags=re.S)
    text = re.sub(r"<\|[^|]*\|>", " ", text)
    text = text.strip()
    if text.lower().startswith("analysis"):
        return ""
    fence = re.fullmatch(r"```[a-zA-Z]*\s*(.*?)\s*```", text, flags=re.S)
    if fence:
        text = fence.group(1)
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return re.sub(r"\s+", " ", text).strip()
