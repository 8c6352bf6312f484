"""Recaptioning: several captioners behind one interface (paper §3.3).

- :mod:`.base` — the :class:`Captioner` interface and the :class:`Caption` record (text + provenance).
- :mod:`.instruction` — the Lens-style captioning instruction (versioned).
- :mod:`.vlm` — a ``transformers`` vision-language model from a local folder.
- :mod:`.openai_api` — any OpenAI-compatible chat-completions endpoint (GPT-4.1, vLLM, SGLang).
- :mod:`.oracle` — the synthetic world's exact captions (alt-text / brief / detailed).
- :mod:`.local_server` — a small OpenAI-compatible HTTP server on 127.0.0.1 for tests and the book.
- :mod:`.registry` — captioners from specs such as ``openai:gpt-4.1`` or ``brief=vlm:/path``.
- :mod:`.tiny_vlm` — a tiny random-weight LLaVA built offline, to exercise the VLM path.
- :mod:`.cost` — tokens and dollars for recaptioning a dataset, and the :class:`~.cost.Usage` a run spent.

Used in chapter 1 and by ``lens recaption``.
"""
