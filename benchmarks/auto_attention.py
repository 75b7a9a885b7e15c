"""Where `transformer`'s "auto" implementation switches from dense to blocked on a CPU.

One encoder block of the transformer (LRA Text sizes: embedding 256, 4 heads, qkv 256, MLP
1024), batch 2, the train step (forward + backward + Adam, `lra.benchmark`'s step), at each
length under the "dense", "blocked" and "auto" implementations, all in one run. Per length the
three steps are compiled, warmed up, then timed in turn (dense, blocked, auto, dense, ...) for
`--repeats` rounds, so a change in the machine's load (it is shared) falls on all three alike;
medians. Writes the seconds, the dense / blocked ratio per length, the crossover they give (the
shortest length from which blocked is faster than dense by at least MARGIN at every longer
measured length; also the one without a margin) and `CPU_BLOCKED_FROM` of
`models/attention/transformer.py` to docs/auto_attention_cpu.json.

    python benchmarks/auto_attention.py [--lengths=256,512,1024,2048,4096,8192] [--repeats=5]
        [--out=docs/auto_attention_cpu.json]
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lra import malloc  # pylint: disable=wrong-import-position

malloc.keep_freed_memory()  # before jax starts its threads (as lra.benchmark's workers)

import jax  # pylint: disable=wrong-import-position
import optax  # pylint: disable=wrong-import-position

from lra import benchmark  # pylint: disable=wrong-import-position
from models.attention import transformer  # pylint: disable=wrong-import-position

IMPLEMENTATIONS = ("dense", "blocked", "auto")
# Below this relative difference the two kernels are tied on this (shared, 2-core) machine: from
# 256 to 2048 their order flips between runs (dense / blocked from 0.88 to 1.19), and in a tie
# "auto" keeps dense, the plain computation (its [L, L] weights are small there).
MARGIN = 0.10


def compiled_step(length: int, implementation: str):
  """The jitted train step of one block and its (params, opt_state, batch, rng)."""
  spec = {"attention": "transformer", "length": length, "batch": 2, "emb_dim": 256,
          "num_heads": 4, "qkv_dim": 256, "mlp_dim": 1024, "num_layers": 1, "block": "block",
          "model": "block", "kwargs": {"implementation": implementation}}
  apply, params, batch = benchmark._module_and_batch(spec)  # pylint: disable=protected-access
  tx = optax.adamw(1e-4, b1=0.9, b2=0.98, eps=1e-9, weight_decay=0.1)

  def train_step(params, opt_state, batch, rng):
    loss, grads = jax.value_and_grad(lambda p: (apply(p, batch, rng)[0] ** 2).mean())(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  state = (params, tx.init(params), batch, jax.random.key(1))
  return jax.jit(train_step).lower(*state).compile(), state


def time_length(length: int, repeats: int) -> dict:
  steps = {impl: compiled_step(length, impl) for impl in IMPLEMENTATIONS}
  for step, state in steps.values():  # warm-up
    jax.block_until_ready(step(*state))
  times = {impl: [] for impl in IMPLEMENTATIONS}
  for _ in range(repeats):
    for impl, (step, state) in steps.items():
      started = time.perf_counter()
      jax.block_until_ready(step(*state))
      times[impl].append(time.perf_counter() - started)
  return times


def measured_crossover(seconds: dict, margin: float = MARGIN) -> int | None:
  """The shortest length L from which blocked is faster than dense by at least `margin`
  (dense / blocked >= 1 + margin) at L and at every longer measured length."""
  crossover = None
  for n in sorted(seconds, reverse=True):
    if seconds[n]["dense"] < (1.0 + margin) * seconds[n]["blocked"]:
      break
    crossover = n
  return crossover


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--lengths", default="256,512,1024,2048,4096,8192")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--out", default="docs/auto_attention_cpu.json")
  args = parser.parse_args()
  seconds, all_times, chose = {}, {}, {}
  for length in [int(n) for n in args.lengths.split(",")]:
    times = time_length(length, args.repeats)
    all_times[length] = times
    seconds[length] = {impl: statistics.median(t) for impl, t in times.items()}
    chose[length] = transformer.choose_implementation("cpu", length, False)
    s = seconds[length]
    cells = "  ".join(f"{impl} {t:.4f}" for impl, t in s.items())
    print(f"{length:>5}: {cells}  dense/blocked {s['dense'] / s['blocked']:.2f}  "
          f"auto runs {chose[length]}", flush=True)
  crossover = measured_crossover(seconds)
  result = {
      "what": "one transformer encoder block (emb 256, 4 heads, qkv 256, MLP 1024), batch 2, "
              "train step (fwd + bwd + Adam); median seconds over `repeats` interleaved rounds",
      "machine": {"cpus": os.cpu_count(), "processor": platform.processor(),
                  "jax": jax.__version__, "backend": jax.default_backend(),
                  "load_average_at_end": os.getloadavg()},
      "repeats": args.repeats, "margin": MARGIN, "measured_crossover": crossover,
      "crossover_without_margin": measured_crossover(seconds, 0.0),
      "CPU_BLOCKED_FROM": transformer.CPU_BLOCKED_FROM,
      "seconds": {str(n): s for n, s in seconds.items()},
      "dense_over_blocked": {str(n): s["dense"] / s["blocked"] for n, s in seconds.items()},
      "auto_over_fastest": {str(n): s["auto"] / min(s["dense"], s["blocked"])
                            for n, s in seconds.items()},
      "auto_runs": {str(n): c for n, c in chose.items()},
      "all_times": {str(n): t for n, t in all_times.items()}}
  Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
  print(f"measured crossover {crossover}; CPU_BLOCKED_FROM {transformer.CPU_BLOCKED_FROM}; "
        f"wrote {args.out}")


if __name__ == "__main__":
  main()
