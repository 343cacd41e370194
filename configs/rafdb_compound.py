"""YOLO-OSAM on RAF-DB compound (11 compound expressions); same recipe as rafdb_basic (SPEC §4, §6)."""

from configs import rafdb_basic


def get_config():
  config = rafdb_basic.get_config()
  config.name = 'rafdb_compound'
  config.model.num_classes = 11
  config.data.dataset = 'rafdb_compound'
  return config
