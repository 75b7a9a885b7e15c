"""Attention variants. Each file registers one name; importing this package registers all."""
from models.attention import transformer  # noqa: F401
from models.attention.base import MultiHeadAttention  # noqa: F401
from models.attention.registry import build_mixer, check_supports, get, names  # noqa: F401
