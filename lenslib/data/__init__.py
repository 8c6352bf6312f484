"""Data: everything a training step reads, and the cleaning funnel, shards and pipeline that make training
sets.

Below the trainer (floors: world -> model/flow -> data -> train -> eval): the trainer only iterates a
:class:`~lenslib.data.stream.BatchStream`. Modules (import them directly; nothing heavy is imported here):

- what a step reads: ``batch`` (the :class:`Batch`), ``sources`` (world, HF datasets, webdataset shards, world
  cache; the config's source), ``feature_cache`` and ``world_cache`` (encoded once, keyed by what made them),
  ``order`` (the one sample-order function, :func:`~lenslib.data.order.plan`), ``stream`` (prefetch, device
  copies), ``buckets``, ``sampler`` (epochs over a bucketed data set);
- ``config_diff`` (the one comparison of two configs or cache identities, used by caches and resumes);
- making training sets: ``filters``, ``funnel``, ``dedup``, ``shards``, ``pipeline``, ``cli``,
  ``sample_photos`` (offline photographs), ``plots`` (chapter figures).

Used in chapters 1 and 4 and by the trainer.
"""
