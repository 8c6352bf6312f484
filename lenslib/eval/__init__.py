"""Evaluation of prompt following: the exact judge for the synthetic world and GenEval-format scoring.

``parse`` and ``judge`` read an image exactly; ``dependent`` scores long prompts with DPG-Bench's rule;
``geneval`` is GenEval's summary and API, built on ``geneval_folder`` (judging an image folder),
``ground_truth`` (renders that must score 100 %) and ``stats`` (the bootstrap intervals of chapters 4,
5 and 6); ``generate`` samples a model on a suite; ``degrade``, ``denoise``, ``reach`` and ``widgets``
serve chapters 4 and 5.
"""
