"""Behaviour-sequence models: DIN and its sum-pooling base model, DIEN and SIM (point-wise rankers), and
the next-item models SASRec, STAMP and TiCoSeRec (:mod:`~tfrec_onerec.models.sequence.next_item`)."""
from tfrec_onerec.models.sequence.din import DIN, DINBase
from tfrec_onerec.models.sequence.dien import DIEN
from tfrec_onerec.models.sequence.next_item import NextItemModel
from tfrec_onerec.models.sequence.sasrec import SASRec
from tfrec_onerec.models.sequence.sim import SIM
from tfrec_onerec.models.sequence.stamp import STAMP
from tfrec_onerec.models.sequence.ticoserec import TiCoSeRec

__all__ = ["DIEN", "DIN", "DINBase", "NextItemModel", "SASRec", "SIM", "STAMP", "TiCoSeRec"]
