"""Dataset splits: stratified validation carve-out, the paper's random 70/10/20, subject-wise k-fold.

All functions take plain sequences (labels, subject ids) and return sorted index arrays, so builders
can apply them to their own record lists. Every random choice comes from `numpy.random.default_rng`
seeded by the caller; builders also store the resulting id lists (`split_record`) in the dataset's
metadata, so a split stays reproducible even if numpy's generator streams ever change.

Count rules (exact, no floating-point rounding surprises: fractions are converted with
`fractions.Fraction(str(f))`):
- `stratified_holdout`: each class with n_c items gives round_half_up(n_c * fraction) items to the
  holdout (so a class with 1 item and fraction 0.1 stays entirely in the kept part).
- `random_split`: every split but the first gets floor(n * fraction); the first (train) gets the rest.
  For 70/10/20 and n = 15,339 that is 10,739 / 1,533 / 3,067.
- `subject_folds`: subjects are shuffled, then, largest subject first, each goes to the fold with the
  fewest items so far (ties: lowest fold index). No subject is ever in two folds.
"""

from __future__ import annotations

import fractions
from typing import Any, Hashable, Mapping, Sequence

import numpy as np

from yolo_osam_jax import errors

PAPER_FRACTIONS = (0.7, 0.1, 0.2)
PAPER_SPLIT_NAMES = ('train', 'validation', 'test')


def _exact(fraction: float) -> fractions.Fraction:
  # str() first so 0.1 becomes exactly 1/10, not the nearest binary double.
  return fractions.Fraction(str(fraction))


def _round_half_up(value: fractions.Fraction) -> int:
  return int((value + fractions.Fraction(1, 2)).__floor__())


def stratified_holdout(labels: Sequence[Hashable], fraction: float,
                       seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Splits indices 0..n-1 into (kept, holdout) with each class's share of `fraction` held out.

  Classes are visited in sorted order and each is shuffled with one generator seeded by `seed`.
  Returns two sorted int64 index arrays.
  """
  if not 0.0 <= fraction < 1.0:
    raise errors.InputError(f'holdout fraction must be in [0, 1), got {fraction}')
  labels = list(labels)
  rng = np.random.default_rng(seed)
  by_class: dict[Hashable, list[int]] = {}
  for index, label in enumerate(labels):
    by_class.setdefault(label, []).append(index)
  holdout = []
  for label in sorted(by_class):
    members = np.asarray(by_class[label], np.int64)
    count = _round_half_up(len(members) * _exact(fraction))
    holdout.extend(rng.permutation(members)[:count].tolist())
  holdout = np.sort(np.asarray(holdout, np.int64))
  kept = np.setdiff1d(np.arange(len(labels), dtype=np.int64), holdout)
  return kept, holdout


def split_counts(n: int, split_fractions: Sequence[float] = PAPER_FRACTIONS) -> list[int]:
  """Items per split: floor(n * f) for every split but the first, the first takes the rest."""
  exact = [_exact(f) for f in split_fractions]
  if sum(exact) != 1 or any(f < 0 for f in exact):
    raise errors.InputError(f'split fractions must be non-negative and sum to 1, got {tuple(split_fractions)}')
  rest = [int((n * f).__floor__()) for f in exact[1:]]
  return [n - sum(rest)] + rest


def random_split(n: int, seed: int,
                 split_fractions: Sequence[float] = PAPER_FRACTIONS) -> list[np.ndarray]:
  """The paper's image-level random split (default 70/10/20) of indices 0..n-1.

  One permutation seeded by `seed`; consecutive chunks of it, sized by `split_counts`, form the
  splits. Returns one sorted int64 index array per fraction.
  """
  order = np.random.default_rng(seed).permutation(n).astype(np.int64)
  out, start = [], 0
  for count in split_counts(n, split_fractions):
    out.append(np.sort(order[start:start + count]))
    start += count
  return out


def subject_folds(subjects: Sequence[Hashable], num_folds: int, seed: int) -> np.ndarray:
  """Fold number (0..num_folds-1) of every item, assigning whole subjects to folds.

  Folds are balanced by item count (greedy, largest subject first), not by subject count, because
  CK+ subjects contribute between one and a dozen sequences.
  """
  subjects = list(subjects)
  unique = sorted(set(subjects))
  if num_folds < 2:
    raise errors.InputError(f'num_folds must be at least 2, got {num_folds}')
  if len(unique) < num_folds:
    raise errors.InputError(f'{len(unique)} subjects cannot fill {num_folds} folds without sharing a subject')
  counts = {subject: 0 for subject in unique}
  for subject in subjects:
    counts[subject] += 1
  shuffled = [unique[i] for i in np.random.default_rng(seed).permutation(len(unique))]
  # Stable sort keeps the shuffled order among subjects of equal size, so the seed decides ties.
  ordered = sorted(shuffled, key=lambda subject: -counts[subject])
  fold_sizes = np.zeros(num_folds, np.int64)
  fold_of_subject = {}
  for subject in ordered:
    fold = int(np.argmin(fold_sizes))  # argmin returns the lowest index among ties
    fold_of_subject[subject] = fold
    fold_sizes[fold] += counts[subject]
  return np.asarray([fold_of_subject[s] for s in subjects], np.int64)


def fold_split_names(num_folds: int) -> list[str]:
  return [f'fold{k}' for k in range(num_folds)]


def kfold_split_strings(num_folds: int, fold: int) -> dict[str, str]:
  """TFDS split strings for cross-validation round `fold` over a dataset built with fold splits.

  Test = fold k, validation = fold k+1 (mod K), train = the other K-2 folds joined with '+', which
  `tfds.data_source(split=...)` accepts. E.g. K=10, k=0: train 'fold2+...+fold9', validation 'fold1'.
  """
  if not 0 <= fold < num_folds:
    raise errors.InputError(f'fold must be in [0, {num_folds}), got {fold}')
  names = fold_split_names(num_folds)
  validation = (fold + 1) % num_folds
  train = [names[k] for k in range(num_folds) if k not in (fold, validation)]
  return {'train': '+'.join(train), 'validation': names[validation], 'test': names[fold]}


def check_disjoint(ids_by_split: Mapping[str, Sequence[str]]) -> None:
  """Raises if an id appears twice, within one split or across two."""
  seen: dict[str, str] = {}
  for split, ids in ids_by_split.items():
    for example_id in ids:
      if example_id in seen:
        raise errors.InputError(f'id {example_id!r} is in split {seen[example_id]!r} and in {split!r}')
      seen[example_id] = split


def split_record(scheme: str, seed: int, ids_by_split: Mapping[str, Sequence[str]],
                 **params: Any) -> dict[str, Any]:
  """A JSON-able description of a split, stored by builders in `info.metadata['split']`.

  Holds the scheme name, seed and parameters (how to redo it) and the sorted ids per split
  (what it was), plus counts for a quick look. Ids are assigned before images are read: one the
  build then skips (unreadable file, see the build report) stays listed here.
  """
  check_disjoint(ids_by_split)
  return {
      'scheme': scheme,
      'seed': int(seed),
      'params': dict(params),
      'counts': {split: len(ids) for split, ids in ids_by_split.items()},
      'ids': {split: sorted(str(i) for i in ids) for split, ids in ids_by_split.items()},
  }


def nonempty(indices: Mapping[str, np.ndarray], report: Any) -> dict[str, np.ndarray]:
  """The splits that have items. TFDS cannot write an empty split, so each one left out is recorded
  as 'empty_split' in the build report (a `common.BuildReport`); its count 0 stays in the split record.
  """
  kept = {}
  for name, idx in indices.items():
    if len(idx):
      kept[name] = idx
    else:
      report.add('empty_split', name, 'no examples, so the split is not written')
  return kept


SCHEMES = ('official', 'random_70_10_20', 'subject_kfold')


def assign_splits(ids: Sequence[str], labels: Sequence[Hashable], *, scheme: str, seed: int,
                  official: Sequence[str] | None = None, val_fraction: float = 0.1,
                  subjects: Sequence[Hashable] | None = None,
                  num_folds: int = 10) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """The split of every record for a builder: ({split name: sorted indices}, split_record).

  Schemes:
  - 'official': the dataset's own split names (`official[i]` per record). When it has no
    'validation', one is carved from 'train' with `stratified_holdout(val_fraction)` (0 = none).
  - 'random_70_10_20': the paper's image-level random split of all records pooled.
  - 'subject_kfold': splits 'fold0'..'fold{K-1}' by `subject_folds`; combine them for a round with
    `kfold_split_strings`.
  """
  n = len(ids)
  if len(labels) != n:
    raise errors.InputError(f'{len(labels)} labels for {n} ids')
  labels = list(labels)
  params: dict[str, Any] = {}
  if scheme == 'official':
    if official is None or len(official) != n:
      raise errors.InputError("scheme 'official' needs one official split name per record")
    names = sorted(set(official))
    indices = {name: np.asarray([i for i in range(n) if official[i] == name], np.int64)
               for name in names}
    if 'validation' not in indices and 'train' in indices and val_fraction > 0:
      train = indices['train']
      kept, holdout = stratified_holdout([labels[i] for i in train], val_fraction, seed)
      indices['train'], indices['validation'] = train[kept], train[holdout]
      params['val_fraction'] = val_fraction
  elif scheme == 'random_70_10_20':
    indices = dict(zip(PAPER_SPLIT_NAMES, random_split(n, seed, PAPER_FRACTIONS)))
    params['fractions'] = list(PAPER_FRACTIONS)
  elif scheme == 'subject_kfold':
    if subjects is None or len(subjects) != n:
      raise errors.InputError("scheme 'subject_kfold' needs one subject id per record")
    fold_of_item = subject_folds(subjects, num_folds, seed)
    indices = {name: np.flatnonzero(fold_of_item == k).astype(np.int64)
               for k, name in enumerate(fold_split_names(num_folds))}
    params['num_folds'] = num_folds
    params['subjects'] = {name: sorted({str(subjects[i]) for i in idx})
                          for name, idx in indices.items()}
  else:
    raise errors.InputError(f'unknown split scheme {scheme!r}; expected one of {SCHEMES}')
  record = split_record(scheme, seed, {name: [ids[i] for i in idx] for name, idx in indices.items()},
                        **params)
  return indices, record


def split_generators(builder: Any, records: Sequence[Mapping[str, Any]], **assign_kwargs) -> dict:
  """`_split_generators` for a builder whose records carry `image_id` and `label`.

  Splits the records with `assign_splits` (scheme and seed from the builder config, the rest from
  `assign_kwargs`), stores the split record in the dataset info and returns one `_generate_examples`
  generator per non-empty split.
  """
  config = builder.builder_config
  indices, record = assign_splits(
      [r['image_id'] for r in records], [r['label'] for r in records],
      scheme=config.split_scheme, seed=config.split_seed, **assign_kwargs)
  builder.info.metadata['split'] = record
  return {name: builder._generate_examples([records[i] for i in idx], name)
          for name, idx in nonempty(indices, builder.report).items()}
