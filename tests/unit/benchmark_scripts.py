"""Import a script from ``benchmarks/`` as a module, for tests of its functions."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_benchmark(file: str, name: str | None = None) -> ModuleType:
    """``benchmarks/<file>`` loaded as a fresh module called ``name`` (default: the file's stem).

    The module is registered in ``sys.modules`` under that name before it runs, as a normal
    import would do; dataclasses defined in it look their module up there.
    """
    path = BENCHMARKS / file
    name = name or path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
