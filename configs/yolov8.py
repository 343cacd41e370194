"""YOLOv8 (anchor-free, ultralytics design) on RAF-DB basic: the paper's Table 1 baseline, trained by our
loop on the same data settings as configs/rafdb_basic.py, with the family's own recipe.

Recipe (ultralytics' defaults for this family): SGD, lr0 0.01, lrf 0.01 (linear), momentum 0.937,
weight decay 5e-4 at a nominal batch of 64, 3 warmup epochs with the bias lr starting at 0.0 (yolov5
starts it at 0.1), the last 10 epochs without mosaic, task-aligned loss gains box 7.5, cls 0.5, dfl 1.5
(`config.anchor_free_loss`). No AutoAnchor (anchor-free head). SiLU activations, as published.
Size s by default (`--config.model.size=n|s|m|l|x`); the paper does not say which size it trained.
"""

from configs import rafdb_basic


def get_config(arch: str = 'yolov8'):
  config = rafdb_basic.get_config()
  config.name = arch
  config.model.arch = arch
  config.model.size = 's'
  config.model.activation = 'silu'
  config.model.attention.kind = 'none'
  config.model.attention.where = 'none'
  config.model.fusion = 'none'
  config.train.optimizer = 'sgd'
  config.train.lr0 = 0.01
  config.train.lrf = 0.01
  config.train.warmup_bias_lr = 0.0
  config.data.aug.close_mosaic = 10
  config.anchor_free_loss.box = 7.5
  config.anchor_free_loss.cls = 0.5
  config.anchor_free_loss.dfl = 1.5
  return config
