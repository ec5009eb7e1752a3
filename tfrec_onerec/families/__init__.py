"""Model families: the one contract through which every entry point trains, evaluates and exports.

``families.for_model("sasrec")`` is the :class:`~tfrec_onerec.families.base.ModelFamily` that
drives a registered model; ``families.get(name)`` a family by name. See
:mod:`tfrec_onerec.families.base` for what a family declares.

======================  ==============================================  ========================
family                  data                                            models
======================  ==============================================  ========================
``pointwise``           (user, item) impressions with labels            din, din_base
``next_item``           item sequences, leave-one-out                   sasrec
``generative``          session samples + item vectors (tokenizer)      onerec
``session_outcome``     logged sessions with outcome labels (simulator) onerec_reward
``session_value``       logged steps of an environment (simulator)      session_ltv, watchtime_marl
``ensemble_ranking``    requests with candidates' pxtrs (simulator)     emer
``social_graph``        interactions + a faulty social graph (simul.)   lsir
======================  ==============================================  ========================
"""
from __future__ import annotations

from tfrec_onerec.families.base import (EXPORT_INFO_FILE, FamilyData, ModelFamily, TrainResult, UnsupportedOption,
                                        read_export_info)
from tfrec_onerec.families.ensemble_ranking import FAMILY as ENSEMBLE_RANKING
from tfrec_onerec.families.generative import FAMILY as GENERATIVE
from tfrec_onerec.families.next_item import FAMILY as NEXT_ITEM
from tfrec_onerec.families.pointwise import FAMILY as POINTWISE
from tfrec_onerec.families.session_outcome import FAMILY as SESSION_OUTCOME
from tfrec_onerec.families.session_value import FAMILY as SESSION_VALUE
from tfrec_onerec.families.social_graph import FAMILY as SOCIAL_GRAPH

_FAMILIES = {family.name: family for family in (POINTWISE, NEXT_ITEM, GENERATIVE, SESSION_OUTCOME, SESSION_VALUE,
                                                ENSEMBLE_RANKING, SOCIAL_GRAPH)}


def get(name: str) -> ModelFamily:
    """The family called `name`; unknown names raise a KeyError listing the valid ones."""
    try:
        return _FAMILIES[name]
    except KeyError:
        raise KeyError(f"Unknown model family {name!r}; families: {', '.join(names())}.") from None


def names() -> list:
    return sorted(_FAMILIES)


def for_model(model_name: str) -> ModelFamily:
    """The family of the registered model `model_name`."""
    from tfrec_onerec import models

    return get(models.family_of(model_name))


__all__ = ["EXPORT_INFO_FILE", "FamilyData", "ModelFamily", "TrainResult", "UnsupportedOption", "for_model", "get",
           "names", "read_export_info"]
