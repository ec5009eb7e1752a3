"""The position-wise (dense) feed-forward network of a transformer block."""
from __future__ import annotations

import keras

from tfrec_onerec.layers._validation import check_positive, check_rate
from tfrec_onerec.serialization import register_serializable


@register_serializable
class FeedForward(keras.layers.Layer):
    """The position-wise two-layer feed-forward network of a transformer block.

    ``FFN(x) = act(x W1 + b1) W2 + b2``, applied to every token independently.

    Args:
        hidden_dim: width of the hidden layer; ``None`` (default): 4 x the input width.
        activation: Keras activation of the hidden layer. Default ``"gelu"``.
        dropout: dropout on the hidden layer. Default 0.
        output_dim: width of the output; ``None`` (default): the input width.

    Call:
        inputs: (batch, length, dim). padding_mask: ignored (accepted so that dense and MoE
        feed-forwards are interchangeable in
        :class:`~tfrec_onerec.layers.transformer.TransformerBlock`).
        Returns (batch, length, output_dim).
    """

    def __init__(self, hidden_dim: int | None = None, activation: str = "gelu", dropout: float = 0.0,
                 output_dim: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = None if hidden_dim is None else check_positive("FeedForward", "hidden_dim", hidden_dim)
        self.output_dim = None if output_dim is None else check_positive("FeedForward", "output_dim", output_dim)
        self.activation = activation
        self.dropout = check_rate("FeedForward", "dropout", dropout)
        self.dropout_layer = keras.layers.Dropout(self.dropout)

    def build(self, inputs_shape, padding_mask_shape=None):
        dim = int(inputs_shape[-1])
        hidden = self.hidden_dim or 4 * dim
        self.hidden_layer = keras.layers.Dense(hidden, activation=self.activation, name="hidden")
        self.output_layer = keras.layers.Dense(self.output_dim or dim, name="output")
        self.hidden_layer.build(tuple(inputs_shape))
        self.output_layer.build(tuple(inputs_shape)[:-1] + (hidden,))

    def call(self, inputs, padding_mask=None, training=None):
        return self.output_layer(self.dropout_layer(self.hidden_layer(inputs), training=training))

    def compute_output_shape(self, inputs_shape, padding_mask_shape=None):
        return tuple(inputs_shape)[:-1] + (self.output_dim or inputs_shape[-1],)

    def get_config(self):
        return {**super().get_config(), "hidden_dim": self.hidden_dim, "activation": self.activation,
                "dropout": self.dropout, "output_dim": self.output_dim}
