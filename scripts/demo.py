"""`make demo`: build the embedded synthetic face set, train configs/demo.py, evaluate, draw predictions.

  python scripts/demo.py --workdir runs/demo [--config.train.epochs=10 ...]

Writes under --workdir:
  data/                       the synthetic_faces/demo TFDS dataset (built once, then reused)
  train/                      the training run (config, checkpoints, best/ and last/ weights, results.csv,
                              TensorBoard, metrics.json, PR/F1/P/R curves, confusion matrices)
  predictions.jpg             a mosaic of test images: ground truth in white, predictions in colour
  demo.json                   wall time of each phase and the test metrics of the best weights
Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time

import _bootstrap  # noqa: F401

import cv2
import numpy as np

from yolo_osam_jax import config_utils, errors, visualize


def draw(image, gt_boxes, gt_classes, boxes, scores, classes, class_names, scale: int = 2):
  """The image enlarged `scale` times with ground truth (white) and predictions (class colour)."""
  canvas = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
  canvas = visualize.annotate(canvas, np.asarray(gt_boxes, np.float64).reshape(-1, 4) * scale, gt_classes,
                              class_names, colour=(255, 255, 255), line_width=1, show_labels=False)
  # A small fixed font and 5-letter names: 16 tiles of 128 pixels leave little room for labels.
  return visualize.annotate(canvas, np.asarray(boxes, np.float64).reshape(-1, 4) * scale, classes,
                            class_names, scores, line_width=2, font_scale=0.4, name_length=5)


def prediction_mosaic(checkpoint_dir: str, config, source, class_names, path: str, count: int = 16):
  """Runs the checkpoint on the first `count` examples of `source` and writes a 4-column mosaic."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from yolo_osam_jax import checkpoint, models  # pylint: disable=g-import-not-at-top
  from yolo_osam_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from yolo_osam_jax.evaluation import nms  # pylint: disable=g-import-not-at-top

  model_config, variables = checkpoint.load_model(checkpoint_dir)
  model = models.build(model_config.model)
  examples = [source[i] for i in range(min(count, len(source)))]
  batch = next(iter(pipeline.make_detection_loader(examples, config.data, train=False,
                                                   batch_size=len(examples), num_workers=0)))
  predictions, _ = jax.jit(lambda v, x: model.apply(v, x, train=False))(
      variables, jnp.asarray(batch['image'], jnp.float32) / 255.0)
  out = nms.batched_nms(predictions, conf_thres=float(config.eval.predict_conf_thres),
                        iou_thres=float(config.eval.predict_iou_thres), max_det=50, multi_label=False)
  tiles = []
  size = batch['image'].shape[1]
  for b in range(len(examples)):
    keep = np.asarray(out.valid[b])
    mask = batch['mask'][b]
    gt = batch['boxes'][b][mask] * size
    gt_xyxy = np.concatenate([gt[:, :2] - gt[:, 2:] / 2, gt[:, :2] + gt[:, 2:] / 2], axis=1)
    tiles.append(draw(batch['image'][b], gt_xyxy, batch['classes'][b][mask],
                      np.asarray(out.boxes[b])[keep], np.asarray(out.scores[b])[keep],
                      np.asarray(out.classes[b])[keep], class_names))
  columns = 4
  while len(tiles) % columns:
    tiles.append(np.zeros_like(tiles[0]))
  rows = [np.concatenate(tiles[i:i + columns], axis=1) for i in range(0, len(tiles), columns)]
  mosaic = np.concatenate(rows, axis=0)
  cv2.imwrite(path, mosaic[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
  return path


@errors.script_main
def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  rest, overrides = config_utils.split_config_args(argv)
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--workdir', default='runs/demo')
  parser.add_argument('--config', default=os.path.join(_bootstrap.ROOT, 'configs', 'demo.py'))
  args = parser.parse_args(rest)
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s', datefmt='%H:%M:%S')
  logging.getLogger('absl').setLevel(logging.WARNING)

  from yolo_osam_jax import data as datasets  # pylint: disable=g-import-not-at-top
  from yolo_osam_jax import training  # pylint: disable=g-import-not-at-top

  start = time.perf_counter()
  workdir = os.path.abspath(args.workdir)
  config = config_utils.load_config(args.config, overrides)
  config.data.data_dir = os.path.join(workdir, 'data')
  timings = {}

  print(f'[1/3] building the synthetic face set in {config.data.data_dir}')
  t = time.perf_counter()
  datasets.build(config.data.dataset, data_dir=config.data.data_dir, config=config.data.builder_config)
  timings['data_seconds'] = time.perf_counter() - t

  print(f'[2/3] training {args.config} (validation every {config.train.val_every} epoch(s))')
  train_dir = os.path.join(workdir, 'train')
  shutil.rmtree(train_dir, ignore_errors=True)  # a fresh run every time (data/ is kept)
  t = time.perf_counter()
  result = training.train_and_evaluate(config, train_dir)
  timings['train_and_test_seconds'] = time.perf_counter() - t

  print('[3/3] drawing test predictions')
  sources = training.loop.open_sources(config)
  class_names = training.loop.source_class_names(sources['test'])
  mosaic = prediction_mosaic(os.path.join(train_dir, 'best'), config, sources['test'], class_names,
                             os.path.join(workdir, 'predictions.jpg'))
  timings['total_seconds'] = time.perf_counter() - start
  summary = {'timings': timings, 'test': result.get('test_summary'), 'best_epoch': result['best_epoch'],
             'eval_mode': result['eval_mode']}
  with open(os.path.join(workdir, 'demo.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  test = result.get('test_summary') or {}
  print(f"\ndemo finished in {timings['total_seconds'] / 60:.1f} min; test split ({result['eval_mode']} "
        f"mode, best epoch {result['best_epoch']}): mAP50 {test.get('mAP50', float('nan')):.3f}, "
        f"mAP50-95 {test.get('mAP50-95', float('nan')):.3f}, accuracy {test.get('accuracy', float('nan')):.3f}")
  print(f'outputs: {train_dir}/ (metrics.json, PR_curve.png, F1_curve.png, confusion_matrix.png), {mosaic}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
