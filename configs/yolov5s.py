"""Plain yolov5s (three heads, no attention, no fusion branch): the paper's main baseline."""

from configs import base


def get_config():
  config = base.get_config()
  config.name = 'yolov5s'
  config.model.fusion = 'none'
  config.model.attention.kind = 'none'
  config.model.attention.where = 'none'
  return config
