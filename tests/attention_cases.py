"""Small per-variant settings for the registry-wide attention tests.

A variant whose defaults do not fit the tiny test shapes (length 16, 2 heads, head_dim 8)
adds its kwargs here; every registered name is tested whether or not it appears.
"""
LENGTH = 16
HEADS = 2
HEAD_DIM = 8

SMALL_KWARGS: dict[str, dict] = {
    "transformer": {},
    "local": {"block_size": 4, "look_back": True},
    "sparse_transformer": {"block_size": 4, "summary_size": 2},
    "longformer": {"window": 3, "global_positions": (0, 5)},
    "bigbird": {"block_size": 2, "num_random_blocks": 2},
    "reformer": {"n_buckets": 4, "n_hashes": 2, "chunk_len": 4},
    "sinkhorn": {"block_size": 4},
}

# Kwargs for the compiled-memory check at lengths 4096 and 8192.
MEMORY_KWARGS: dict[str, dict] = {
    # sparse_transformer's LRA default (fixed, l=128, c=32) scores L*L*c/l pairs, quadratic
    # for a fixed l; the strided pattern at l=128 is dominated by its O(L*l) band up to 8192.
    "sparse_transformer": {"pattern": "strided"},
}
