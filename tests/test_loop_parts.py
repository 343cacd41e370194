"""Pieces of the training loop that need no training run: the mosaic switch of data.aug.close_mosaic and
the per-mode summary of an evaluation."""

import numpy as np
import pytest

from conftest import _demo_fixture_scene, synthetic_examples
from configs import base
from yolo_osam_jax.data import pipeline
from yolo_osam_jax.training import loop


def _data_config(mosaic):
  config = base.get_config().data
  config.img_size, config.batch_size, config.max_boxes = 64, 4, 8
  config.aug.mosaic = mosaic
  config.shuffle_seed = 3
  return config


def _batches(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_close_mosaic_continues_the_same_images_without_mosaic():
  source = synthetic_examples(16, 64, _demo_fixture_scene())
  with_mosaic = iter(pipeline.make_detection_loader(source, _data_config(1.0), train=True))
  _batches(with_mosaic, 3)
  switched = loop.continue_without_mosaic(with_mosaic, source, _data_config(1.0))
  # Reference: a loader that never had mosaic, advanced by the same three batches.
  plain = iter(pipeline.make_detection_loader(source, _data_config(0.0), train=True))
  _batches(plain, 3)
  mosaic_next = next(with_mosaic)
  for got, want in zip(_batches(switched, 5), _batches(plain, 5)):
    np.testing.assert_array_equal(got['index'], want['index'])   # same place in the same order
    np.testing.assert_array_equal(got['image'], want['image'])   # same pixels: no mosaic
    np.testing.assert_array_equal(got['boxes'], want['boxes'])
  # ... and the mosaic loader at that position really does something else.
  assert not np.array_equal(mosaic_next['image'], _batches(iter(pipeline.make_detection_loader(
      source, _data_config(0.0), train=True)), 4)[3]['image'])


def _results(mode):
  yolo = {'precision': 0.5, 'recall': 0.25, 'f1': 1 / 3, 'map50': 0.6, 'map50_95': 0.3}
  coco = {'map50_95': 0.31, 'map50': 0.61, 'mar_100': 0.7}
  return {'mode': mode, 'metrics': yolo if mode == 'yolov5' else coco, 'yolov5': yolo,
          'accuracy': {'accuracy': 0.8}, 'f1_macro': 0.75}


def test_summary_takes_every_detection_metric_from_one_mode():
  assert loop._summary(_results('yolov5')) == pytest.approx(
      {'mAP50': 0.6, 'mAP50-95': 0.3, 'precision': 0.5, 'recall': 0.25, 'f1': 1 / 3, 'accuracy': 0.8,
       'f1_macro': 0.75})
  # COCO has no single operating point: no P/R/F1 (and no NaN columns), its AR@100 instead.
  assert loop._summary(_results('coco')) == pytest.approx(
      {'mAP50': 0.61, 'mAP50-95': 0.31, 'mAR100': 0.7, 'accuracy': 0.8, 'f1_macro': 0.75})
