"""Evaluation: NMS, COCO (= pycocotools) and yolov5 (= yolov5's validator) metrics, the paper's
accuracy / macro F1, confusion matrices, plots and significance tests. See each module's docstring."""

from yolo_osam_jax.evaluation.accuracy import evaluate as evaluate_accuracy
from yolo_osam_jax.evaluation.boxes import Detections, GroundTruth, make_detections, make_ground_truth
from yolo_osam_jax.evaluation.coco import STAT_KEYS as COCO_STAT_KEYS
from yolo_osam_jax.evaluation.coco import detections_from_coco, ground_truth_from_coco
from yolo_osam_jax.evaluation.coco import evaluate as evaluate_coco
from yolo_osam_jax.evaluation.confusion import detection_confusion
from yolo_osam_jax.evaluation.nms import NmsOutput, batched_nms, nms_numpy
from yolo_osam_jax.evaluation.runner import (collect_batches, evaluate_batches, evaluate_detections,
                                             format_table, json_ready)
from yolo_osam_jax.evaluation.yolov5 import evaluate as evaluate_yolov5



def __getattr__(name):
  # matplotlib and scipy.stats cost ~1.5 s to import: load them only when plots or t-tests are asked for
  # (prediction imports NMS from here and should start fast).
  if name == 'save_plots':
    from yolo_osam_jax.evaluation.plots import save_all
    return save_all
  if name == 'compare_runs':
    from yolo_osam_jax.evaluation.significance import compare_runs
    return compare_runs
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = [
    'COCO_STAT_KEYS', 'Detections', 'GroundTruth', 'NmsOutput', 'batched_nms', 'collect_batches',
    'compare_runs', 'detection_confusion', 'detections_from_coco', 'evaluate_accuracy',
    'evaluate_batches', 'evaluate_coco', 'evaluate_detections', 'evaluate_yolov5', 'format_table',
    'ground_truth_from_coco', 'json_ready', 'make_detections', 'make_ground_truth', 'nms_numpy',
    'save_plots',
]
