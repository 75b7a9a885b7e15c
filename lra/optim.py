"""LRA's optimiser and learning-rate schedules, as Optax objects.

Parameter groups (`config.train.param_groups`) give chosen parameters their own peak learning
rate and weight decay, e.g. the SSM parameters of S4D/S5/LRU (smaller rate, no decay, as in those
papers' LRA recipes). A config file defines a group as a ConfigDict field with exactly three
fields:

    config.train.param_groups.ssm = ml_collections.ConfigDict({
        "match": (r"/log_dt$", r"/(A_re|A_im)$"),  # regular expressions, see below
        "learning_rate": 1e-3,                        # this group's peak learning rate
        "weight_decay": 0.0,
    })

- `match`: a tuple of regular expressions. A parameter belongs to the group when `re.search`
  finds any of them in its path, the '/'-joined keys below `params` (e.g.
  `encoder/block_0/attention/log_dt`). Anchor them (`/log_dt$`) to match a name exactly.
- `learning_rate` runs through the same schedule as `config.train.learning_rate`
  (`config.train.schedule`, `warmup_steps`, `num_train_steps`): only the peak differs.
- `weight_decay` is the group's decoupled (AdamW) decay.

Every parameter no group matches is in the default group: `config.train.learning_rate` and
`config.train.weight_decay`. Adam's b1/b2/eps and the global-norm clipping
(`config.train.grad_clip_norm`, over all parameters, before the groups' steps) are shared. A
parameter two groups match, and a group that matches no parameter, are errors raised when the
optimiser state is initialised (that is when the parameter tree is known); a group with a
missing, unknown or mistyped field is an error when the optimiser is built. The name `default`
is reserved for the default group.

Configs are locked once built, so groups are defined in config files, not added from the command
line; a group's fields can be overridden there: `--config.train.param_groups.ssm.learning_rate=
5e-4`, `--config.train.param_groups.ssm.match='("log_dt$",)'`. With no groups the optimiser is
exactly the single AdamW of before.
"""
from __future__ import annotations

import difflib
import functools
import numbers
import re

import jax
import jax.numpy as jnp
import ml_collections
import optax

DEFAULT_GROUP = "default"
GROUP_FIELDS = ("match", "learning_rate", "weight_decay")


def rsqrt_schedule(base: float, warmup: int):
  """LRA's 'constant * linear_warmup * rsqrt_decay':
  lr = base * min(1, step / warmup) / sqrt(max(step, warmup))."""
  warmup = max(int(warmup), 1)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    return base * jnp.minimum(1.0, step / warmup) / jnp.sqrt(jnp.maximum(step, warmup))

  return schedule


def learning_rate_schedule(train: ml_collections.ConfigDict, peak: float | None = None):
  """The schedule of `config.train`; `peak` replaces `train.learning_rate` (a group's rate)."""
  peak = train.learning_rate if peak is None else peak
  if train.schedule == "rsqrt":
    return rsqrt_schedule(peak, train.warmup_steps)
  if train.schedule == "cosine":  # linear warm-up, then one cosine cycle to zero
    return optax.warmup_cosine_decay_schedule(
        0.0, peak, max(train.warmup_steps, 1),
        max(train.num_train_steps, train.warmup_steps + 1))
  if train.schedule == "constant":
    return optax.constant_schedule(peak)
  raise ValueError(f"config.train.schedule={train.schedule!r}; expected 'rsqrt', 'cosine' "
                   "or 'constant'")


def make_optimizer(train: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam(b1, b2=0.98, eps=1e-9) with decoupled weight decay, optional global-norm clipping;
  per-group learning rates and weight decay from `train.param_groups` (module docstring)."""
  groups = parse_groups(train)
  if groups:
    transforms = {DEFAULT_GROUP: _adamw(train, train.learning_rate, train.weight_decay)}
    transforms.update({name: _adamw(train, group["learning_rate"], group["weight_decay"])
                       for name, group in groups.items()})
    adam = optax.multi_transform(transforms, functools.partial(param_labels, groups))
  else:
    adam = _adamw(train, train.learning_rate, train.weight_decay)
  if train.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(train.grad_clip_norm), adam)
  return adam


def _adamw(train, learning_rate, weight_decay):
  return optax.adamw(learning_rate_schedule(train, learning_rate), b1=train.b1, b2=train.b2,
                     eps=train.eps, weight_decay=weight_decay)


def parse_groups(train: ml_collections.ConfigDict) -> dict[str, dict]:
  """`train.param_groups` checked: {name: {"match": (compiled regex, ...), "learning_rate",
  "weight_decay"}}. A run directory written before groups existed has no field: no groups."""
  groups = {}
  for name, group in (train.get("param_groups") or {}).items():
    where = f"config.train.param_groups.{name}"
    if name == DEFAULT_GROUP:
      raise ValueError(f"{where}: the group name {DEFAULT_GROUP!r} is reserved for the "
                       "parameters no group matches (config.train.learning_rate/weight_decay)")
    if not hasattr(group, "keys"):
      raise ValueError(f"{where} is {group!r}; a group is a ConfigDict with the fields "
                       f"{', '.join(GROUP_FIELDS)}")
    unknown = sorted(set(group.keys()) - set(GROUP_FIELDS))
    if unknown:
      near = difflib.get_close_matches(unknown[0], GROUP_FIELDS, n=1)
      hint = f" (did you mean {near[0]!r}?)" if near else ""
      raise ValueError(f"{where} has the unknown field {unknown[0]!r}{hint}; a group's fields "
                       f"are {', '.join(GROUP_FIELDS)}")
    missing = [field for field in GROUP_FIELDS if field not in group]
    if missing:
      raise ValueError(f"{where} has no {', '.join(map(repr, missing))}; a group's fields are "
                       f"{', '.join(GROUP_FIELDS)}")
    patterns = group["match"]
    if (isinstance(patterns, str) or not isinstance(patterns, tuple | list) or not patterns
        or not all(isinstance(p, str) and p for p in patterns)):
      raise ValueError(f"{where}.match is {patterns!r}; expected a non-empty tuple of regular "
                       "expressions, e.g. ('/log_dt$',)")
    compiled = []
    for pattern in patterns:
      try:
        compiled.append(re.compile(pattern))
      except re.error as error:
        raise ValueError(f"{where}.match: {pattern!r} is not a regular expression ({error})"
                         ) from None
    for field in ("learning_rate", "weight_decay"):
      value = group[field]
      if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{where}.{field} is {value!r}; expected a number")
    groups[name] = {"match": tuple(compiled), "learning_rate": float(group["learning_rate"]),
                    "weight_decay": float(group["weight_decay"])}
  return groups


def param_path(path) -> str:
  """A key path from jax.tree_util as 'encoder/block_0/attention/log_dt'."""
  return jax.tree_util.keystr(path, simple=True, separator="/")


def param_labels(groups: dict[str, dict], params):
  """The group name of every leaf of `params` (`DEFAULT_GROUP` where no group matches); the
  `param_labels` callable given to optax.multi_transform."""
  used = set()

  def label(path, _):
    name = param_path(path)
    hits = [group for group, spec in groups.items()
            if any(pattern.search(name) for pattern in spec["match"])]
    if len(hits) > 1:
      raise ValueError(f"parameter {name!r} is matched by more than one group: "
                       + ", ".join(f"config.train.param_groups.{group}.match="
                                   f"{tuple(p.pattern for p in groups[group]['match'])}"
                                   for group in hits))
    used.update(hits)
    return hits[0] if hits else DEFAULT_GROUP

  labels = jax.tree_util.tree_map_with_path(label, params)
  unused = [group for group in groups if group not in used]
  if unused:
    some = [param_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0][:5]]
    group = unused[0]
    raise ValueError(f"config.train.param_groups.{group} matches no parameter: its patterns "
                     f"{tuple(p.pattern for p in groups[group]['match'])} are searched in "
                     f"'/'-joined parameter paths such as {', '.join(some)}")
  return labels
