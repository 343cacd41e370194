"""visualize.py: annotate draws boxes at the right pixels, the grids place them on the right tiles, the
numbers behind labels.jpg and results.png are the data's, and a tiny training run leaves every picture."""

import collections
import csv
import logging
import os

import cv2
import numpy as np
import pytest

from test_train import CLASS_NAMES, tiny_config, tiny_sources
from yolo_osam_jax import training, visualize
from yolo_osam_jax.data import pipeline

PICTURES = ('labels.jpg', 'train_batch0.jpg', 'train_batch1.jpg', 'train_batch2.jpg',
            'val_batch0_labels.jpg', 'val_batch0_pred.jpg', 'results.png')


# ---------------------------------------------------------------------------------------------------
# annotate and the grids, on hand-made images.


def test_annotate_draws_the_class_colour_on_the_box_edges_only():
  image = np.zeros((200, 300, 3), np.uint8)
  x1, y1, x2, y2 = 50, 80, 150, 170
  out = visualize.annotate(image, [[x1, y1, x2, y2]], [2], CLASS_NAMES, [0.87], line_width=3)
  colour = list(visualize.PALETTE[2])
  ymid, xmid = (y1 + y2) // 2, (x1 + x2) // 2
  for y, x in ((ymid, x1), (ymid, x2), (y2, xmid), (y1, xmid), (ymid, x1 - 1), (ymid, x1 + 1)):
    assert out[y, x].tolist() == colour, (y, x)  # a 3-pixel line is centred on the edge
  for y, x in ((ymid, xmid), (ymid, x1 + 3), (ymid, x1 - 3), (y2 + 3, xmid)):
    assert out[y, x].tolist() == [0, 0, 0], (y, x)  # inside and outside stay untouched
  # The label sits on a filled background of the same colour just above the top edge.
  assert out[y1 - 3, x1].tolist() == colour
  assert image.max() == 0  # the input is not drawn on


def test_annotate_label_text_contrasts_with_its_background():
  image = np.full((120, 200, 3), 128, np.uint8)  # grey: neither text colour is in the picture
  light, dark = 4, 0  # (207, 210, 49) yellow-green: black text; (255, 56, 56) red: white text
  for class_id, dark_text in ((light, True), (dark, False)):
    out = visualize.annotate(image, [[20, 60, 180, 110]], [class_id], CLASS_NAMES, [0.5], line_width=2)
    label = out[30:60, 20:180].astype(int)  # the label's rows above the box
    assert (label == visualize.PALETTE[class_id]).all(-1).any()
    text = (label < 40).all(-1) if dark_text else (label > 215).all(-1)
    assert text.sum() > 20, class_id   # the letters' strokes


def test_annotate_at_the_top_edge_puts_the_label_inside_and_small_images_keep_it_whole():
  image = np.zeros((64, 64, 3), np.uint8)
  out = visualize.annotate(image, [[2, 0, 60, 62]], [0], CLASS_NAMES, [0.5])
  # The label's background starts at the image's first row, inside the box, with white letters on it.
  assert (out[0, 2:60] == visualize.PALETTE[0]).all(-1).all()
  assert (out[1:10, 2:60] > 200).all(-1).sum() > 20
  assert out[40, 30].tolist() == [0, 0, 0]
  # "Surprise 0.50" at the default scale is ~130 px wide: shrunk to fit, the text (white on red) ends
  # inside the 64-pixel image, so its last columns are not cut off mid-letter.
  text_columns = np.flatnonzero((out[1:12] > 200).all(-1).any(0))
  assert text_columns.max() < 63 and text_columns.max() - text_columns.min() > 40


def test_batch_grid_puts_each_images_boxes_on_its_enlarged_tile():
  """5 rows, the last padding (valid False): 4 images of 64² in a 2 × 2 grid of 256-pixel tiles."""
  b, size = 5, 64
  batch = {'image': np.zeros((b, size, size, 3), np.uint8), 'boxes': np.zeros((b, 2, 4), np.float32),
           'classes': np.zeros((b, 2), np.int32), 'mask': np.zeros((b, 2), bool),
           'valid': np.array([True, True, True, True, False])}
  batch['boxes'][3, 0] = (0.5, 0.5, 0.5, 0.5)       # pixels 16 … 48 of image 3 (row 1, column 1)
  batch['classes'][3, 0] = 5
  batch['mask'][3, 0] = True
  images, boxes, classes = visualize.label_boxes(batch)
  assert len(images) == 4
  grid = visualize.batch_grid(images, boxes, classes, CLASS_NAMES)
  assert grid.shape == (512, 512, 3)
  colour = list(visualize.PALETTE[5])
  # ×4 enlarged: 64 … 192 inside the tile at (256, 256).
  assert grid[256 + 128, 256 + 64].tolist() == colour
  assert grid[256 + 128, 256 + 192].tolist() == colour
  assert grid[256 + 192, 256 + 128].tolist() == colour
  assert grid[256 + 128, 256 + 128].tolist() == [0, 0, 0]
  assert grid[128, 64].tolist() == [0, 0, 0]         # tile 0 has no box


def test_grid_layout_enlarges_small_and_shrinks_large_images():
  assert visualize.grid_layout(4, 64) == (2, 2, 256)
  assert visualize.grid_layout(8, 64) == (3, 3, 256)
  assert visualize.grid_layout(16, 640) == (4, 4, 480)  # 4 × 640 > 1920


def test_predict_script_draws_with_annotate_in_bgr():
  """scripts/predict.py keeps OpenCV's BGR frames: the box edge holds the palette colour reversed."""
  import predict as predict_script  # scripts/predict.py
  from yolo_osam_jax.predict import Detection
  frame = np.zeros((100, 160, 3), np.uint8)
  detection = Detection((30.0, 40.0, 120.0, 90.0), 3, CLASS_NAMES[3], 0.9, ())
  out = predict_script.annotate(frame, [detection], line_width=2)
  assert out[65, 30].tolist() == list(visualize.PALETTE[3])[::-1]
  assert out[65, 120].tolist() == list(visualize.PALETTE[3])[::-1]
  assert out[65, 75].tolist() == [0, 0, 0]


def test_demo_draw_enlarges_with_white_truth_and_coloured_predictions():
  import demo  # scripts/demo.py
  image = np.zeros((64, 64, 3), np.uint8)
  out = demo.draw(image, [[10, 20, 40, 50]], [1], [[12, 30, 44, 60]], [0.7], [6], CLASS_NAMES)
  assert out.shape == (128, 128, 3)
  assert out[70, 20].tolist() == [255, 255, 255]        # truth: left edge x = 10 × 2, 1 pixel wide
  assert out[70, 22].tolist() == [0, 0, 0]
  assert out[100, 24].tolist() == list(visualize.PALETTE[6])  # prediction: left edge x = 12 × 2


# ---------------------------------------------------------------------------------------------------
# The numbers behind labels.jpg and results.png.


def test_label_statistics_are_the_splits_counts_centres_and_sizes():
  source = tiny_sources()['train']
  stats = visualize.label_statistics(source, len(CLASS_NAMES))
  by_hand = collections.Counter(int(c) for example in source for c in example['objects']['label'])
  assert stats['counts'].tolist() == [by_hand.get(c, 0) for c in range(len(CLASS_NAMES))]
  assert stats['counts'].sum() == len(stats['centres']) == len(stats['sizes'])
  ymin, xmin, ymax, xmax = source[0]['objects']['bbox'][0]
  np.testing.assert_allclose(stats['centres'][0], [(xmin + xmax) / 2, (ymin + ymax) / 2], rtol=1e-6)
  np.testing.assert_allclose(stats['sizes'][0], [xmax - xmin, ymax - ymin], rtol=1e-6)


def test_read_results_skips_epochs_without_validation(tmp_path):
  path = tmp_path / 'results.csv'
  path.write_text('epoch,train/box,train/cls,train/dfl,train/loss,val/mAP50,val/mAP50-95,val/recall,'
                  'val/precision,fitness,lr\n'
                  '1,0.9,0.8,0.7,2.4,,,,,,0.01\n'
                  '2,0.6,0.5,0.4,1.5,0.3,0.1,0.4,0.5,0.12,0.01\n')
  series = visualize.read_results(str(path))
  # Loss components in the csv's order, then precision, recall, mAP50, mAP50-95; no fitness or lr.
  assert list(series) == ['train/box', 'train/cls', 'train/dfl', 'train/loss', 'val/precision',
                          'val/recall', 'val/mAP50', 'val/mAP50-95']
  assert series['train/dfl'][0].tolist() == [1, 2] and series['train/dfl'][1].tolist() == [0.7, 0.4]
  assert series['val/mAP50'][0].tolist() == [2] and series['val/mAP50'][1].tolist() == [0.3]
  out = visualize.plot_results(str(path), str(tmp_path / 'results.png'))
  assert cv2.imread(out) is not None


def test_safely_warns_instead_of_raising(caplog):
  def broken():
    raise OSError('disk full')
  with caplog.at_level(logging.WARNING, logger='yolo_osam_jax.visualize'):
    assert visualize.safely(broken) is None
  assert 'could not draw broken' in caplog.text


def test_val_batch_pred_draws_anchor_free_detections_above_the_threshold(tmp_path):
  """A stand-in model with the anchor-free layout [B, N, 4 + nc]: in every image one box of class 2 at
  0.9 (drawn) and one of class 5 at 0.2 (below 0.25: not drawn), apart from each other."""
  sources, config = tiny_sources(), tiny_config()
  nc = len(CLASS_NAMES)

  def predict_fn(images):
    predictions = np.zeros((len(images), 2, 4 + nc), np.float32)
    predictions[:, 0, :4] = (20, 20, 24, 24)      # cx, cy, w, h in pixels: x 8 … 32
    predictions[:, 0, 4 + 2] = 0.9
    predictions[:, 1, :4] = (50, 50, 10, 10)      # x 45 … 55
    predictions[:, 1, 4 + 5] = 0.2
    return predictions

  visualize.save_val_batch(sources['validation'], config, CLASS_NAMES, predict_fn, str(tmp_path))
  written = _decoded(str(tmp_path / 'val_batch0_pred.jpg'))[1].astype(np.float64)
  labels = _decoded(str(tmp_path / 'val_batch0_labels.jpg'))[1]
  assert written.shape == labels.shape == (768, 768, 3)       # 8 images: 3 × 3 tiles of 256
  image = sources['validation'][0]['image'].astype(np.float64)  # 64², so letterboxing changes nothing
  # Tile 0, ×4: the drawn box's left edge at x = 32, rows 32 … 128; the other box's at x = 180.
  assert np.abs(written[100, 32] - visualize.PALETTE[2]).max() < 40
  assert np.abs(written[200, 180] - image[50, 45]).max() < 40   # the image itself, no class-5 edge


# ---------------------------------------------------------------------------------------------------
# One tiny training run (16 images, batch 4, 2 epochs) shared by the tests below.


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  sources = tiny_sources()
  config = tiny_config()
  workdir = str(tmp_path_factory.mktemp('vis') / 'run')
  result = training.train_and_evaluate(config, workdir, sources=sources, class_names=CLASS_NAMES,
                                       show_progress=False)
  return workdir, config, sources, result


def _decoded(path):
  with open(path, 'rb') as f:
    head = f.read(8)
  image = cv2.imread(path)
  assert image is not None, path
  return head, image[..., ::-1]


def test_every_picture_is_written_as_a_valid_file_of_the_expected_size(run):
  workdir = run[0]
  sizes = {'labels.jpg': (500, 1500),               # LABELS_FIGSIZE at LABELS_DPI
           'train_batch0.jpg': (512, 512),          # batch 4 of 64²: 2 × 2 tiles of 256
           'val_batch0_labels.jpg': (768, 768),     # eval batch 8: 3 × 3 tiles of 256
           'val_batch0_pred.jpg': (768, 768)}
  for name in PICTURES:
    path = os.path.join(workdir, name)
    head, image = _decoded(path)
    assert head[:3] == b'\xff\xd8\xff' if name.endswith('.jpg') else head == b'\x89PNG\r\n\x1a\n', name
    if name in sizes:
      assert image.shape[:2] == sizes[name], name


def test_train_batches_are_the_first_three_training_batches(run, tmp_path):
  """Each train_batch<k>.jpg matches the k-th batch of the run's loader redrawn, and not the others."""
  workdir, config, sources, _ = run
  loader = pipeline.make_detection_loader(sources['train'], config.data, train=True,
                                          seed=int(config.data.shuffle_seed))
  iterator = iter(loader)
  redrawn = []
  for k in range(3):
    path = visualize.save_batch_labels(next(iterator), CLASS_NAMES, str(tmp_path / f'{k}.jpg'))
    redrawn.append(_decoded(path)[1].astype(np.float64))
  for k in range(3):
    written = _decoded(os.path.join(workdir, f'train_batch{k}.jpg'))[1].astype(np.float64)
    differences = [np.abs(written - other).mean() for other in redrawn]
    assert differences[k] < 2.0, differences               # JPEG noise only
    assert min(d for j, d in enumerate(differences) if j != k) > 5 * differences[k] + 1, differences


def test_val_batch_labels_show_the_first_validation_batch(run, tmp_path):
  workdir, config, sources, _ = run
  batch = next(iter(pipeline.make_detection_loader(sources['validation'], config.data, train=False,
                                                    batch_size=8, num_workers=0)))
  # Boxes by hand: tile side 256 for 64² images, so ×4; the first image is the top-left tile.
  mask = batch['mask'][0]
  cx, cy, w, h = batch['boxes'][0][mask][0] * 64 * 4
  colour = np.array(visualize.PALETTE[int(batch['classes'][0][mask][0])], np.float64)
  written = _decoded(os.path.join(workdir, 'val_batch0_labels.jpg'))[1].astype(np.float64)
  left_edge = written[int(round(cy + h / 4)), int(round(cx - w / 2))]  # lower on the edge: no label there
  assert np.abs(left_edge - colour).max() < 40, (left_edge, colour)     # JPEG blurs a 2-pixel line


def test_labels_and_results_are_drawn_from_the_run(run):
  workdir, config, sources, result = run
  stats = visualize.label_statistics(sources['train'], len(CLASS_NAMES))
  assert stats['counts'].sum() == sum(len(e['objects']['label']) for e in sources['train'])
  series = visualize.read_results(os.path.join(workdir, 'results.csv'))
  history = result['history']  # the loop's own record of each epoch (metrics.json), not the csv
  for key in ('train/box', 'train/obj', 'train/cls', 'train/loss', 'val/mAP50', 'val/mAP50-95',
              'val/precision', 'val/recall'):
    assert series[key][0].tolist() == [1, 2], key
    np.testing.assert_allclose(series[key][1], [row[key] for row in history], rtol=1e-6, err_msg=key)
