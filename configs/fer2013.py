"""YOLO-OSAM on FER2013 (7 classes, 48×48 grey faces, whole image as the box).

The paper reports FER2013 results (SPEC §7) without its own training details; this follows its RAF-DB
recipe (SGD, lr 0.001, batch 32, 500 epochs with early stopping) at 64² as for CK+'s 48×48 images.
`csv` keeps the official Training / PublicTest / PrivateTest split; `csv_random` is the 70/10/20 one.
"""

from configs import rafdb_basic


def get_config():
  config = rafdb_basic.get_config()
  config.name = 'fer2013'
  config.data.dataset = 'fer2013'
  config.data.builder_config = 'csv'
  config.data.img_size = 64
  return config
