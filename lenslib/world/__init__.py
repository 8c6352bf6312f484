"""The synthetic world: scenes whose ground truth is known, so prompt following can be judged exactly.

- ``vocab``: the shapes and emoji (OpenMoji) vocabularies, GenEval's class names mapped onto them,
  and GenEval's ten colours and four relations;
- ``spec``: scene specs (objects, colours, boxes, texts), the scene sampler, GenEval metadata ->
  ground-truth scene, and the judge's operating limits;
- ``position``: GenEval's relative-position rule (left of, right of, above, below);
- ``metadata``: GenEval metadata lines (``Clause``, ``MetadataLine``), read and checked in one place;
- ``sprites``: every class's silhouette and outline drawing at any size;
- ``render``: scene -> RGB image at any size;
- ``captions`` writes a scene's captions (alt-text, brief, detailed, mixed); ``caption_reading``
  reads a caption back into the facts it states;
- ``suites``: GenEval-format prompt suites (``long_suite``: the DPG-style long prompts), and the
  check of any metadata file against what the world can draw;
- ``dataset``: image-caption datasets of random scenes (``lens world make``).

The exact judge that reads images back lives in ``lenslib.eval.parse`` / ``lenslib.eval.judge``.
"""
