"""Behaviour-sequence models: DIN and its sum-pooling base model, DIEN, and the next-item models."""
from tfrec_onerec.models.sequence.din import DIN, DINBase
from tfrec_onerec.models.sequence.dien import DIEN
from tfrec_onerec.models.sequence.sasrec import SASRec  # noqa: F401  (registers "sasrec")

__all__ = ["DIEN", "DIN", "DINBase"]
