"""The paper's accuracy and F1, defined here because the paper does not define them.

Accuracy: every (non-crowd) ground-truth face is matched to *all* detections of its image whose IoU with
it is >= 0.5 (class-agnostic; IoU = intersection / (area_a + area_b - intersection), no epsilon). The face
counts as correct when the highest-scoring of those detections carries the face's class (equal scores: the
first in the image's score-sorted order); a face without any matched detection counts as wrong.
Only detections with score >= `conf_thres` take part: the paper's Eq. 9 counts predictions above a
score of 0.5, which is `config.eval.accuracy_conf_thres`'s default (this function's default, 0, takes
every detection given).

accuracy = correct faces / all faces.

Classification confusion matrix [nc, nc + 1]: row = true class, column = predicted class of the face
(highest-scoring matched detection), last column = "missed" (no detection matched).

Macro F1 over that matrix: per class c, precision = cm[c, c] / (faces predicted as c), recall = cm[c, c] /
(faces of class c, missed ones included), F1 = 2PR / (P + R) (0 when P + R = 0 or a denominator is 0);
the mean runs over the classes that occur as a true or a predicted class (scikit-learn's f1_score with
average='macro', labels = classes present, zero_division=0).
"""

from __future__ import annotations

import numpy as np

from yolo_osam_jax.evaluation import boxes as boxes_lib


def face_predictions(gt: boxes_lib.GroundTruth, dt: boxes_lib.Detections, iou_thres: float = 0.5,
                     conf_thres: float = 0.0):
  """Predicted class per ground-truth box (-1 = no detection with IoU >= iou_thres)."""
  use = dt.scores >= conf_thres
  det_index = np.flatnonzero(use)
  # Image order, then score descending (stable): the first matched detection per face is the best one.
  det_index = det_index[np.lexsort((-dt.scores[det_index], dt.image[det_index]))]
  gt_xyxy = boxes_lib.xywh_to_xyxy(gt.boxes)
  det_xyxy = boxes_lib.xywh_to_xyxy(dt.boxes[det_index])
  face, det = boxes_lib.pairs_within_groups(gt.image, dt.image[det_index], gt.num_images)
  iou = boxes_lib.yolov5_pair_iou(gt_xyxy[face], det_xyxy[det], eps=0.0)
  hit = iou >= iou_thres
  face, det = face[hit], det[hit]
  predicted = np.full(gt.image.size, -1, np.int64)
  # Pairs are ordered by face then detection order; the first pair of each face is its best detection.
  first = np.concatenate([[True], face[1:] != face[:-1]]) if face.size else np.zeros(0, bool)
  predicted[face[first]] = dt.classes[det_index[det[first]]]
  return predicted


def classification_confusion(true_classes, predicted, num_classes):
  """[nc, nc + 1] counts; column nc = missed."""
  cm = np.zeros((num_classes, num_classes + 1), np.int64)
  np.add.at(cm, (true_classes, np.where(predicted < 0, num_classes, predicted)), 1)
  return cm


def macro_f1(cm):
  num_classes = cm.shape[0]
  tp = np.diag(cm[:, :num_classes]).astype(np.float64)
  predicted = cm[:, :num_classes].sum(0).astype(np.float64)
  actual = cm.sum(1).astype(np.float64)
  with np.errstate(divide='ignore', invalid='ignore'):
    precision = np.where(predicted > 0, tp / predicted, 0.0)
    recall = np.where(actual > 0, tp / actual, 0.0)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
  present = (predicted > 0) | (actual > 0)
  return (float(f1[present].mean()) if present.any() else 0.0), precision, recall, f1


def evaluate(gt: boxes_lib.GroundTruth, dt: boxes_lib.Detections, conf_thres: float = 0.0) -> dict:
  faces = ~gt.iscrowd
  predicted = face_predictions(gt, dt, conf_thres=conf_thres)[faces]
  true_classes = gt.classes[faces]
  cm = classification_confusion(true_classes, predicted, gt.num_classes)
  f1_macro, precision, recall, f1 = macro_f1(cm)
  correct = int(np.sum(predicted == true_classes))
  return {
      'accuracy': correct / true_classes.size if true_classes.size else 0.0,
      'conf_thres': float(conf_thres),
      'correct': correct,
      'faces': int(true_classes.size),
      'missed': int(np.sum(predicted < 0)),
      'f1_macro': f1_macro,
      'per_class': [
          {'class': name, 'faces': int(cm[c].sum()), 'precision': float(precision[c]),
           'recall': float(recall[c]), 'f1': float(f1[c])}
          for c, name in enumerate(gt.class_names)],
      'confusion_matrix': cm,
  }
