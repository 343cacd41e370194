"""conftest.require_fixture: a missing shared fixture skips locally and fails under CI."""

import pytest

from conftest import require_fixture


def test_present_fixture_is_returned(tmp_path):
  assert require_fixture(str(tmp_path)) == str(tmp_path)


def test_missing_fixture_skips_locally_and_fails_under_ci(tmp_path, monkeypatch):
  missing = str(tmp_path / 'absent.npz')
  monkeypatch.delenv('CI', raising=False)
  with pytest.raises(pytest.skip.Exception, match='absent.npz'):
    require_fixture(missing)
  monkeypatch.setenv('CI', 'true')
  with pytest.raises(pytest.fail.Exception, match='absent.npz'):
    require_fixture(missing)
