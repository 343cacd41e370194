"""Model checkpoints: an orbax directory with the variables and the resolved config beside them.

Layout of a model checkpoint directory (written by weight conversion, by training for its best/last
weights, read by eval/predict/export):
  <dir>/config.json    the full resolved config (model section needed to rebuild the network)
  <dir>/variables/     orbax StandardCheckpointer tree {'params', 'batch_stats'}
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

CONFIG_FILE = 'config.json'
VARIABLES_DIR = 'variables'


def save_model(directory: str, variables, config: ml_collections.ConfigDict) -> str:
  """Writes `variables` and `config` to `directory` (created; an existing checkpoint is replaced)."""
  directory = os.path.abspath(directory)
  os.makedirs(directory, exist_ok=True)
  tree = jax.tree_util.tree_map(np.asarray, {k: variables[k] for k in ('params', 'batch_stats')
                                             if k in variables})
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(os.path.join(directory, VARIABLES_DIR), tree, force=True)
  tmp = os.path.join(directory, CONFIG_FILE + '.tmp')
  with open(tmp, 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  os.replace(tmp, os.path.join(directory, CONFIG_FILE))
  return directory


def read_config_json(directory: str, what: str = 'a model checkpoint') -> ml_collections.ConfigDict:
  """The config.json in `directory` (a model checkpoint or a training run's workdir)."""
  path = os.path.join(directory, CONFIG_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: not found; {directory} is not {what} (no {CONFIG_FILE})')
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def load_model(directory: str):
  """(config, variables) from a model checkpoint directory."""
  directory = os.path.abspath(directory)
  config = read_config_json(directory)
  vdir = os.path.join(directory, VARIABLES_DIR)
  if not os.path.isdir(vdir):
    raise FileNotFoundError(f'{vdir}: not a model checkpoint (no {VARIABLES_DIR}/)')
  with ocp.StandardCheckpointer() as ckpt:
    variables = ckpt.restore(vdir)
  return config, variables
