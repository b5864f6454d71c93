"""Modules imported when first used, so that the API process never loads them.

The API process imports every module of the service, but only the workers read tables,
fit models and draw: what only they use is imported on first use (README "Performance").
"""

from __future__ import annotations

import importlib
from typing import Any

# The packages only the workers load: never imported by the API process.
WORKER_ONLY = ("sklearn", "scipy", "matplotlib", "pandas", "pyarrow", "skl2onnx", "onnx")


class LazyModule:
    """``name`` and its ``submodules``, imported on the first attribute read.

    ``pa = LazyModule("pyarrow", "csv")`` then ``pa.csv.read_csv(...)`` imports pyarrow
    and pyarrow.csv at that call, once.
    """

    def __init__(self, name: str, *submodules: str) -> None:
        self._name = name
        self._submodules = submodules

    def __getattr__(self, attribute: str) -> Any:
        # Called only for what the instance lacks: after the first, straight to the module.
        module = self.__dict__.get("_module")
        if module is None:
            module = importlib.import_module(self._name)
            for submodule in self._submodules:
                importlib.import_module(f"{self._name}.{submodule}")
            self._module = module
        return getattr(module, attribute)
