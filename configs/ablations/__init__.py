"""The paper's comparison tables as rows of config overrides (run them with scripts/ablate.py).

Every row starts from a base config and applies its overrides, written like command-line overrides
(`model.attention.kind=osam`); nothing is a copied config file. scripts/ablate.py picks the base config
by dataset (the paper's recipe for it: configs/rafdb_basic.py, rafdb_compound.py, ckplus.py,
fer2013.py; configs/base.py for the synthetic set and smoke runs) unless `--config` names another.
Detector rows (`kind='detector'`) train through the detection trainer, classifier rows
(`kind='classifier'`, `model.arch` cspdarknet_cls | alexnet) through yolo_osam_jax/classify.py.
This file is the tables' data only; `Row`, `Table` and the runner are yolo_osam_jax/ablation.py.

  1  YOLO-OSAM against yolov5s, YOLOv8, YOLO11 and the other detector baselines the repository has
  2  attention variants: the classifiers (CSPDarknet53, AlexNet) and the detectors (YOLOv5 without the
     added layer, "Improve YOLOv5" with the published stride-4 branch) × none, Spatial AM, OSAM, CBAM
     (channel + OSAM), CBAM (channel + Spatial AM); plus our gate rows (sigmoid, published identity)
  3  the CSPDarknet-53 baseline classifier against YOLO-OSAM over 10 rounds with a two-sample t-test
     (the paper's pair), and yolov5s against YOLO-OSAM (a second comparison, ours)
  4  OSAM's CBL repeats, 0–4, on the classifiers and on the YOLO-OSAM detector
  5  where attention sits in the classifiers: after every stage ("embedding") or only at the end
     ("last"); on the train split, as the paper's Table 5
  6  where attention sits in the detector: backbone or neck (plus our gate rows); on the train split
Rows labelled "ours" are not in the paper.
"""

from __future__ import annotations

from yolo_osam_jax.ablation import CLASSIFIER
from yolo_osam_jax.ablation import CLASSIFIER_METRICS
from yolo_osam_jax.ablation import DETECTOR
from yolo_osam_jax.ablation import DETECTOR_METRICS
from yolo_osam_jax.ablation import MIXED_METRICS
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
    # VGG-16 (torchvision's configuration D) is a classifier: on the same faces, its crops.
    Row('vgg16', 'VGG-16 (classifier)', CLASSIFIER, ('model.arch=vgg16', 'model.attention.kind=none',
                                                      'model.attention.where=none')),
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
# The paper's names of the attention variants (Table 2).
KIND_LABELS = {'none': 'no attention', 'sam': 'Spatial AM', 'osam': 'OSAM',
               'cbam_osam': 'CBAM (Channel AM + OSAM)', 'cbam_sam': 'CBAM (Channel AM + Spatial AM)'}

PLACE_LABELS = {'embedding': 'after every stage', 'last': 'last stage only'}


def _classifier(arch, kind, where='embedding', repeats=3, name=None, label=None) -> Row:
  name = name or f'{arch}_{kind}'
  label = label or (ARCH_LABELS[arch] if kind == 'none' else f'{ARCH_LABELS[arch]} + {KIND_LABELS[kind]}')
  return Row(name, label, CLASSIFIER, (
      f'model.arch={arch}', f'model.attention.kind={kind}', f'model.attention.where={where}',
      'model.attention.gate=softmax', f'model.attention.cbl_repeats={repeats}'))


CSPDARKNET_BASELINE = _classifier('cspdarknet_cls', 'none',
                                  label='CSPDarknet53 baseline (classifier, no attention)')

# --- Table 2's detection half ----------------------------------------------------------------------
# The paper: "YOLOv5 (without the added layer)" and "Improve YOLOv5 (adding a layer)", each without
# attention and with the four attention variants on the backbone. Without the added layer is our
# fusion=none (plain yolov5s), with it the published stride-4 branch (fusion=reference). Rows without
# attention keep where=none so that they are Table 1's runs (yolov5s, yolov5s_fusion), and the same
# overrides make "Improve YOLOv5 + OSAM" Table 1's YOLO-OSAM.

FUSION_LABELS = {'none': 'YOLOv5 (without the added layer)', 'reference': 'Improve YOLOv5 (adding a layer)'}
FUSION_NAMES = {'none': 'yolov5', 'reference': 'improved'}


def _table2_detector(fusion, kind) -> Row:
  label = FUSION_LABELS[fusion] + ('' if kind == 'none' else f' + {KIND_LABELS[kind]}')
  if (fusion, kind) == ('reference', 'osam'):
    label += ' (YOLO-OSAM)'
  return _detector(f'{FUSION_NAMES[fusion]}_{kind}', label, fusion, kind,
                   'none' if kind == 'none' else 'backbone')


# Our rows, not the paper's: OSAM's other gates (models/attention.py) on the same detector. 'reference'
# is the published code's gate (an identity: the network behind the paper's numbers).
GATE_LABELS = {'sigmoid': 'ours: sigmoid gate', 'reference': "ours: published code's identity gate"}


def _gate_rows(name, label, where) -> tuple[Row, ...]:
  return tuple(_detector(f'{name}_{gate}', f'{label} ({GATE_LABELS[gate]})', 'reference', 'osam', where,
                         gate=gate) for gate in GATE_LABELS)


TABLE2_DETECTORS = tuple(_table2_detector(fusion, kind) for fusion in FUSION_LABELS
                         for kind in KIND_LABELS) + _gate_rows(
                             'improved_osam', 'Improve YOLOv5 + OSAM (YOLO-OSAM)', 'backbone')

CLASSIFIER_MAP_NOTE = (
    "Classifier rows: F1 is the macro F1 over face crops; mAP50 is the mean over classes of the "
    "one-vs-rest average precision of the class's score over the face crops "
    "(evaluation/classification.py; no IoU enters, a crop is its own box), n/a while classify.py does "
    "not report per-face scores. Detector rows: yolov5's F1 and mAP50 and the face accuracy of "
    "evaluation/accuracy.py.")


TABLES = {
    1: Table(1, 'YOLO-OSAM against other detectors', DETECTOR_BASELINES, DETECTOR_METRICS),
    2: Table(2, 'Attention variants (classifiers: attention after every stage; detectors: attention on '
             'the backbone)', tuple(
                 _classifier(arch, kind) for arch in ARCH_LABELS for kind in KIND_LABELS)
             + TABLE2_DETECTORS, MIXED_METRICS, note=CLASSIFIER_MAP_NOTE),
    3: Table(3, 'The CSPDarknet53 baseline and yolov5s against YOLO-OSAM over rounds, with t-tests',
             (CSPDARKNET_BASELINE, YOLO_OSAM, YOLOV5S), DETECTOR_METRICS, default_rounds=10,
             compare=(('cspdarknet_cls_none', 'yolo_osam'), ('yolov5s', 'yolo_osam')),
             note="The paper's comparison is the CSPDarknet53 classifier against YOLO-OSAM (accuracy; "
             'the classifier\'s accuracy is over face crops, the detector\'s is the face accuracy of '
             'evaluation/accuracy.py); yolov5s against YOLO-OSAM is ours. ' + CLASSIFIER_MAP_NOTE),
    4: Table(4, "OSAM's CBL repeats (classifiers: attention after every stage; YOLOv5: YOLO-OSAM)", tuple(
        _classifier(arch, 'osam', repeats=n, name=f'{arch}_osam_cbl{n}',
                    label=f'{ARCH_LABELS[arch]} + OSAM, {n} CBL')
        for arch in ARCH_LABELS for n in range(5)) + tuple(
            _detector(f'yolo_osam_cbl{n}', f'YOLOv5 (YOLO-OSAM), {n} CBL', 'reference', 'osam',
                      'backbone', repeats=n) for n in range(5)), CLASSIFIER_METRICS),
    5: Table(5, 'Where attention sits in the classifiers (OSAM)', tuple(
        _classifier(arch, 'osam', where=where, name=f'{arch}_osam_{where}',
                    label=f'{ARCH_LABELS[arch]} + OSAM, {PLACE_LABELS[where]}')
        for arch in ARCH_LABELS for where in PLACE_LABELS), ('accuracy', 'map50', 'f1'),
             eval_split='train', note=CLASSIFIER_MAP_NOTE),
    6: Table(6, 'Where attention sits in the detector (OSAM, published fusion branch)', (
        _detector('fusion_no_attention', 'no attention', 'reference', 'none', 'none'),
        _detector('osam_backbone', 'OSAM in the backbone (YOLO-OSAM)', 'reference', 'osam', 'backbone'),
        _detector('osam_neck', 'OSAM in the neck', 'reference', 'osam', 'neck'),
    ) + _gate_rows('osam_backbone', 'OSAM in the backbone', 'backbone')
             + _gate_rows('osam_neck', 'OSAM in the neck', 'neck'), DETECTOR_METRICS, eval_split='train'),
}


def get_table(number: int) -> Table:
  if number not in TABLES:
    raise ValueError(f'no table {number}; tables: {sorted(TABLES)}')
  return TABLES[number]
