"""Multi-task rankers: shared bottom, MoE, MMoE, CGC, PLE, ESMM, AITM, LT4REC, STAN (point-wise family).

Every model here is a :class:`~tfrec_onerec.models.multitask.base.MultiTaskModel`: one
output per task, task losses masked to each task's sample space and summed by a loss
weighting (:mod:`~tfrec_onerec.models.multitask.loss_weighting`).
"""
