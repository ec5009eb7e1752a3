"""The shared-bottom multi-task model (Caruana, 1997): the baseline of MMoE and PLE."""
from __future__ import annotations

from typing import Sequence

from tfrec_onerec.layers import MLP
from tfrec_onerec.models.multitask.base import MultiTaskModel
from tfrec_onerec.models.registry import register


@register("shared_bottom", family="pointwise")
class SharedBottom(MultiTaskModel):
    """One MLP shared by every task, then a tower per task.

    Args:
        bottom_units: widths of the shared MLP. Default ``(64,)``.
        **kwargs: as :class:`~tfrec_onerec.models.multitask.base.MultiTaskModel`.
    """

    def __init__(self, feature_spec, tasks: Sequence = ("click", "conversion"), bottom_units: Sequence[int] = (64,),
                 **kwargs):
        super().__init__(feature_spec, tasks, **kwargs)
        self.bottom_units = [int(u) for u in bottom_units]
        self.bottom = MLP(self.bottom_units, self.activation, l2=self.l2, name="bottom")
        self.towers = self.make_towers()

    def represent(self, x, training=None):
        shared = self.bottom(x, training=training)
        return [shared] * len(self.tasks), {}

    def shared_layer(self):
        return self.bottom.dense_layers[-1]

    def get_config(self):
        return {**super().get_config(), "bottom_units": self.bottom_units}
