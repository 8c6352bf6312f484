"""Data: the cleaning funnel, shards, buckets, the bucket sampler, the feature cache, the pipeline.

Modules (import them directly; nothing heavy is imported here):
``filters``, ``funnel``, ``dedup``, ``shards``, ``buckets``, ``sampler``, ``feature_cache``, ``pipeline``, ``cli``,
``sample_photos`` (offline photographs), ``plots`` (chapter figures).
Used in chapter 1 and by the trainer.
"""
