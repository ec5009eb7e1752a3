"""Entire Space Multi-task Model (Ma et al., SIGIR 2018): CVR learned over every impression."""
from __future__ import annotations

from typing import Sequence

from tfrec_onerec.features.spec import Task, tasks_to_config
from tfrec_onerec.layers import TaskTower
from tfrec_onerec.models.base import as_tasks
from tfrec_onerec.models.multitask.base import MultiTaskModel
from tfrec_onerec.models.registry import register


@register("esmm", family="pointwise")
class ESMM(MultiTaskModel):
    """ESMM: ``pCTCVR = pCTR x pCVR``, trained on CTR and CTCVR over the entire space.

    A CTR tower and a CVR tower read the same embeddings (the only shared part). The CVR
    tower has no loss of its own: its probability enters the model's loss only through the
    product ``pCTR x pCVR`` (probabilities, not logits), which is trained on the
    click-and-convert label over every impression. This removes the sample selection bias
    of training CVR on clicked impressions only, and the data sparsity with it.

    Args:
        tasks: the funnel ``(ctr, ctcvr)``: the click task and the click-and-convert task
            (e.g. ``("click", "conversion")`` on the simulator, ``("click", "like")`` on
            MovieLens-100K), both binary and over every impression.
        cvr_name: the name of the third output, pCVR. It is a task of weight 0 with the
            CTCVR label on the CTR label's sample space, so it is scored on clicked
            impressions (and on the entire space) but never trained directly. Default ``"cvr"``.
        tower_units: widths of both towers. Default ``(360, 200, 80)`` as in the paper.
        **kwargs: as :class:`~tfrec_onerec.models.multitask.base.MultiTaskModel`.

    Call:
        Returns ``{ctr: pCTR, ctcvr: pCTR x pCVR, cvr_name: pCVR}``, each (batch, 1).
    """

    def __init__(self, feature_spec, tasks: Sequence = ("click", "conversion"), cvr_name: str = "cvr",
                 tower_units: Sequence[int] = (360, 200, 80), **kwargs):
        funnel = as_tasks(tasks)
        if len(funnel) != 2 or any(t.kind != "binary" or t.sample_space for t in funnel):
            raise ValueError("ESMM takes two binary entire-space tasks, (ctr, ctcvr); got "
                             f"{[(t.name, t.kind, t.sample_space) for t in funnel]}.")
        self.cvr_name = cvr_name
        super().__init__(feature_spec, self.output_tasks(funnel, {"cvr_name": cvr_name}), tower_units=tower_units,
                         **kwargs)
        tower = dict(units=self.tower_units, activation=self.activation, dropout=self.dropout, l2=self.l2)
        self.ctr_tower = TaskTower(name="ctr_tower", **tower)
        self.cvr_tower = TaskTower(name="cvr_tower", **tower)

    @classmethod
    def output_tasks(cls, tasks: Sequence, hyperparameters=None) -> list:
        """``[ctr, ctcvr, cvr]``: the cvr output is scored with the CTCVR label on the CTR label's
        sample space (clicked impressions), weight 0 (no loss of its own)."""
        ctr, ctcvr = as_tasks(tasks)
        cvr_name = (hyperparameters or {}).get("cvr_name", "cvr")
        return [ctr, ctcvr, Task(cvr_name, label=ctcvr.label, sample_space=ctr.label, weight=0.0)]

    def represent(self, x, training=None):
        return [x, x], {}

    def call(self, inputs, training=None):
        x = self.flat(self.checked_inputs(inputs))
        ctr, ctcvr, cvr = self.tasks
        p_ctr = self.task_output(ctr, self.ctr_tower(x, training=training)[0])
        p_cvr = self.task_output(cvr, self.cvr_tower(x, training=training)[0])
        return {ctr.name: p_ctr, ctcvr.name: p_ctr * p_cvr, cvr.name: p_cvr}

    def get_config(self):
        return {**super().get_config(), "tasks": tasks_to_config(self.tasks[:2]), "cvr_name": self.cvr_name}
