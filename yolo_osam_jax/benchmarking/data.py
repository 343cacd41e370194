"""Input-pipeline throughput: images per second at 128² with yolov5's full training augmentation and
with letterbox only, on an in-memory source (so disk and JPEG decoding are not part of the number).

`run_data_benchmark(data_config, smoke)` returns one dict per measurement; scripts/benchmark.py prints
them.
"""

from __future__ import annotations

import os
import time

import cv2
import numpy as np

from yolo_osam_jax.data import pipeline


def fake_face_source(num_examples: int = 256, seed: int = 0) -> list[dict]:
  """TFDS-style examples: textured images of 96–192 px with 1–4 face-like ellipses each."""
  rng = np.random.default_rng(seed)
  examples = []
  for i in range(num_examples):
    h, w = (int(v) for v in rng.integers(96, 193, 2))
    # Smooth random background (upsampled noise), like the cluttered scenes of the synthetic set.
    image = cv2.resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (w, h),
                       interpolation=cv2.INTER_CUBIC)
    bbox, labels = [], []
    for _ in range(int(rng.integers(1, 5))):
      bw, bh = rng.uniform(0.15, 0.6) * w, rng.uniform(0.15, 0.6) * h
      x1, y1 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
      colour = tuple(int(c) for c in rng.integers(60, 256, 3))
      cv2.ellipse(image, (int(x1 + bw / 2), int(y1 + bh / 2)), (int(bw / 2), int(bh / 2)), 0, 0, 360,
                  colour, -1)
      bbox.append((y1 / h, x1 / w, (y1 + bh) / h, (x1 + bw) / w))
      labels.append(int(rng.integers(0, 7)))
    examples.append({'image': image, 'image_id': f'bench_{i:05d}'.encode(),
                     'objects': {'bbox': np.array(bbox, np.float32), 'label': np.array(labels)}})
  return examples


def _measure(loader, num_batches: int, warmup: int) -> tuple[float, int]:
  it = iter(loader)
  for _ in range(warmup):
    next(it)
  start = time.perf_counter()
  images = 0
  for _ in range(num_batches):
    images += len(next(it)['image'])
  return time.perf_counter() - start, images


def run_data_benchmark(data_config, smoke: bool, *, img_size: int = 128, batch_size: int = 32,
                       num_workers: int = 0) -> list[dict]:
  """Pipeline img/s at `img_size`² with full augmentation (mosaic, affine, HSV, flip) and without.

  data_config: `config.data` to take the augmentation from (scripts/benchmark.py: configs/base.py's,
  yolov5's values).
  """
  config = data_config.copy_and_resolve_references()
  config.img_size, config.batch_size, config.num_workers = img_size, batch_size, num_workers
  config.max_boxes = 32  # mosaics of four 4-face images: nothing dropped, nothing logged
  source = fake_face_source(64 if smoke else 256)
  num_batches, warmup = (3, 1) if smoke else (30, 3)
  results = []
  for name, train in (('data/train_full_aug', True), ('data/eval_letterbox', False)):
    loader = pipeline.make_detection_loader(source, config, train=train, seed=0,
                                            num_epochs=None if train else 1000)
    seconds, images = _measure(loader, num_batches, warmup)
    results.append({
        'name': name, 'img_size': img_size, 'batch_size': batch_size, 'num_workers': num_workers,
        'batches': num_batches, 'images': images, 'seconds': round(seconds, 4),
        'images_per_s': round(images / seconds, 1), 'cpu_count': os.cpu_count(),
        'aug': dict(config.aug) if train else None,
    })
  return results

