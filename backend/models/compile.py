"""Regional `torch.compile` of the transformer: each of the 40 identical blocks, not the whole model.

The blocks are one module class with one graph, so compiling them region by region costs one
block's compile instead of forty, and diffusers' `compile_repeated_blocks` does exactly that. The
compiled code is kept in Inductor's on-disk cache (`compile_cache_dir`), so a new worker process
that meets a shape it has compiled before loads the kernels instead of compiling again; within one
process (the worker keeps its model between jobs) a shape is compiled once, on its first step.
Shapes are static (`dynamic=False`): a job's sequence length never changes between its steps.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def compile_cache_dir() -> Path:
    """Where compiled kernels are kept: $TORCHINDUCTOR_CACHE_DIR when set, else the user cache."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "scail2" / "torch-compile"


def compile_blocks(transformer, cache_dir: Path | None = None) -> Path:
    """Compile each transformer block in place (regional compile, persistent cache); returns the cache folder.

    The first forward of each new shape compiles (seconds to a minute per shape); later forwards
    of that shape, in this process or (from the disk cache) a later one, do not.
    """
    import torch._inductor.config as inductor_config

    cache = Path(cache_dir) if cache_dir else compile_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    os.environ[CACHE_ENV] = str(cache)  # Inductor reads it when it first writes or looks up a kernel
    inductor_config.fx_graph_cache = True
    transformer.compile_repeated_blocks(fullgraph=False, dynamic=False)
    transformer.compiled_blocks = True
    return cache
