"""t-test and Welch test against the textbook formulas."""

import numpy as np
import pytest
from scipy import stats

from yolo_osam_jax.evaluation import significance


def test_student_and_welch_by_formula():
  a = [81.2, 80.9, 81.5, 81.0, 81.4, 80.7, 81.3, 81.1, 81.6, 80.8]
  b = [80.5, 80.9, 80.2, 80.8, 80.4, 80.6, 81.0, 80.3, 80.7, 80.1]
  result = significance.compare_runs(a, b, 'osam', 'yolov5')
  x, y = np.array(a), np.array(b)
  na, nb = len(x), len(y)
  va, vb = x.var(ddof=1), y.var(ddof=1)
  pooled = ((na - 1) * va + (nb - 1) * vb) / (na + nb - 2)
  t_student = (x.mean() - y.mean()) / np.sqrt(pooled * (1 / na + 1 / nb))
  se2 = va / na + vb / nb
  t_welch = (x.mean() - y.mean()) / np.sqrt(se2)
  df_welch = se2 ** 2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
  assert result['osam']['mean'] == pytest.approx(81.15)
  assert result['yolov5']['std'] == pytest.approx(np.sqrt(vb))
  assert result['student']['t'] == pytest.approx(t_student, rel=1e-10)
  assert result['student']['p'] == pytest.approx(2 * stats.t.sf(abs(t_student), na + nb - 2), rel=1e-8)
  assert result['welch']['t'] == pytest.approx(t_welch, rel=1e-10)
  assert result['welch']['df'] == pytest.approx(df_welch, rel=1e-10)
  assert result['welch']['p'] == pytest.approx(2 * stats.t.sf(abs(t_welch), df_welch), rel=1e-8)


def test_rejects_too_few_rounds():
  with pytest.raises(ValueError, match='b: need at least 2'):
    significance.compare_runs([1.0, 2.0], [3.0], 'a', 'b')
