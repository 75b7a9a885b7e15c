"""`python -m lra.benchmark --mode=decode`: generation speed and cache memory per causal variant.

    python -m lra.benchmark --mode=decode --attention=all --lengths=1024,2048,4096,8192 \
        --batch=1 --out=decode.json [--markdown=decode.md]

For each variant that decodes incrementally (registry `decode`) and each length N: a decoder
LM (`models.decoder.DecoderLM`, byte vocabulary, `--num_layers` blocks of the benchmark's
sizes) generates N tokens greedily after a one-token prompt, the whole loop one jitted
`lax.scan` (models/generate.py). Measured: tokens/s (N * batch over the median time of
`--repeats` generations after compilation), the cache's bytes (every array of the decoding
state: KV caches grow with N, running and recurrent states do not, windows stop at the
window), the compile time and the peak RSS. A causal variant that cannot decode gets a row
with its registry caveat. Each (variant, N) runs in its own subprocess, as the train-step
benchmark's rows.
"""
from __future__ import annotations

import statistics
import time

COLUMNS = ("tokens_per_s", "cache_bytes")


def decode_lm(spec: dict):
  """The decoder LM a decode spec describes, and its parameters."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel

  from configs import defaults  # pylint: disable=import-outside-toplevel
  from models import build_model  # pylint: disable=import-outside-toplevel

  cfg = defaults.shared_config().model
  cfg.attention = spec["attention"]
  cfg.attention_kwargs = ml_collections.ConfigDict(spec["kwargs"])
  cfg.emb_dim, cfg.num_heads, cfg.qkv_dim = spec["emb_dim"], spec["num_heads"], spec["qkv_dim"]
  cfg.mlp_dim, cfg.num_layers = spec["mlp_dim"], spec["num_layers"]
  cfg.dropout_rate = cfg.attention_dropout_rate = 0.0
  model = build_model(cfg, vocab_size=257, num_classes=257, max_len=spec["length"], mode="lm")
  short = {"inputs": jnp.ones((spec["batch"], 8), jnp.int32),
           "mask": jnp.ones((spec["batch"], 8), bool)}
  params = jax.jit(lambda k: model.init(k, short))(jax.random.key(0))["params"]
  return model, params


def measure_decode(spec: dict) -> dict:
  """One (variant, N): compile time, tokens/s of generating N tokens, cache bytes, peak RSS."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from lra.run_log import peak_rss_bytes  # pylint: disable=import-outside-toplevel
  from models import generate  # pylint: disable=import-outside-toplevel
  from models.attention import registry  # pylint: disable=import-outside-toplevel

  registry.check_decodes(spec["attention"])
  model, params = decode_lm(spec)
  n, batch = spec["length"], spec["batch"]
  prompt = jnp.ones((batch, 1), jnp.int32)
  run = jax.jit(lambda p: generate.generate(model, p, prompt, n - 1))
  started = time.perf_counter()
  compiled = run.lower(params).compile()
  compile_time = time.perf_counter() - started
  cache = jax.eval_shape(lambda p: generate.init_cache(model, p, batch, n), params)
  jax.block_until_ready(compiled(params))  # warm-up
  times = []
  for _ in range(spec["repeats"]):
    started = time.perf_counter()
    out = compiled(params)
    jax.block_until_ready(out)
    times.append(time.perf_counter() - started)
  seconds = statistics.median(times)
  return {"status": "ok", "decode": registry.get(spec["attention"]).decode,
          "tokens_per_s": n * batch / seconds, "seconds": seconds,
          "cache_bytes": generate.cache_bytes(cache), "compile_time_s": compile_time,
          "peak_rss_bytes": peak_rss_bytes()}


def causal_names(requested: list[str]) -> list[str]:
  """The causal variants among `requested` (the decode benchmark's rows)."""
  from models.attention import registry  # pylint: disable=import-outside-toplevel
  return [n for n in requested if registry.get(n).supports_causal]


def cannot_decode_row(name: str, length: int, batch: int) -> dict | None:
  """The row of a causal variant that cannot decode (its caveat), or None if it can."""
  from models.attention import registry  # pylint: disable=import-outside-toplevel
  spec = registry.get(name)
  if spec.decode:
    return None
  return {"attention": name, "length": length, "batch": batch, "decode": "",
          "status": f"cannot decode: {spec.decode_caveat}"}


def _size(nbytes) -> str:
  if nbytes is None:
    return "-"
  for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
    if nbytes >= scale:
      return f"{nbytes / scale:.1f} {unit}"
  return f"{nbytes} B"


def markdown(rows: list[dict]) -> str:
  """Variants down, lengths across: tokens/s and the cache's size per length."""
  lengths = sorted({r["length"] for r in rows})
  names = sorted({r["attention"] for r in rows}, key=lambda n: (n != "transformer", n))
  by = {(r["attention"], r["length"]): r for r in rows}
  head = (["variant", "state"] + [f"tokens/s {n}" for n in lengths]
          + [f"cache {n}" for n in lengths])
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name in names:
    cells = [by.get((name, n)) for n in lengths]
    kind = next((c.get("decode") for c in cells if c and c.get("decode")), "") or "-"
    if all(c and c["status"].startswith("cannot decode") for c in cells):
      lines.append(f"| {name} | - | " + " | ".join(["no incremental form"] * len(lengths))
                   + " | " + " | ".join(["-"] * len(lengths)) + " |")
      continue
    speed = [f"{c['tokens_per_s']:,.0f}" if c and c["status"] == "ok" else
             (c["status"].split(":")[0] if c else "-") for c in cells]
    memory = [_size(c.get("cache_bytes")) if c and c["status"] == "ok" else "-" for c in cells]
    lines.append(f"| {name} | {kind} | " + " | ".join(speed + memory) + " |")
  return "\n".join(lines) + "\n"
