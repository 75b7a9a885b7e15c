"""One-line command-line errors for train.py and eval.py.

absl parses the flags, and ml_collections' config_flags loads `--config=FILE[:preset]` and
applies the `--config.a.b=value` overrides while it does. Their failures are Python tracebacks
(a misspelt field ends, three chained tracebacks later, in `AttributeError: "'emb_dm'"`).
`parse_flags` is the `flags_parser` given to `absl.app.run`: when parsing fails it works out
what the user got wrong (a config file that does not load, an unknown preset, a field the
config does not have, a value of the wrong type) and says so in one line, naming the field and
the valid choices, then exits with status 2 (a command-line error, as argparse does).
"""
from __future__ import annotations

import difflib
import importlib.util
import re
import sys
import traceback
from pathlib import Path
from typing import NoReturn

import ml_collections
from absl import flags

EXIT_USAGE = 2
_OVERRIDE = re.compile(r"^--?(?:no)?config\.([^=]+)(?:=(.*))?$", re.S)


def parse_flags(argv: list[str]) -> list[str]:
  """Parses `argv` into absl's FLAGS, or prints one line and exits (status 2)."""
  try:
    rest = flags.FLAGS(argv)
  except BrokenPipeError:  # `--help | head`
    raise
  except Exception as error:  # pylint: disable=broad-except  every failure here is the user's input
    try:
      message = explain(error, argv)
    except Exception:  # pylint: disable=broad-except  the diagnosis failed: absl's own message
      message = one_line(error)
    fail(message)
  config = flags.FLAGS["config"].value
  if config is not None and not isinstance(config, ml_collections.ConfigDict):
    # config_flags defers a config file that did not load until the config is first used.
    fail(explain(None, argv))
  return rest


def fail(message: str | BaseException) -> NoReturn:
  print(f"{Path(sys.argv[0]).name}: error: {one_line(message)}", file=sys.stderr, flush=True)
  sys.exit(EXIT_USAGE)


def one_line(message: str | BaseException) -> str:
  text = str(message) if not isinstance(message, KeyError) else str(message.args[0])
  return " ".join(text.split())


def explain(error: BaseException | None, argv: list[str]) -> str:
  """What went wrong with the command line `argv`, in one line."""
  required = re.search(r"Flag --(\w+) must have a value other than None", str(error))
  if required:
    return f"--{required.group(1)} is required; see --help"
  spec = _config_spec(argv)
  overrides = [m.groups() for m in map(_OVERRIDE.match, argv[1:]) if m]
  if spec is None:
    if overrides:
      return (f"--config.{overrides[0][0]}: an override needs --config=FILE[:preset] "
              "before it")
    return one_line(error) if error else "no --config given"
  config, problem = load_config(spec)
  if problem:
    return f"--config={spec}: {problem}"
  for path, _ in overrides:
    problem = unknown_field(config, path)
    if problem:
      return f"--config.{path}: {problem}"
  if error is None:
    return f"--config={spec}: the config did not load"
  message = str(error)
  for path, value in overrides:  # absl: "flag --config.a.b=VALUE: why"
    prefix = f"flag --config.{path}={value}: "
    if value is not None and message.startswith(prefix):
      holder, field = _holder(config, path)
      kind = holder.get_type(field)
      why = "write true or false" if kind is bool else one_line(message[len(prefix):])
      return (f"--config.{path}={value}: expected {_type_name(kind)} "
              f"(config.{path} is {holder[field]!r}); {why}")
  return one_line(error)


def load_config(spec: str):
  """(config, None) or (None, why it did not load), as config_flags loads `FILE[:preset]`."""
  path, colon, preset = spec.partition(":")
  file = Path(path)
  if not file.is_file():
    others = [str(p) for p in file.parent.glob("*.py")] if file.parent.is_dir() else []
    near = difflib.get_close_matches(path, others, n=1)
    return None, "no such config file" + (f" (did you mean {near[0]}?)" if near else "")
  try:
    loader_spec = importlib.util.spec_from_file_location("lra_cli_config", file)
    module = importlib.util.module_from_spec(loader_spec)
    loader_spec.loader.exec_module(module)
    return module.get_config(*([preset] if colon else [])), None
  except Exception as error:  # pylint: disable=broad-except  reported, in one line
    if isinstance(error, (ValueError, TypeError)):  # the config's own checks (e.g. the preset)
      return None, one_line(error)
    frame = _deepest_frame(error)
    return None, f"{frame}{type(error).__name__}: {one_line(error)}"


def unknown_field(config: ml_collections.ConfigDict, path: str) -> str | None:
  """Why `config.<path>` does not exist (with the nearest field and the valid ones), or None."""
  if "[" in path:
    return None  # an index into a sequence: left to config_flags
  node, where = config, "config"
  for part in path.split("."):
    if not isinstance(node, ml_collections.ConfigDict):
      return f"{where} is a value of type {type(node).__name__}, not a group of fields"
    if part not in node:
      fields = sorted(node.keys())
      near = difflib.get_close_matches(part, fields, n=1)
      hint = f" (did you mean {near[0]!r}?)" if near else ""
      owner = f"{where} has no field"
      if where == "config.model.attention_kwargs":
        owner = f"attention {config.model.attention!r} has no setting"
      return f"{owner} {part!r}{hint}; valid: {', '.join(fields)}"
    node, where = node[part], f"{where}.{part}"
  return None


def _config_spec(argv: list[str]) -> str | None:
  for i, arg in enumerate(argv[1:], 1):
    name, eq, value = arg.partition("=")
    if name in ("--config", "-config"):
      return value if eq else (argv[i + 1] if i + 1 < len(argv) else None)
  return None


def _holder(config, path: str):
  *parents, field = path.split(".")
  for part in parents:
    config = config[part]
  return config, field


def _type_name(kind) -> str:
  return getattr(kind, "__name__", str(kind))


def _deepest_frame(error: BaseException) -> str:
  """"configs/x.py:12: ", the innermost line of this repository that the error passed."""
  root, where = Path.cwd().resolve(), ""
  for frame, line in traceback.walk_tb(error.__traceback__):
    file = Path(frame.f_code.co_filename).resolve()
    if file.is_relative_to(root) and "site-packages" not in file.parts:
      where = f"{file.relative_to(root)}:{line}: "
  return where
