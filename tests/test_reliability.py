"""Issue 18: nothing a user has is lost or silently wrong, and every user error is one line naming the thing.

Kills are simulated by making the writer fail between its steps; trainings are the tiny in-memory runs of
test_train.py.
"""

import json
import os
import subprocess
import sys

import cv2
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
  variables = convert.init_variables(config.model)
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
