"""Benchmark helpers and the model sections (`infer`, `train`) of scripts/benchmark.py.

Timing rules: compile time is measured separately (first call), a warm-up call follows, every timed call
ends in `block_until_ready`, and the reported time is the median of several repeats. Every number is
compared with a baseline measured in the same run (yolov5s vs YOLO-OSAM, float32 vs bfloat16, 1 vs N
devices), because an absolute time on a shared machine means little on its own.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def environment() -> dict:
  dev = jax.devices()[0]
  import flax
  return {'device': f'{dev.platform}:{getattr(dev, "device_kind", "")}', 'device_count': jax.device_count(),
          'jax': jax.__version__, 'flax': flax.__version__, 'python': platform.python_version(),
          'cpu_count': os.cpu_count()}


def time_fn(fn: Callable[[], object], repeats: int = 5, min_seconds: float = 0.0) -> dict:
  """Compile/first-call time, then the median of `repeats` timed calls after one warm-up call."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - t0
  jax.block_until_ready(fn())  # warm-up
  times = []
  start = time.perf_counter()
  while len(times) < repeats or time.perf_counter() - start < min_seconds:
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return {'compile_s': first, 'median_s': statistics.median(times), 'repeats': len(times)}


def append_jsonl(rows: list[dict], path: str) -> None:
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  env = environment()
  with open(path, 'a') as f:
    for row in rows:
      f.write(json.dumps({**env, 'time': time.strftime('%Y-%m-%dT%H:%M:%S'), **row}) + '\n')


def markdown_table(rows: list[dict], columns: list[str]) -> str:
  def fmt(v):
    if isinstance(v, float):
      return f'{v:,.4g}' if abs(v) < 1000 else f'{v:,.0f}'
    return str(v)
  lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
  lines += ['| ' + ' | '.join(fmt(r.get(c, '')) for c in columns) + ' |' for r in rows]
  return '\n'.join(lines)


def model_variants():
  """The two networks every model benchmark compares: plain yolov5s and the published YOLO-OSAM."""
  from configs import base
  osam = base.model_config('s', 7)
  v5 = base.model_config('s', 7)
  v5.fusion, v5.attention.kind, v5.attention.where = 'none', 'none', 'none'
  return {'yolov5s': v5, 'yolo_osam': osam}


def built_variants(img: int, dtypes):
  """(name, dtype, model config, module, variables) for both networks in every dtype."""
  from yolo_osam_jax import models
  for name, cfg in model_variants().items():
    for dtype in dtypes:
      cfg = cfg.copy_and_resolve_references()
      cfg.dtype = dtype
      module = models.build(cfg)
      variables = jax.jit(module.init)(jax.random.PRNGKey(0), jnp.zeros((1, img, img, 3)))
      yield name, dtype, cfg, module, variables


def run_infer_benchmark(smoke: bool, img_size: int | None = None, batches=None, dtypes=None) -> list[dict]:
  """Inference img/s (forward + decoding) for yolov5s vs YOLO-OSAM, float32 vs bfloat16, batch sizes.

  The batch is split over every device along the `data` mesh axis (parameters replicated), as training does.
  """
  from yolo_osam_jax.training import step as step_lib
  img = img_size or (64 if smoke else 128)
  batches = batches or ((1, 4) if smoke else (1, 32, 256))
  dtypes = dtypes or ('float32', 'bfloat16')
  rows = []
  for name, dtype, _, module, variables in built_variants(img, dtypes):
    for b in batches:
      mesh = step_lib.make_mesh(jax.devices()[:len(jax.devices()) if b % len(jax.devices()) == 0 else 1])
      x = jax.device_put(jax.random.uniform(jax.random.PRNGKey(1), (b, img, img, 3)),
                         step_lib.batch_sharded(mesh))
      v = step_lib.replicate(variables, mesh)
      fwd = jax.jit(lambda v, x: module.apply(v, x)[0])
      t = time_fn(lambda: fwd(v, x), repeats=3 if smoke else 5)
      rows.append({'section': 'infer', 'model': name, 'dtype': dtype, 'batch': b, 'img': img,
                   'devices': mesh.size, 'compile_s': t['compile_s'], 'ms_per_batch': 1e3 * t['median_s'],
                   'img_per_s': b / t['median_s']})
  return rows


def run_train_benchmark(smoke: bool, img_size: int | None = None, batches=None, dtypes=None) -> list[dict]:
  """Train-step img/s (forward, loss, backward, optax update, EMA) for yolov5s vs YOLO-OSAM."""
  from configs import base
  from yolo_osam_jax import training
  img = img_size or (64 if smoke else 128)
  on_cpu = jax.devices()[0].platform == 'cpu'
  # A batch-256 train step takes tens of seconds on a 2-core CPU: there the full run stops at 32.
  batches = batches or ((4,) if smoke else (32,) if on_cpu else (32, 256))
  dtypes = dtypes or ('float32', 'bfloat16')
  train_config = base.get_config().train
  mesh = training.make_mesh()
  rows = []
  rng = np.random.default_rng(0)
  for name, dtype, cfg, module, variables in built_variants(img, dtypes):
    for b in batches:
      if b % mesh.size:
        continue
      schedule = training.schedule_from_config(train_config, steps_per_epoch=100, batch_size=b)
      tx = training.build_optimizer(train_config, schedule, training.param_labels(variables['params']), b)
      step = training.jit_train_step(training.train_step_fn(
          training.make_detection_loss_fn(module, cfg, img), tx), mesh)
      m = 8
      host_batch = {
          'image': rng.integers(0, 256, (b, img, img, 3), dtype=np.uint8),
          'boxes': np.concatenate([rng.uniform(0.2, 0.8, (b, m, 2)), rng.uniform(0.05, 0.4, (b, m, 2))],
                                  -1).astype(np.float32),
          'classes': rng.integers(0, cfg.num_classes, (b, m)).astype(np.int32),
          'mask': rng.uniform(size=(b, m)) < 0.5,
      }
      batch = training.shard_batch(host_batch, mesh)
      # replicate() copies through the host: the donating step must not delete `variables`, which the
      # next batch size reuses.
      holder = {'state': training.step.replicate(
          training.create_train_state(variables, tx, jax.random.PRNGKey(0)), mesh)}

      def run():
        holder['state'], metrics = step(holder['state'], batch)
        return metrics['loss']

      t = time_fn(run, repeats=3 if smoke else 5)
      rows.append({'section': 'train', 'model': name, 'dtype': dtype, 'batch': b, 'img': img,
                   'devices': mesh.size, 'compile_s': t['compile_s'], 'ms_per_step': 1e3 * t['median_s'],
                   'img_per_s': b / t['median_s']})
  return rows
