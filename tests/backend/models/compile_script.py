"""Run by test_compile.py in a fresh process: eager vs regionally compiled tiny forwards, as JSON."""

import json
import sys
import time

import torch
from torch._dynamo.utils import counters

from backend.models.compile import compile_blocks
from scail_fixtures import tiny_model

T, H, W = 3, 4, 4
torch.manual_seed(0)
inputs = dict(pose_latents=[torch.randn(16, T, H // 2, W // 2)], driving_masks=[torch.rand(28, T, H // 2, W // 2)],
              ref_latents=[torch.randn(16, 1, H, W)], ref_masks=[torch.rand(28, 1 + T, H, W)],
              context=[torch.randn(5, 32)], clip_fea=torch.randn(1, 257, 1280))
steps = [([torch.randn(16, T, H, W)], torch.tensor([t])) for t in (900.0, 500.0)]
model = tiny_model()
with torch.no_grad():
    conditioning = model(**inputs)
    eager = [model(x=x, t=t, conditioning=conditioning)[0] for x, t in steps]
    compile_blocks(model, sys.argv[1])
    seconds, compiled = [], []
    for x, t in steps:
        start = time.perf_counter()
        compiled.append(model(x=x, t=t, conditioning=conditioning)[0])
        seconds.append(time.perf_counter() - start)
print(json.dumps({
    "max_difference": max(float((a - b).abs().max()) for a, b in zip(compiled, eager)),
    "scale": float(eager[0].abs().max()),
    "seconds": seconds,
    "unique_graphs": counters["stats"]["unique_graphs"],
    "cache_hits": counters["inductor"]["fxgraph_cache_hit"],
    "cache_misses": counters["inductor"]["fxgraph_cache_miss"],
}))
