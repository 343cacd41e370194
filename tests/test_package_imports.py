"""What importing the package pulls in: never configs/ (the library takes configs from its callers), and
no TFDS for prediction (it only costs start-up time there). Each check runs in a fresh interpreter,
started outside the checkout so that only PYTHONPATH finds the package."""

import json
import os
import subprocess
import sys
import textwrap

from conftest import ROOT


def run_fresh(tmp_path, code: str) -> dict:
  """Runs `code` (which prints one JSON line last) in a new interpreter with the checkout's root as
  the only PYTHONPATH entry, from an empty directory; returns that JSON."""
  env = dict(os.environ, PYTHONPATH=ROOT)
  done = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout.strip().splitlines()[-1])


def test_no_module_of_the_package_imports_configs(tmp_path):
  out = run_fresh(tmp_path, """
      import importlib, importlib.abc, json, pkgutil, sys

      class BlockConfigs(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
          if name.split('.')[0] == 'configs':
            raise ImportError(f'the package imported {name}')

      sys.meta_path.insert(0, BlockConfigs())
      import yolo_osam_jax
      names = [m.name for m in pkgutil.walk_packages(yolo_osam_jax.__path__, 'yolo_osam_jax.')]
      for name in names:
        importlib.import_module(name)
      print(json.dumps({'package': yolo_osam_jax.__file__, 'modules': names,
                        'configs': sorted(m for m in sys.modules if m.split('.')[0] == 'configs')}))
      """)
  assert out['package'].startswith(ROOT)
  # The walk found the package's modules (not an empty path), subpackages included.
  assert {'yolo_osam_jax.ablation', 'yolo_osam_jax.benchmarking.models', 'yolo_osam_jax.training.loop',
          'yolo_osam_jax.data.pipeline'} <= set(out['modules'])
  assert out['configs'] == []


def test_predict_does_not_import_tensorflow_datasets(tmp_path):
  out = run_fresh(tmp_path, """
      import json, sys
      import yolo_osam_jax.predict
      print(json.dumps({'tfds': 'tensorflow_datasets' in sys.modules}))
      """)
  assert out == {'tfds': False}
