"""Pictures: detections drawn on images, and the pictures a training run leaves in its workdir.

`annotate(image_rgb, boxes_xyxy, class_ids, class_names, confidences)` is the package's one drawing
function (scripts/predict.py and scripts/demo.py use it): each box in its class's colour with a
"name 0.87" label on a filled background, sized by the image (64² to 1080p stay readable).

A training run (training/loop.py) writes, besides its curves and confusion matrices:
  labels.jpg             class counts, box centres and box sizes of the training split (`label_statistics`)
  train_batch0..2.jpg    the first three augmented training batches with their boxes (`save_batch_labels`)
  val_batch0_labels.jpg  the first validation batch with its labels, and
  val_batch0_pred.jpg    the same images with the best weights' detections (`save_val_batch`)
  results.png            every loss and validation column of results.csv per epoch (`plot_results`)
The conventions (names, layout) are yolov5's, so the pictures look familiar to detection users; the
code is our own. OpenCV draws boxes; matplotlib (imported only when a plot is made: prediction should
start fast) draws the charts.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from typing import Callable, Mapping, Sequence

import cv2
import numpy as np

log = logging.getLogger(__name__)

# One RGB colour per class (cycled): saturated hues that stay visible on skin, hair and grey padding.
PALETTE = ((255, 56, 56), (255, 157, 151), (255, 112, 31), (255, 178, 29), (207, 210, 49),
           (72, 249, 10), (146, 204, 23), (61, 219, 134), (0, 188, 211), (0, 99, 209), (100, 115, 255))

TRAIN_BATCH_PICTURES = 3           # train_batch0.jpg … train_batch2.jpg
MAX_GRID_IMAGES = 16               # a 4 × 4 grid: more tiles would be too small to read
MIN_TILE = 256                     # small training images (64²) are enlarged to this many pixels per tile
MAX_GRID_SIDE = 1920               # big ones (640²) are shrunk so that a grid fits a screen
PRED_CONF_THRES = 0.25             # val_batch0_pred.jpg shows detections at prediction's usual threshold
JPEG_QUALITY = 90
MIN_FONT_SCALE = 0.25              # OpenCV's Hershey letters: about 6 pixels high, still legible


def class_colour(class_id: int) -> tuple[int, int, int]:
  """The RGB colour of a class (the palette, cycled)."""
  return PALETTE[int(class_id) % len(PALETTE)]


def default_line_width(height: int, width: int) -> int:
  """Box line width in pixels: 0.3 % of the mean side, at least 2 (2 px at 64², 5 px at 1080p)."""
  return max(round((height + width) / 2 * 0.003), 2)


def _text_colour(background) -> tuple[int, int, int]:
  # Black text on light label backgrounds (yellow, green), white on dark ones (red, blue): luma (BT.601).
  r, g, b = background
  return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


def _name_of(class_names, class_id) -> str:
  try:
    return str(class_names[int(class_id)]) if int(class_id) >= 0 else str(int(class_id))
  except (IndexError, KeyError):  # a class the names do not cover is shown by its number
    return str(int(class_id))


def annotate(image_rgb: np.ndarray, boxes_xyxy, class_ids, class_names: Sequence[str] | Mapping[int, str],
             confidences=None, *, line_width: int | None = None, font_scale: float | None = None,
             colour: tuple[int, int, int] | None = None, show_labels: bool = True,
             name_length: int | None = None) -> np.ndarray:
  """A copy of `image_rgb` (uint8 [H, W, 3]) with each box and its label drawn.

  Args:
    boxes_xyxy: [n, 4] pixel corners (x1, y1, x2, y2) of the image.
    class_ids: [n] class of each box: its colour and its name class_names[class_id] (a sequence, or a
      mapping from class id to name).
    confidences: [n] scores shown after the name ("Happiness 0.87"); None shows names only.
    line_width: box line width (default `default_line_width`); the label's font follows it.
    font_scale: OpenCV font scale of the label (default line_width / 3).
    colour: one RGB colour for every box instead of the class colours (e.g. ground truth in white).
    show_labels: False draws the boxes only.
    name_length: cut names to this many characters (crowded small images).
  """
  image = np.array(image_rgb, dtype=np.uint8, copy=True)
  if image.ndim != 3 or image.shape[2] != 3:
    raise ValueError(f'annotate needs an RGB image [H, W, 3], got shape {image.shape}')
  image = np.ascontiguousarray(image)  # OpenCV draws into C-contiguous arrays only
  boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
  class_ids = np.asarray(class_ids).reshape(-1)
  if len(class_ids) != len(boxes):
    raise ValueError(f'{len(boxes)} boxes but {len(class_ids)} class ids')
  scores = None if confidences is None else np.asarray(confidences, np.float64).reshape(-1)
  h, w = image.shape[:2]
  lw = int(line_width or default_line_width(h, w))
  scale = float(font_scale if font_scale is not None else lw / 3)
  thickness = max(lw - 1, 1)
  for k, (box, c) in enumerate(zip(boxes, class_ids)):
    box_colour = tuple(int(v) for v in (colour if colour is not None else class_colour(c)))
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    # LINE_8, not LINE_AA: axis-aligned edges gain nothing from anti-aliasing, and exact pixels let the
    # tests check where a box is.
    cv2.rectangle(image, (x1, y1), (x2, y2), box_colour, lw, cv2.LINE_8)
    if not show_labels:
      continue
    name = _name_of(class_names, c)
    name = name[:name_length] if name_length else name
    label = name if scores is None else f'{name} {scores[k]:.2f}'
    label_scale, label_thickness = scale, thickness
    (tw, th), baseline = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, label_scale, label_thickness)
    if tw + 2 > w and font_scale is None:
      # A label wider than a small image (64²) is shrunk to fit it rather than cut off, down to the
      # smallest scale whose letters can still be told apart.
      label_scale = max(scale * (w - 2) / tw, MIN_FONT_SCALE)
      label_thickness = 1
      (tw, th), baseline = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, label_scale, label_thickness)
    box_h = th + baseline + 2
    top = y1 - box_h if y1 - box_h >= 0 else y1  # above the box when it fits, else inside its top
    left = max(0, min(x1, w - tw - 2))  # keep the label inside the image
    cv2.rectangle(image, (left, top), (left + tw + 1, top + box_h - 1), box_colour, -1, cv2.LINE_8)
    cv2.putText(image, label, (left + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, label_scale,
                _text_colour(box_colour), label_thickness, cv2.LINE_AA)
  return image


def write_jpeg(path: str, image_rgb: np.ndarray) -> str:
  bgr = np.ascontiguousarray(image_rgb[..., ::-1])
  if not cv2.imwrite(path, bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
    raise OSError(f'{path}: OpenCV could not write the image')
  return path


# ---------------------------------------------------------------------------------------------------
# Grids of batch images.


def grid_layout(count: int, image_size: int, *, min_tile: int = MIN_TILE,
                max_side: int = MAX_GRID_SIDE) -> tuple[int, int, int]:
  """(rows, columns, tile side in pixels) of a grid of `count` square images of `image_size` pixels:
  ceil(√count) columns; tiles enlarged to min_tile when smaller, shrunk when the grid would exceed
  max_side."""
  columns = max(math.ceil(math.sqrt(count)), 1)
  rows = max(math.ceil(count / columns), 1)
  tile = max(int(image_size), min_tile)
  if columns * tile > max_side:
    tile = max(max_side // columns, 1)
  return rows, columns, tile


def batch_grid(images: Sequence[np.ndarray], boxes_xyxy: Sequence[np.ndarray],
               class_ids: Sequence[np.ndarray], class_names: Sequence[str],
               confidences: Sequence[np.ndarray] | None = None) -> np.ndarray:
  """One RGB picture of square images in a grid (`grid_layout`), each with its boxes (pixels of the
  image) drawn by `annotate`; empty cells stay white, and a thin white frame separates the tiles."""
  count = len(images)
  if count == 0:
    raise ValueError('batch_grid needs at least one image')
  size = int(images[0].shape[0])
  rows, columns, tile = grid_layout(count, size)
  scale = tile / size
  grid = np.full((rows * tile, columns * tile, 3), 255, np.uint8)
  for i, image in enumerate(images):
    # Nearest neighbour when enlarging shows the pixels the network sees; area averaging when shrinking.
    interpolation = cv2.INTER_NEAREST if tile >= size else cv2.INTER_AREA
    resized = cv2.resize(np.ascontiguousarray(image), (tile, tile), interpolation=interpolation)
    scores = None if confidences is None else confidences[i]
    drawn = annotate(resized, np.asarray(boxes_xyxy[i], np.float64).reshape(-1, 4) * scale, class_ids[i],
                     class_names, scores)
    r, c = divmod(i, columns)
    grid[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = drawn
  for r in range(rows):
    for c in range(columns):
      cv2.rectangle(grid, (c * tile, r * tile), ((c + 1) * tile - 1, (r + 1) * tile - 1), (255, 255, 255), 1)
  return grid


def label_boxes(batch: Mapping, max_images: int = MAX_GRID_IMAGES):
  """The valid images of a detection batch (pipeline layout) and their labelled boxes as pixel corners:
  (images, boxes_xyxy, class_ids), at most `max_images` of each."""
  images, boxes, classes = [], [], []
  size = int(batch['image'].shape[1])
  valid = np.asarray(batch.get('valid', np.ones(len(batch['image']), bool)), bool)
  for b in np.flatnonzero(valid)[:max_images]:
    mask = np.asarray(batch['mask'][b], bool)
    cxcywh = np.asarray(batch['boxes'][b], np.float64)[mask] * size
    boxes.append(np.concatenate([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], 1))
    classes.append(np.asarray(batch['classes'][b])[mask])
    images.append(np.asarray(batch['image'][b]))
  return images, boxes, classes


def save_batch_labels(batch: Mapping, class_names: Sequence[str], path: str) -> str:
  """Writes the first MAX_GRID_IMAGES images of a batch with their labels as a JPEG grid."""
  images, boxes, classes = label_boxes(batch)
  return write_jpeg(path, batch_grid(images, boxes, classes, class_names))


def save_train_batch(batch: Mapping, class_names: Sequence[str], workdir: str, index: int) -> str:
  """train_batch<index>.jpg: an augmented training batch (mosaics and all) with its boxes."""
  return save_batch_labels(batch, class_names, os.path.join(workdir, f'train_batch{index}.jpg'))


def save_val_batch(source: Sequence, config, class_names: Sequence[str],
                   predict_fn: Callable[[np.ndarray], np.ndarray], workdir: str, *,
                   conf_thres: float = PRED_CONF_THRES) -> tuple[str, str]:
  """val_batch0_labels.jpg and val_batch0_pred.jpg: the first validation batch (the evaluator's batch
  size, so `predict_fn` reuses its compiled shape) with its labels, and with the detections of
  `predict_fn` (uint8 images → raw predictions [B, N, 5 + nc] or [B, N, 4 + nc]) kept by NMS at
  conf_thres, one class per box."""
  from yolo_osam_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from yolo_osam_jax.evaluation import nms  # pylint: disable=g-import-not-at-top
  batch_size = int(min(config.eval.batch_size, len(source)))
  loader = pipeline.make_detection_loader(source, config.data, train=False, batch_size=batch_size,
                                          num_workers=0)
  batch = next(iter(loader))
  labels_path = save_batch_labels(batch, class_names, os.path.join(workdir, 'val_batch0_labels.jpg'))
  predictions = nms.with_objectness(np.asarray(predict_fn(batch['image'])), len(class_names))
  iou_thres = float(config.eval.get('predict_iou_thres', 0.45))
  out = nms.batched_nms(predictions, conf_thres=float(conf_thres), iou_thres=iou_thres, max_det=300,
                        multi_label=False)
  keep = np.asarray(out.valid)
  valid = np.flatnonzero(np.asarray(batch['valid'], bool))[:MAX_GRID_IMAGES]
  grid = batch_grid([batch['image'][b] for b in valid],
                    [np.asarray(out.boxes[b])[keep[b]] for b in valid],
                    [np.asarray(out.classes[b])[keep[b]] for b in valid], class_names,
                    [np.asarray(out.scores[b])[keep[b]] for b in valid])
  return labels_path, write_jpeg(os.path.join(workdir, 'val_batch0_pred.jpg'), grid)


# ---------------------------------------------------------------------------------------------------
# labels.jpg


def label_statistics(source: Sequence, num_classes: int) -> dict[str, np.ndarray]:
  """What labels.jpg draws, from the TFDS-style examples of a split (objects/bbox normalised ymin, xmin,
  ymax, xmax; objects/label):
    counts   int64 [num_classes]  boxes per class
    centres  float [n, 2]         box centre (x, y), normalised to the original image
    sizes    float [n, 2]         box (width, height), normalised likewise
  """
  counts = np.zeros(int(num_classes), np.int64)
  centres, sizes = [], []
  for i in range(len(source)):
    objects = source[i]['objects']
    labels = np.asarray(objects['label'], np.int64).reshape(-1)
    bbox = np.asarray(objects['bbox'], np.float64).reshape(-1, 4)
    if len(labels) and labels.max() >= num_classes:
      raise ValueError(f'example {i}: class {int(labels.max())} but only {num_classes} classes')
    counts += np.bincount(labels, minlength=int(num_classes))
    ymin, xmin, ymax, xmax = bbox.T
    centres.append(np.stack([(xmin + xmax) / 2, (ymin + ymax) / 2], 1))
    sizes.append(np.stack([xmax - xmin, ymax - ymin], 1))
  empty = np.zeros((0, 2))
  return {'counts': counts, 'centres': np.concatenate(centres) if centres else empty,
          'sizes': np.concatenate(sizes) if sizes else empty}


LABELS_FIGSIZE = (15, 5)  # inches at LABELS_DPI: labels.jpg is 1500 × 500 pixels
LABELS_DPI = 100


def plot_labels(statistics: Mapping[str, np.ndarray], class_names: Sequence[str], path: str) -> str:
  """labels.jpg: a bar chart of the class counts, and 2-D histograms of the box centres and sizes."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  counts = np.asarray(statistics['counts'])
  fig, axes = plt.subplots(1, 3, figsize=LABELS_FIGSIZE)
  names = [class_names[c] if c < len(class_names) else str(c) for c in range(len(counts))]
  bars = axes[0].bar(range(len(counts)), counts, color=[np.array(class_colour(c)) / 255 for c in
                                                        range(len(counts))])
  axes[0].bar_label(bars, fontsize=8)
  axes[0].set_xticks(range(len(counts)), names, rotation=45, ha='right')
  axes[0].set(ylabel='boxes', title=f'{int(counts.sum())} boxes per class')
  for ax, key, xlabel, ylabel, title in (
      (axes[1], 'centres', 'x', 'y', 'box centre (normalised)'),
      (axes[2], 'sizes', 'width', 'height', 'box size (normalised)')):
    values = np.asarray(statistics[key]).reshape(-1, 2)
    if len(values):
      ax.hist2d(values[:, 0], values[:, 1], bins=50, range=((0, 1), (0, 1)), cmap='Blues', cmin=1)
    else:
      ax.text(0.5, 0.5, 'no boxes', ha='center', va='center')
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=xlabel, ylabel=ylabel, title=title)
    ax.set_aspect('equal')
  axes[1].invert_yaxis()  # image coordinates: y grows downwards, so the picture reads like a photo
  fig.tight_layout()
  fig.savefig(path, dpi=LABELS_DPI, pil_kwargs={'quality': JPEG_QUALITY})
  plt.close(fig)
  return path


def save_labels(source: Sequence, class_names: Sequence[str], workdir: str) -> str:
  return plot_labels(label_statistics(source, len(class_names)), class_names,
                     os.path.join(workdir, 'labels.jpg'))


# ---------------------------------------------------------------------------------------------------
# results.png


HEADLINE_METRICS = ('val/precision', 'val/recall', 'val/mAP50', 'val/mAP50-95')


def read_results(csv_path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """What results.png draws: {column: (epochs, values)} for every train/* column of results.csv (the
  loss components of the model family, then the total) and every val/* column (precision, recall, mAP50,
  mAP50-95 first); epochs whose cell is empty (no validation that epoch) are left out of that column."""
  with open(csv_path, newline='') as f:
    reader = csv.DictReader(f)
    header = list(reader.fieldnames or [])
    rows = list(reader)
  train = [k for k in header if k.startswith('train/')]
  val = [k for k in HEADLINE_METRICS if k in header] + [
      k for k in header if k.startswith('val/') and k not in HEADLINE_METRICS]
  series = {}
  for key in train + val:
    points = [(float(row['epoch']), float(row[key])) for row in rows if (row.get(key) or '').strip()]
    epochs, values = (np.array(v, np.float64) for v in zip(*points)) if points else (np.zeros(0),) * 2
    series[key] = (epochs, values)
  return series


def plot_results(csv_path: str, path: str) -> str:
  """results.png: one small chart per column of `read_results`, two rows."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from matplotlib.ticker import MaxNLocator  # pylint: disable=g-import-not-at-top

  series = read_results(csv_path)
  if not series:
    raise ValueError(f'{csv_path}: no train/* or val/* columns to plot')
  columns = math.ceil(len(series) / 2)
  fig, axes = plt.subplots(2, columns, figsize=(3 * columns, 6), squeeze=False)
  axes = axes.ravel()
  for ax, (key, (epochs, values)) in zip(axes, series.items()):
    ax.plot(epochs, values, marker='.', linewidth=2, markersize=6)
    ax.set_title(key, fontsize=11)
    ax.set_xlabel('epoch', fontsize=8)
    ax.tick_params(labelsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
  for ax in axes[len(series):]:
    ax.axis('off')
  fig.tight_layout()
  fig.savefig(path, dpi=150)
  plt.close(fig)
  return path


# ---------------------------------------------------------------------------------------------------
# Called from the training loop.


def safely(draw: Callable, *args, **kwargs):
  """draw(*args, **kwargs), or None with a logged warning when it fails: a picture that cannot be drawn
  (a full disk, an odd dataset) must not end a training run."""
  try:
    return draw(*args, **kwargs)
  except Exception:  # pylint: disable=broad-except
    log.warning('could not draw %s', getattr(draw, '__name__', draw), exc_info=True)
    return None
