"""GFLOP/s of the block products of exact attention on XLA's CPU backend, by operand layout.

Backs the design note on `models/attention/blocked_softmax.py`: a product contracted over the
rows of its left operand (FlashAttention's dV = P^T dO and dK = dS^T Q) runs much slower on XLA's
CPU than the transposed product (dV^T = dO^T P), so the kernel accumulates dK and dV transposed.

    python benchmarks/cpu_contractions.py [--block_q=512] [--length=4096] [--repeats=10]
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lra import malloc  # pylint: disable=wrong-import-position

malloc.keep_freed_memory()  # before jax starts its threads

import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position


def contractions(bq: int, length: int, d: int = 64, bh: int = 8) -> list[tuple]:
  """(name, left shape, right shape, einsum) of each block product."""
  return [("S = Q K^T", (bh, bq, d), (bh, length, d), "bqd,bkd->bqk"),
          ("O = P V", (bh, bq, length), (bh, length, d), "bqk,bkd->bqd"),
          ("dV = P^T dO (rows of P contracted)", (bh, bq, length), (bh, bq, d), "bqk,bqd->bkd"),
          ("dV^T = dO^T P (as the kernel does)", (bh, bq, d), (bh, bq, length), "bqd,bqk->bdk")]


def gflops(shape_a, shape_b, equation, repeats) -> float:
  a, b = jnp.ones(shape_a), jnp.ones(shape_b)
  product = jax.jit(lambda a, b: jnp.einsum(equation, a, b))
  cost = product.lower(a, b).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  jax.block_until_ready(product(a, b))
  times = []
  for _ in range(repeats):
    started = time.perf_counter()
    jax.block_until_ready(product(a, b))
    times.append(time.perf_counter() - started)
  return cost["flops"] / statistics.median(times) / 1e9


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--block_q", type=int, default=512)
  parser.add_argument("--length", type=int, default=4096)
  parser.add_argument("--repeats", type=int, default=10)
  args = parser.parse_args()
  print(f"| product ({args.block_q} queries x {args.length} keys, 8 batch x heads, d=64) "
        "| GFLOP/s |\n|---|---|")
  for name, shape_a, shape_b, equation in contractions(args.block_q, args.length):
    print(f"| {name} `{equation}` | {gflops(shape_a, shape_b, equation, args.repeats):.1f} |")


if __name__ == "__main__":
  main()
