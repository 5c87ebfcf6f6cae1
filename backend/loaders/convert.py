"""Streaming conversion of any SCAIL-2 checkpoint layout into our diffusers folder.

`python -m backend convert SRC DST [--dtype bf16|fp16|fp32] [--shard-size 5GB]`

The output is diffusers' own layout for `SCAIL2Transformer3DModel`: `config.json`, and either
`diffusion_pytorch_model.safetensors` (everything fits in one shard) or shards
`diffusion_pytorch_model-0000k-of-0000N.safetensors` with `diffusion_pytorch_model.safetensors.index.json`
({"metadata": {"total_size": bytes}, "weight_map": {name: shard file}}).

Memory: the shard plan is made from the tensor shapes alone; then each shard's tensors are read
from the memory-mapped source, written and dropped, so at most one shard (plus one source tensor)
is held in RAM. `config.json` is written last: a folder left by an interrupted run is not
mistaken for a finished one.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import unusable_folder

if TYPE_CHECKING:
    import torch

# torch is imported where it is used: building the command line (and `--version`) stays fast.
DTYPE_NAMES = ("bf16", "fp16", "fp32")
DEFAULT_SHARD_SIZE = "5GB"  # diffusers' default
EXIT_BAD_INPUT = 2

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def torch_dtype(name: str) -> "torch.dtype":
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def parse_size(size: int | str) -> int:
    """Bytes in "5GB" (decimal, as diffusers), "4GiB" (binary), "500MB" or a plain integer."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(size))
    if not match or match.group(2).upper() not in _UNITS:
        raise ValueError(f"not a size: {size!r} (try 5GB, 500MB or 4GiB)")
    value = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if value <= 0:
        raise ValueError(f"the shard size must be positive, got {size!r}")
    return value


def plan_shards(sizes: list[tuple[str, int]], max_shard_bytes: int) -> list[list[str]]:
    """Group (name, bytes) in order into shards of at most `max_shard_bytes`
    (a single larger tensor gets a shard of its own)."""
    shards: list[list[str]] = []
    current: list[str] = []
    current_bytes = 0
    for name, nbytes in sizes:
        if current and current_bytes + nbytes > max_shard_bytes:
            shards.append(current)
            current, current_bytes = [], 0
        current.append(name)
        current_bytes += nbytes
    if current:
        shards.append(current)
    return shards


def shard_file_name(index: int, count: int) -> str:
    """diffusers' shard naming, `index` counted from 1."""
    return f"diffusion_pytorch_model-{index:05d}-of-{count:05d}.safetensors"


def convert(
    src: str | Path,
    dst: str | Path,
    dtype: "torch.dtype | str" = "bf16",
    max_shard_size: int | str = DEFAULT_SHARD_SIZE,
    config: dict | None = None,
    progress=None,
) -> Path:
    """Convert the checkpoint at `src` (any layout) into a diffusers folder `dst`; returns `dst`.

    Tensors are stored in `dtype`, except `_keep_in_fp32_modules`' which stay float32 (the model
    computes them in float32; they are a small share of the weights). fp8_scaled sources are
    dequantised. `dst` must not exist or be empty. `progress(text)` gets one line per shard.
    """
    from safetensors.torch import save_file

    from .checkpoints import open_checkpoint, storage_dtype
    from .errors import CheckpointError
    from .layouts import INDEX_NAME, WEIGHTS_NAME

    dtype = torch_dtype(dtype) if isinstance(dtype, str) else dtype
    dst = Path(dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise CheckpointError(f"{dst}: already exists and is not an empty folder; choose a new output folder")
    problem = unusable_folder(dst)
    if problem:
        raise CheckpointError(f"{dst} {problem}; choose a new output folder")
    max_shard_bytes = parse_size(max_shard_size)
    checkpoint = open_checkpoint(src, config)
    dtypes = {name: storage_dtype(name, dtype) for name in checkpoint.names}
    sizes = [(name, math.prod(checkpoint.shapes[name]) * dtypes[name].itemsize) for name in checkpoint.names]
    shards = plan_shards(sizes, max_shard_bytes)
    total_bytes = sum(nbytes for _, nbytes in sizes)

    dst.mkdir(parents=True, exist_ok=True)
    weight_map: dict[str, str] = {}
    for number, names in enumerate(shards, start=1):
        file_name = WEIGHTS_NAME if len(shards) == 1 else shard_file_name(number, len(shards))
        tensors = {name: checkpoint.read(name, dtypes[name]).contiguous() for name in names}
        save_file(tensors, dst / file_name, metadata={"format": "pt"})
        shard_bytes = sum(t.nbytes for t in tensors.values())
        del tensors  # drop the shard before reading the next one
        weight_map.update(dict.fromkeys(names, file_name))
        if progress:
            progress(f"wrote {file_name} ({len(names)} tensors, {shard_bytes / 1e9:.2f} GB)")
    if len(shards) > 1:
        index = {"metadata": {"total_size": total_bytes}, "weight_map": weight_map}
        (dst / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    checkpoint.model.save_config(dst)  # config.json with _class_name, as from_pretrained expects
    if progress:
        progress(f"converted {len(weight_map)} tensors ({total_bytes / 1e9:.2f} GB) from {checkpoint.layout} "
                 f"layout into {dst}")
    return dst


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", type=Path, help="official release folder or its .pt, a SCAIL-2 .safetensors "
                        "(fp16 or ComfyUI fp8_scaled), or a converted folder")
    parser.add_argument("dst", type=Path, help="new folder for the converted weights")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default="bf16",
                        help="storage dtype (default bf16); float32-critical modules stay fp32")
    parser.add_argument("--shard-size", type=_shard_size, default=DEFAULT_SHARD_SIZE, metavar="SIZE",
                        help="largest shard, e.g. 5GB (default), 2GiB or 500MB")


def _shard_size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_convert(args: argparse.Namespace) -> int:
    """The `convert` subcommand: 0 on success, 2 with one line on stderr for a bad checkpoint."""
    from .errors import CheckpointError

    try:
        convert(args.src, args.dst, args.dtype, args.shard_size, progress=print)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def build_convert_parser(prog: str = "python -m backend convert") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Convert SCAIL-2 weights into a sharded "
                                     "diffusers folder (streaming; about one shard in memory).")
    add_convert_arguments(parser)
    return parser


def convert_main(argv: list[str] | None = None) -> int:
    """Entry point for `convert SRC DST [--dtype ...] [--shard-size ...]` (arguments after `convert`)."""
    return run_convert(build_convert_parser().parse_args(argv))
