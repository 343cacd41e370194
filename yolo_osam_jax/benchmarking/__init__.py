"""The benchmarks of scripts/benchmark.py, one module a section, and the timing and report helpers
they share (here).

  models.py     `infer` and `train`: forward + decoding and train-step img/s, yolov5s vs YOLO-OSAM
  data.py       `data`: input-pipeline img/s, full augmentation vs letterbox only
  coco_eval.py  `eval`: our COCO evaluator vs pycocotools vs faster-coco-eval

Configs come from the caller (scripts/benchmark.py loads configs/base.py): the package never imports
configs/.

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
