"""Faults injected into a worker process from outside, for tests: put this folder on PYTHONPATH.

With SCAIL2_TEST_FAIL_OOM set, a generation whose prompt equals its value raises a simulated CUDA
out-of-memory error right after the worker has loaded the model (when the job's frames would
start). The shipped code knows nothing of it: this module patches `GenerationJob` as
`backend.pipeline.generate` is first imported.
"""

import importlib.abc
import importlib.machinery
import os
import sys

FAIL_OOM_ENV = "SCAIL2_TEST_FAIL_OOM"
TARGET = "backend.pipeline.generate"


def _fail_out_of_memory(module) -> None:
    trigger = os.environ[FAIL_OOM_ENV]
    real_init = module.GenerationJob.__init__

    def init(self, inputs, *args, **kwargs):
        if inputs.spec.prompt == trigger:
            import torch

            raise torch.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate 20.00 GiB (simulated by {FAIL_OOM_ENV})")
        real_init(self, inputs, *args, **kwargs)

    module.GenerationJob.__init__ = init


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _fail_out_of_memory(module)

        spec.loader.exec_module = exec_and_patch
        return spec


if os.environ.get(FAIL_OOM_ENV):
    sys.meta_path.insert(0, _PatchOnImport())
