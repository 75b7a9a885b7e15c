"""Small per-variant settings for the registry-wide attention tests.

A variant whose defaults do not fit the tiny test shapes (length 16, 2 heads, head_dim 8)
adds its kwargs here; every registered name is tested whether or not it appears.
"""
LENGTH = 16
HEADS = 2
HEAD_DIM = 8

SMALL_KWARGS: dict[str, dict] = {
    "transformer": {},
    "reformer": {"n_buckets": 4, "n_hashes": 2, "chunk_len": 4},
    "sinkhorn": {"block_size": 4},
}

# Kwargs for the compiled-memory check at lengths 4096 and 8192.
MEMORY_KWARGS: dict[str, dict] = {}
