"""Evaluation plots as PNG files (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (backend first)
import numpy as np  # noqa: E402


def _legend_ok(num_lines):
  return num_lines <= 21  # beyond that a legend hides the plot (yolov5's rule)


def plot_pr_curve(curves, class_names, ap50, path):
  """Precision-recall at IoU 0.5 per class and their mean; `curves` from yolov5.evaluate."""
  fig, ax = plt.subplots(figsize=(8, 6), tight_layout=True)
  x, pr = curves['recall_grid'], curves['pr']
  show = _legend_ok(len(pr))
  for i, c in enumerate(curves['classes']):
    ax.plot(x, pr[i], linewidth=1, label=f"{class_names[c]} {ap50[i]:.3f}" if show else None)
  ax.plot(x, pr.mean(0), linewidth=3, color='blue', label=f"all classes {np.mean(ap50):.3f} mAP@0.5")
  ax.set(xlabel='Recall', ylabel='Precision', xlim=(0, 1), ylim=(0, 1), title='Precision-Recall')
  ax.legend(loc='lower left')
  fig.savefig(path, dpi=150)
  plt.close(fig)


def plot_metric_confidence(curves, class_names, metric, path):
  """F1 (or precision/recall) against confidence per class, plus the mean."""
  fig, ax = plt.subplots(figsize=(8, 6), tight_layout=True)
  x, y = curves['confidence'], curves[metric]
  show = _legend_ok(len(y))
  for i, c in enumerate(curves['classes']):
    ax.plot(x, y[i], linewidth=1, label=class_names[c] if show else None)
  mean = y.mean(0)
  best = int(mean.argmax())
  ax.plot(x, mean, linewidth=3, color='blue',
          label=f"all classes {mean[best]:.2f} at {x[best]:.3f}")
  ax.set(xlabel='Confidence', ylabel=metric.capitalize(), xlim=(0, 1), ylim=(0, 1),
         title=f'{metric.capitalize()}-Confidence')
  ax.legend(loc='lower left')
  fig.savefig(path, dpi=150)
  plt.close(fig)


def plot_confusion(matrix, row_names, col_names, path, title, xlabel, ylabel, normalize_columns=True):
  """A heat map of `matrix`; columns normalised to sum 1 when asked (yolov5 normalises per true class)."""
  matrix = np.asarray(matrix, np.float64)
  shown = matrix / (matrix.sum(0, keepdims=True) + 1e-9) if normalize_columns else matrix
  size = max(6, 0.6 * max(matrix.shape) + 2)
  fig, ax = plt.subplots(figsize=(size, size * 0.85), tight_layout=True)
  image = ax.imshow(shown, cmap='Blues', vmin=0, vmax=1 if normalize_columns else None)
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
  ax.set_xticks(range(len(col_names)), col_names, rotation=90)
  ax.set_yticks(range(len(row_names)), row_names)
  if max(matrix.shape) <= 30:
    for i in range(matrix.shape[0]):
      for j in range(matrix.shape[1]):
        if matrix[i, j]:
          text = f"{shown[i, j]:.2f}" if normalize_columns else f"{int(matrix[i, j])}"
          ax.text(j, i, text, ha='center', va='center', fontsize=7,
                  color='white' if shown[i, j] > 0.5 * (shown.max() or 1) else 'black')
  ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
  fig.savefig(path, dpi=150)
  plt.close(fig)


def save_all(results, out_dir) -> list[str]:
  """Writes every plot `results` (runner.evaluate_detections) has data for; returns the paths."""
  os.makedirs(out_dir, exist_ok=True)
  names = results['class_names']
  written = []
  curves = results.get('yolov5_curves')
  if curves is not None:
    ap50 = [row['ap50'] for row in results['yolov5']['per_class']]
    path = os.path.join(out_dir, 'PR_curve.png')
    plot_pr_curve(curves, names, ap50, path)
    written.append(path)
    for metric, file_name in (('f1', 'F1_curve.png'), ('precision', 'P_curve.png'),
                              ('recall', 'R_curve.png')):
      path = os.path.join(out_dir, file_name)
      plot_metric_confidence(curves, names, metric, path)
      written.append(path)
  detection = np.asarray(results['detection_confusion_matrix'])
  path = os.path.join(out_dir, 'confusion_matrix.png')
  plot_confusion(detection, names + ['background'], names + ['background'], path,
                 'Detection confusion matrix (columns normalised)', 'True', 'Predicted')
  written.append(path)
  classification = np.asarray(results['accuracy']['confusion_matrix'])
  path = os.path.join(out_dir, 'classification_confusion_matrix.png')
  plot_confusion(classification, names, names + ['missed'], path,
                 'Classification confusion matrix (counts)', 'Predicted', 'True',
                 normalize_columns=False)
  written.append(path)
  return written
