"""Runs a trained recognizer on images, folders, globs, videos, a webcam or a stream.

  python scripts/predict.py --checkpoint runs/train/1/best --source photo.jpg
  python scripts/predict.py --checkpoint runs/train/1/best --source photos/ 'more/*.png' clip.mp4
  python scripts/predict.py --checkpoint runs/train/1/best --source 0            # webcam 0
  python scripts/predict.py --checkpoint runs/train/1/best --source rtsp://host/stream --max-frames 500
  python scripts/predict.py --checkpoint runs/rafdb/best --source group.jpg --faces haar   # two-stage
  python scripts/predict.py --checkpoint runs/train/1/best --source 0 --show      # live window

--faces auto (default) finds faces with OpenCV's Haar cascade and names each crop's expression when the
model was trained on whole-image face crops (RAF-DB aligned, FER2013, CK+48); --faces model makes the
model find them itself. A model trained on the drawn synthetic faces gets one warning line.

Outputs go to runs/predict/<n>/ (the next free n) or --out:
  <name>.<ext> / <name>.mp4   annotated images / videos (box, expression, confidence)   --save images
  detections.json             one record per image or video frame with its detections  --save json
  detections.csv              one row per detection with the class probabilities       --save csv
  labels/<name>.txt           yolo format: class cx cy w h normalised (+ conf with --save-conf),
                              labels/<name>_<frame>.txt for video frames                --save txt
A source that cannot be used (missing path, unreadable or empty file, video OpenCV cannot open) gets one
`error:` line on stderr and the run goes on with the others; the exit status is 1 when any source failed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys

import _bootstrap  # noqa: F401
import cv2
import numpy as np
from tqdm import tqdm

from yolo_osam_jax import errors as errors_lib
from yolo_osam_jax import predict as predict_lib
from yolo_osam_jax import sources as sources_lib
from yolo_osam_jax import visualize

VIDEO_EXTENSIONS = sources_lib.VIDEO_EXTENSIONS
SAVE_KINDS = ('images', 'json', 'csv', 'txt')


class Errors(list):
  """Messages about sources that could not be used: each is printed when it happens and kept."""

  def append(self, message: str) -> None:
    super().append(message)
    tqdm.write(f'error: {message}', file=sys.stderr)


# ---------------------------------------------------------------------------------------------------
# Sources.


_kind_of = sources_lib.kind_of
expand_sources = sources_lib.expand_sources  # (sources, errors) → [(kind, what)]; moved to the package


# ---------------------------------------------------------------------------------------------------
# Outputs.


def next_run_dir(project: str) -> str:
  """project/<n> for the smallest n above every existing numbered run, created."""
  os.makedirs(project, exist_ok=True)
  taken = [int(d) for d in os.listdir(project) if d.isdigit()]
  n = max(taken, default=0) + 1
  while True:
    path = os.path.join(project, str(n))
    try:
      os.makedirs(path)
      return path
    except FileExistsError:  # another run took it meanwhile
      n += 1


def annotate(image_bgr: np.ndarray, detections, line_width: int | None = None,
             show_conf: bool = True) -> np.ndarray:
  """A copy of the (BGR, as OpenCV reads and writes) image with each detection's box and 'expression
  confidence' label drawn by visualize.annotate."""
  boxes = [d.box for d in detections]
  class_ids = [d.class_id for d in detections]
  names = {d.class_id: d.name for d in detections}
  confidences = [d.confidence for d in detections] if show_conf else None
  drawn = visualize.annotate(image_bgr[..., ::-1], boxes, class_ids, names, confidences,
                             line_width=line_width)
  return np.ascontiguousarray(drawn[..., ::-1])


class Writers:
  """Collects detections and writes the selected outputs into the run folder."""

  def __init__(self, out_dir: str, save: set[str], class_names, save_conf: bool, line_width):
    self.out_dir, self.save, self.save_conf, self.line_width = out_dir, save, save_conf, line_width
    self.class_names = list(class_names)
    self.records: list[dict] = []
    self.used_names: set[str] = set()
    # Real paths of every input file: an output never replaces one (--out may be a source folder).
    self.inputs: set[str] = set()
    self.show = False  # --show: each annotated image / frame also goes to a window
    self.csv_file = self.csv = None
    if 'csv' in save:
      self.csv_file = open(os.path.join(out_dir, 'detections.csv'), 'w', newline='')
      self.csv = csv.writer(self.csv_file)
      self.csv.writerow(['source', 'frame', 'x1', 'y1', 'x2', 'y2', 'class_id', 'name', 'confidence']
                        + [f'p_{n}' for n in self.class_names])
    if 'txt' in save:
      os.makedirs(os.path.join(out_dir, 'labels'), exist_ok=True)

  def display(self, title: str, image_bgr: np.ndarray, line_width, detections) -> None:
    """With --show, the annotated image in a window (needs OpenCV's GUI build; checked in main)."""
    if self.show:
      cv2.imshow(title, annotate(image_bgr, detections, line_width))
      cv2.waitKey(1)

  def unique_stem(self, source: str) -> str:
    """The output name of a source: its file stem, suffixed _2, _3, … when an earlier source had it."""
    stem = os.path.splitext(os.path.basename(source.rstrip('/')))[0] or 'source'
    stem = ''.join(c if (c.isalnum() or c in '-_.') else '_' for c in stem)
    name, k = stem, 1
    while name in self.used_names:
      k += 1
      name = f'{stem}_{k}'
    self.used_names.add(name)
    return name

  def output_path(self, stem: str, ext: str) -> str:
    """out_dir/<stem><ext>, or out_dir/<stem>_pred<ext> (_pred2, ...) where that would be an input file."""
    path = os.path.join(self.out_dir, stem + ext)
    k = 1
    while os.path.realpath(path) in self.inputs:
      path = os.path.join(self.out_dir, f'{stem}_pred{"" if k == 1 else k}{ext}')
      k += 1
    return path

  def add(self, source: str, frame, hw, detections, stem: str) -> None:
    h, w = hw
    self.records.append({'source': source, 'frame': frame, 'width': int(w), 'height': int(h),
                         'detections': [d.to_dict() for d in detections]})
    if self.csv is not None:
      for d in detections:
        self.csv.writerow([source, '' if frame is None else frame, *(f'{v:.3f}' for v in d.box), d.class_id,
                           d.name, f'{d.confidence:.6f}', *(f'{p:.6f}' for p in d.probabilities)])
    if 'txt' in self.save:
      name = stem if frame is None else f'{stem}_{frame}'
      with open(os.path.join(self.out_dir, 'labels', name + '.txt'), 'w') as f:
        for d in detections:
          x1, y1, x2, y2 = d.box
          values = [(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h]
          line = f'{d.class_id} ' + ' '.join(f'{v:.6f}' for v in values)
          f.write(line + (f' {d.confidence:.6f}' if self.save_conf else '') + '\n')

  def close(self) -> list[str]:
    written = []
    if self.csv_file is not None:
      self.csv_file.close()
      written.append(os.path.join(self.out_dir, 'detections.csv'))
    if 'json' in self.save:
      path = os.path.join(self.out_dir, 'detections.json')
      with open(path, 'w') as f:
        json.dump(self.records, f, indent=1)
      written.append(path)
    return written


# ---------------------------------------------------------------------------------------------------
# Running.


def run_images(recognizer, paths, writers: Writers, batch_size: int, errors: Errors) -> int:
  """Predicts on image files in batches; a file that cannot be read is reported and skipped."""
  done = 0
  progress = tqdm(total=len(paths), unit='img', desc='images', disable=not paths)
  for start in range(0, len(paths), batch_size):
    loaded = []
    for path in paths[start:start + batch_size]:
      try:
        loaded.append((path, predict_lib.read_image(path)))
      except (OSError, ValueError) as e:
        errors.append(str(e))
        progress.update(1)
    if not loaded:
      continue
    results = recognizer.predict_rgb([image for _, image in loaded])
    for (path, image), detections in zip(loaded, results):
      stem = writers.unique_stem(path)
      writers.add(path, None, image.shape[:2], detections, stem)
      writers.display('predict', image[..., ::-1], writers.line_width, detections)
      if 'images' in writers.save:
        ext = os.path.splitext(path)[1].lower()
        ext = ext if ext in ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff') else '.png'
        out = writers.output_path(stem, ext)
        if not cv2.imwrite(out, annotate(image[..., ::-1], detections, writers.line_width)):
          errors.append(f'{out}: OpenCV could not write the annotated image')
      done += 1
      progress.update(1)
  progress.close()
  return done


def run_video(recognizer, kind: str, what, writers: Writers, batch_size: int, errors: Errors,
              max_frames: int | None) -> int:
  """Predicts on every frame of a video file, camera or stream; writes an annotated .mp4."""
  label = f'camera {what}' if kind == 'camera' else str(what)
  source = f'camera:{what}' if kind == 'camera' else str(what)
  capture = cv2.VideoCapture(what)
  if not capture.isOpened():
    errors.append(f'{label}: OpenCV cannot open this video (unsupported format or codec, or no device)')
    return 0
  fps = capture.get(cv2.CAP_PROP_FPS)
  fps = fps if fps and np.isfinite(fps) and fps > 0 else 30.0
  total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if kind == 'video' else 0
  if max_frames:
    total = min(total, max_frames) if total > 0 else max_frames
  stem = writers.unique_stem(f'camera{what}' if kind == 'camera' else
                             (os.path.basename(str(what)) if kind == 'video' else 'stream'))
  writer = None
  frame_index = 0
  progress = tqdm(total=total or None, unit='frame', desc=label)
  try:
    while max_frames is None or frame_index < max_frames:
      frames = []
      while len(frames) < batch_size and (max_frames is None or frame_index + len(frames) < max_frames):
        ok, frame = capture.read()
        if not ok:
          break
        frames.append(frame)
      if not frames:
        break
      results = recognizer.predict_rgb([np.ascontiguousarray(f[..., ::-1]) for f in frames])
      for frame, detections in zip(frames, results):
        writers.add(source, frame_index, frame.shape[:2], detections, stem)
        writers.display(label, frame, writers.line_width, detections)
        if 'images' in writers.save:
          if writer is None:
            out = writers.output_path(stem, '.mp4')
            writer = cv2.VideoWriter(out, cv2.VideoWriter_fourcc(*'mp4v'), fps,
                                     (frame.shape[1], frame.shape[0]))
            if not writer.isOpened():
              errors.append(f'{out}: OpenCV could not open a video writer (mp4v)')
          writer.write(annotate(frame, detections, writers.line_width))
        frame_index += 1
      progress.update(len(frames))
  except KeyboardInterrupt:
    print(f'\n{label}: stopped after {frame_index} frames', file=sys.stderr)
  finally:
    progress.close()
    capture.release()
    if writer is not None:
      writer.release()
  if frame_index == 0:
    errors.append(f'{label}: no frame could be read (empty or unsupported video)')
  return frame_index


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--checkpoint', required=True, help='model checkpoint directory')
  parser.add_argument('--source', required=True, nargs='+',
                      help='image files, folders, glob patterns, video files, webcam index, stream URL')
  parser.add_argument('--out', default=None, help='output folder (default: the next runs/predict/<n>)')
  parser.add_argument('--project', default='runs/predict', help='parent of the numbered run folders')
  parser.add_argument('--conf-thres', type=float, default=0.25, help='confidence threshold')
  parser.add_argument('--iou-thres', type=float, default=0.45, help='NMS IoU threshold')
  parser.add_argument('--img-size', type=int, default=None,
                      help='model input side (multiple of 32; default: the training size)')
  parser.add_argument('--classes', nargs='+', default=None, help='keep only these class ids or names')
  parser.add_argument('--max-det', type=int, default=300, help='maximum detections per image')
  parser.add_argument('--batch-size', type=int, default=8, help='images or frames per model call')
  parser.add_argument('--save', default='images,json,csv',
                      help=f'comma-separated outputs among {",".join(SAVE_KINDS)} (or "all", or "none")')
  parser.add_argument('--save-conf', action='store_true', help='append the confidence to txt lines')
  parser.add_argument('--line-width', type=int, default=None, help='box line width (default: by size)')
  parser.add_argument('--max-frames', type=int, default=None,
                      help='stop each video / camera / stream after this many frames')
  parser.add_argument('--faces', default='auto', choices=('auto', 'model', 'haar', 'haar_profile'),
                      help="who finds the faces: 'model' (one stage), 'haar' (OpenCV's cascade, then the "
                           "model names each face crop's expression; 'haar_profile' adds the profile "
                           "cascade), 'auto': haar for models trained on whole-image face crops")
  parser.add_argument('--show', action='store_true',
                      help='show each annotated image / frame in a window (needs the GUI build of OpenCV)')
  return parser, parser.parse_args(argv)


@errors_lib.script_main
def main(argv=None) -> int:
  parser, args = parse_args(sys.argv[1:] if argv is None else argv)
  save = {s.strip() for s in args.save.split(',') if s.strip()}
  save = set(SAVE_KINDS) if save == {'all'} else (set() if save == {'none'} else save)
  if save - set(SAVE_KINDS):
    parser.error(f'--save: unknown outputs {sorted(save - set(SAVE_KINDS))}; choose among {SAVE_KINDS}')
  if args.batch_size < 1:
    parser.error('--batch-size must be ≥ 1')
  if args.show and not sources_lib.gui_available():
    raise errors_lib.InputError(sources_lib.SHOW_NEEDS_GUI)
  recognizer = predict_lib.Recognizer.from_checkpoint(
      args.checkpoint, conf_thres=args.conf_thres, iou_thres=args.iou_thres, max_det=args.max_det,
      img_size=args.img_size, classes=args.classes, faces=args.faces,
      batch_buckets=sorted({1, *(b for b in predict_lib.BATCH_BUCKETS if b < args.batch_size),
                            args.batch_size}))

  errors = Errors()
  sources = expand_sources(args.source, errors)
  if args.out:
    out_dir = errors_lib.check_output_dir(args.out, '--out')
  else:
    errors_lib.check_output_dir(args.project, '--project')
    out_dir = next_run_dir(args.project)
  try:
    writers = Writers(out_dir, save, recognizer.class_names, args.save_conf, args.line_width)
  except OSError as e:
    raise errors_lib.output_error(getattr(e, 'filename', None) or out_dir, e) from e
  writers.inputs = {os.path.realpath(what) for kind, what in sources if kind in ('image', 'video')}
  writers.show = args.show
  images = [what for kind, what in sources if kind == 'image']
  num_images = run_images(recognizer, images, writers, args.batch_size, errors)
  num_frames = 0
  for kind, what in sources:
    if kind != 'image':
      num_frames += run_video(recognizer, kind, what, writers, args.batch_size, errors, args.max_frames)
  written = writers.close()

  print(f'{num_images} images, {num_frames} video frames, {len(errors)} errors; results in {out_dir}')
  for path in written:
    print(f'wrote {path}')
  return 1 if errors else 0


if __name__ == '__main__':
  sys.exit(main())
