"""The model zoo. `get(name)` returns a model class, `list()` the registered names, `family_of(name)`
the name of its family (:mod:`tfrec_onerec.families`).

Each family of models lives in its own folder (``sequence/``, ``generative/``...). Every module
below this package is imported here, so a model registers itself (``@register(name, family=...)``)
by merely existing: adding a model is adding its module.
"""
import importlib
import pkgutil

from tfrec_onerec.models.registry import family_of, get, names, register


def _import_all_models() -> None:
    for module in pkgutil.walk_packages(__path__, prefix=f"{__name__}."):
        importlib.import_module(module.name)


_import_all_models()

list = names  # `tfrec_onerec.models.list()`, as users expect; the builtin is not needed here

__all__ = ["family_of", "get", "list", "names", "register"]
