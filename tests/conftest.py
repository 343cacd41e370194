"""Shared test setup: the repository root on sys.path (so `from configs import base` works)."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
# Scripts import their `_bootstrap` sibling; tests load them as modules.
if os.path.join(ROOT, 'scripts') not in sys.path:
  sys.path.insert(1, os.path.join(ROOT, 'scripts'))

SHARED = os.path.join(os.path.dirname(ROOT), 'shared')
FIXTURES = os.path.join(SHARED, 'fixtures')


def require_fixture(path: str) -> str:
  """`path` (under FIXTURES) if it exists; otherwise skips the calling test, or fails it under CI
  (CI=true), where a missing fixture means the checks it carries silently stopped running."""
  import pytest  # pylint: disable=g-import-not-at-top
  if not os.path.exists(path):
    message = f'shared fixture {path} not present'
    if os.environ.get('CI') == 'true':
      pytest.fail(message + ' (CI=true: fixture tests must run)', pytrace=False)
    pytest.skip(message)
  return path

# Many tests compile the same networks at the same shapes (and xdist runs them in several processes):
# a persistent compilation cache shared by the session's workers compiles each of them once.
import jax as _jax  # noqa: E402

_jax.config.update('jax_compilation_cache_dir', os.path.join(ROOT, '.pytest_cache', 'jax_cache'))
_jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


# --------------------------------------------------------------------------------------------------
# A small trained detector for the prediction/export tests (added with the training loop, issue 5).

import dataclasses as _dataclasses

import pytest as _pytest

# Scenes the fixture model is trained on; render a fresh test image with
#   yolo_osam_jax.data.synthetic_faces.render_scene(np.random.default_rng(seed), DEMO_FIXTURE_SIZE,
#                                                    DEMO_FIXTURE_SCENE)
# with a seed ≥ 10_000 (the training scenes use seeds 0 … DEMO_FIXTURE_IMAGES - 1).
DEMO_FIXTURE_SIZE = 64
DEMO_FIXTURE_IMAGES = 768  # many cheap 64² scenes, few epochs: 192 scenes × 60 epochs memorised the classes


def _demo_fixture_scene():
  from yolo_osam_jax.data import synthetic_faces  # pylint: disable=g-import-not-at-top
  # One large, clearly drawn face on a plain background: learnable in a few hundred steps.
  return _dataclasses.replace(
      synthetic_faces.DEMO_SCENE, min_faces=1, max_faces=1, min_face_frac=0.55, max_face_frac=0.8,
      background='flat', clutter=(0, 0), distractors=0.0, occlusion_prob=0.0, lighting=0.0,
      noise_std=0.0, blur_prob=0.0, jpeg_prob=0.0, rotation=5.0, intensity=(1.0, 1.0), jitter=0.02,
      glasses_prob=0.0)


def synthetic_examples(count: int, size: int, scene, first_seed: int = 0, prefix: str = 'img'):
  """TFDS-style examples (what `tfds.data_source(...)[i]` returns for our builders) rendered in memory."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from yolo_osam_jax.data import synthetic_faces  # pylint: disable=g-import-not-at-top
  examples = []
  for i in range(count):
    image, boxes, labels = synthetic_faces.render_scene(np.random.default_rng(first_seed + i), size, scene)
    x0, y0, x1, y1 = (boxes[:, k] / size for k in range(4))
    examples.append({
        'image': image,
        'image_id': f'{prefix}_{i:05d}'.encode(),
        'objects': {'bbox': np.stack([y0, x0, y1, x1], axis=1).astype(np.float32),
                    'label': labels.astype(np.int64)},
    })
  return examples


def _blank_examples(count: int, size: int):
  """Face-free flat-colour images (no objects): every training scene has a face, and without these
  negatives the model learns to report one on any plain image."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(20_000)
  grey = np.linspace(0, 255, count // 2).round()
  colours = [np.full(3, g) for g in grey] + [rng.integers(0, 256, 3) for _ in range(count - len(grey))]
  return [{'image': np.broadcast_to(c.astype(np.uint8), (size, size, 3)).copy(),
           'image_id': f'blank_{i:05d}'.encode(),
           'objects': {'bbox': np.zeros((0, 4), np.float32), 'label': np.zeros((0,), np.int64)}}
          for i, c in enumerate(colours)]


def demo_fixture_config():
  """A tiny YOLO-OSAM (width 0.125) trained at 64², no augmentation but flips, Adam."""
  from configs import base  # pylint: disable=g-import-not-at-top
  config = base.get_config()
  config.name = 'demo_fixture'
  config.model.width, config.model.depth = 0.125, 0.33
  config.data.img_size = DEMO_FIXTURE_SIZE
  config.data.batch_size = 16
  config.data.max_boxes = 2
  for key in ('mosaic', 'translate', 'scale', 'hsv_h', 'hsv_s', 'hsv_v'):
    config.data.aug[key] = 0.0
  config.train.optimizer = 'adam'
  config.train.lr0 = 0.005
  config.train.lrf = 0.05
  config.train.epochs = 25  # 48 steps per epoch; the class loss only starts falling after ~250 steps
  config.train.warmup_epochs = 1.0
  config.train.warmup_min_iters = 0
  config.train.nominal_batch = 16
  config.train.val_every = 25
  config.train.patience = 0
  config.loss.cls = 8.0  # yolov5's 0.5·nc/80 learns 7 classes too slowly for a few hundred steps
  config.eval.batch_size = 32
  return config


@_pytest.fixture(scope='session')
def demo_checkpoint(tmp_path_factory):
  """Model-checkpoint directory (checkpoint.load_model) of a tiny detector trained on synthetic faces.

  Trained once per test session (and shared between pytest-xdist workers through a file lock).
  """
  import filelock  # pylint: disable=g-import-not-at-top
  from yolo_osam_jax import training  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    root = root.parent  # shared by all workers of this session
  workdir = root / 'demo_checkpoint_run'
  with filelock.FileLock(str(root / 'demo_checkpoint.lock')):
    best = workdir / 'best'
    if not (best / 'config.json').is_file():
      scene = _demo_fixture_scene()
      train = synthetic_examples(DEMO_FIXTURE_IMAGES, DEMO_FIXTURE_SIZE, scene, 0, 'train')
      train += _blank_examples(64, DEMO_FIXTURE_SIZE)
      val = synthetic_examples(32, DEMO_FIXTURE_SIZE, scene, 5_000, 'val')
      sources = {'train': train, 'validation': val}
      from yolo_osam_jax.data import synthetic_faces  # pylint: disable=g-import-not-at-top
      training.train_and_evaluate(demo_fixture_config(), str(workdir), sources=sources,
                                  class_names=synthetic_faces.CLASS_NAMES, show_progress=False)
  return str(best)


def pytest_collection_modifyitems(config, items):  # pylint: disable=unused-argument
  """The long tests (marked slow) first: pytest-xdist hands tests out in collection order, and a
  two-minute training run collected last (tests/test_train.py) otherwise runs alone at the end while
  the other worker sits idle."""
  items.sort(key=lambda item: item.get_closest_marker('slow') is None)
