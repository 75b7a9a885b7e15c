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
    # Sequence mixers (tests/test_sequence_mixers.py; features = HEADS * HEAD_DIM = 16).
    "s4d": {"state_size": 4},
    "long_conv": {"lam": 0.001},
    "s5": {"state_size": 8, "blocks": 2},
    "lru": {"state_size": 8, "r_min": 0.4, "r_max": 0.95},
    "h3": {"d_state": 4},
    "hyena": {"filter_order": 8},
    "mega": {"z_dim": 8, "hidden_dim": 16, "ndim": 4, "chunk_size": 8},
    "sgconv": {"kernel_dim": 4},
    "rfa": {"num_features": 16},
    "cosformer": {"chunk_size": 5},   # several causal chunks, the last one short
    "skyformer": {"num_landmarks": 8},
    "h_transformer_1d": {"block_size": 2},   # 3 levels at length 16
    # registry-wide tests call with inputs_q=None: the projection from the keys
    "long_short": {"window": 4, "rank": 3, "project_from_inputs": False},
    "routing": {"num_clusters": 2},   # window 8 at length 16
    "aft": {"window": 3},   # AFT-local's band in blocks of 8: two blocks at length 16
    "memory_compressed": {"factor": 3},
    "fnet": {},
    "axial": {},   # the 1-D fold: 4 x 4 at length 16
    "luna": {"packed_length": 4, "num_heads": 2},
    "isab": {"num_inducing": 4, "num_heads": 2},
}

# Kwargs for the compiled-memory check at lengths 4096 and 8192.
MEMORY_KWARGS: dict[str, dict] = {
    # The fixed pattern scores L*(l + c*L/l) pairs. Its default l ~ sqrt(L) makes that
    # O(L*sqrt(L)): 2.8x per doubling, above this check's 2.5x, so the default is checked
    # over 4x the length in test_attention_sparse_transformer.py; here a fixed l=512.
    "sparse_transformer": {"block_size": 512},
    # Axial attention costs L * (rows + cols): O(L^1.5) for the default near-square fold, 2.8x
    # per doubling; its growth over 4x the length is checked in test_attention_axial.py, here
    # rows of a fixed 512 (linear in L while rows <= 512).
    "axial": {"shape": (16, 512)},
    "long_short": {"project_from_inputs": False},   # the check passes no inputs_q
    # window = L / k with a fixed k is O(L^2 / k); a fixed window (k ~ L / window) is linear.
    "routing": {"num_clusters": 32, "window": 256},
}

# Every setting of every mixer that selects a different code path, for the bfloat16 matrix in
# tests/test_attention.py: each entry is combined with SMALL_KWARGS, run causal and
# bidirectional where the variant has a causal form, with dropout on (training) and off
# (evaluation). Independent switches share entries to keep the compiles few; a variant missing
# here, or a bool / choice setting whose values are not all taken, fails a completeness test.
OPTION_MATRIX: dict[str, list[dict]] = {
    # blocks of 5 queries and 3 keys: several blocks, padded last ones (16 = 3 * 5 + 1), and
    # causal key blocks skipped wholly in the future of a query block.
    "transformer": [{"implementation": "dense"},
                    {"implementation": "blocked", "block_q": 5, "block_k": 3},
                    {"implementation": "xla"}, {"implementation": "auto"},
                    {"implementation": "dense", "float32_softmax": False},
                    {"implementation": "blocked", "block_q": 5, "block_k": 3,
                     "float32_softmax": False}],
    "performer": [{"kernel": "softmax"}, {"kernel": "relu"},
                  {"kernel": "softmax", "orthogonal": False, "scaling": "sqrt_d",
                   "redraw": False, "chunk_size": 5}],
    "linear_transformer": [{"chunk_size": 5}],
    "local": [{"look_back": True}, {"look_back": False}],
    "longformer": [{}, {"dilation": 2, "global_positions": ()}],
    "bigbird": [{}, {"num_random_blocks": 0, "num_global_blocks": 0}],
    "linformer": [{"sharing": s} for s in ("none", "headwise", "key_value", "layerwise")],
    "sinkhorn": [{"gumbel_noise": False}, {"gumbel_noise": True}],
    "synthesizer": [{"mode": "dense"}, {"mode": "factorized_dense"}, {"mode": "random"},
                    {"mode": "factorized_random", "trainable": False},
                    {"mode": "mixture", "mixture": ("dense", "random"),
                     "with_dot_product": True}],
    "nystromformer": [{}, {"pinv_init": "original", "conv_kernel_size": 0}],
    "reformer": [{"redraw": True}, {"redraw": False, "n_hashes": 1, "n_buckets": 1}],
    "sparse_transformer": [{"pattern": "fixed", "factorisation": "merged"},
                           {"pattern": "fixed", "factorisation": "heads"},
                           {"pattern": "strided", "factorisation": "merged"},
                           # block_size 0: l from the length (the default)
                           {"pattern": "strided", "factorisation": "heads", "block_size": 0}],
    # Sequence mixers: an entry with bidirectional=True runs non-causal only.
    "s4d": [{}, {"bidirectional": True, "ssm_init": "inv", "disc": "bilinear", "n_ssm": 2},
            {"ssm_init": "legs"}],
    "long_conv": [{}, {"bidirectional": True, "smooth_window": 3, "kernel_init": "double_exp"}],
    "s5": [{"discretization": "zoh", "c_init": "trunc_standard_normal", "conj_sym": True,
            "clip_eigs": False, "bidirectional": False},
           {"discretization": "bilinear", "c_init": "lecun_normal", "conj_sym": False,
            "clip_eigs": True, "bidirectional": True},
           {"c_init": "complex_normal", "blocks": 1, "bidirectional": True}],
    "lru": [{"bidirectional": False},
            {"bidirectional": True, "r_min": 0.9, "r_max": 0.999, "max_phase": 0.314}],
    "h3": [{"disc": "zoh", "measure": "diag-lin", "head_dim": 1},
           {"disc": "bilinear", "measure": "diag-inv", "head_dim": 2}],
    "hyena": [{"form": "paper", "filter_bias": True, "normalized": False, "modulate": True},
              {"form": "safari", "order": 3, "filter_bias": False, "normalized": True,
               "modulate": False, "emb_dim": 5, "num_inner_mlps": 1}],
    "mega": [{"attention_activation": "softmax", "chunk_size": 0},
             {"attention_activation": "laplace", "bidirectional": True, "truncation": 8,
              "hidden_dropout_rate": 0.1},
             {"attention_activation": "relu2", "bidirectional": False, "chunk_size": 4}],
    # block 8 at length 16: the one-level exact path
    "h_transformer_1d": [{}, {"block_size": 8}],
    "long_short": [{"project_from_inputs": True}, {"project_from_inputs": False, "rank": 0,
                                                   "window": 5}],
    # gating is causal-only (a build-time error otherwise): its entry runs causal only.
    "rfa": [{"feature_map": "gaussian", "learn_sigma": True, "orthogonal": False,
             "redraw": True},
            {"feature_map": "arccos", "learn_sigma": False, "orthogonal": True, "redraw": False,
             "chunk_size": 5},
            {"gating": True, "chunk_size": 5}],
    "cosformer": [{}],
    "skyformer": [{"redraw": True}, {"redraw": False, "gamma": 0.0, "pinv_iterations": 2}],
    "sgconv": [{"interpolation": "linear", "bidirectional": True},
               {"interpolation": "nearest", "bidirectional": False, "decay_min": 1.5,
                "decay_max": 3.0}],
    # blocks of 6 at length 16: a partial last block and windows ending past a block's end
    "memory_compressed": [{"use_bias": True}, {"use_bias": False, "block_size": 6},
                          {"factor": 1, "block_size": 0}],
    "fnet": [{}],   # no settings
    "axial": [{"shape": ()}, {"shape": (3, 6)}],   # 3 x 6: a padded last row
    "luna": [{"tie_kv": False, "dynamic_projection": True},
             {"tie_kv": True, "dynamic_projection": False, "packed_dropout_rate": 0.1}],
    "isab": [{"layer_norm": True}, {"layer_norm": False}],
    "routing": [{}, {"num_clusters": 3, "window": 5}],   # overlapping / uncovered tokens
    "aft": [{"mode": "local"}, {"mode": "simple"}, {"mode": "local", "window": 12}],
}
