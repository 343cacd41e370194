"""evaluation/classification.py: a classifier's mAP (one-vs-rest AP per class, mean over classes)."""

import numpy as np
import pytest

from yolo_osam_jax.evaluation import classification


def test_average_precision_hand_values():
  # Thresholds 0.9 (P 1, R 1/2), 0.8 (P 1/2, R 1/2), 0.7 (P 2/3, R 1), 0.6 (P 1/2, R 1):
  # AP = 1/2 · 1 + 0 + 1/2 · 2/3 + 0 = 5/6.
  assert classification.average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(5 / 6)
  # Equal scores are one threshold: 0.5 (P 1/2, R 1/2), then 0.2 (P 2/3, R 1): 1/4 + 1/3.
  assert classification.average_precision([0.5, 0.5, 0.2], [1, 0, 1]) == pytest.approx(7 / 12)
  # Order of the input does not matter; a perfect ranking gives 1; no positive gives NaN.
  assert classification.average_precision([0.2, 0.5, 0.5], [1, 1, 0]) == pytest.approx(7 / 12)
  assert classification.average_precision([0.1, 0.9, 0.8], [0, 1, 1]) == 1.0
  assert np.isnan(classification.average_precision([0.1, 0.2], [0, 0]))


def test_classification_map_hand_values_and_skipped_classes():
  scores = np.array([[0.9, 0.1, 0.0],
                     [0.8, 0.2, 0.0],
                     [0.7, 0.3, 0.0],
                     [0.6, 0.4, 0.0]])
  labels = np.array([0, 1, 0, 1])
  # Class 0: scores 0.9/0.8/0.7/0.6 for targets 1/0/1/0 → 5/6. Class 1: 0.1/0.2/0.3/0.4 for 0/1/0/1:
  # thresholds 0.4 (P 1, R 1/2), 0.3 (P 1/2), 0.2 (P 2/3, R 1), 0.1 → 1/2 + 1/3 = 5/6. Class 2 has no
  # positive: skipped, not counted as 0.
  assert classification.classification_map(scores, labels) == pytest.approx(5 / 6)
  assert classification.classification_map(np.eye(3), [0, 1, 2]) == 1.0
  assert np.isnan(classification.classification_map(np.zeros((0, 3)), []))
  with pytest.raises(ValueError, match='labels must lie in 0..2'):
    classification.classification_map(np.eye(3), [0, 1, 3])
  with pytest.raises(ValueError, match=r'scores must be \[N, nc\]'):
    classification.classification_map(np.eye(3), [0, 1])


def test_against_scikit_learn_when_installed():
  metrics = pytest.importorskip('sklearn.metrics')
  rng = np.random.default_rng(0)
  for trial in range(20):
    n, nc = int(rng.integers(5, 60)), int(rng.integers(2, 8))
    labels = rng.integers(0, nc, n)
    # Rounded scores give ties, which both must treat as one threshold.
    scores = np.round(rng.random((n, nc)), 1 if trial % 2 else 6)
    expected = [metrics.average_precision_score(labels == c, scores[:, c]) for c in range(nc)
                if np.any(labels == c)]
    assert classification.classification_map(scores, labels) == pytest.approx(np.mean(expected),
                                                                               rel=1e-12)
