"""Rank 0 of a `--gpus N` run: the whole command runs here, and every transformer call is shared.

Rank 0 reads the inputs, encodes, decodes and writes frames exactly as on one GPU; the
pipeline hands its transformer to `shared_transformer` before sampling. The first time a
transformer object is seen its weights go to the other ranks and context parallelism is
turned on for it (again for a reloaded model, e.g. other LoRAs). Each denoising step then
begins with rank 0's CALL header, the per-step flag the other ranks wait on: a cancelled job
simply sends no more calls, and the others wait for the next job or EXIT. Folders, state and
resume are rank 0's alone, so they behave as on one GPU.

An error inside a shared forward ends the process (exit status 1): the other ranks may be
inside a collective and can no longer be brought back in step; torch's launcher then stops
them, and the job resumes like a killed one.
"""

from __future__ import annotations

import os
import sys
import traceback
from functools import partial

import torch
import torch.distributed as dist

from .context import attention_backend, choose_config, describe_config, enable_context_parallel
from .exchange import CALL, EXIT, LOAD, send_call, send_command, send_tensor, tensor_description

EXIT_RANKS_OUT_OF_STEP = 1
_session: Leader | None = None


def shared_transformer(transformer):
    """The transformer to sample with: itself on one GPU, a call shared with every rank on rank 0 of several."""
    return transformer if _session is None else _session.bind(transformer)


def start_session(strategy: str = "auto") -> Leader:
    global _session
    _session = Leader(strategy)
    return _session


class Leader:
    """Rank 0's side of the exchange (module docstring)."""

    def __init__(self, strategy: str = "auto"):
        self.strategy = strategy
        self.world_size = dist.get_world_size()

    def bind(self, transformer):
        if getattr(transformer, "_scail2_leader", None) is not self:
            self._share(transformer)
        return partial(self._call, transformer)

    def _share(self, transformer) -> None:
        """LOAD: the config, the attention backend, the scheme and every weight, then parallelism on."""
        backend = attention_backend(transformer)
        config = choose_config(self.world_size, transformer.config.num_heads, backend, self.strategy)
        state = transformer.state_dict()
        device = _device_of(transformer)
        send_command(LOAD, {
            "config": {k: v for k, v in dict(transformer.config).items() if not k.startswith("_")},
            "attention_backend": backend, "context_parallel": describe_config(config),
            "tensors": [[name, tensor_description(t)] for name, t in state.items()],
        })
        for tensor in state.values():
            send_tensor(tensor, device)
        enable_context_parallel(transformer, config)
        transformer._scail2_leader = self

    def _call(self, transformer, **kwargs):
        send_call(kwargs, _device_of(transformer))
        try:
            return transformer(**kwargs)
        except BaseException:
            print(f"error: a shared transformer step failed on rank 0; stopping every rank\n"
                  f"{traceback.format_exc()}", file=sys.stderr, flush=True)
            os._exit(EXIT_RANKS_OUT_OF_STEP)

    def close(self) -> None:
        """EXIT: the other ranks leave their loop."""
        send_command(EXIT, {})


def _device_of(transformer) -> torch.device:
    return next(transformer.parameters()).device


__all__ = ["CALL", "Leader", "shared_transformer", "start_session"]
