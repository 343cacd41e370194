"""Split rules: counts worked out by hand, disjointness, subject-wise folds, the recorded split."""

import json

import numpy as np
import pytest

from yolo_osam_jax.data import splits


@pytest.mark.parametrize('n, expected', [
    (100, [70, 10, 20]),
    (10, [7, 1, 2]),
    # 15,339 = RAF-DB basic train + test: val floor(1533.9), test floor(3067.8), train the rest.
    (15339, [10739, 1533, 3067]),
    (7, [6, 0, 1]),     # floor(0.7) = 0, floor(1.4) = 1
    (0, [0, 0, 0]),
])
def test_split_counts_70_10_20(n, expected):
  assert splits.split_counts(n) == expected
  assert sum(expected) == n


def test_split_counts_are_exact_not_float_rounded():
  # In binary floating point 0.29 * 100 = 28.999999999999996, whose floor would be 28.
  assert splits.split_counts(100, (0.71, 0.29)) == [71, 29]


def test_split_counts_reject_fractions_not_summing_to_one():
  with pytest.raises(ValueError, match='sum to 1'):
    splits.split_counts(10, (0.7, 0.2, 0.2))


def test_random_split_partitions_with_paper_counts():
  train, val, test = splits.random_split(1000, seed=3)
  assert (len(train), len(val), len(test)) == (700, 100, 200)
  joined = np.concatenate([train, val, test])
  np.testing.assert_array_equal(np.sort(joined), np.arange(1000))
  again = splits.random_split(1000, seed=3)
  for a, b in zip((train, val, test), again):
    np.testing.assert_array_equal(a, b)
  other_seed = splits.random_split(1000, seed=4)
  assert not np.array_equal(test, other_seed[2])


def test_stratified_holdout_takes_rounded_share_per_class():
  # 20 x class 0, 10 x class 1, 5 x class 2, 1 x class 3; fraction 0.1 ->
  # round_half_up(2.0) = 2, (1.0) = 1, (0.5) = 1, (0.1) = 0.
  labels = [0] * 20 + [1] * 10 + [2] * 5 + [3]
  kept, holdout = splits.stratified_holdout(labels, 0.1, seed=0)
  held_labels = [labels[i] for i in holdout]
  assert sorted(held_labels) == [0, 0, 1, 2]
  assert len(kept) == len(labels) - 4
  assert not set(kept.tolist()) & set(holdout.tolist())
  np.testing.assert_array_equal(np.sort(np.concatenate([kept, holdout])), np.arange(len(labels)))
  kept2, holdout2 = splits.stratified_holdout(labels, 0.1, seed=0)
  np.testing.assert_array_equal(holdout, holdout2)


def test_subject_folds_greedy_assignment_by_hand():
  # A has 5 items, B and C 3, D and E 1; two folds; each goes to the smaller fold, largest first:
  # A -> fold 0 (sizes 5/0); B -> fold 1 (5/3); C -> fold 1 (5/6); D -> fold 0 (6/6);
  # E -> tie, lowest index, fold 0 (7/6).
  subjects = ['A'] * 5 + ['B'] * 3 + ['C'] * 3 + ['D', 'E']
  for seed in range(4):  # the shuffle only reorders equal-sized subjects, so the result is fixed
    folds = splits.subject_folds(subjects, 2, seed)
    fold_of = {s: int(f) for s, f in zip(subjects, folds)}
    assert fold_of == {'A': 0, 'B': 1, 'C': 1, 'D': 0, 'E': 0}
    assert np.bincount(folds).tolist() == [7, 6]


def test_subject_folds_share_no_subject():
  rng = np.random.default_rng(0)
  subjects = [f'S{int(s):03d}' for s in rng.integers(0, 40, size=500)]
  folds = splits.subject_folds(subjects, 10, seed=1)
  for subject in set(subjects):
    assert len({int(f) for s, f in zip(subjects, folds) if s == subject}) == 1
  assert set(folds.tolist()) == set(range(10))


def test_subject_folds_need_enough_subjects():
  with pytest.raises(ValueError, match='3 subjects cannot fill 4 folds'):
    splits.subject_folds(['a', 'b', 'c'], 4, seed=0)


def test_kfold_split_strings():
  assert splits.kfold_split_strings(3, 0) == {'train': 'fold2', 'validation': 'fold1', 'test': 'fold0'}
  ten = splits.kfold_split_strings(10, 9)
  assert ten['test'] == 'fold9' and ten['validation'] == 'fold0'
  assert ten['train'] == '+'.join(f'fold{k}' for k in range(1, 9))


def test_check_disjoint_names_the_id_and_splits():
  with pytest.raises(ValueError, match="'x' is in split 'train' and in 'test'"):
    splits.check_disjoint({'train': ['x', 'y'], 'test': ['x']})


def test_assign_splits_official_carves_stratified_validation():
  ids = [f'train_{i}' for i in range(20)] + [f'test_{i}' for i in range(5)]
  labels = [i % 2 for i in range(20)] + [0] * 5
  official = ['train'] * 20 + ['test'] * 5
  indices, record = splits.assign_splits(ids, labels, scheme='official', seed=0, official=official,
                                         val_fraction=0.1)
  # Each class has 10 train items -> 1 to validation each.
  assert sorted(labels[i] for i in indices['validation']) == [0, 1]
  assert len(indices['train']) == 18
  np.testing.assert_array_equal(indices['test'], np.arange(20, 25))
  assert record['scheme'] == 'official'
  assert record['counts'] == {'train': 18, 'test': 5, 'validation': 2}
  assert record['ids']['test'] == sorted(ids[20:])
  json.dumps(record)  # stored in metadata.json, so it must be JSON-able


def test_assign_splits_subject_kfold_records_subjects():
  ids = [f'img{i}' for i in range(12)]
  subjects = ['S1'] * 4 + ['S2'] * 4 + ['S3'] * 2 + ['S4'] * 2
  indices, record = splits.assign_splits(ids, [0] * 12, scheme='subject_kfold', seed=0,
                                         subjects=subjects, num_folds=2)
  assert set(indices) == {'fold0', 'fold1'}
  # S1 and S2 (4 each) go to different folds, then S3 and S4 to one each: 6 and 6.
  assert [len(indices['fold0']), len(indices['fold1'])] == [6, 6]
  subjects_by_fold = record['params']['subjects']
  assert not set(subjects_by_fold['fold0']) & set(subjects_by_fold['fold1'])


def test_assign_splits_rejects_unknown_scheme():
  with pytest.raises(ValueError, match="unknown split scheme 'bogus'"):
    splits.assign_splits(['a'], [0], scheme='bogus', seed=0)
