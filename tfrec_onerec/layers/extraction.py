"""One level of customized gate control (CGC), the unit that MoE, MMoE, CGC and PLE stack."""
from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from tfrec_onerec.layers.experts import ExpertGroup, Gate
from tfrec_onerec.serialization import register_serializable


@register_serializable
class ExtractionLayer(keras.layers.Layer):
    """Task-specific and shared experts mixed by per-task gates (Tang et al., RecSys 2020).

    Each of the ``num_gates`` gates mixes its own ``task_experts`` experts and the
    ``shared_experts`` shared ones, reading its own input. With ``shared_gate`` a further
    gate over *all* experts, reading the shared input, gives the shared output that feeds
    the next level's shared experts (PLE's levels below the last). Special cases:

    * ``task_experts=0``: MMoE (one gate per task over shared experts);
    * ``task_experts=0, num_gates=1``: MoE (one gate, its mixture read by every task);
    * ``task_experts=0, shared_experts=1``: a shared bottom (every gate weight is 1).

    Args:
        num_gates: one per task (MoE: 1).
        task_experts: experts owned by each gate (may be 0).
        shared_experts: experts every gate sees (may be 0 when ``task_experts`` > 0).
        expert_units: widths of each expert MLP.
        activation: the experts' activation.
        shared_gate: also output the shared gate's mixture. Default False.
        l2: L2 penalty on the experts' kernels.

    Call:
        task_inputs: a list of ``num_gates`` (batch, in_dim) tensors, one per gate.
        shared_input: (batch, in_dim), read by the shared experts and the shared gate.
        Returns ``(outputs, shared_output, gate_weights)``: ``num_gates`` (batch, units[-1])
        mixtures, the shared gate's mixture (None without ``shared_gate``) and
        ``{gate name: (batch, experts it mixes)}`` (``task_<k>``, ``shared``).
    """

    def __init__(self, num_gates: int, task_experts: int, shared_experts: int, expert_units: Sequence[int],
                 activation: str = "relu", shared_gate: bool = False, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if int(num_gates) < 1:
            raise ValueError(f"ExtractionLayer: num_gates must be >= 1, got {num_gates}.")
        if int(task_experts) < 0 or int(shared_experts) < 0 or int(task_experts) + int(shared_experts) < 1:
            raise ValueError("ExtractionLayer: task_experts and shared_experts must be >= 0 with at least one "
                             f"expert per gate, got task_experts={task_experts}, shared_experts={shared_experts}.")
        self.num_gates = int(num_gates)
        self.task_experts = int(task_experts)
        self.shared_experts = int(shared_experts)
        self.expert_units = [int(u) for u in expert_units]
        self.activation = activation
        self.shared_gate = bool(shared_gate)
        self.l2 = l2
        group = dict(units=self.expert_units, activation=activation, l2=l2)
        self.task_groups = ([ExpertGroup(self.task_experts, name=f"task_{k}_experts", **group)
                             for k in range(self.num_gates)] if self.task_experts else [])
        self.shared_group = (ExpertGroup(self.shared_experts, name="shared_experts", **group)
                             if self.shared_experts else None)
        self.gates = [Gate(self.task_experts + self.shared_experts, name=f"task_{k}_gate")
                      for k in range(self.num_gates)]
        self.global_gate = (Gate(self.num_gates * self.task_experts + self.shared_experts, name="shared_gate")
                            if self.shared_gate else None)

    def build(self, task_inputs_shape, shared_input_shape=None):
        shape = tuple(shared_input_shape)
        for layer in self.task_groups + [self.shared_group] + self.gates + [self.global_gate]:
            if layer is not None:
                layer.build(shape)

    def call(self, task_inputs, shared_input):
        if len(task_inputs) != self.num_gates:
            raise ValueError(f"ExtractionLayer: expected {self.num_gates} task inputs, got {len(task_inputs)}.")
        shared = [self.shared_group(shared_input)] if self.shared_group is not None else []
        owned = [group(x) for group, x in zip(self.task_groups, task_inputs)]
        outputs, weights = [], {}
        for k, (gate, x) in enumerate(zip(self.gates, task_inputs)):
            experts = ops.concatenate(([owned[k]] if owned else []) + shared, axis=1)
            mixture, weights[f"task_{k}"] = gate(x, experts)
            outputs.append(mixture)
        shared_output = None
        if self.global_gate is not None:
            shared_output, weights["shared"] = self.global_gate(shared_input, ops.concatenate(owned + shared, axis=1))
        return outputs, shared_output, weights

    def get_config(self):
        return {**super().get_config(), "num_gates": self.num_gates, "task_experts": self.task_experts,
                "shared_experts": self.shared_experts, "expert_units": self.expert_units,
                "activation": self.activation, "shared_gate": self.shared_gate, "l2": self.l2}
