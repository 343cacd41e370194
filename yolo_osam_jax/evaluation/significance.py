"""Significance of the difference between two models from per-round results (the paper's Table 3).

Given one metric per round for each model (e.g. 10 seeds each), report each model's mean and sample
standard deviation (ddof = 1) and two independent-samples t-tests from scipy.stats.ttest_ind: Student's
(equal variances, pooled) and Welch's (unequal variances). p-values are two-sided.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import stats


def compare_runs(a: Sequence[float], b: Sequence[float], name_a: str = 'a', name_b: str = 'b') -> dict:
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  for name, values in ((name_a, a), (name_b, b)):
    if values.ndim != 1 or values.size < 2:
      raise ValueError(f"{name}: need at least 2 per-round results, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
      raise ValueError(f"{name}: result {int(np.flatnonzero(~np.isfinite(values))[0])} is not finite")
  student = stats.ttest_ind(a, b, equal_var=True)
  welch = stats.ttest_ind(a, b, equal_var=False)
  return {
      name_a: {'n': int(a.size), 'mean': float(a.mean()), 'std': float(a.std(ddof=1))},
      name_b: {'n': int(b.size), 'mean': float(b.mean()), 'std': float(b.std(ddof=1))},
      'student': {'t': float(student.statistic), 'p': float(student.pvalue),
                  'df': float(a.size + b.size - 2)},
      'welch': {'t': float(welch.statistic), 'p': float(welch.pvalue),
                'df': float(welch.df)},
  }
