"""Behaviour-sequence models: DIN and its sum-pooling base model."""
from tfrec_onerec.models.sequence.din import DIN, DINBase

__all__ = ["DIN", "DINBase"]
