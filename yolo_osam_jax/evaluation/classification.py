"""mAP of a face classifier (the paper prints an mAP for its classifiers in Tables 1, 2 and 5).

The paper does not define a classifier's mAP. Ours: one-vs-rest average precision per class, averaged
over the classes that have at least one positive face.

For class c, sort the faces by their score for c, highest first; at each distinct score s (faces with
equal scores enter together, as one threshold), precision P(s) and recall R(s) of "score ≥ s means c".
AP_c = Σ_k (R_k − R_{k−1}) · P_k over those thresholds, R_0 = 0: the area under the step-wise
precision–recall curve without interpolation (scikit-learn's `average_precision_score`).
mAP = mean over classes with a positive face of AP_c; NaN when no class has one (no faces).

For a detector whose only box per image is the face itself, detection AP at IoU 0.5 over per-class
detections at that box would rank the faces in the same way; yolov5's AP additionally takes the
precision envelope and interpolates it at 101 recall points, so the two differ slightly.
"""

from __future__ import annotations

import numpy as np


def average_precision(scores, positive) -> float:
  """AP of `scores` [N] for the binary targets `positive` [N] (see the module docstring); NaN when there
  is no positive."""
  scores = np.asarray(scores, np.float64).reshape(-1)
  positive = np.asarray(positive, bool).reshape(-1)
  if scores.shape != positive.shape:
    raise ValueError(f'scores {scores.shape} and targets {positive.shape} differ in shape')
  total = int(positive.sum())
  if total == 0:
    return float('nan')
  order = np.argsort(-scores, kind='stable')
  scores, positive = scores[order], positive[order]
  true_pos = np.cumsum(positive)
  # The last face of each run of equal scores: the thresholds.
  last = np.r_[np.flatnonzero(np.diff(scores) != 0), scores.size - 1]
  tp = true_pos[last].astype(np.float64)
  precision = tp / (last + 1)
  recall = tp / total
  return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def classification_map(scores, labels) -> float:
  """Mean over classes of the one-vs-rest AP of that class's score (module docstring).

  scores: [N, nc] per-face class scores (probabilities or logits: only their order per class counts).
  labels: [N] true classes in 0..nc−1. Classes without a positive face are skipped.
  """
  scores = np.asarray(scores, np.float64)
  labels = np.asarray(labels, np.int64).reshape(-1)
  if scores.ndim != 2 or scores.shape[0] != labels.size:
    raise ValueError(f'scores must be [N, nc] with N = {labels.size} labels, got {scores.shape}')
  if labels.size and (labels.min() < 0 or labels.max() >= scores.shape[1]):
    raise ValueError(f'labels must lie in 0..{scores.shape[1] - 1}')
  aps = [average_precision(scores[:, c], labels == c) for c in range(scores.shape[1])
         if np.any(labels == c)]
  return float(np.mean(aps)) if aps else float('nan')
