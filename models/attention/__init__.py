"""Attention variants. Every module in this package registers its variant on import, and
importing the package imports them all, so a new file is registered the day it lands."""
import importlib
import pkgutil

from models.attention.registry import build_mixer, check_supports, get, names  # noqa: F401

_NOT_VARIANTS = {"registry", "base", "masks", "blocking", "blocked_softmax", "feature_maps",
                 "favor_streamed", "positions"}
for _module in pkgutil.iter_modules(__path__):
  if _module.name not in _NOT_VARIANTS and not _module.name.startswith("_"):
    importlib.import_module(f"{__name__}.{_module.name}")

from models.attention.base import MultiHeadAttention  # noqa: E402,F401
