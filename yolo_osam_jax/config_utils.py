"""Loading `configs/*.py` files (each with `get_config()`) and applying `--config.a.b=value` overrides."""

from __future__ import annotations

import ast
import difflib
import importlib.util
import os
import sys
from typing import Sequence

import ml_collections

from yolo_osam_jax import errors


def load_config(path: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """Runs `get_config()` of the file at `path` (optionally `path:arg`) and applies overrides.

  The config file's parent directory's parent goes on sys.path so configs can `from configs import base`.
  """
  arg = None
  if ':' in os.path.basename(path):
    path, arg = path.rsplit(':', 1)
  if not os.path.isfile(path):
    raise errors.MissingError(f'{path}: config file not found')
  path = os.path.abspath(path)
  root = os.path.dirname(os.path.dirname(path))
  if root not in sys.path:
    sys.path.insert(0, root)
  name = 'yolo_osam_config_' + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):
    raise errors.InputError(f'{path}: a config file must define get_config()')
  config = module.get_config(arg) if arg is not None else module.get_config()
  apply_overrides(config, overrides)
  return config


def parse_value(text: str):
  """Python literal if it parses as one (numbers, bools, lists, None), else the string itself."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _closest(node, parents: Sequence[str], name: str) -> str:
  """'; did you mean …?' with the fields of `node` closest to the misspelt `name` (difflib's ratio)."""
  matches = difflib.get_close_matches(name, [str(k) for k in node.keys()], n=3, cutoff=0.6)
  if not matches:
    return ''
  prefix = ''.join(f'{p}.' for p in parents)
  return '; did you mean ' + ' or '.join(f'{prefix}{m}' for m in matches) + '?'


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
  """Applies `a.b.c=value` (a leading `--config.` is accepted) to `config`, checking that keys exist."""
  for item in overrides:
    text = item[2:] if item.startswith('--') else item
    if text.startswith('config.'):
      text = text[len('config.'):]
    if '=' not in text:
      raise errors.InputError(f'override {item!r}: expected --config.a.b=value (with "=", no space)')
    key, raw = text.split('=', 1)
    *parents, leaf = key.split('.')
    node = config
    for depth, p in enumerate(parents):
      if p not in node or not isinstance(node[p], ml_collections.ConfigDict):
        raise errors.InputError(f'override {item!r}: no config field {key!r} (no {p!r})'
                                + _closest(node, parents[:depth], p))
      node = node[p]
    if leaf not in node:
      raise errors.InputError(f'override {item!r}: no config field {key!r}' + _closest(node, parents, leaf))
    value = parse_value(raw)
    current = node[leaf]
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    if isinstance(current, str) and not isinstance(value, str):
      value = raw
    try:
      node[leaf] = value
    except TypeError as e:
      raise errors.InputError(f'override {item!r}: {e}') from None


def split_config_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """Separates `--config.x=y` overrides from the other command-line arguments."""
  overrides = [a for a in argv if a.startswith('--config.')]
  for item in overrides:
    if '=' not in item:
      # `--config.a.b 1` would leave `1` to argparse, which blames the value, not the missing '='.
      raise errors.InputError(f'override {item!r}: expected {item}=value (with "=", no space)')
  rest = [a for a in argv if not a.startswith('--config.')]
  return rest, overrides
