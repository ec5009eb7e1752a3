"""DIEN's interest evolving layer: a GRU whose steps are steered by attention to the candidate.

Zhou et al., "Deep Interest Evolution Network for Click-Through Rate Prediction" (AAAI 2019),
Sec. 4.3. Written in the paper's notation, a GRU step over input ``i_t`` is::

    u_t = sigmoid(W_u i_t + U_u h_{t-1} + b_u)          (update gate)
    r_t = sigmoid(W_r i_t + U_r h_{t-1} + b_r)          (reset gate)
    g_t = tanh(W_h i_t + r_t * (U_h h_{t-1}) + b_h)     (candidate state)
    h_t = (1 - u_t) * h_{t-1} + u_t * g_t

and the attention score ``a_t`` of each step (how relevant behaviour t is to the candidate)
enters in one of three ways (``mode``):

* ``"augru"`` (the paper's choice): the update gate is scaled, ``u'_t = a_t * u_t``, so an
  irrelevant step (``a_t = 0``) leaves the state as it was and ``a_t = 1`` is a plain GRU step;
* ``"agru"``: the attention replaces the update gate, ``h_t = (1 - a_t) h_{t-1} + a_t g_t``;
* ``"aigru"``: the attention scales the input, ``i'_t = a_t * i_t``, of a plain GRU.

The weights have Keras' GRU layout (``reset_after=True``: kernel ``(dim, 3 units)``,
recurrent kernel ``(units, 3 units)``, bias ``(2, 3 units)``, gates in the order update,
reset, candidate), so a ``keras.layers.GRU``'s weights load into this layer unchanged.
Keras writes its update gate as ``z = 1 - u`` (``h = z h + (1 - z) g``); the cell does the same.
"""
from __future__ import annotations

import keras
from keras import ops

from tfrec_onerec.serialization import register_serializable

EVOLUTION_MODES = ("augru", "agru", "aigru")


@register_serializable
class AttentionalGRUCell(keras.layers.Layer):
    """One step of an attention-steered GRU, for ``keras.layers.RNN``.

    Args:
        units: state width.
        mode: ``"augru"``, ``"agru"`` or ``"aigru"`` (the module docstring). In ``"aigru"``
            mode the cell is a plain GRU: :class:`InterestEvolution` scales the inputs.

    Call:
        inputs: (batch, dim + 1): the step's input with its attention score as the last column.
        states: ``[(batch, units)]``. Returns ``(h_t, [h_t])``.
    """

    def __init__(self, units: int, mode: str = "augru", **kwargs):
        super().__init__(**kwargs)
        if mode not in EVOLUTION_MODES:
            raise ValueError(f"AttentionalGRUCell: mode must be one of {EVOLUTION_MODES}, got {mode!r}.")
        self.units = int(units)
        self.mode = mode
        self.state_size = self.units
        self.output_size = self.units

    def build(self, input_shape):
        dim = int(input_shape[-1]) - 1
        self.kernel = self.add_weight(shape=(dim, 3 * self.units), initializer="glorot_uniform", name="kernel")
        self.recurrent_kernel = self.add_weight(shape=(self.units, 3 * self.units), initializer="orthogonal",
                                                name="recurrent_kernel")
        self.bias = self.add_weight(shape=(2, 3 * self.units), initializer="zeros", name="bias")

    def call(self, inputs, states, training=None):
        previous = states[0] if isinstance(states, (list, tuple)) else states
        x, attention = inputs[:, :-1], inputs[:, -1:]
        x_gates = ops.matmul(x, self.kernel) + self.bias[0]
        h_gates = ops.matmul(previous, self.recurrent_kernel) + self.bias[1]
        x_z, x_r, x_h = ops.split(x_gates, 3, axis=-1)
        h_z, h_r, h_h = ops.split(h_gates, 3, axis=-1)
        keep = ops.sigmoid(x_z + h_z)  # Keras' z = 1 - u
        reset = ops.sigmoid(x_r + h_r)
        candidate = ops.tanh(x_h + reset * h_h)
        if self.mode == "augru":
            update = attention * (1.0 - keep)
        elif self.mode == "agru":
            update = ops.broadcast_to(attention, ops.shape(keep))
        else:
            update = 1.0 - keep
        state = (1.0 - update) * previous + update * candidate
        return state, [state]

    def get_config(self):
        return {**super().get_config(), "units": self.units, "mode": self.mode}


@register_serializable
class InterestEvolution(keras.layers.Layer):
    """Runs an :class:`AttentionalGRUCell` over a sequence and returns its last real state.

    Args:
        units: state width.
        mode: ``"augru"`` (default, the paper's), ``"agru"`` or ``"aigru"``.

    Call:
        sequence: (batch, length, dim) inputs (DIEN: the interest extractor's states).
        attention: (batch, length) scores of the steps.
        mask: (batch, length) bool, True for real steps (right-padded). Padded steps leave
            the state unchanged; a row without real steps returns zeros.
        Returns (batch, units), the state after the last real step.
    """

    def __init__(self, units: int, mode: str = "augru", **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.mode = mode
        self.supports_masking = True  # takes the step mask; its single-vector output has none
        self.cell = AttentionalGRUCell(units, mode, name="cell")
        self.rnn = keras.layers.RNN(self.cell, name="rnn")

    def build(self, sequence_shape, attention_shape=None, mask_shape=None):
        self.rnn.build(tuple(sequence_shape[:-1]) + (int(sequence_shape[-1]) + 1,))

    def call(self, sequence, attention, mask=None):
        attention = ops.expand_dims(ops.cast(attention, sequence.dtype), -1)
        if self.mode == "aigru":
            sequence = sequence * attention
        return self.rnn(ops.concatenate([sequence, attention], axis=-1), mask=mask)

    def compute_output_shape(self, sequence_shape, attention_shape=None, mask_shape=None):
        return (sequence_shape[0], self.units)

    def compute_mask(self, *args, **kwargs):
        return None

    def get_config(self):
        return {**super().get_config(), "units": self.units, "mode": self.mode}
