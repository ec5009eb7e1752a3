"""The model registry: zoo models by short name, each with the name of its model family.

A model registers with the family that drives it (``@register("sasrec", family="next_item")``);
:mod:`tfrec_onerec.families` says what each family reads, how it trains, evaluates and exports.
The registry keeps only the family's *name*: models sit below the families in the import layers.
"""
from __future__ import annotations

from tfrec_onerec.serialization import register_serializable

_MODELS: dict = {}
_FAMILIES: dict = {}


def register(name: str, family: str):
    """Class decorator: registers a model under `name`, with its family, and for Keras serialization.

    Args:
        name: the short name (``tfrec-onerec train --model NAME``).
        family: the name of the model family (:mod:`tfrec_onerec.families`), e.g.
            ``"pointwise"``, ``"next_item"``, ``"generative"``, ``"session_outcome"``.
    """

    def wrap(cls):
        if name in _MODELS and _MODELS[name] is not cls:
            raise ValueError(f"Model name {name!r} is already registered to {_MODELS[name].__name__}.")
        cls.registry_name = name
        cls.family_name = family
        _MODELS[name] = register_serializable(cls)
        _FAMILIES[name] = family
        return cls

    return wrap


def get(name: str):
    """The model class registered as `name`; unknown names raise a KeyError listing the valid ones."""
    try:
        return _MODELS[name]
    except KeyError:
        raise KeyError(f"Unknown model {name!r}; valid models: {', '.join(names())}.") from None


def family_of(name: str) -> str:
    """The family name the model `name` registered with."""
    get(name)
    return _FAMILIES[name]


def names() -> list:
    """Sorted names of all registered models."""
    return sorted(_MODELS)
