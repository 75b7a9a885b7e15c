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
    # Defaults (128 landmarks) would be the exact m >= L limit at length 16.
    "nystromformer": {"num_landmarks": 4, "conv_kernel_size": 3},
}

# Kwargs for the compiled-memory check at lengths 4096 and 8192.
MEMORY_KWARGS: dict[str, dict] = {
    # The fixed pattern scores L*(l + c*L/l) pairs: quadratic for a fixed l, with a small
    # constant (the default l=256, c=8 grows 2.2x in an encoder block, 2.5x in this bare
    # 2-head mixer). The paper keeps it O(L*sqrt(L)) by l ~ sqrt(L); this check takes l=512.
    "sparse_transformer": {"block_size": 512},
}
