"""A misspelt `--config.a.b=value` names the field and the closest existing ones."""

import pytest

from configs import base
from yolo_osam_jax import config_utils, errors


@pytest.mark.parametrize('override, suggestion', [
    ('--config.train.epoch=5', 'did you mean train.epochs?'),
    ('--config.trian.epochs=5', 'did you mean train?'),
    ('--config.model.atention.kind=sam', 'did you mean model.attention or'),
    ('--config.eval.conf_thresh=0.1', 'did you mean eval.conf_thres'),
])
def test_misspelt_field_suggests_the_closest(override, suggestion):
  with pytest.raises(errors.InputError, match='no config field') as info:
    config_utils.apply_overrides(base.get_config(), [override])
  assert suggestion in str(info.value) and '\n' not in str(info.value)


def test_far_off_name_gets_no_guess_and_good_ones_apply():
  with pytest.raises(errors.InputError) as info:
    config_utils.apply_overrides(base.get_config(), ['--config.train.zzz=1'])
  assert 'did you mean' not in str(info.value)
  config = base.get_config()
  config_utils.apply_overrides(config, ['--config.train.epochs=5', 'model.arch=yolov8'])
  assert (config.train.epochs, config.model.arch) == (5, 'yolov8')
