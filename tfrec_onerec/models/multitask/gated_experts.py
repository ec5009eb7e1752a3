"""Mixtures of experts for multi-task learning: MoE and MMoE (Ma et al., KDD 2018), CGC and
PLE (Tang et al., RecSys 2020), all stacks of :class:`~tfrec_onerec.layers.ExtractionLayer`.

* **PLE** stacks ``num_levels`` extraction layers. Every level has ``task_experts``
  experts per task and ``shared_experts`` shared ones; a task's gate mixes its own and the
  shared experts, reading the task's output of the level below; below the last level a
  shared gate over *all* experts feeds the next level's shared experts. The first level
  reads the flat features everywhere.
* **CGC** is PLE with one level (no shared gate).
* **MMoE** is CGC without task-specific experts: one gate per task over shared experts.
* **MoE** is MMoE with one gate whose mixture every task tower reads.

Defaults are sized for the zoo's data sets (16-dimensional embeddings, ~100k examples):
4 shared experts of 64 units (the MMoE paper's synthetic study used 8 x 16), one
task-specific expert per task for CGC/PLE, towers of 32 units, two PLE levels.
"""
from __future__ import annotations

from typing import Sequence

from tfrec_onerec.layers import ExtractionLayer
from tfrec_onerec.models.multitask.base import MultiTaskModel
from tfrec_onerec.models.registry import register


@register("ple", family="pointwise")
class PLE(MultiTaskModel):
    """Progressive Layered Extraction.

    Args:
        num_levels: stacked extraction layers (>= 1). Default 2.
        task_experts: experts per task in each level. Default 1.
        shared_experts: shared experts in each level. Default 4.
        expert_units: widths of each expert MLP. Default ``(64,)``.
        tower_units: widths of the task towers. Default ``(32,)``.
        **kwargs: as :class:`~tfrec_onerec.models.multitask.base.MultiTaskModel`.

    :meth:`expert_utilisation` reports each gate's mean weights, named
    ``level_<l>/task_<k>`` and ``level_<l>/shared``.
    """

    fixed = {}  # arguments a subclass pins (CGC: one level...)

    def __init__(self, feature_spec, tasks: Sequence = ("click", "conversion"), num_levels: int = 2,
                 task_experts: int = 1, shared_experts: int = 4, expert_units: Sequence[int] = (64,),
                 tower_units: Sequence[int] = (32,), **kwargs):
        super().__init__(feature_spec, tasks, tower_units=tower_units, **kwargs)
        settings = {"num_levels": int(num_levels), "task_experts": int(task_experts),
                    "shared_experts": int(shared_experts)}
        for name, value in self.fixed.items():
            if settings[name] != value:
                raise ValueError(f"{type(self).__name__} has {name}={value}; got {settings[name]}.")
        if settings["num_levels"] < 1:
            raise ValueError(f"{type(self).__name__}: num_levels must be >= 1, got {num_levels}.")
        self.num_levels = settings["num_levels"]
        self.task_experts = settings["task_experts"]
        self.shared_experts = settings["shared_experts"]
        self.expert_units = [int(u) for u in expert_units]
        self.levels = [ExtractionLayer(self.num_gates(), self.task_experts, self.shared_experts, self.expert_units,
                                       self.activation, shared_gate=level < self.num_levels - 1, l2=self.l2,
                                       name=f"level_{level}")
                       for level in range(self.num_levels)]
        self.towers = self.make_towers()

    def num_gates(self) -> int:
        return len(self.tasks)

    def represent(self, x, training=None):
        task_inputs, shared_input, gates = [x] * self.num_gates(), x, {}
        for level, layer in enumerate(self.levels):
            task_inputs, shared_input, weights = layer(task_inputs, shared_input)
            gates.update({f"level_{level}/{name}": w for name, w in weights.items()})
        if len(task_inputs) == 1:  # MoE: one mixture for every task
            task_inputs = task_inputs * len(self.tasks)
        return task_inputs, gates

    def shared_layer(self):
        last = self.levels[-1]
        return last.shared_group if last.shared_group is not None else last

    def get_config(self):
        return {**super().get_config(), "num_levels": self.num_levels, "task_experts": self.task_experts,
                "shared_experts": self.shared_experts, "expert_units": self.expert_units}


@register("cgc", family="pointwise")
class CGC(PLE):
    """Customized Gate Control: one extraction level (PLE with ``num_levels=1``)."""

    fixed = {"num_levels": 1}

    def __init__(self, feature_spec, tasks: Sequence = ("click", "conversion"), num_levels: int = 1, **kwargs):
        super().__init__(feature_spec, tasks, num_levels=num_levels, **kwargs)


@register("mmoe", family="pointwise")
class MMoE(PLE):
    """Multi-gate Mixture-of-Experts: one gate per task over shared experts (CGC without
    task-specific experts)."""

    fixed = {"num_levels": 1, "task_experts": 0}

    def __init__(self, feature_spec, tasks: Sequence = ("click", "conversion"), num_levels: int = 1,
                 task_experts: int = 0, **kwargs):
        super().__init__(feature_spec, tasks, num_levels=num_levels, task_experts=task_experts, **kwargs)


@register("moe", family="pointwise")
class MoE(MMoE):
    """One-gate Mixture-of-Experts: a single gate's mixture of shared experts feeds every tower."""

    def num_gates(self) -> int:
        return 1
