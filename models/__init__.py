"""Models: attention variants, the shared encoder, heads. Knows nothing of tasks or files."""
from models.build import build_model  # noqa: F401
