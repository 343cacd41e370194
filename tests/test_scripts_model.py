"""scripts/model_info.py and scripts/convert_yolov5.py end to end, plus the model checkpoint format."""

import os
import sys

import numpy as np
import pytest

from conftest import FIXTURES, ROOT, require_fixture
from yolo_osam_jax import checkpoint, convert

sys.path.insert(0, os.path.join(ROOT, 'scripts'))
import convert_yolov5  # noqa: E402
import model_info  # noqa: E402


def test_model_info_prints_published_counts(capsys):
  model_info.main(['--config', os.path.join(ROOT, 'configs', 'yolov5s.py'), '--img', '128'])
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[-1].startswith('parameters: 7038508  gflops@128: 0.6')
  assert len(lines) == 1 + 25 + 1  # header, 25 layers (Detect = 24), summary
  model_info.main(['--config', os.path.join(ROOT, 'configs', 'base.py'), '--config.model.num_classes=7'])
  assert capsys.readouterr().out.strip().splitlines()[-1].startswith('parameters: 7082920  gflops@128: 0.7')


def test_convert_script_writes_loadable_checkpoint(tmp_path):
  weights = require_fixture(os.path.join(FIXTURES, 'yolov5s_nc7', 'state_dict.npz'))
  out = str(tmp_path / 'ckpt')
  convert_yolov5.main(['--weights', weights, '--config', os.path.join(ROOT, 'configs', 'yolov5s.py'),
                       '--out', out])
  config, variables = checkpoint.load_model(out)
  assert config.model.fusion == 'none' and config.model.num_classes == 7
  sd = convert.load_state_dict_file(weights)
  np.testing.assert_allclose(config.model.anchors[2], (sd['model.24.anchors'][2] * 32).reshape(-1))
  back = convert.to_yolov5_state_dict(variables, config.model, num_batches_tracked=1)
  assert all(np.array_equal(back[k], sd[k]) for k in sd)


def test_load_model_names_what_is_missing(tmp_path):
  with pytest.raises(FileNotFoundError, match='config.json'):
    checkpoint.load_model(str(tmp_path))
