"""Shared defaults; every config file starts from `base.get_config()` and overrides what differs.

Values follow the paper where it is explicit and yolov5's hyp.scratch-low otherwise (SPEC §3–§5).
"""

import ml_collections

from yolo_osam_jax import losses

def model_config(size: str = 's', num_classes: int = 7) -> ml_collections.ConfigDict:
  """The published YOLO-OSAM at yolov5 size `size`."""
  return ml_collections.ConfigDict({
      # The network (models.DETECTORS / models.CLASSIFIERS): yolo_osam (yolov5 / YOLO-OSAM, the
      # default) | yolov3 | yolov8 | yolo11 | cspdarknet_cls | alexnet | vgg16.
      'arch': 'yolo_osam',
      'num_classes': num_classes,
      # n | s | m | l | x: the arch's published scale table (models.scale_of); s is the paper's.
      'size': size,
      # Overrides of the size's width/depth multiples and channel cap (None = the table's value).
      'width': ml_collections.config_dict.placeholder(float),
      'depth': ml_collections.config_dict.placeholder(float),
      'max_channels': ml_collections.config_dict.placeholder(int),
      # 'reference' = the published topology (SPEC §2.1), 'fpn' = textbook P2, 'none' = plain yolov5.
      'fusion': 'reference',
      'attention': {
          'kind': 'osam',        # none | sam | osam | cbam_osam | cbam_sam
          'where': 'backbone',   # backbone | neck | none
          'gate': 'softmax',     # softmax (the paper) | sigmoid | reference (published identity)
          'cbl_repeats': 3,
      },
      # The published code uses LeakyReLU(0.01) everywhere (SPEC §2.3); 'silu' is yolov5's own.
      'activation': 'leaky_relu',
      'dtype': 'float32',        # compute dtype; parameters stay float32
      # None = defaults per fusion (models/heads.py); AutoAnchor writes refitted anchors here.
      'anchors': ml_collections.config_dict.placeholder(list),
  })


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.name = 'base'
  config.seed = 0
  config.workdir = ''  # '' = runs/<name>/<n>

  config.model = model_config('s', 7)

  config.data = ml_collections.ConfigDict({
      'dataset': 'synthetic_faces',      # TFDS builder name
      'builder_config': 'demo',
      'data_dir': '',                     # '' = ~/tensorflow_datasets or $TFDS_DATA_DIR
      'train_split': 'train',
      'val_split': 'validation',
      'test_split': 'test',
      'img_size': 128,
      'batch_size': 32,                   # global batch
      'max_boxes': 16,                    # boxes per image padded to this static size
      'num_workers': 0,                   # grain worker processes (0 = in-process)
      'shuffle_seed': 0,
      'aug': {
          'mosaic': 1.0,
          'degrees': 0.0,
          'translate': 0.1,
          'scale': 0.5,
          'shear': 0.0,
          'perspective': 0.0,
          'fliplr': 0.5,
          'flipud': 0.0,
          'hsv_h': 0.015,
          'hsv_s': 0.7,
          'hsv_v': 0.4,
          'mixup': 0.0,
          'close_mosaic': 0,              # last n epochs without mosaic (yolov5: 0; YOLOv8/11: 10)
      },
  })

  # yolov5 hyp.scratch-low loss gains (box, cls, obj, cls_pw, obj_pw, anchor_t, label_smoothing).
  config.loss = ml_collections.ConfigDict(dict(losses.DEFAULT_HYP))
  # The anchor-free family's task-aligned loss gains (tal_loss.py), read instead of config.loss when
  # model.arch is yolov8 / yolo11 (losses.hyp_of): same key names, gains on another scale.
  config.anchor_free_loss = ml_collections.ConfigDict({'box': 7.5, 'cls': 0.5, 'dfl': 1.5})

  config.train = ml_collections.ConfigDict({
      'optimizer': 'sgd',                 # sgd (Nesterov) | adam
      'lr0': 0.01,
      'lrf': 0.01,
      'momentum': 0.937,
      'weight_decay': 5e-4,
      'nominal_batch': 64,
      'scheduler': 'linear',              # linear | cosine
      'epochs': 300,
      'warmup_epochs': 3.0,
      'warmup_min_iters': 100,
      'warmup_momentum': 0.8,
      'warmup_bias_lr': 0.1,
      'patience': 100,                    # early stopping (epochs without improvement; 0 = off)
      # What picks best/ and stops early: 'fitness' (yolov5: 0.1·mAP50 + 0.9·mAP50-95) or 'val_loss'
      # (the paper stops "when errors in the validation dataset increase": the validation loss).
      'early_stopping': 'fitness',
      'val_every': 1,                     # validate every n epochs (and after the last)
      'ema': True,
      'ema_decay': 0.9999,                # yolov5 ModelEMA: decay · (1 − exp(−updates / ema_tau))
      'ema_tau': 2000.0,
      'adam_beta2': 0.999,                # Adam/AdamW β2 (β1 = momentum)
      'autoanchor': True,
      'init_from': '',                    # converted orbax checkpoint to start from
      'freeze': 0,                        # freeze the first k layers (published layer indices)
      'max_bad_steps': 10,                # consecutive NaN/Inf steps before training stops
      'max_loss': 1e4,                    # a per-image loss above this counts as a NaN step (0 = off)
      'log_every': 10,
      'checkpoint_every_steps': 0,        # also checkpoint every n steps inside an epoch (0 = epoch ends)
      'keep_checkpoints': 2,              # train-state checkpoints kept in <workdir>/checkpoints
      'distributed': False,               # jax.distributed.initialize() (several hosts)
      'bf16': False,                      # shorthand for model.dtype = 'bfloat16' while training
  })

  config.eval = ml_collections.ConfigDict({
      'mode': 'yolov5',                   # yolov5 | coco
      'conf_thres': 0.001,
      'iou_thres': 0.6,
      'max_det': 300,
      'multi_label': True,
      'predict_conf_thres': 0.25,
      'predict_iou_thres': 0.45,
      'batch_size': 64,
      # The paper's face accuracy (evaluation/accuracy.py, Eq. 9): only detections with a score of at
      # least this take part; the paper counts predictions above 0.5.
      'accuracy_conf_thres': 0.5,
      # yolov5's detection confusion matrix thresholds.
      'confusion_conf_thres': 0.25,
      'confusion_iou_thres': 0.45,
  })
  return config
