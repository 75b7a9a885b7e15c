"""The one mixer registry: a name -> mixer class, what kind it is and what it supports.

Two kinds of mixer share it:
  "qkv"       an attention variant (the X-formers): it takes projected queries, keys and values
              `[batch, length, heads, head_dim]` and returns the mixed values in that layout;
              the shared q/k/v/output projections live in `models/attention/base.py`.
  "sequence"  a state-space or long-convolution mixer (S4D, S5, LRU, Mega, H3, Hyena, ...): it
              takes the block's input `x` `[batch, length, features]` and its padding mask and
              returns `[batch, length, features]`, with whatever projections its paper uses; the
              shared base calls it without projections. Its call:
              `mixer(x, mask, deterministic=True)`; `mask` is bool `[batch, length]` (True =
              real token) or None. `causal=True` means a strictly left-to-right mixer.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Mapping

import flax.linen as nn


@dataclasses.dataclass(frozen=True)
class AttentionSpec:
  name: str
  mixer: type[nn.Module]
  supports_causal: bool
  supports_cross: bool
  # Mixers that need a fixed maximum length (e.g. learned length projections) say so.
  needs_max_len: bool = False
  # Sub-quadratic variants never build an [L, L] array; tests check it by compiled memory.
  subquadratic: bool = True
  # False where the causal form is causal only approximately: no gradient reaches the future,
  # but future tokens can still move earlier outputs (`causal_caveat` says how). Building it
  # causally warns; the forward-pass no-leak test skips it (the gradient test does not).
  causal_exact: bool = True
  causal_caveat: str = ""
  kind: str = "qkv"  # or "sequence" (see the module docstring)
  # Head and position options (models/attention/base.py) the variant can take:
  rope: bool = False        # rotary positions on q and k before the mixer (q/k-based variants)
  kv_heads: bool = False    # fewer key/value heads than query heads (MQA / GQA)
  score_bias: bool = False  # an additive score bias (ALiBi, T5): only variants forming scores
  # Luna-style mixers carry an extra sequence from block to block: the call is
  # `mixer(x, mask, memory=m, deterministic=...)` -> `(y, next_memory)`; memory=None at block 0.
  memory: bool = False
  # Mixers that keep training state besides parameters (Routing's EMA centroids, in the
  # "batch_stats" collection train.py updates and checkpoints) say so: reversible layers, which
  # apply each branch with its parameters only, refuse them.
  batch_stats: bool = False
  # Incremental decoding (a causal decoder's `generate`; see models/decoding.py): the kind of
  # state the mixer keeps between tokens, "" where it cannot decode (`decode_caveat` says why):
  #   "kv"         every past key and value (exact attention's cache: grows with the tokens)
  #   "window"     only the keys/values the pattern can still reach (a fixed window)
  #   "state"      a constant-size running state (linear attention as an RNN)
  #   "recurrent"  the recurrent state of a state-space or recurrent mixer (constant size)
  #   "history"    the past inputs of a long convolution (grows with the tokens)
  decode: str = ""
  decode_caveat: str = ""


KINDS = ("qkv", "sequence")
DECODE_KINDS = ("kv", "window", "state", "recurrent", "history")


class ApproximatelyCausalWarning(UserWarning):
  """A variant registered with `causal_exact=False` was built causally."""


_REGISTRY: dict[str, AttentionSpec] = {}
# Context fields the base may hand to a mixer that declares them as dataclass fields
# (`num_heads`: config.model.num_heads, for sequence mixers with heads of their own: Luna, ISAB).
CONTEXT_FIELDS = ("causal", "dropout_rate", "max_len", "kv_max_len", "num_heads")


def register(name: str, *, causal: bool, cross: bool, needs_max_len: bool = False,
             subquadratic: bool = True, causal_exact: bool = True, causal_caveat: str = "",
             kind: str = "qkv", rope: bool | None = None, kv_heads: bool | None = None,
             score_bias: bool = False, memory: bool = False, batch_stats: bool = False,
             decode: str = "", decode_caveat: str = ""):
  """Class decorator: `@register("performer", causal=True, cross=True)`;
  `@register("s5", causal=True, cross=False, kind="sequence")` for a sequence mixer.

  `rope` and `kv_heads` default to True for a "qkv" variant (the base rotates q and k, and
  repeats the key/value heads, before the mixer sees them) and False for a sequence mixer; a
  qkv variant that does not compare queries with keys by a dot product says `rope=False`.
  `score_bias=True`: the mixer's call takes `score_bias=fn`, fn(q_pos, k_pos) -> [h, lq, lk]
  float32, added to its logits (ALiBi, T5 relative bias).
  `decode`: the state kind of incremental decoding (AttentionSpec.decode); a causal variant
  without one gives `decode_caveat` (why it cannot decode token by token)."""
  if causal and not causal_exact and not causal_caveat:
    raise ValueError(f"attention {name!r}: causal_exact=False needs a causal_caveat (why)")
  if kind not in KINDS:
    raise ValueError(f"attention {name!r}: kind={kind!r}; expected one of {KINDS}")
  if kind == "sequence" and cross:
    raise ValueError(f"attention {name!r}: a sequence mixer reads one sequence; no cross form")
  if kind == "sequence" and (rope or kv_heads or score_bias):
    raise ValueError(f"attention {name!r}: a sequence mixer has no q/k heads for RoPE, "
                     "key/value heads or a score bias")
  if memory and kind != "sequence":
    raise ValueError(f"attention {name!r}: memory=True is for sequence mixers")
  if decode and decode not in DECODE_KINDS:
    raise ValueError(f"attention {name!r}: decode={decode!r}; expected one of {DECODE_KINDS}")
  if decode and not causal:
    raise ValueError(f"attention {name!r}: decode={decode!r} needs a causal form")
  rope = kind == "qkv" if rope is None else rope
  kv_heads = kind == "qkv" if kv_heads is None else kv_heads

  def decorate(cls):
    if name in _REGISTRY:
      raise ValueError(f"attention {name!r} is registered twice "
                       f"({_REGISTRY[name].mixer.__module__} and {cls.__module__})")
    _REGISTRY[name] = AttentionSpec(name, cls, causal, cross, needs_max_len, subquadratic,
                                    causal_exact, causal_caveat, kind, rope, kv_heads,
                                    score_bias, memory, batch_stats, decode, decode_caveat)
    return cls

  return decorate


def names(kind: str | None = None) -> list[str]:
  """Every registered name, or those of one kind ("qkv" or "sequence")."""
  _import_variants()
  if kind is not None and kind not in KINDS:
    raise ValueError(f"kind={kind!r}; expected one of {KINDS}")
  return sorted(n for n, spec in _REGISTRY.items() if kind in (None, spec.kind))


def get(name: str) -> AttentionSpec:
  _import_variants()
  if name not in _REGISTRY:
    raise ValueError(f"unknown attention {name!r} (config.model.attention); "
                     f"registered: {', '.join(sorted(_REGISTRY))}")
  return _REGISTRY[name]


def check_supports(name: str, *, causal: bool = False, cross: bool = False) -> AttentionSpec:
  """Fails at build time when a variant is asked for something it cannot do."""
  spec = get(name)
  if causal and not spec.supports_causal:
    raise ValueError(f"attention {name!r} has no causal form; causal variants: "
                     f"{', '.join(n for n in names() if _REGISTRY[n].supports_causal)}")
  if cross and not spec.supports_cross:
    raise ValueError(f"attention {name!r} does not support cross attention; variants that do: "
                     f"{', '.join(n for n in names() if _REGISTRY[n].supports_cross)}")
  return spec


def check_decodes(name: str) -> AttentionSpec:
  """Fails at build time when a variant cannot decode incrementally (`generate`)."""
  spec = check_supports(name, causal=True)
  if not spec.decode:
    why = f": {spec.decode_caveat}" if spec.decode_caveat else ""
    raise ValueError(
        f"attention {name!r} cannot decode incrementally{why}; variants that can: "
        f"{', '.join(n for n in names() if _REGISTRY[n].decode)}")
  return spec


def build_mixer(attention: str, kwargs: Mapping[str, Any] | None, *, causal: bool = False,
                cross: bool = False, name: str | None = None, **context) -> nn.Module:
  """Builds the mixer module of variant `attention`, checking `kwargs` against its fields."""
  spec = check_supports(attention, causal=causal, cross=cross)
  fields = {f.name for f in dataclasses.fields(spec.mixer)
            if f.name not in ("parent", "name") and f.init}
  kwargs = dict(kwargs or {})
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    allowed = sorted(fields - set(CONTEXT_FIELDS))
    raise ValueError(f"attention {attention!r} got unknown config.model.attention_kwargs "
                     f"{unknown}; it accepts: {allowed}")
  context["causal"] = causal
  if context.get("dropout_rate") and "dropout_rate" not in fields:
    raise ValueError(
        f"attention {attention!r} has no attention dropout (it forms no attention weights to "
        f"drop) but config.model.attention_dropout_rate={context['dropout_rate']}; set it to 0 "
        "(the variant's configs do)")
  for key, value in context.items():
    if key not in CONTEXT_FIELDS:
      raise ValueError(f"unknown mixer context field {key!r}")
    if key in fields and key not in kwargs:
      kwargs[key] = value
  if causal and "causal" not in fields:
    raise ValueError(f"attention {attention!r} is registered as causal but has no `causal` field")
  if causal and not spec.causal_exact:
    # Python shows a warning once per message and call site, i.e. once per variant here.
    warnings.warn(f"attention {attention!r} is only approximately causal: {spec.causal_caveat}",
                  ApproximatelyCausalWarning, stacklevel=2)
  return spec.mixer(**kwargs, name=name)


def _import_variants():
  # Importing the package registers every variant file it lists.
  import models.attention  # noqa: F401  pylint: disable=import-outside-toplevel
