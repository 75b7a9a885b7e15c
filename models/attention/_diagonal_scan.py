"""A diagonal complex linear recurrence x_k = a * x_{k-1} + b_k, shared by S5 and the LRU.

Both papers compute it with a parallel scan (S5 sec. 3.2 / App. H; LRU sec. 3 and App. A):
`jax.lax.associative_scan` over the pairs (a_k, b_k) with the operator
(a_i, b_i) . (a_j, b_j) = (a_j a_i, a_j b_i + b_j), O(L log L) work, O(L) memory, no [L, L] array.
The state starts at zero. The reverse scan (bidirectional forms) runs the same recurrence from the
last position to the first; with zero inputs at padded positions it carries nothing out of them.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _combine(left, right):
  """The scan's associative operator on (a, b) pairs (elementwise, so any batch shape)."""
  a_i, b_i = left
  a_j, b_j = right
  return a_j * a_i, a_j * b_i + b_j


def diagonal_scan(a, bu, *, reverse=False):
  """All states of x_k = a * x_{k-1} + bu_k (x_{-1} = 0), along axis -2.

  a: `[..., P]` or `[..., L, P]` complex (broadcast over the length axis);
  bu: `[..., L, P]` complex. Returns `[..., L, P]` complex. `reverse=True` runs from the end:
  x_k = a * x_{k+1} + bu_k with x_L = 0."""
  if a.ndim == bu.ndim - 1:
    a = a[..., None, :]
  a = jnp.broadcast_to(a, bu.shape)
  _, states = jax.lax.associative_scan(_combine, (a, bu), reverse=reverse, axis=bu.ndim - 2)
  return states


def zero_padding(x, mask):
  """x `[b, l, h]` with padded positions (mask False) set to zero, in float32."""
  x = jnp.asarray(x, jnp.float32)
  if mask is None:
    return x
  return jnp.where(mask[..., None], x, 0.0)
