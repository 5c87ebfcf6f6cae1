"""Ranks 1..N-1 of a `--gpus N` run: they hold a copy of the transformer and run its forwards.

They read no inputs and write no files; each waits for rank 0's next header (`exchange`):
LOAD builds the transformer from the weights rank 0 sends, CALL runs one forward with the
arguments it sends (the output, gathered on every rank, is dropped here), EXIT ends the loop.
"""

from __future__ import annotations

import gc

import torch
from diffusers import ContextParallelConfig

from .context import enable_context_parallel
from .exchange import CALL, EXIT, LOAD, receive_call, receive_command, receive_tensor


def follow(device: torch.device) -> None:
    model = None
    while True:
        command, message = receive_command()
        if command == EXIT:
            return
        if command == LOAD:
            model = None  # the previous copy goes before the new one arrives
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            model = build_transformer(message, device)
        elif command == CALL:
            if model is None:
                raise RuntimeError("rank 0 sent a transformer call before any weights")
            kwargs = receive_call(message, device)
            with torch.no_grad():
                model(**kwargs)
        else:
            raise RuntimeError(f"unknown command {command} from rank 0")


def build_transformer(message: dict, device: torch.device):
    """The transformer rank 0 described, with its weights as received, parallelism on."""
    from ..models.transformer_scail2 import SCAIL2Transformer3DModel

    with torch.device("meta"):
        model = SCAIL2Transformer3DModel.from_config(message["config"])
    state = {name: receive_tensor(description, device) for name, description in message["tensors"]}
    model.load_state_dict(state, strict=True, assign=True)
    if message["attention_backend"]:
        model.set_attention_backend(message["attention_backend"])
    model.eval().requires_grad_(False)
    enable_context_parallel(model, ContextParallelConfig(**message["context_parallel"]))
    return model
