"""Reusable Keras 3 building blocks, one concept per module."""
from tfrec_onerec.layers.activations import Dice, activation_layer
from tfrec_onerec.layers.dot_interaction import DotInteraction
from tfrec_onerec.layers.embedding import FeatureEmbedding, as_feature_spec
from tfrec_onerec.layers.experts import ExpertGroup, Gate
from tfrec_onerec.layers.extraction import ExtractionLayer
from tfrec_onerec.layers.feed_forward import FeedForward
from tfrec_onerec.layers.flat_features import FlatFeatures
from tfrec_onerec.layers.masked_dense import MaskedDense, MaskedMLP
from tfrec_onerec.layers.mlp import MLP
from tfrec_onerec.layers.pooling import SequencePooling
from tfrec_onerec.layers.position_embedding import PositionEmbedding
from tfrec_onerec.layers.sparse_moe import SparseMoE
from tfrec_onerec.layers.target_attention import MultiHeadTargetAttention, TargetAttention
from tfrec_onerec.layers.task_tower import TaskTower
from tfrec_onerec.layers.transformer import TransformerBlock, attention_mask

__all__ = ["Dice", "DotInteraction", "ExpertGroup", "ExtractionLayer", "FeatureEmbedding", "FeedForward",
           "FlatFeatures", "Gate", "MLP", "MaskedDense", "MaskedMLP", "MultiHeadTargetAttention", "PositionEmbedding",
           "SequencePooling", "SparseMoE", "TargetAttention", "TaskTower", "TransformerBlock", "activation_layer",
           "as_feature_spec", "attention_mask"]
