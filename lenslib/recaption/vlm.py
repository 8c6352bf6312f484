"""Captions from a ``transformers`` vision-language model in a local folder (image-text-to-text).

Works with any model that ``AutoModelForImageTextToText`` and ``AutoProcessor`` load and whose processor
has a chat template (Qwen2/3-VL, LLaVA, Idefics3/SmolVLM, Gemma 3, …). Images are captioned in batches
with greedy decoding, left padding, on any torch device; only the newly generated tokens are decoded.
PixArt-α recaptioned SAM this way with LLaVA. Nothing is downloaded: ``path`` must be a folder written by
``save_pretrained`` (or a hub snapshot). Used in chapter 1 and by ``lens recaption --captioner vlm:PATH``.
"""

from __future__ import annotations

import time
from pathlib import Path

from .base import Caption, Captioner, CaptionError
from .instruction import instruction


class VLMCaptioner(Captioner):
    """Batched captioning with a local VLM.

    Args:
        path: local model folder (model + processor with a chat template).
        kind: ``"detailed"`` or ``"brief"`` (picks the instruction unless ``instruction_text`` is given).
        device, dtype: e.g. ``"cuda"``, ``torch.bfloat16``; default CPU float32.
        batch_size: images per ``generate`` call.
        max_new_tokens: cap on caption length (Lens captions average ~109 words ≈ 150 tokens; 500 words
            ≈ 700 tokens).
    """

    def __init__(
        self,
        path: str,
        kind: str = "detailed",
        instruction_text: str | None = None,
        device: str = "cpu",
        dtype=None,
        batch_size: int = 8,
        max_new_tokens: int = 512,
        prompt_version: str | None = None,
    ):
        # lazy: torch + transformers' auto classes cost 3.6 s (python -X importtime);
        # lenslib.recaption.registry imports this module for every captioner spec
        import torch  # noqa: PLC0415
        from transformers import AutoModelForImageTextToText, AutoProcessor  # noqa: PLC0415

        p = Path(path)
        if not (p / "config.json").is_file():
            raise CaptionError(
                f"{path} is not a local model folder (no config.json); pass a folder written by "
                "save_pretrained or a downloaded hub snapshot"
            )
        self.path, self.device, self.batch_size, self.max_new_tokens = (
            str(p),
            device,
            batch_size,
            max_new_tokens,
        )
        self.processor = AutoProcessor.from_pretrained(self.path)
        if getattr(self.processor, "chat_template", None) is None:
            raise CaptionError(f"the processor in {path} has no chat template; VLM captioning needs one")
        self.model = AutoModelForImageTextToText.from_pretrained(self.path, dtype=dtype or torch.float32)
        self.model = self.model.to(device).eval()
        tok = getattr(self.processor, "tokenizer", None)
        if tok is not None:
            tok.padding_side = "left"  # decoder-only generation needs left padding
        text, version = instruction(kind) if instruction_text is None else (instruction_text, "custom")
        self.kind, self.instruction_text = kind, text
        self.prompt_version = prompt_version or version
        self.name = f"vlm:{self.model.config.model_type}:{p.name}"
        self._torch = torch

    def identity(self):
        return super().identity() | {"path": self.path, "model_type": self.model.config.model_type}

    def _prompt(self) -> str:
        msgs = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.instruction_text}]}
        ]
        return self.processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)

    def _caption_batch(self, images, metas):
        out: list[Caption] = []
        prompt = self._prompt()
        tok = self.processor.tokenizer
        stop = {tok.eos_token_id, tok.pad_token_id} - {None}
        for i in range(0, len(images), self.batch_size):
            batch = [im.convert("RGB") for im in images[i : i + self.batch_size]]
            t0 = time.perf_counter()
            inputs = self.processor(
                images=batch, text=[prompt] * len(batch), return_tensors="pt", padding=True
            )
            inputs = {k: v.to(self.device) for k, v in inputs.items()}
            with self._torch.inference_mode():
                gen = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
            new = gen[:, inputs["input_ids"].shape[1] :].cpu()
            dt = (time.perf_counter() - t0) / len(batch)
            n_in = inputs["attention_mask"].sum(1).tolist()
            for row, tin in zip(new, n_in):
                ids = row.tolist()
                n_out = next((k + 1 for k, t in enumerate(ids) if t in stop), len(ids))
                text = tok.decode(ids[:n_out], skip_special_tokens=True).strip()
                truncated = n_out == self.max_new_tokens and ids[-1] not in stop
                out.append(self._made(text, (int(tin), int(n_out)), dt, truncated=truncated))
        return out
