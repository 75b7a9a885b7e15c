"""Settings that keep every variant in its approximate regime at a short CPU length.

At a preset's short sequences most variants quietly become exact attention (a local block of 50
covers a 40-token ListOps input; 64 Nystrom landmarks are more than its tokens), so a table made
there compares nothing. `scale_to(config, length)` sets each variant's window, landmarks,
projected length, features, blocks or buckets so that what one query sees covers at most a
quarter of `length` (LRA's own ListOps settings cover roughly a quarter of its 2,000 tokens:
BigBird's 8 blocks of 64 = 512 keys, local blocks of 50 with l=50,c=10 sparse summaries = 450).

What "covers" means per variant, with L = length and Q = L // 4:
  local               block_size = Q                 (a query sees its block)
  longformer          window = (Q - 1) // 2          (2w + 1 keys, plus the global CLS)
  bigbird             block_size = Q // 10           (3 window + 2 global + 3 random blocks;
                                                      rows beside a global block see 2 more)
  sinkhorn            block_size = Q                 (a query sees one sorted block)
  sparse_transformer  block_size l = 16 (nearest power of two to sqrt L at L=128..362),
                      summary_size c so that l + (L / l) * c <= Q
  nystromformer       num_landmarks = Q; conv_kernel_size = the largest odd size <= Q
  linformer           k = min(k, Q)                  (LRA's k=16 already qualifies at L >= 64)
  performer           num_features = min(m, Q)       (LRA's ListOps m=2 already qualifies)
  reformer            chunk_len = min(chunk_len, Q // 2) (a chunk sees itself and its neighbour)
  mega                chunk_size = min(chunk_size, Q) where chunked (Mega-chunk)
  skyformer           num_landmarks = Q
  rfa                 num_features = min(D, Q)
  routing             num_clusters >= 4 (a cluster holds L / k tokens), or window = min(w, Q)
  long_short          window = min(w, Q // 2)          (2w local keys plus r projections)
  h_transformer_1d    block_size Nr = min(Nr, the even number <= Q / 3) (3 exact blocks a row)
  memory_compressed   factor = max(f, 4)              (L / f compressed keys <= Q); block_size
                      = min(b, Q) where blocked (local memory-compressed blocks)
  luna                packed_length = min(l, Q)
  isab                num_inducing = min(m, Q)
Not scaled, because they have no coverage setting: transformer (exact, the reference),
linear_transformer and cosformer (kernels, no window), aft (every key enters every output; the
local window only shapes learned biases), axial (two hops reach everything; its grid is the
data's), synthesizer (its random mode learns a dense L x L map), and the other sequence mixers
(S4D, S5, LRU, H3, Hyena, long convolutions, SGConv, FNet), whose kernels, recurrences or
transforms span the whole input by design.
"""
from __future__ import annotations

import ml_collections

from models.attention import registry

UNSCALED = ("transformer", "linear_transformer", "synthesizer", "cosformer", "aft", "axial")


def scale_to(config: ml_collections.ConfigDict, length: int) -> dict:
  """Sets `config.model.attention_kwargs` for `length`; returns what it set (for the docs)."""
  quarter = length // 4
  name, kwargs = config.model.attention, config.model.attention_kwargs
  if name == "local":
    changes = {"block_size": quarter}
  elif name == "longformer":
    changes = {"window": (quarter - 1) // 2}
  elif name == "bigbird":
    changes = {"block_size": max(quarter // 10, 1)}
  elif name == "sinkhorn":
    changes = {"block_size": quarter}
  elif name == "sparse_transformer":
    block = 16
    changes = {"block_size": block, "summary_size": max((quarter - block) * block // length, 1)}
  elif name == "nystromformer":
    changes = {"num_landmarks": quarter, "conv_kernel_size": quarter - 1 + quarter % 2}
  elif name == "linformer":
    changes = {"k": min(kwargs.k, quarter)}
  elif name == "performer":
    changes = {"num_features": min(kwargs.num_features, quarter)}
  elif name == "reformer":
    changes = {"chunk_len": min(kwargs.chunk_len, quarter // 2)}
  elif name == "skyformer":
    changes = {"num_landmarks": quarter}
  elif name == "rfa":
    changes = {"num_features": min(kwargs.num_features, quarter)}
  elif name == "routing":
    changes = ({"window": min(kwargs.window, quarter)} if kwargs.window > 0
               else {"num_clusters": max(kwargs.num_clusters, 4)})
  elif name == "long_short":
    changes = {"window": max(min(kwargs.window, quarter // 2), 1)}
  elif name == "h_transformer_1d":
    changes = {"block_size": max(min(kwargs.block_size, quarter // 3 // 2 * 2), 2)}
  elif name == "memory_compressed":  # ceil(L / factor) compressed keys <= Q needs factor >= 4
    changes = {"factor": max(kwargs.factor, 4)}
    if kwargs.block_size > 0:
      changes["block_size"] = min(kwargs.block_size, quarter)
  elif name == "luna":
    changes = {"packed_length": min(kwargs.packed_length, quarter)}
  elif name == "isab":
    changes = {"num_inducing": min(kwargs.num_inducing, quarter)}
  elif name in UNSCALED or (name in registry.names() and registry.get(name).kind == "sequence"):
    # State-space and long-convolution mixers see the whole sequence by design (a kernel or a
    # recurrence as long as the input); Mega-chunk's chunk is its coverage setting.
    changes = ({"chunk_size": min(kwargs.chunk_size, quarter)}
               if name == "mega" and kwargs.chunk_size > 0 else {})
  else:
    raise ValueError(f"configs/approximate_regime.py: no rule for attention {name!r}; add one "
                     "so its preset runs in the approximate regime")
  for field, value in changes.items():
    kwargs[field] = value
  return changes
