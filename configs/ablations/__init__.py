"""The paper's comparison tables as rows of config overrides (run them with scripts/ablate.py).

Every row starts from a base config (`configs/base.py`, YOLO-OSAM as the paper describes it, unless
`scripts/ablate.py --config` names another) and applies its overrides, written like command-line
overrides (`model.attention.kind=osam`); nothing is a copied config file.
Detector rows (`kind='detector'`) train through the detection trainer, classifier rows
(`kind='classifier'`, `model.arch` cspdarknet_cls | alexnet) through yolo_osam_jax/classify.py.
This file is the tables' data only; `Row`, `Table` and the runner are yolo_osam_jax/ablation.py.

  1  YOLO-OSAM against yolov5s, YOLOv8, YOLO11 and the other detector baselines the repository has
  2  attention variants on the classifiers: none, SAM, OSAM, CBAM (channel + OSAM), CBAM (channel + SAM)
  3  YOLO-OSAM against yolov5s over N rounds, with a two-sample t-test
  4  OSAM's CBL repeats, 0–4, on the classifiers
  5  where attention sits in the classifiers: after every stage ("embedding") or only at the end ("last")
  6  where attention sits in the detector: backbone or neck
"""

from __future__ import annotations

from yolo_osam_jax.ablation import CLASSIFIER
from yolo_osam_jax.ablation import CLASSIFIER_METRICS
from yolo_osam_jax.ablation import DETECTOR
from yolo_osam_jax.ablation import DETECTOR_METRICS
from yolo_osam_jax.ablation import Row
from yolo_osam_jax.ablation import Table


# --- detector rows -------------------------------------------------------------------------------

def _detector(name, label, fusion, kind, where, gate='softmax', repeats=3) -> Row:
  return Row(name, label, DETECTOR, (
      'model.arch=yolo_osam', f'model.fusion={fusion}', f'model.attention.kind={kind}',
      f'model.attention.where={where}', f'model.attention.gate={gate}',
      f'model.attention.cbl_repeats={repeats}'))


YOLOV5S = _detector('yolov5s', 'yolov5s', 'none', 'none', 'none')
YOLO_OSAM = _detector('yolo_osam', 'YOLO-OSAM (paper: softmax attention)', 'reference', 'osam',
                      'backbone')
# The anchor-free family with its own recipe (configs/yolov8.py): SGD lr0 0.01, lrf 0.01, bias warmup
# from 0.0, no mosaic in the last 10 epochs, task-aligned loss gains (config.anchor_free_loss). Size s:
# the paper does not say which size it trained; s matches the yolov5s its YOLO-OSAM builds on.
ANCHOR_FREE_RECIPE = ('model.fusion=none', 'model.attention.kind=none', 'model.attention.where=none',
                      'model.activation=silu', 'train.optimizer=sgd', 'train.lr0=0.01', 'train.lrf=0.01',
                      'train.warmup_bias_lr=0.0', 'data.aug.close_mosaic=10')


def _anchor_free(arch, label, size='s') -> Row:
  return Row(f'{arch}{size}', label, DETECTOR,
             (f'model.arch={arch}', f'model.size={size}') + ANCHOR_FREE_RECIPE)


DETECTOR_BASELINES = (
    # YOLOv3 as the paper's repository trains it: yolov5's yolov3.yaml with yolov5's loss and recipe.
    Row('yolov3', 'YOLOv3 (Darknet-53, anchor-based)', DETECTOR,
        ('model.arch=yolov3', 'model.size=s', 'model.fusion=none', 'model.attention.kind=none',
         'model.attention.where=none')),
    _anchor_free('yolov8', 'YOLOv8s (anchor-free)'),
    _anchor_free('yolo11', 'YOLO11s (anchor-free)'),
    YOLOV5S,
    _detector('yolov5s_p2', 'yolov5s + P2 head (textbook FPN)', 'fpn', 'none', 'none'),
    _detector('yolov5s_cbam', 'yolov5s + CBAM (backbone)', 'none', 'cbam_sam', 'backbone'),
    _detector('yolov5s_fusion', 'yolov5s + published fusion branch, no attention', 'reference',
              'none', 'none'),
    _detector('yolo_osam_published', 'YOLO-OSAM as published (identity attention)', 'reference', 'osam',
              'backbone', gate='reference'),
    YOLO_OSAM,
)

# --- classifier rows -----------------------------------------------------------------------------

ARCH_LABELS = {'cspdarknet_cls': 'CSPDarknet53', 'alexnet': 'AlexNet'}
KIND_LABELS = {'none': 'no attention', 'sam': 'SAM', 'osam': 'OSAM', 'cbam_osam': 'CBAM (channel + OSAM)',
               'cbam_sam': 'CBAM (channel + SAM)'}

PLACE_LABELS = {'embedding': 'after every stage', 'last': 'last stage only'}


def _classifier(arch, kind, where='embedding', repeats=3, name=None, label=None) -> Row:
  name = name or f'{arch}_{kind}'
  label = label or f'{ARCH_LABELS[arch]} + {KIND_LABELS[kind]}'
  return Row(name, label, CLASSIFIER, (
      f'model.arch={arch}', f'model.attention.kind={kind}', f'model.attention.where={where}',
      'model.attention.gate=softmax', f'model.attention.cbl_repeats={repeats}'))


TABLES = {
    1: Table(1, 'YOLO-OSAM against other detectors', DETECTOR_BASELINES, DETECTOR_METRICS),
    2: Table(2, 'Attention variants (classifiers, attention after every stage)', tuple(
        _classifier(arch, kind) for arch in ARCH_LABELS for kind in KIND_LABELS), CLASSIFIER_METRICS),
    3: Table(3, 'YOLO-OSAM against yolov5s over rounds, with a t-test', (YOLOV5S, YOLO_OSAM),
             DETECTOR_METRICS, default_rounds=10, compare=('yolov5s', 'yolo_osam')),
    4: Table(4, "OSAM's CBL repeats (classifiers, attention after every stage)", tuple(
        _classifier(arch, 'osam', repeats=n, name=f'{arch}_osam_cbl{n}',
                    label=f'{ARCH_LABELS[arch]} + OSAM, {n} CBL')
        for arch in ARCH_LABELS for n in range(5)), CLASSIFIER_METRICS),
    5: Table(5, 'Where attention sits in the classifiers (OSAM)', tuple(
        _classifier(arch, 'osam', where=where, name=f'{arch}_osam_{where}',
                    label=f'{ARCH_LABELS[arch]} + OSAM, {PLACE_LABELS[where]}')
        for arch in ARCH_LABELS for where in PLACE_LABELS), CLASSIFIER_METRICS),
    6: Table(6, 'Where attention sits in the detector (OSAM, published fusion branch)', (
        _detector('fusion_no_attention', 'no attention', 'reference', 'none', 'none'),
        _detector('osam_backbone', 'OSAM in the backbone', 'reference', 'osam', 'backbone'),
        _detector('osam_neck', 'OSAM in the neck', 'reference', 'osam', 'neck'),
    ), DETECTOR_METRICS),
}


def get_table(number: int) -> Table:
  if number not in TABLES:
    raise ValueError(f'no table {number}; tables: {sorted(TABLES)}')
  return TABLES[number]

