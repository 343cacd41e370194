"""Shared test setup: the repository root on sys.path (so `from configs import base` works)."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

SHARED = os.path.join(os.path.dirname(ROOT), 'shared')
FIXTURES = os.path.join(SHARED, 'fixtures')
