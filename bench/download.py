"""`backend download`'s fetch path against the hub client's own `hf_hub_download`, on loopback, side by side.

Serves one file of random bytes from the tests' stand-in for the Hugging Face Hub
(tests/backend/download/hub_standin.py: the hub's redirect, LFS headers and a CDN on a second port)
and fetches it, in the same run, with

1. `hf_hub_download(local_dir=...)`: the client alone (no hash check of the content, no resumable part);
2. `backend.download.fetch`: HEAD, resumable part file with 1 MB chunks, then the SHA-256 check, then
   the move into place;

and reports MB/s of each, the seconds of the SHA-256 pass, and our overhead against the client. Loopback
shows the cost of our own steps (chunking, hashing), not what a home connection gives.

    .venvs/backend/bin/python bench/download.py [--mib 512]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "backend" / "download"))
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512, help="size of the file fetched")
    parser.add_argument("--device", default="cpu", help="ignored (every bench script takes it)")
    args = parser.parse_args()

    from hub_standin import HubStandIn

    hub = HubStandIn()
    hub.add("bench/repo", "model.safetensors", os.urandom(args.mib << 20))
    servers, url = hub.start()
    os.environ["HF_ENDPOINT"] = url
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    from huggingface_hub import hf_hub_download

    from backend.download.catalog import WeightsFile
    from backend.download.fetch import file_hash, fetch, remote_info

    size_mb = (args.mib << 20) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        plain = hf_hub_download("bench/repo", "model.safetensors", local_dir=Path(tmp) / "client",
                                cache_dir=Path(tmp) / "cache")
        client_s = time.perf_counter() - started

        file = WeightsFile("bench", "bench/repo", "model.safetensors", "diffusion_models", "transformer",
                           args.mib << 20)
        started = time.perf_counter()
        remote = remote_info(file, None)
        fetch(Path(tmp) / "ours", remote, None, on_bytes=lambda n: None)
        ours_s = time.perf_counter() - started

        started = time.perf_counter()
        file_hash(Path(plain), remote.etag)
        hash_s = time.perf_counter() - started
    for server in servers:
        server.shutdown()
    print(json.dumps({"mib": args.mib, "client_s": round(client_s, 2), "client_mb_s": round(size_mb / client_s, 1),
                      "ours_s": round(ours_s, 2), "ours_mb_s": round(size_mb / ours_s, 1),
                      "sha256_s": round(hash_s, 2), "overhead": round(ours_s / client_s, 2), "error": None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
