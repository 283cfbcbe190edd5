"""The study's activation prompt, worded once for the task table and the vision-language backbones.

Why a module of its own at the bottom of the package: the paper tasks (:mod:`medprobe.data.paper`)
give every task its prompt and the VLM backbones (:mod:`medprobe.models.hf`) build their default
prompts and the study's ``Question: ... Answer:`` frame from the same words. ``data`` sits below
``models``, so the wording lives below both and each imports it; neither defines its own copy.
The wording is the study's (peterhan91/Multimodal-Probes, ``activation.py``).
"""

from __future__ import annotations

#: the question given with each image, by image domain ("radiological", "histological", ...)
PROMPT_TEMPLATE = "What can you see on this {domain} image?"
#: the study's question with its per-task noun (``study`` prompt style)
STUDY_QUESTION = "What can you see on this {noun}?"
#: the same question character for character, typo "seen" included (``study-verbatim``)
STUDY_QUESTION_VERBATIM = "What can you seen on this {noun}?"
#: the code's default question (``activation.py --prompt_key general``, the ``general`` entry of its
#: prompt table): what its documented commands ran and its evaluation scripts read
#: (``study-general`` prompt style); it names no image kind
STUDY_QUESTION_GENERAL = "What's on this image?"
#: the frame the study put the question in for the base IDEFICS models
STUDY_FRAME = "Question: {question} Answer:"
#: the question of each ``study*`` prompt style (``{noun}``: the task's image noun)
STUDY_QUESTIONS = {"study": STUDY_QUESTION, "study-verbatim": STUDY_QUESTION_VERBATIM,
                   "study-general": STUDY_QUESTION_GENERAL}
