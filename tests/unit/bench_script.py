"""Loading a script under bench/ as a module, for the tests of its pure parts.

The scripts are run as files, not installed: a test imports one by path, and
registers it in ``sys.modules`` because its dataclasses look their module up.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_bench_script(file_name: str, module_name: str) -> ModuleType:
    """``bench/<file_name>`` loaded as the module ``module_name``."""
    spec = importlib.util.spec_from_file_location(module_name, BENCH / file_name)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
