"""Evaluation of prompt following: the exact judge for the synthetic world (``parse``, ``judge``)
and GenEval-format scoring built on it."""
