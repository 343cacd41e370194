"""Runs the whole evaluation: model outputs -> NMS -> original-image boxes -> every metric.

`evaluate_batches` is what scripts/eval.py and training call with a `predict_fn` and the eval batches;
`evaluate_detections` does the metrics for boxes already in original-image pixels (both file and model
modes end there).
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from yolo_osam_jax.evaluation import accuracy as accuracy_lib
from yolo_osam_jax.evaluation import boxes as boxes_lib
from yolo_osam_jax.evaluation import coco as coco_lib
from yolo_osam_jax.evaluation import confusion as confusion_lib
from yolo_osam_jax.evaluation import nms as nms_lib
from yolo_osam_jax.evaluation import yolov5 as yolov5_lib

MODES = ('yolov5', 'coco')


def _get(config, key, default):
  if config is None:
    return default
  try:
    return config.get(key, default)
  except AttributeError:
    return getattr(config, key, default)


def evaluate_detections(gt: boxes_lib.GroundTruth, dt: boxes_lib.Detections, eval_config=None) -> dict:
  """Every metric for one split. `metrics` holds the numbers of the configured mode (yolov5 | coco)."""
  mode = _get(eval_config, 'mode', 'yolov5')
  if mode not in MODES:
    raise ValueError(f"eval.mode must be one of {MODES}, got {mode!r}")
  coco = coco_lib.evaluate(gt, dt)['stats']
  yolo = yolov5_lib.evaluate(gt, dt)
  acc = accuracy_lib.evaluate(gt, dt, conf_thres=_get(eval_config, 'accuracy_conf_thres', 0.5))
  detection_cm = confusion_lib.detection_confusion(
      gt, dt, conf=_get(eval_config, 'confusion_conf_thres', 0.25),
      iou_thres=_get(eval_config, 'confusion_iou_thres', 0.45))
  primary = {k: v for k, v in (coco if mode == 'coco' else yolo['stats']).items() if k != 'per_class'}
  return {
      'mode': mode,
      'metrics': primary,
      'f1_macro': acc['f1_macro'],
      'coco': coco,
      'yolov5': yolo['stats'],
      'yolov5_confidence_threshold': yolo['confidence_threshold'],
      'accuracy': acc,
      'detection_confusion_matrix': detection_cm,
      'class_names': list(gt.class_names),
      'num_images': gt.num_images,
      'num_labels': int(np.sum(~gt.iscrowd)),
      'num_detections': int(dt.image.size),
      'yolov5_curves': yolo['curves'],
  }


def _to_original(xyxy, scale, pad_x, pad_y, height, width):
  """Letterboxed pixels -> original-image pixels, clipped to the image (yolov5's scale_boxes)."""
  out = np.empty_like(xyxy)
  out[:, [0, 2]] = np.clip((xyxy[:, [0, 2]] - pad_x) / scale, 0, width)
  out[:, [1, 3]] = np.clip((xyxy[:, [1, 3]] - pad_y) / scale, 0, height)
  return out


def _image_id(value):
  return value.decode() if isinstance(value, bytes) else str(value)


def collect_batches(predict_fn: Callable, batches: Iterable[dict], eval_config, class_names):
  """Runs predict_fn + NMS over `batches` and returns (GroundTruth, Detections) in original pixels."""
  conf_thres = float(_get(eval_config, 'conf_thres', 0.001))
  iou_thres = float(_get(eval_config, 'iou_thres', 0.6))
  max_det = int(_get(eval_config, 'max_det', 300))
  multi_label = bool(_get(eval_config, 'multi_label', True))
  num_classes = len(class_names)
  image_ids = []
  gt_parts = {'image': [], 'boxes': [], 'classes': []}
  dt_parts = {'image': [], 'boxes': [], 'classes': [], 'scores': []}
  for batch_number, batch in enumerate(batches):
    for key in ('image', 'boxes', 'classes', 'mask', 'image_id', 'orig_size', 'letterbox', 'valid'):
      if key not in batch:
        raise ValueError(f"eval batch {batch_number}: missing key {key!r}")
    predictions = np.asarray(predict_fn(batch))
    if predictions.ndim != 3 or predictions.shape[-1] not in (4 + num_classes, 5 + num_classes):
      raise ValueError(f"eval batch {batch_number}: predictions have shape {predictions.shape}, "
                       f"expected [B, N, {5 + num_classes}] (with objectness) or [B, N, "
                       f"{4 + num_classes}] (anchor-free) for {num_classes} classes")
    predictions = nms_lib.with_objectness(predictions, num_classes)
    out = nms_lib.batched_nms(predictions, conf_thres=conf_thres, iou_thres=iou_thres,
                              max_det=max_det, multi_label=multi_label)
    out = [np.asarray(x) for x in out]
    height_in, width_in = batch['image'].shape[1:3]
    for b in range(predictions.shape[0]):
      if not batch['valid'][b]:
        continue
      index = len(image_ids)
      image_ids.append(_image_id(batch['image_id'][b]))
      scale, pad_x, pad_y = (float(v) for v in batch['letterbox'][b])
      height, width = (int(v) for v in batch['orig_size'][b])
      if not scale > 0:
        raise ValueError(f"eval batch {batch_number} row {b}: letterbox scale is {scale}, expected > 0")
      keep = out[3][b]
      det_xyxy = _to_original(out[0][b][keep].astype(np.float64), scale, pad_x, pad_y, height, width)
      dt_parts['image'].append(np.full(det_xyxy.shape[0], index))
      dt_parts['boxes'].append(boxes_lib.xyxy_to_xywh(det_xyxy))
      dt_parts['classes'].append(out[2][b][keep])
      dt_parts['scores'].append(out[1][b][keep].astype(np.float64))
      mask = np.asarray(batch['mask'][b], bool)
      cxcywh = np.asarray(batch['boxes'][b], np.float64)[mask] * [width_in, height_in, width_in,
                                                                  height_in]
      gt_xyxy = np.concatenate([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], 1)
      gt_xyxy = _to_original(gt_xyxy, scale, pad_x, pad_y, height, width)
      gt_parts['image'].append(np.full(gt_xyxy.shape[0], index))
      gt_parts['boxes'].append(boxes_lib.xyxy_to_xywh(gt_xyxy))
      gt_parts['classes'].append(np.asarray(batch['classes'][b])[mask])

  def cat(parts, key, width=None):
    if not parts[key]:
      return np.zeros((0, width) if width else (0,))
    return np.concatenate(parts[key])

  gt = boxes_lib.make_ground_truth(cat(gt_parts, 'image'), cat(gt_parts, 'boxes', 4),
                                   cat(gt_parts, 'classes'), image_ids, class_names)
  dt = boxes_lib.make_detections(cat(dt_parts, 'image'), cat(dt_parts, 'boxes', 4),
                                 cat(dt_parts, 'classes'), cat(dt_parts, 'scores'),
                                 len(image_ids), num_classes)
  return gt, dt


def evaluate_batches(predict_fn: Callable, batches: Iterable[dict], eval_config,
                     class_names) -> dict:
  """predict_fn(batch) -> [B, N, 5 + nc] decoded predictions ([B, N, 4 + nc] from an anchor-free
  model: see `nms.with_objectness`); `batches` as the data contract.

  Detections (after NMS with eval_config's conf_thres / iou_thres / max_det / multi_label) and the
  batch's ground truth are mapped back to original-image pixels with `letterbox` and clipped to
  `orig_size`; rows with valid == False are skipped. Returns `evaluate_detections`' dict.
  """
  gt, dt = collect_batches(predict_fn, batches, eval_config, class_names)
  return evaluate_detections(gt, dt, eval_config)


def json_ready(results: dict) -> dict:
  """`results` without curves, arrays as lists (for json.dump)."""

  def convert(value):
    if isinstance(value, dict):
      return {k: convert(v) for k, v in value.items() if k != 'yolov5_curves'}
    if isinstance(value, (list, tuple)):
      return [convert(v) for v in value]
    if isinstance(value, np.ndarray):
      return value.tolist()
    if isinstance(value, np.generic):
      return value.item()
    return value

  return convert(results)


def format_table(results: dict) -> str:
  """A per-class text table (yolov5-mode P/R/F1/AP, COCO AP, face accuracy) and the summary lines."""
  names = results['class_names']
  yolo_rows = {row['class']: row for row in results['yolov5']['per_class']}
  coco_rows = {row['class']: row for row in results['coco']['per_class']}
  acc_rows = {row['class']: row for row in results['accuracy']['per_class']}
  width = max([len('class'), *(len(n) for n in names)]) + 2
  header = (f"{'class':<{width}}{'labels':>8}{'P':>8}{'R':>8}{'F1':>8}{'mAP50':>8}{'mAP50-95':>10}"
            f"{'COCO AP':>9}{'acc.R':>8}")
  lines = [header]

  def row(name, labels, y, coco_ap, acc_recall):
    return (f"{name:<{width}}{labels:>8}{y['precision']:>8.3f}{y['recall']:>8.3f}{y['f1']:>8.3f}"
            f"{y.get('ap50', y.get('map50', 0.0)):>8.3f}"
            f"{y.get('ap50_95', y.get('map50_95', 0.0)):>10.3f}{coco_ap:>9.3f}{acc_recall:>8.3f}")

  lines.append(row('all', results['num_labels'], results['yolov5'], results['coco']['map50_95'],
                   results['accuracy']['accuracy']))
  for name in names:
    if name in yolo_rows:
      lines.append(row(name, yolo_rows[name]['labels'], yolo_rows[name], coco_rows[name]['ap50_95'],
                       acc_rows[name]['recall']))
  coco = results['coco']
  lines.append('')
  lines.append(f"mode {results['mode']}: " + ', '.join(
      f"{k} {v:.4f}" for k, v in results['metrics'].items() if isinstance(v, float)))
  lines.append('COCO: ' + ', '.join(f"{k} {coco[k]:.4f}" for k in coco_lib.STAT_KEYS))
  lines.append(f"accuracy (detections with score >= {results['accuracy'].get('conf_thres', 0.0):g}) "
               f"{results['accuracy']['accuracy']:.4f} "
               f"({results['accuracy']['correct']}/{results['accuracy']['faces']} faces, "
               f"{results['accuracy']['missed']} missed), macro F1 {results['f1_macro']:.4f}")
  return '\n'.join(lines)
