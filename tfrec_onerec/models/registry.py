"""The model registry: zoo models by short name."""
from __future__ import annotations

from tfrec_onerec.serialization import register_serializable

_MODELS: dict = {}


def register(name: str):
    """Class decorator: registers a model under `name` and for Keras serialization."""

    def wrap(cls):
        if name in _MODELS and _MODELS[name] is not cls:
            raise ValueError(f"Model name {name!r} is already registered to {_MODELS[name].__name__}.")
        cls.registry_name = name
        _MODELS[name] = register_serializable(cls)
        return cls

    return wrap


def get(name: str):
    """The model class registered as `name`; unknown names raise a KeyError listing the valid ones."""
    try:
        return _MODELS[name]
    except KeyError:
        raise KeyError(f"Unknown model {name!r}; valid models: {', '.join(names())}.") from None


def names() -> list:
    """Sorted names of all registered models."""
    return sorted(_MODELS)
