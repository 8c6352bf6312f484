"""The synthetic world: scenes whose ground truth is known, so prompt following can be judged exactly.

- ``spec``: scene specs (objects, colours, boxes, texts), GenEval's relation rule, the scene
  sampler, GenEval metadata -> ground-truth scene, and the judge's operating limits;
- ``vocab``: the shapes and emoji (OpenMoji) vocabularies, and GenEval's class names mapped onto them;
- ``sprites``: every class's silhouette and outline drawing at any size;
- ``render``: scene -> RGB image at any size.

The exact judge that reads images back lives in ``lenslib.eval.parse`` / ``lenslib.eval.judge``.
"""
