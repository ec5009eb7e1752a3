"""Data-adaptive activations of DIN: Dice, and the per-unit PReLU it generalises."""
import keras
from keras import ops

from tfrec_onerec.serialization import register_serializable


@register_serializable
class Dice(keras.layers.Layer):
    """Dice activation (Zhou et al., "Deep Interest Network", KDD 2018, eq. 9).

    ``f(s) = p(s) * s + (1 - p(s)) * alpha * s`` with
    ``p(s) = sigmoid((s - E[s]) / sqrt(Var[s] + epsilon))``: a PReLU whose rectification point
    adapts to the input distribution. ``E[s]`` and ``Var[s]`` are the mini-batch statistics in
    training and their moving averages at inference (a batch normalisation without scale or
    offset, over all axes but the last). ``alpha`` is learned per unit, initialised to 0.

    Args:
        epsilon: added to the variance. Default 1e-8.
        momentum: momentum of the moving averages. Default 0.99.

    Call:
        inputs: float tensor (..., units). Returns a tensor of the same shape.
    """

    def __init__(self, epsilon: float = 1e-8, momentum: float = 0.99, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon
        self.momentum = momentum
        self.normalization = keras.layers.BatchNormalization(
            axis=-1, center=False, scale=False, epsilon=epsilon, momentum=momentum, name="normalization")

    def build(self, input_shape):
        self.normalization.build(input_shape)
        self.alpha = self.add_weight(name="alpha", shape=(input_shape[-1],), initializer="zeros")

    def call(self, inputs, training=None):
        p = ops.sigmoid(self.normalization(inputs, training=training))
        return p * inputs + (1.0 - p) * self.alpha * inputs

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon, "momentum": self.momentum}


@register_serializable
class PReLU(keras.layers.Layer):
    """Parametric ReLU with one learned slope per unit (the last axis), for inputs of any rank.

    ``f(s) = max(s, 0) + alpha * min(s, 0)``. Unlike ``keras.layers.PReLU``, whose slopes
    cover every non-batch axis, the slopes are shared across sequence positions: DIN's
    activation unit runs on (batch, length, units) tensors and its PReLU is per unit.

    Args:
        alpha_initializer: initial slopes. Default 0.25.

    Call:
        inputs: float tensor (..., units). Returns the same shape.
    """

    def __init__(self, alpha_initializer=0.25, **kwargs):
        super().__init__(**kwargs)
        self.alpha_initializer = alpha_initializer

    def build(self, input_shape):
        self.alpha = self.add_weight(name="alpha", shape=(input_shape[-1],),
                                     initializer=keras.initializers.Constant(self.alpha_initializer))

    def call(self, inputs):
        return ops.relu(inputs) - self.alpha * ops.relu(-inputs)

    def get_config(self):
        return {**super().get_config(), "alpha_initializer": self.alpha_initializer}


def activation_layer(name: str, layer_name: str | None = None) -> keras.layers.Layer:
    """``"dice"`` -> :class:`Dice`, ``"prelu"`` -> :class:`PReLU` (one slope per unit), else a
    Keras activation."""
    if name == "dice":
        return Dice(name=layer_name)
    if name == "prelu":
        return PReLU(name=layer_name)
    return keras.layers.Activation(name, name=layer_name)
