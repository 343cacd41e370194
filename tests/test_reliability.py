"""Issue 18: nothing a user has is lost or silently wrong, and every user error is one line naming the thing.

Kills are simulated by making the writer fail between its steps; trainings are the tiny in-memory runs of
test_train.py.
"""

import json
import os
import subprocess
import sys

import cv2
import jax
import ml_collections
import numpy as np
import pytest

from conftest import ROOT
from yolo_osam_jax import checkpoint, config_utils, convert, errors
from yolo_osam_jax import data as datasets


def _config(**model):
  return ml_collections.ConfigDict({'model': dict({'num_classes': 2}, **model), 'data': {'img_size': 64}})


def _variables(value):
  return {'params': {'conv': {'kernel': np.full((3, 3), value, np.float32)}},
          'batch_stats': {'bn': {'mean': np.zeros(3, np.float32)}}}


def _run_script(name, *args, env=None):
  """(returncode, stdout, stderr) of scripts/<name> in a fresh interpreter."""
  full_env = {k: v for k, v in os.environ.items() if k != 'YOLO_OSAM_DEBUG'}
  full_env['JAX_PLATFORMS'] = 'cpu'  # no accelerator probing lines on stderr
  full_env.update(env or {})
  proc = subprocess.run([sys.executable, os.path.join(ROOT, 'scripts', name), *args], capture_output=True,
                        text=True, env=full_env, cwd=ROOT, timeout=300)
  return proc.returncode, proc.stdout, proc.stderr


# ---------------------------------------------------------------------------------------------------
# Model checkpoints: atomic replace, concurrent readers, non-finite tensors.


def test_save_model_killed_midway_keeps_the_old_checkpoint(tmp_path, monkeypatch):
  """A kill after the new variables are written but before the swap leaves the old checkpoint whole."""
  directory = str(tmp_path / 'best')
  checkpoint.save_model(directory, _variables(1.0), _config())

  def killed(*args, **kwargs):
    raise KeyboardInterrupt  # what a SIGINT between the writer's steps looks like

  monkeypatch.setattr(checkpoint, '_exchange', killed)
  with pytest.raises(KeyboardInterrupt):
    checkpoint.save_model(directory, _variables(2.0), _config())
  monkeypatch.undo()
  _, variables = checkpoint.load_model(directory)
  np.testing.assert_array_equal(variables['params']['conv']['kernel'], np.full((3, 3), 1.0))
  assert os.listdir(tmp_path) == ['best']  # the half-written staging folder was removed
  checkpoint.save_model(directory, _variables(3.0), _config())
  np.testing.assert_array_equal(checkpoint.load_model(directory)[1]['params']['conv']['kernel'], 3.0)


def test_save_model_without_atomic_swap_falls_back_to_the_moved_copy(tmp_path, monkeypatch):
  """Where renameat2 is missing, a kill between the two renames leaves `.best.old-*`; load finds it."""
  directory = str(tmp_path / 'best')
  checkpoint.save_model(directory, _variables(1.0), _config())
  monkeypatch.setattr(checkpoint, '_exchange', lambda a, b: False)
  real_rename = os.rename

  def rename_then_die(src, dst):
    real_rename(src, dst)
    if os.fspath(src) == directory:  # the old copy was moved aside; the new one is not in place yet
      raise KeyboardInterrupt

  monkeypatch.setattr(os, 'rename', rename_then_die)
  with pytest.raises(KeyboardInterrupt):
    checkpoint.save_model(directory, _variables(2.0), _config())
  monkeypatch.undo()
  assert not os.path.exists(directory)
  _, variables = checkpoint.load_model(directory)
  np.testing.assert_array_equal(variables['params']['conv']['kernel'], np.full((3, 3), 1.0))
  # The next save puts a checkpoint back in place and clears the fallback copy and the staging folder.
  checkpoint.save_model(directory, _variables(3.0), _config())
  assert os.listdir(tmp_path) == ['best']
  np.testing.assert_array_equal(checkpoint.load_model(directory)[1]['params']['conv']['kernel'], 3.0)


def test_reader_during_a_replace_sees_old_or_new_never_neither(tmp_path):
  """A reader process loops over load_model while the writer replaces the checkpoint 15 times."""
  directory = str(tmp_path / 'best')
  checkpoint.save_model(directory, _variables(0.0), _config())
  reader = subprocess.Popen(
      [sys.executable, '-c', f'''
import sys, time
sys.path.insert(0, {ROOT!r})
from yolo_osam_jax import checkpoint
seen = set()
checkpoint.load_model({directory!r})
print('ready', flush=True)
end = time.time() + 60
while time.time() < end:
  _, v = checkpoint.load_model({directory!r})
  k = v['params']['conv']['kernel']
  assert (k == k.flat[0]).all(), 'a mixed checkpoint'
  seen.add(float(k.flat[0]))
  if 15.0 in seen:
    break
print(sorted(seen))
'''], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  assert reader.stdout.readline().strip() == 'ready'
  for i in range(1, 16):
    checkpoint.save_model(directory, _variables(float(i)), _config())
  out, err = reader.communicate(timeout=120)
  assert reader.returncode == 0, err
  seen = json.loads(out.strip())
  assert seen[-1] == 15.0 and set(seen) <= {float(i) for i in range(16)}


def test_load_model_refuses_a_nan_tensor_and_names_the_key(tmp_path):
  directory = str(tmp_path / 'ckpt')
  checkpoint.save_model(directory, _variables(1.0), _config())
  # Poison the stored values the way a bad disk or a bad converter would: through orbax itself.
  import orbax.checkpoint as ocp
  bad = _variables(1.0)
  bad['params']['conv']['kernel'][1, 2] = np.nan
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(os.path.join(directory, 'variables'), bad, force=True)
  with pytest.raises(errors.InputError, match=r'variables: params/conv/kernel holds 1 NaN/Inf value\(s\) of 9'):
    checkpoint.load_model(directory)


def test_conversion_refuses_a_nan_tensor_and_names_the_key():
  from configs import base
  config = base.get_config()
  config.model.width, config.model.depth = 0.125, 0.33
  config.model.fusion, config.model.attention.kind, config.model.attention.where = 'none', 'none', 'none'
  # Zeros of the right shapes (compiling the random init would be most of this test's time).
  variables = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype),
                                     convert.variable_shapes(config.model))
  state_dict = convert.to_yolov5_state_dict(variables, config.model)
  key = 'model.0.conv.weight'
  state_dict[key] = state_dict[key].copy()
  state_dict[key][0, 0, 0, 0] = np.inf
  with pytest.raises(convert.ConversionError, match=r'^model\.0\.conv\.weight: 1 NaN/Inf value\(s\)'):
    convert.from_yolov5_state_dict(state_dict, config.model)
  assert issubclass(convert.ConversionError, errors.UserError)


# ---------------------------------------------------------------------------------------------------
# Datasets: a prepared copy is reused only for the same source.


def _yolo_folder(root, classes, images=2):
  root.mkdir(parents=True, exist_ok=True)
  names = ''.join(f'  {i}: c{i}\n' for i in range(classes))
  (root / 'data.yaml').write_text(f'path: .\ntrain: images/train\nval: images/val\nnc: {classes}\nnames:\n{names}')
  for split in ('train', 'val'):
    for i in range(images):
      (root / 'images' / split).mkdir(parents=True, exist_ok=True)
      (root / 'labels' / split).mkdir(parents=True, exist_ok=True)
      assert cv2.imwrite(str(root / 'images' / split / f'{i}.png'), np.full((20, 20, 3), 50 * i, np.uint8))
      (root / 'labels' / split / f'{i}.txt').write_text(f'{i % classes} 0.5 0.5 0.5 0.5\n')
  return root


def test_prepared_dataset_from_another_source_is_refused_then_rebuilt(tmp_path):
  """3-class faces/ is prepared; a 5-class faces/ elsewhere, same config name: refused, then --rebuild."""
  data_dir = tmp_path / 'tfds'
  first = _yolo_folder(tmp_path / 'a' / 'faces', classes=3)
  builder = datasets.build('yolo_folder', data_dir=data_dir, manual_dir=first / 'data.yaml')
  assert builder.reused is False
  assert datasets.class_names('yolo_folder', data_dir, 'faces') == ['c0', 'c1', 'c2']
  again = datasets.build('yolo_folder', data_dir=data_dir, manual_dir=first / 'data.yaml')
  assert again.reused is True  # same files: nothing is built, and the caller is told so

  second = _yolo_folder(tmp_path / 'b' / 'faces', classes=5)
  with pytest.raises(errors.InputError, match=r'built from .*/a/faces/data.yaml .*not from .*/b/faces/data.yaml.*--rebuild'):
    datasets.build('yolo_folder', data_dir=data_dir, manual_dir=second / 'data.yaml')
  assert datasets.class_names('yolo_folder', data_dir, 'faces') == ['c0', 'c1', 'c2']  # untouched
  rebuilt = datasets.build('yolo_folder', data_dir=data_dir, manual_dir=second / 'data.yaml', rebuild=True)
  assert rebuilt.reused is False
  assert datasets.class_names('yolo_folder', data_dir, 'faces') == [f'c{i}' for i in range(5)]
  assert not any('.old-' in p for p in os.listdir(os.path.dirname(rebuilt.data_dir)))


def test_edited_label_file_is_a_different_source(tmp_path):
  data_dir = tmp_path / 'tfds'
  root = _yolo_folder(tmp_path / 'faces', classes=3)
  datasets.build('yolo_folder', data_dir=data_dir, manual_dir=root / 'data.yaml')
  label = root / 'labels' / 'train' / '0.txt'
  label.write_text('2 0.5 0.5 0.5 0.5\n')
  os.utime(label, ns=(10**18, 10**18))  # a different time even on coarse-grained file systems
  with pytest.raises(errors.InputError, match='--rebuild'):
    datasets.build('yolo_folder', data_dir=data_dir, manual_dir=root / 'data.yaml')


# ---------------------------------------------------------------------------------------------------
# Config overrides and scripts: one line, no traceback.


def test_override_without_equals_sign_is_one_clear_line():
  with pytest.raises(errors.InputError, match=r"'--config.train.epochs': expected --config.train.epochs=value"):
    config_utils.split_config_args(['--config', 'c.py', '--config.train.epochs', '1'])


@pytest.mark.slow  # starts fresh interpreters; the same errors and run_main are also tested in-process
def test_script_user_error_is_one_line_and_debug_shows_the_traceback(tmp_path):
  args = ('--config', os.path.join(ROOT, 'configs', 'demo.py'), '--workdir', str(tmp_path / 'w'),
          '--config.train.epochs', '1')
  rc, out, err = _run_script('train.py', *args)
  assert rc == 2
  assert err.strip().splitlines() == ["error: override '--config.train.epochs': expected "
                                      '--config.train.epochs=value (with "=", no space)']
  rc, _, err = _run_script('train.py', *args, '--debug')
  assert rc == 2 and 'Traceback (most recent call last)' in err and err.strip().splitlines()[-1].startswith('error:')
  rc, _, err = _run_script('train.py', *args, env={'YOLO_OSAM_DEBUG': '1'})
  assert rc == 2 and 'Traceback (most recent call last)' in err


def test_run_main_names_a_full_disk_and_keeps_other_tracebacks():
  import errno

  def full(argv):
    raise OSError(errno.ENOSPC, 'No space left on device', '/runs/x/results.csv')

  assert errors.run_main(full, []) == errors.USER_ERROR_STATUS

  def bug(argv):
    raise ZeroDivisionError

  with pytest.raises(ZeroDivisionError):
    errors.run_main(bug, [])


def test_full_disk_message(capsys):
  import errno

  def full(argv):
    raise OSError(errno.ENOSPC, 'No space left on device', '/runs/x/results.csv')

  errors.run_main(full, [])
  assert capsys.readouterr().err == 'error: no space left on device while writing /runs/x/results.csv\n'


def test_npz_that_is_not_an_archive_is_named_without_numpy_pickle_advice(tmp_path):
  text = tmp_path / 'w.npz'
  text.write_text('not weights')
  with pytest.raises(convert.ConversionError) as info:
    convert.load_state_dict_file(str(text))
  assert str(info.value) == f'{text}: not a .npz archive (no zip header); write it with np.savez'
  empty = tmp_path / 'e.npz'
  empty.write_bytes(b'')
  with pytest.raises(convert.ConversionError, match=r'e\.npz: empty file \(0 bytes\)'):
    convert.load_state_dict_file(str(empty))
  good = tmp_path / 'g.npz'
  np.savez(good, a=np.arange(1000.0))
  data = good.read_bytes()
  truncated = tmp_path / 't.npz'
  truncated.write_bytes(data[:len(data) // 2])
  with pytest.raises(convert.ConversionError, match=r't\.npz: damaged or truncated \.npz archive'):
    convert.load_state_dict_file(str(truncated))


def test_malformed_config_json_names_file_and_line(tmp_path):
  (tmp_path / 'config.json').write_text('{"model": {\n  "width": 0.5,\n  oops\n}}')
  with pytest.raises(errors.InputError, match=r'config\.json: line 3 column 3: malformed JSON'):
    checkpoint.read_config_json(str(tmp_path))
  (tmp_path / 'config.json').write_bytes(b'{"model": "\xff"}')
  with pytest.raises(errors.InputError, match=r'config\.json: not UTF-8 text \(byte 11\)'):
    checkpoint.read_config_json(str(tmp_path))


# ---------------------------------------------------------------------------------------------------
# Training: a run is never replaced by accident, one training per workdir, sizes checked up front.


def _tiny_train_config(**train):
  from test_train import tiny_config
  config = tiny_config()
  for key, value in train.items():
    config.train[key] = value
  return config


def test_fresh_run_into_a_workdir_holding_a_run_is_refused(tmp_path):
  from yolo_osam_jax import training
  workdir = tmp_path / 'run'
  (workdir / 'best').mkdir(parents=True)
  (workdir / 'results.csv').write_text('epoch\n1\n')
  with pytest.raises(errors.RunExistsError) as info:
    training.train_and_evaluate(_tiny_train_config(), str(workdir))
  assert str(info.value) == (f'{workdir} holds a run (best, results.csv): use --resume, or a new --workdir '
                             '(or --overwrite to delete it)')
  assert (workdir / 'results.csv').read_text() == 'epoch\n1\n'  # nothing was touched


def test_overwrite_deletes_only_the_previous_run(tmp_path, monkeypatch):
  from yolo_osam_jax.training import loop
  workdir = tmp_path / 'run'
  (workdir / 'checkpoints' / '4').mkdir(parents=True)
  (workdir / 'metrics.json').write_text('{}')
  (workdir / 'notes.txt').write_text('mine')
  calls = []
  monkeypatch.setattr(loop, '_train_and_evaluate_locked',
                      lambda config, wd, **kw: calls.append((wd, sorted(os.listdir(wd)))) or {})
  loop.train_and_evaluate(_tiny_train_config(), str(workdir), overwrite=True)
  assert calls == [(str(workdir), ['notes.txt', 'train.lock'])]


def test_second_training_in_the_same_workdir_names_the_holder(tmp_path):
  from yolo_osam_jax import runlock, training
  workdir = tmp_path / 'run'
  workdir.mkdir()
  with runlock.WorkdirLock(str(workdir)):
    with pytest.raises(errors.LockedError, match=rf'{workdir} is in use by another training '
                       rf'\(pid {os.getpid()} on .* since .*\); wait for it to end, or use another --workdir'):
      training.train_and_evaluate(_tiny_train_config(), str(workdir))
  # The kernel lock went with its holder: the next run gets it.
  with runlock.WorkdirLock(str(workdir)):
    pass


def test_img_size_not_a_multiple_of_the_stride_is_refused_up_front(tmp_path):
  from yolo_osam_jax import training
  config = _tiny_train_config()
  config.data.img_size = 100
  with pytest.raises(errors.InputError, match=r'config\.data\.img_size = 100: must be a positive multiple '
                     r'of the largest stride 32 \(e\.g\. 96\)'):
    training.train_and_evaluate(config, str(tmp_path / 'run'))
  assert sorted(os.listdir(tmp_path / 'run')) == ['train.lock']


@pytest.mark.slow  # starts fresh interpreters; the same errors and run_main are also tested in-process
def test_train_script_refuses_an_existing_run_in_one_line(tmp_path):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / 'config.json').write_text('{}')
  rc, _, err = _run_script('train.py', '--config', os.path.join(ROOT, 'configs', 'demo.py'), '--workdir',
                           str(workdir))
  assert rc == 2 and 'Traceback' not in err
  assert err.strip().splitlines()[-1] == (f'error: {workdir} holds a run (config.json): use --resume, or a '
                                          'new --workdir (or --overwrite to delete it)')


@pytest.mark.slow
@pytest.mark.parametrize('max_loss,expected', [
    (1e4, r'step 4: 3 consecutive steps with NaN/Inf loss or gradients, or a loss above train\.max_loss'),
    (0.0, r"the model's predictions hold NaN/Inf values \(the weights diverged\); best/ and last/ keep")])
def test_exploding_finite_loss_stops_the_run_and_writes_no_garbage(tmp_path, max_loss, expected):
  """lr0 = 1e6 (the issue's case): the loss explodes while staying finite. With train.max_loss the steps
  are dropped and the run stops after max_bad_steps; without it validation finds NaN predictions and
  stops the run before best/ or last/ is written from those weights."""
  from test_train import CLASS_NAMES, tiny_sources
  from yolo_osam_jax import training
  config = _tiny_train_config(lr0=1e6, max_bad_steps=3, epochs=3, warmup_epochs=0.0, max_loss=max_loss)
  workdir = tmp_path / 'diverged'
  with pytest.raises(training.TrainingDiverged, match=expected):
    training.train_and_evaluate(config, str(workdir), sources=tiny_sources(), class_names=CLASS_NAMES,
                                show_progress=False)
  assert not (workdir / 'best').exists() and not (workdir / 'last').exists()
  assert not (workdir / 'metrics.json').exists()


# ---------------------------------------------------------------------------------------------------
# Prediction and export.


@pytest.fixture(scope='module')
def untrained_checkpoint(tmp_path_factory):
  """An untrained tiny detector saved as a model checkpoint (what prediction loads; no training needed)."""
  from configs import base
  from yolo_osam_jax.data import synthetic_faces
  config = base.get_config()
  config.model.width, config.model.depth = 0.125, 0.33
  config.model.fusion, config.model.attention.kind, config.model.attention.where = 'none', 'none', 'none'
  config.data.img_size = 64
  config.data.class_names = list(synthetic_faces.CLASS_NAMES)
  directory = str(tmp_path_factory.mktemp('untrained') / 'ckpt')
  checkpoint.save_model(directory, convert.init_variables(config.model), config)
  return directory


def _load_script(name):
  import importlib.util
  spec = importlib.util.spec_from_file_location(f'script_{name}', os.path.join(ROOT, 'scripts', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_predict_into_the_source_folder_never_writes_over_an_input(untrained_checkpoint, tmp_path):
  folder = tmp_path / 'photos'
  folder.mkdir()
  originals = {}
  for i, ext in enumerate(('.jpg', '.png')):
    assert cv2.imwrite(str(folder / f'p{i}{ext}'), np.full((40, 50, 3), 60 + 40 * i, np.uint8))
    originals[f'p{i}{ext}'] = (folder / f'p{i}{ext}').read_bytes()
  script = _load_script('predict')
  assert script.main(['--checkpoint', untrained_checkpoint, '--source', str(folder), '--out', str(folder),
                      '--conf-thres', '0.0', '--save', 'images,json']) == 0
  for name, data in originals.items():
    assert (folder / name).read_bytes() == data
  assert sorted(os.listdir(folder)) == ['detections.json', 'p0.jpg', 'p0_pred.jpg', 'p1.png', 'p1_pred.png']
  assert cv2.imread(str(folder / 'p1_pred.png')).shape == (40, 50, 3)


@pytest.mark.parametrize('case', ['file', 'under_a_file'])
def test_predict_unwritable_out_is_one_line_naming_it(untrained_checkpoint, tmp_path, capsys, case):
  image = tmp_path / 'a.png'
  assert cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
  if case == 'file':
    out = tmp_path / 'taken'
    out.write_text('x')
    expected = f'error: {out}: --out is an existing file, not a folder'
  else:  # a parent that is a file (a read-only folder is no obstacle to root, who runs CI here)
    (tmp_path / 'plain').write_text('x')
    out = tmp_path / 'plain' / 'new'
    expected = f'error: {out}: cannot write (Not a directory)'
  script = _load_script('predict')
  assert script.main(['--checkpoint', untrained_checkpoint, '--source', str(image), '--out', str(out)]) == 2
  assert capsys.readouterr().err.strip().splitlines()[-1] == expected


def test_predict_rgb_refuses_float_images(untrained_checkpoint):
  from yolo_osam_jax import predict
  recognizer = predict.Recognizer.from_checkpoint(untrained_checkpoint)
  with pytest.raises(errors.InputError, match=r'images\[1\]: predict_rgb expects uint8 \[H, W, 3\] RGB, got '
                     r'float64 \(20, 20, 3\)'):
    recognizer.predict_rgb([np.zeros((20, 20, 3), np.uint8), np.full((20, 20, 3), 0.5)])


def test_export_img_zero_is_an_error(untrained_checkpoint, tmp_path, capsys):
  script = _load_script('export')
  out = tmp_path / 'm.onnx'
  assert script.main(['--checkpoint', untrained_checkpoint, '--format', 'onnx', '--img', '0',
                      '--out', str(out)]) == 2
  assert capsys.readouterr().err.strip() == ('error: img_size must be a positive multiple of the largest '
                                             'stride 32, got 0')
  assert not out.exists()


def test_eval_takes_a_run_workdir_as_readme_shows(untrained_checkpoint, tmp_path):
  import shutil
  workdir = tmp_path / 'run'
  workdir.mkdir()
  shutil.copy(os.path.join(untrained_checkpoint, 'config.json'), workdir / 'config.json')  # as training writes
  shutil.copytree(untrained_checkpoint, workdir / 'last')
  script = _load_script('eval')
  assert script.resolve_checkpoint_dir(str(workdir)) == str(workdir / 'last')
  shutil.copytree(untrained_checkpoint, workdir / 'best')
  assert script.resolve_checkpoint_dir(str(workdir)) == str(workdir / 'best')
  assert script.resolve_checkpoint_dir(str(workdir / 'best')) == str(workdir / 'best')
  with pytest.raises(errors.MissingError, match=r'nope: no such checkpoint folder'):
    script.resolve_checkpoint_dir(str(tmp_path / 'nope'))


def test_eval_file_mode_out_in_the_way_is_one_line(tmp_path, capsys):
  gt = {'images': [{'id': 1, 'width': 10, 'height': 10}], 'categories': [{'id': 1, 'name': 'a'}],
        'annotations': [{'id': 1, 'image_id': 1, 'category_id': 1, 'bbox': [1, 1, 4, 4], 'area': 16,
                         'iscrowd': 0}]}
  (tmp_path / 'gt.json').write_text(json.dumps(gt))
  (tmp_path / 'dt.json').write_text(json.dumps([{'image_id': 1, 'category_id': 1, 'bbox': [1, 1, 4, 4],
                                                 'score': 0.9}]))
  script = _load_script('eval')
  (tmp_path / 'plain').write_text('x')
  for out, expected in ((tmp_path, f'error: {tmp_path}: --out is a folder; give a file name for the metrics JSON'),
                        (tmp_path / 'plain' / 'm.json',
                         f"error: {tmp_path / 'plain'}: --out's folder is an existing file, not a folder")):
    assert script.main(['--predictions', str(tmp_path / 'dt.json'), '--ground-truth', str(tmp_path / 'gt.json'),
                        '--out', str(out)]) == 2
    assert capsys.readouterr().err.strip() == expected


# ---------------------------------------------------------------------------------------------------
# Dataset builds: oversized images are skipped and reported like unreadable ones.


def _png_claiming_size(width, height):
  """A PNG whose header says width × height (its pixel data is a tiny stand-in: the size check must come
  from the header, before anything is decoded)."""
  import struct
  import zlib
  ok, small = cv2.imencode('.png', np.zeros((2, 2, 3), np.uint8))
  data = bytearray(small.tobytes())
  ihdr = struct.pack('>II', width, height) + bytes(data[24:29])
  data[16:29] = ihdr
  data[29:33] = struct.pack('>I', zlib.crc32(b'IHDR' + ihdr) & 0xFFFFFFFF)
  return bytes(data)


@pytest.mark.parametrize('side', [14000, 8193])
def test_oversized_image_is_skipped_and_reported_with_its_name(side):
  from yolo_osam_jax.data import common
  report = common.BuildReport('t')
  assert common.read_image(_png_claiming_size(side, side), 'images/train/huge.png', report) is None
  assert report.counts == {'image_too_large': 1}
  assert report.examples['image_too_large'][0].startswith('images/train/huge.png: ')
  detail = report.examples['image_too_large'][0]
  assert f'{side}x{side}' in detail or f'({side * side} pixels)' in detail  # PIL's guard gives the pixels
  # The limit itself is fine.
  ok, exact = cv2.imencode('.png', np.zeros((1, 8192, 3), np.uint8))
  assert common.read_image(exact.tobytes(), 'edge.png', report) is not None


def test_build_goes_on_past_an_oversized_image(tmp_path):
  root = _yolo_folder(tmp_path / 'faces', classes=2)
  (root / 'images' / 'train' / 'huge.png').write_bytes(_png_claiming_size(14000, 14000))
  builder = datasets.build('yolo_folder', data_dir=tmp_path / 'tfds', manual_dir=root / 'data.yaml')
  report = builder.build_report()
  assert report.counts.get('image_too_large') == 1
  assert report.examples['image_too_large'][0].startswith('images/train/huge.png: ')  # relative to the yaml
  assert builder.info.splits['train'].num_examples == 2


@pytest.mark.slow
def test_full_disk_during_training_is_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
  """results.csv of epoch 2 hits a full disk: the run ends with one line naming the file; epoch 1's
  results.csv, best/ and train-state checkpoint are intact and the run resumes from them."""
  import errno
  from test_train import CLASS_NAMES, tiny_sources
  from yolo_osam_jax import training
  from yolo_osam_jax.training import loop
  workdir = tmp_path / 'run'
  real_replace = os.replace
  calls = {'csv': 0}

  def replace(src, dst):
    if os.path.basename(dst) == 'results.csv':
      calls['csv'] += 1
      if calls['csv'] == 2:
        raise OSError(errno.ENOSPC, 'No space left on device')
    return real_replace(src, dst)

  monkeypatch.setattr(loop.os, 'replace', replace)
  sources = tiny_sources()

  def run(argv):
    training.train_and_evaluate(_tiny_train_config(), str(workdir), sources=sources, class_names=CLASS_NAMES,
                                show_progress=False, resume='--resume' in argv)
    return 0

  assert errors.run_main(run, []) == errors.USER_ERROR_STATUS
  assert capsys.readouterr().err == f"error: no space left on device while writing {workdir / 'results.csv'}\n"
  assert (workdir / 'results.csv').read_text().count('\n') == 2  # header + epoch 1
  assert not (workdir / 'results.csv.tmp').exists()
  checkpoint.load_model(str(workdir / 'best'))
  monkeypatch.undo()
  assert errors.run_main(run, ['--resume']) == 0
  assert (workdir / 'results.csv').read_text().count('\n') == 3


# ---------------------------------------------------------------------------------------------------
# Unclear messages made clear: each names the file and the line or field.


def test_non_utf8_label_file_names_file_and_line(tmp_path):
  root = _yolo_folder(tmp_path / 'faces', classes=2)
  label = root / 'labels' / 'train' / '1.txt'
  label.write_bytes(b'1 0.5 0.5 0.5 0.5\n0 0.5 0.5 0.2 0.2 \xe9t\xe9\n')
  with pytest.raises(errors.InputError) as info:
    datasets.build('yolo_folder', data_dir=tmp_path / 'tfds', manual_dir=root / 'data.yaml')
  assert str(info.value) == f'{label}:2: not UTF-8 text (byte 0xe9 at offset 36); save the label file as UTF-8'


def test_non_utf8_json_is_named(tmp_path):
  from yolo_osam_jax.evaluation import coco
  path = tmp_path / 'gt.json'
  path.write_bytes(b'{"images": ["\xff"]}')
  with pytest.raises(errors.InputError, match=r'ground truth file .*gt\.json: not UTF-8 text \(byte offset 13\)'):
    coco.load_json(str(path), 'ground truth')


def test_fer2013_unterminated_quote_names_the_line(tmp_path):
  from yolo_osam_jax.data import fer2013
  pixels = ' '.join(['7'] * 48 * 48)
  path = tmp_path / 'fer2013.csv'
  path.write_text(f'emotion,pixels,Usage\n0,{pixels},Training\n3,"{pixels},Training\n'
                  + f'1,{pixels},PublicTest\n' * 60)
  with pytest.raises(errors.InputError, match=r'^fer2013\.csv:3: field larger than field limit \(131072\); the '
                     'row starting here has an unterminated quote'):
    fer2013.read_csv(path)


def test_data_yaml_nc_not_an_integer(tmp_path):
  from yolo_osam_jax.data import yolo_folder
  path = tmp_path / 'data.yaml'
  path.write_text('train: images\nnc: three\nnames: [a, b, c]\n')
  with pytest.raises(errors.InputError) as info:
    yolo_folder.read_data_yaml(path)
  assert str(info.value) == f"{path}: field nc: 'three' is not an integer (the number of classes)"


def test_missing_or_unprepared_data_dir_says_so(tmp_path):
  from yolo_osam_jax.data import pipeline
  missing = tmp_path / 'nowhere'
  with pytest.raises(errors.MissingError) as info:
    pipeline.open_tfds_source('synthetic_faces', 'train', str(missing), 'demo')
  assert str(info.value).startswith(f'data_dir {missing} does not exist; prepare synthetic_faces/demo there '
                                    'with `python scripts/prepare_data.py --dataset synthetic_faces --config demo --data_dir ')
  with pytest.raises(errors.MissingError) as info:
    pipeline.open_tfds_source('synthetic_faces', 'train', str(tmp_path), 'demo')
  assert str(info.value).startswith(f'synthetic_faces/demo is not prepared in {tmp_path} (no '
                                    f'{tmp_path}/synthetic_faces/demo/<version>/)')
  assert 'TFRECORD' not in str(info.value) and 'already prepared' not in str(info.value)


@pytest.mark.parametrize('case', ['all_unreadable', 'empty'])
def test_split_without_usable_images_is_named_with_the_reason(tmp_path, case):
  root = _yolo_folder(tmp_path / 'faces', classes=2)
  for image in (root / 'images' / 'train').iterdir():
    if case == 'all_unreadable':
      image.write_bytes(b'not an image')
    else:
      image.unlink()
  with pytest.raises(errors.InputError) as info:
    datasets.build('yolo_folder', data_dir=tmp_path / 'tfds', manual_dir=root / 'data.yaml')
  if case == 'all_unreadable':
    assert str(info.value) == ("yolo_folder/faces: split 'train' has no usable images — skipped: unreadable_image "
                               '2 (first: images/train/0.png: not an image format PIL/OpenCV know)')
  else:
    assert str(info.value) == "yolo_folder/faces: split 'train' has no usable images (no images found for it)"
  assert not (tmp_path / 'tfds' / 'yolo_folder' / 'faces' / '1.0.0').exists()  # no half-built dataset


def test_broken_checkpoint_metadata_is_named(tmp_path):
  directory = str(tmp_path / 'ckpt')
  checkpoint.save_model(directory, _variables(1.0), _config())
  with open(os.path.join(directory, 'variables', '_METADATA'), 'w') as f:
    f.write('{broken')
  with pytest.raises(errors.InputError, match=rf'^{directory}/variables: unreadable model checkpoint \('):
    checkpoint.load_model(directory)


def test_empty_manual_dir_is_one_line_with_the_instructions(tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(errors.MissingError) as info:
    datasets.build('rafdb_basic', data_dir=tmp_path / 'tfds', manual_dir=empty, config='original')
  message = str(info.value)
  assert message.startswith(f'{empty}: missing or empty; rafdb_basic needs the files you downloaded there. '
                            'Request RAF-DB from its authors')
  assert '\n' not in message


def test_builder_construction_error_loses_the_tfds_prefix(tmp_path):
  root = _yolo_folder(tmp_path / 'faces', classes=2)
  (root / 'data.yaml').write_text('path: .\ntrain: images/train\nval: images/val\nnc: two\nnames: [a, b]\n')
  with pytest.raises(errors.InputError) as info:
    datasets.build('yolo_folder', data_dir=tmp_path / 'tfds', manual_dir=root / 'data.yaml')
  assert str(info.value) == f"{root / 'data.yaml'}: field nc: 'two' is not an integer (the number of classes)"


def test_data_dir_inside_the_source_folder_does_not_change_its_fingerprint(tmp_path):
  root = _yolo_folder(tmp_path / 'faces', classes=2)
  datasets.build('yolo_folder', data_dir=root / 'tfds', manual_dir=root / 'data.yaml')
  assert datasets.build('yolo_folder', data_dir=root / 'tfds', manual_dir=root / 'data.yaml').reused is True


def test_prepare_hint_asks_for_manual_dir_only_where_needed(tmp_path):
  from yolo_osam_jax.data import pipeline
  with pytest.raises(errors.MissingError) as synthetic:
    pipeline.open_tfds_source('synthetic_faces', 'train', str(tmp_path), 'demo')
  assert str(synthetic.value).endswith(f'--config demo --data_dir {tmp_path}`')
  with pytest.raises(errors.MissingError) as rafdb:
    pipeline.open_tfds_source('rafdb_basic', 'train', str(tmp_path), 'original')
  assert str(rafdb.value).endswith(f'--config original --data_dir {tmp_path} --manual_dir PATH`')
