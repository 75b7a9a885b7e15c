"""Fields every config has. Task bases fill in their LRA values; a config is locked once
built, so a misspelt override (`--config.model.emb_dm=...`) is an error.

`config.model.attention_kwargs` carries every setting of the chosen mixer (its dataclass
fields with their defaults), so the run's config.json shows the whole model and any setting can
be overridden: `--config.model.attention_kwargs.num_features=512`."""
from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import typing
from typing import Any, Mapping

import ml_collections
from ml_collections import config_dict

from models.attention import registry


def shared_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.task = ""
  config.data_dir = ""   # an LRA release (or its task folder); "" = built-in/generated data
  config.cache_dir = ""  # generated data and caches; "" = $LRA_CACHE_DIR or ~/.cache/lra_zoo
  config.seed = 0        # model init, dropout and batch order
  config.data = ml_collections.ConfigDict({"max_length": 0})

  model = config.model = ml_collections.ConfigDict()
  model.attention = "transformer"
  model.attention_kwargs = mixer_settings(registry.get("transformer").mixer)
  model.emb_dim = 0
  model.num_heads = 0
  model.num_layers = 0
  model.qkv_dim = 0
  model.mlp_dim = 0
  model.dropout_rate = 0.1
  model.attention_dropout_rate = 0.1
  model.pooling = "CLS"          # "CLS" (a prepended learned token) or "MEAN"
  model.positions = "sinusoidal"  # or "learned"
  model.activation = "gelu"      # LRA's MlpBlock uses GELU
  model.causal = False
  model.reversible = False       # RevNet residuals (Reformer sec. 3)
  model.ffn_chunk_size = 0       # chunked feed-forward (Reformer sec. 3); 0 = off
  model.dtype = "float32"        # "bfloat16": bfloat16 compute; parameters, optimizer state and
                                 # loss stay float32 (train.py; the modules' param_dtype)
  model.remat = False            # rematerialise each block in the backward pass (nn.remat):
                                 # activation memory of one block instead of all, ~1/3 more compute
  # The block (models/blocks.py), for the recipes of the state-space / long-convolution papers:
  model.norm = "layer"           # "layer", "batch" (masked batch statistics; running averages)
                                 # or "none" (no normalisation, as ReZero)
  model.prenorm = True           # x + f(norm(x)) (LRA's); False: norm(x + f(x)), no final norm
  model.ffn = "mlp"              # "mlp" (LRA's feed-forward sublayer) or an output stage on the
                                 # mixer branch with no feed-forward: "glu", "half_glu1",
                                 # "half_glu2", "none" (models/blocks.py says what each is);
                                 # "gated": the GLU feed-forward (Shazeer 2020) with
                                 # `activation`: "gelu" = GEGLU, "silu" = SwiGLU
  model.rezero = False           # ReZero residuals x + alpha*f(x), alpha=0 at init (Bachlechner
                                 # et al. 2020); the paper's ReZero also sets norm="none"
  # Head and position options of the attention (models/attention/base.py; qkv variants only,
  # and a variant that cannot take one says so when the model is built):
  model.num_kv_heads = 0         # key/value heads: 0 = num_heads; 1 = multi-query (Shazeer 2019);
                                 # a divisor of num_heads = grouped-query (Ainslie et al. 2023)
  model.rope = False             # rotary positions on q and k (Su et al. 2021)
  model.score_bias = "none"      # "alibi" (Press et al. 2022) or "t5" (Raffel et al. 2020) bias
                                 # on the attention scores, for variants that form scores
  model.qk_norm = False          # query-key normalisation (models/attention/base.py)

  train = config.train = ml_collections.ConfigDict()
  train.batch_size = 32
  train.learning_rate = 0.05
  train.schedule = "rsqrt"  # "rsqrt" (LRA's constant*linear_warmup*rsqrt_decay), "cosine", "constant"
  train.warmup_steps = 1000
  train.num_train_steps = 5000
  train.weight_decay = 0.1  # decoupled (AdamW), as flax.optim.Adam's weight_decay in LRA
  train.grad_clip_norm = 0.0  # 0 = no clipping
  train.b1 = 0.9
  train.b2 = 0.98
  train.eps = 1e-9
  # Per-parameter-group learning rate and weight decay, defined in a config file (configs are
  # locked, so not added from the command line; their fields can be overridden there):
  # config.train.param_groups.ssm = ml_collections.ConfigDict(
  #     {"match": (r"/log_dt$",), "learning_rate": 1e-3, "weight_decay": 0.0})
  # `match` are regular expressions searched in '/'-joined parameter paths; the group's rate
  # follows the same schedule as learning_rate. Unmatched parameters use learning_rate and
  # weight_decay above. See lra/optim.py.
  train.param_groups = ml_collections.ConfigDict()
  train.eval_every = 1000
  train.eval_batches = 0     # 0 = the whole split
  train.checkpoint_every = 1000
  train.keep_checkpoints = 2
  train.log_every = 100
  # Scale-out and faults (train.py, lra/pipeline.py, lra/checkpoints.py; README "Scale out"):
  train.fsdp = False          # also shard parameters and optimizer state over the data axis
  train.grad_accum_steps = 1  # micro-batches per optimiser step (batch_size is the whole step's)
  train.nan_policy = "stop"   # a NaN/Inf loss or gradient: "stop" (name the step, keep the last
                              # good checkpoint) or "skip" (drop that update, count it)
  train.input_workers = 0     # Grain worker processes building batches; 0 = a thread
  train.prefetch_batches = 2  # batches built ahead of the step (host) and put on the devices ahead
  train.profile_steps = (0, 0)  # (first, last) step of a JAX profiler trace; (0, 0) = none
  return config


def attention(config: ml_collections.ConfigDict, name: str, **kwargs) -> ml_collections.ConfigDict:
  """Selects the attention variant (used by `<model>_<task>.py`): `attention_kwargs` gets every
  setting of its mixer at the mixer's default, then `kwargs` on top."""
  config.model.attention = name
  mixer = registry.get(name).mixer
  with config.unlocked():
    config.model.attention_kwargs = mixer_settings(mixer, kwargs, where=f"attention {name!r}")
  _no_attention_dropout_where_there_is_none(config)
  return config


def _no_attention_dropout_where_there_is_none(config: ml_collections.ConfigDict) -> None:
  """FAVOR+, elu+1 and Nystrom attention form no attention weights to drop. LRA's configs set an
  attention dropout rate for them too, which its code ignored; 0 says what runs (a nonzero rate
  is refused when the model is built, so a command-line override is an error, not ignored)."""
  mixer = registry.get(config.model.attention).mixer
  if "dropout_rate" not in {f.name for f in dataclasses.fields(mixer)}:
    config.model.attention_dropout_rate = 0.0


def settable_fields(mixer: type) -> dict[str, dataclasses.Field]:
  """The mixer's init fields a config may set: all but flax's `parent`/`name` and the context
  fields (`causal`, `dropout_rate`, `max_len`, `kv_max_len`) that the shared base passes in."""
  return {f.name: f for f in dataclasses.fields(mixer)
          if f.init and f.name not in ("parent", "name") and f.name not in registry.CONTEXT_FIELDS}


def mixer_settings(mixer: type, overrides: Mapping[str, Any] | None = None, *,
                   where: str = "attention") -> ml_collections.ConfigDict:
  """A ConfigDict of every settable field of `mixer` (its default, or `overrides[field]`).

  Values are stored so that ml_collections' command-line overrides parse them with the right
  type: a None default becomes a typed placeholder (`int | None` -> an int flag; overriding
  a plain None field is refused by config_flags), a list becomes a tuple (config_flags parses
  `--x=1,2` or `--x='(1, 2)'` for tuples and cannot override lists), an int given to a float
  field becomes a float. A field whose default cannot live in a config (a function, a dtype
  object) is left out; tests/test_configs.py fails on it, naming the field."""
  fields = settable_fields(mixer)
  overrides = dict(overrides or {})
  unknown = sorted(set(overrides) - set(fields))
  if unknown:
    raise ValueError(f"{where} has no setting {', '.join(map(repr, unknown))}"
                     f"{_did_you_mean(unknown[0], fields)}; its settings: {', '.join(fields)}")
  hints = _type_hints(mixer)
  settings = ml_collections.ConfigDict()
  for name, field in fields.items():
    if name in overrides:
      value = overrides[name]
    elif field.default is not dataclasses.MISSING:
      value = field.default
    elif field.default_factory is not dataclasses.MISSING:
      value = field.default_factory()
    else:
      continue  # a required field: the variant's config must pass it
    stored = _config_value(value, hints.get(name))
    if stored is _UNREPRESENTABLE and name in overrides:
      raise TypeError(f"{where}: setting {name}={value!r} cannot be stored in a config; "
                      "expected a bool, int, float, str, None, or a tuple of those")
    if stored is not _UNREPRESENTABLE:
      settings[name] = stored
  return settings


_UNREPRESENTABLE = object()
_SCALARS = (bool, int, float, str)


def _config_value(value, hint):
  base = _without_none(hint)
  if value is None:
    if base in _SCALARS:
      return config_dict.placeholder(base)
    if _is_sequence(base):
      return config_dict.placeholder(tuple)
    return config_dict.placeholder(object)  # any Python literal on the command line
  if isinstance(value, list | tuple):
    items = tuple(value)
    return items if all(isinstance(v, _SCALARS) for v in items) else _UNREPRESENTABLE
  if base is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  return value if isinstance(value, _SCALARS) else _UNREPRESENTABLE


def _type_hints(mixer: type) -> dict[str, Any]:
  try:
    return typing.get_type_hints(mixer)
  except Exception:  # pylint: disable=broad-except  an unresolvable annotation: no coercion
    return {}


def _without_none(hint):
  """`int | None` -> int; anything else unchanged."""
  args = typing.get_args(hint)
  if args and type(None) in args:
    rest = [a for a in args if a is not type(None)]
    return rest[0] if len(rest) == 1 else hint
  return hint


def _is_sequence(hint) -> bool:
  """`Sequence[int]`, `tuple[str, ...]`, `list[int]` (not `str`)."""
  origin = typing.get_origin(hint) or hint
  return (isinstance(origin, type) and issubclass(origin, collections.abc.Sequence)
          and not issubclass(origin, str))


def _did_you_mean(name: str, choices) -> str:
  near = difflib.get_close_matches(name, list(choices), n=1)
  return f" (did you mean {near[0]!r}?)" if near else ""


def check_attention(model: ml_collections.ConfigDict) -> None:
  """Fails early, in one line, on an unknown attention or a setting it does not have (e.g.
  `--config.model.attention=linformer` on a Performer config, whose kwargs are Performer's)."""
  spec = registry.get(model.attention)  # "unknown attention ...; registered: ..."
  fields = settable_fields(spec.mixer)
  unknown = sorted(set(model.attention_kwargs) - set(fields))
  if unknown:
    raise ValueError(
        f"config.model.attention_kwargs has {', '.join(map(repr, unknown))}, which attention "
        f"{model.attention!r} does not have; its settings: {', '.join(fields)}. To switch the "
        f"attention, use configs/{model.attention}_<task>.py")


def finalize(config: ml_collections.ConfigDict, preset: str | None,
             presets: dict) -> ml_collections.ConfigDict:
  """Applies a named preset (`configs/x.py:quick`) and locks the config."""
  if preset:
    if preset not in presets:
      raise ValueError(f"unknown config preset {preset!r}{_did_you_mean(preset, presets)}; "
                       f"known presets: {', '.join(sorted(presets))}")
    presets[preset](config)
    _no_attention_dropout_where_there_is_none(config)  # presets set the task's rates again
  config.lock()
  return config
