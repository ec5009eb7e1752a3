"""The model zoo. `get(name)` returns a model class, `list()` the registered names.

Each family lives in its own folder and registers its models on import.
"""
from tfrec_onerec.models import sequence  # noqa: F401  (registers the sequence models)
from tfrec_onerec.models import generative  # noqa: F401  (registers onerec, onerec_reward)
from tfrec_onerec.models.registry import family_of, get, names, register

list = names  # `tfrec_onerec.models.list()`, as users expect; the builtin is not needed here

__all__ = ["family_of", "get", "list", "names", "register"]
