"""Make the repository importable when a script runs from a checkout without installation."""

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
try:
    import luffy  # noqa: F401
except ImportError:
    sys.path.insert(0, str(_ROOT))
