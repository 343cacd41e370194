"""AutoAnchor: best possible recall by hand; a seeded refit on boxes around known centres (SPEC §4)."""

import ml_collections
import numpy as np
import pytest

from yolo_osam_jax import autoanchor
from yolo_osam_jax.models import heads

# Nine box-size clusters (w, h) in pixels at a 320 px training size, smallest to largest by area.
CENTRES = np.array([(8, 10), (14, 28), (30, 20), (40, 70), (70, 50), (60, 120), (120, 90), (160, 200),
                    (300, 280)], np.float64)


def clustered_wh(seed=1, per_cluster=60, spread=0.15):
  rng = np.random.default_rng(seed)
  return np.concatenate([c * np.exp(rng.normal(0, spread, (per_cluster, 2))) for c in CENTRES])


def model_config(anchors=None):
  return ml_collections.ConfigDict({'fusion': 'none', 'num_classes': 2, 'anchors': anchors})


def test_bpr_and_aat_by_hand():
  wh = np.array([[10, 10], [40, 40], [100, 100], [10, 50]])
  anchors = np.array([[10, 10], [20, 20]])
  # metric = min over w, h of min(r, 1/r):
  #   10x10:  a0 1.0,          a1 0.5          -> best 1.0, 2 anchors above 1/4
  #   40x40:  a0 0.25 (not >), a1 0.5          -> best 0.5, 1 anchor
  #   100x100: a0 0.1,         a1 0.2          -> best 0.2: not recallable, 0 anchors
  #   10x50:  a0 min(1, 0.2),  a1 min(0.5, 0.4) -> best 0.4, 1 anchor
  metrics = autoanchor.anchor_metrics(wh, anchors, thr=4.0)
  assert metrics['bpr'] == pytest.approx(3 / 4)
  assert metrics['aat'] == pytest.approx((2 + 1 + 0 + 1) / 4)
  # Fitness: mean of the best metric where it clears 1/4: (1.0 + 0.5 + 0 + 0.4) / 4.
  assert autoanchor.anchor_fitness(wh.astype(float), anchors.astype(float)) == pytest.approx(1.9 / 4)


def test_refit_recovers_clusters_and_is_deterministic():
  wh = clustered_wh()
  poor = model_config([[[300, 300]] * 3] * 3)  # every anchor is the largest cluster
  anchors, report = autoanchor.check_anchors(wh, poor, img_size=320, seed=0)
  # Before: only boxes within 4x of 300 px on both sides are recallable (clusters 6..9 mostly).
  expected_bpr = np.mean(np.all((wh > 75) & (wh < 1200), axis=1))
  assert report['bpr_before'] == pytest.approx(expected_bpr)
  assert report['refit'] and report['replaced']
  assert report['bpr_after'] >= 0.98
  flat = np.reshape(anchors, (-1, 2))
  assert report['bpr_after'] == pytest.approx(autoanchor.anchor_metrics(wh, flat)['bpr'])
  # A list per level, stride ascending, three (w, h) each, areas growing across and within levels.
  assert np.shape(anchors) == (3, 3, 2)
  assert np.all(np.diff(flat.prod(axis=1)) >= 0)
  # With thr 4 many anchor sets reach BPR 1, so the anchors need not sit on the centres; the fitness
  # they reach is within 5 % of the true centres', and above that of k-means alone (no evolution).
  fitness = autoanchor.anchor_fitness(wh, flat)
  assert fitness > 0.95 * autoanchor.anchor_fitness(wh, CENTRES)
  kmeans_only = autoanchor.kmean_anchors(wh, 9, img_size=320, generations=0, seed=0)
  assert fitness > autoanchor.anchor_fitness(wh, kmeans_only)
  # The refitted anchors load as model anchors.
  np.testing.assert_allclose(np.concatenate([lv.anchors for lv in heads.levels(model_config(anchors))]), flat,
                             rtol=1e-6)
  again, _ = autoanchor.check_anchors(wh, poor, img_size=320, seed=0)
  assert again == anchors
  other_seed, _ = autoanchor.check_anchors(wh, poor, img_size=320, seed=1)
  assert other_seed != anchors
  assert 'after BPR' in autoanchor.format_report(report)


def test_good_anchors_are_kept():
  wh = clustered_wh(seed=2, spread=0.1)
  good = model_config(CENTRES.reshape(3, 3, 2).tolist())
  anchors, report = autoanchor.check_anchors(wh, good, img_size=320, generations=10)
  assert report['bpr_before'] == pytest.approx(1.0)
  assert not report['refit'] and not report['replaced']
  assert anchors == CENTRES.reshape(3, 3, 2).tolist()


def test_kmeans_falls_back_when_boxes_are_identical():
  # One distinct size: k-means cannot give 9 centres; the seeded random start plus evolution still fits it.
  wh = np.tile([[40.0, 60.0]], (50, 1))
  fitted = autoanchor.kmean_anchors(wh, 9, img_size=128, generations=300, seed=0)
  assert fitted.shape == (9, 2)
  assert autoanchor.anchor_metrics(wh, fitted)['bpr'] == 1.0
  again = autoanchor.kmean_anchors(wh, 9, img_size=128, generations=300, seed=0)
  np.testing.assert_array_equal(fitted, again)


def test_collect_box_wh_from_examples_and_batches():
  example = {  # 50 x 100 image, box (ymin, xmin, ymax, xmax) = (0.1, 0.2, 0.5, 0.6): 40 x 20 px
      'image': np.zeros((50, 100, 3), np.uint8),
      'image_id': b'a',
      'objects': {'bbox': np.array([[0.1, 0.2, 0.5, 0.6]], np.float32), 'label': np.array([3])},
  }
  batch = {'boxes': np.array([[[0.5, 0.5, 0.25, 0.5], [0.1, 0.1, 0.9, 0.9]]], np.float32),
           'mask': np.array([[True, False]])}
  wh = autoanchor.collect_box_wh([example, batch], img_size=128)
  # Letterboxing scales the long side 100 -> 128; the batch's masked-out row is not counted.
  np.testing.assert_allclose(wh, [[40 * 1.28, 20 * 1.28], [32, 64]], rtol=1e-5)


def test_bad_box_sizes_are_reported():
  with pytest.raises(ValueError, match=r'wh\[1\] = \[nan, 3.0\]'):
    autoanchor.anchor_metrics(np.array([[1.0, 2.0], [np.nan, 3.0]]), np.ones((3, 2)))
  with pytest.raises(ValueError, match=r'\[n, 2\]'):
    autoanchor.anchor_metrics(np.ones((4, 3)), np.ones((3, 2)))
  with pytest.raises(ValueError, match='no boxes'):
    autoanchor.check_anchors(np.zeros((0, 2)), model_config(), img_size=128)
  with pytest.raises(ValueError, match="item 0 is neither"):
    autoanchor.collect_box_wh([{'image': np.zeros((4, 4, 3))}], img_size=128)
