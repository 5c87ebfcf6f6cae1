"""What rank 0 sends the other ranks: a command, then the tensors it needs, by broadcast.

Every message starts with a command header on the CPU (gloo): [command, length] and `length`
bytes of JSON that describe what follows. Tensors then follow one broadcast each, on the
ranks' device (nccl between GPUs, gloo on the CPU). JSON and raw tensors only: nothing is
pickled, so a rank never runs code it received.
"""

from __future__ import annotations

import json
from typing import Any

import torch
import torch.distributed as dist

CALL, LOAD, EXIT = 1, 2, 3  # one transformer forward; new weights; the end of the run
LEADER = 0


def send_command(command: int, description: dict) -> None:
    """Rank 0: the header of one message."""
    payload = torch.frombuffer(bytearray(json.dumps(description).encode()), dtype=torch.uint8)
    dist.broadcast(torch.tensor([command, payload.numel()], dtype=torch.int64), LEADER)
    if payload.numel():
        dist.broadcast(payload, LEADER)


def receive_command() -> tuple[int, dict]:
    """The other ranks: wait for the next header (between jobs this waits as long as rank 0 is idle)."""
    header = torch.zeros(2, dtype=torch.int64)
    dist.broadcast(header, LEADER)
    command, length = (int(v) for v in header)
    payload = torch.empty(length, dtype=torch.uint8)
    if length:
        dist.broadcast(payload, LEADER)
    return command, json.loads(payload.numpy().tobytes().decode()) if length else {}


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"not a tensor dtype: {name!r}")
    return dtype


def tensor_description(tensor: torch.Tensor) -> dict:
    return {"shape": list(tensor.shape), "dtype": str(tensor.dtype)}


def send_tensor(tensor: torch.Tensor, device: torch.device) -> None:
    dist.broadcast(tensor.detach().to(device).contiguous(), LEADER)


def receive_tensor(description: dict, device: torch.device) -> torch.Tensor:
    tensor = torch.empty(description["shape"], dtype=_dtype(description["dtype"]), device=device)
    dist.broadcast(tensor, LEADER)
    return tensor


# -- keyword arguments of a call -----------------------------------------------------------
def describe(value: Any) -> tuple[dict, list[torch.Tensor]]:
    """A JSON description of None, a number, a bool, a tensor or a list of those, and its tensors in order."""
    if isinstance(value, torch.Tensor):
        return {"tensor": tensor_description(value)}, [value]
    if isinstance(value, (list, tuple)):
        items, tensors = [], []
        for item in value:
            described, found = describe(item)
            items.append(described)
            tensors.extend(found)
        return {"list": items}, tensors
    if value is None or isinstance(value, (bool, int, float)):
        return {"value": value}, []
    raise TypeError(f"cannot send a {type(value).__name__} to the other ranks")


def rebuild(description: dict, tensors) -> Any:
    """The value `describe` described, taking its tensors from the iterator `tensors`."""
    if "tensor" in description:
        return next(tensors)
    if "list" in description:
        return [rebuild(item, tensors) for item in description["list"]]
    return description["value"]


def send_call(kwargs: dict, device: torch.device) -> None:
    """Rank 0: one forward's keyword arguments."""
    described, tensors = describe(list(kwargs.values()))
    send_command(CALL, {"names": list(kwargs), "values": described,
                        "tensors": [tensor_description(t) for t in tensors]})
    for tensor in tensors:
        send_tensor(tensor, device)


def receive_call(description: dict, device: torch.device) -> dict:
    tensors = iter([receive_tensor(d, device) for d in description["tensors"]])
    return dict(zip(description["names"], rebuild(description["values"], tensors)))
