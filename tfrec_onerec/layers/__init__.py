"""Reusable Keras 3 building blocks, one concept per module."""
from tfrec_onerec.layers.activations import Dice, activation_layer
from tfrec_onerec.layers.embedding import FeatureEmbedding, as_feature_spec
from tfrec_onerec.layers.mlp import MLP
from tfrec_onerec.layers.pooling import SequencePooling
from tfrec_onerec.layers.target_attention import TargetAttention

__all__ = ["Dice", "FeatureEmbedding", "MLP", "SequencePooling", "TargetAttention", "activation_layer",
           "as_feature_spec"]
