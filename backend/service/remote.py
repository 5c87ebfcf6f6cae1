"""What a transfer-mode (remote) client may name: job folders under the jobs root, and uploaded
blobs as inputs, never a path of the worker's.

A remote client's job is checked here before anything touches the file system: a path that is
not a blob reference is refused without being looked at, so no reply tells which of the
worker's files exist; a blob reference becomes the path of the blob's link in the store.
"""

from __future__ import annotations

from pathlib import Path

import protocol

from .blobs import BlobError, BlobStore, check_name, check_sha
from .identities import EVERYONE, Identity
from .jobs import BAD_INPUT, ProtocolFailure

REMOTE_PATHS = "a remote client names no files of the worker: upload it and name the blob"


def remote_job_folder(jobs_root: Path, job_dir: object, job_id: str) -> Path:
    """The folder of a remote client's job: `job_id` under the jobs root, or the folder it named, one
    folder directly under the jobs root (relative names are taken from there).

    One level only: a folder inside another artist's job folder was claimed by nobody, so a job could
    be put there (its frames over theirs) and read back; and a folder above another's listed theirs."""
    if job_dir is None:
        return jobs_root / job_id
    if not isinstance(job_dir, str) or not job_dir.strip() or "\x00" in job_dir:
        raise ProtocolFailure(BAD_INPUT, "'job_dir' must be a folder name under the worker's jobs root")
    folder = (jobs_root / job_dir).resolve()  # an absolute job_dir replaces the root here, then is checked
    inside = folder.relative_to(jobs_root).parts if folder.is_relative_to(jobs_root) else ()
    if len(inside) != 1 or inside[0].startswith("."):  # the root, outside it, nested, or the store (.blobs)
        raise ProtocolFailure(BAD_INPUT, f"a remote client's job folder is one folder directly under the "
                              f"worker's jobs root ({jobs_root}); leave job_dir out or name one there (no '/')")
    return folder


def resolve_inputs(task: str, job: dict, store: BlobStore, who: Identity = EVERYONE) -> tuple[dict, list[str]]:
    """The job with every input path replaced by its blob's path on the worker, and the blobs used
    (those `who` uploaded: another artist's blob is as absent as one never uploaded).

    Refused (one line, BAD_INPUT) when an input is not a blob reference or its blob is not
    uploaded.
    """
    job = dict(job)
    used: list[str] = []

    def resolve(field: str, value: object) -> object:
        if value is None:
            return None
        ref, tree = protocol.parse_blob_ref(value), protocol.parse_blob_ref(value, protocol.BLOB_TREE_PREFIX)
        if ref is None and tree is None:
            raise ProtocolFailure(BAD_INPUT, f"{field}: {REMOTE_PATHS}")
        try:
            if tree is not None:
                name, _, pattern = tree[1].partition("/")  # an image sequence names its pattern in the folder
                if pattern and not protocol.SEQUENCE_NAME.fullmatch(pattern):
                    raise BlobError(f"not an image sequence's name: {pattern[:80]!r}")
                path, shas = store.link_tree(check_sha(tree[0]), check_name(name), who)
                used.extend(shas)
                return str(path / pattern) if pattern else str(path)
            sha, name = check_sha(ref[0]), check_name(ref[1])
            path = store.link(sha, name, who)
        except BlobError as exc:
            raise ProtocolFailure(BAD_INPUT, f"{field}: {exc}") from None
        used.append(sha)
        return str(path)

    if task == "generate":
        for field in ("driving", "reference", "driving_mask", "reference_mask"):
            if field in job:
                job[field] = resolve(field, job[field])
        for field in ("extra_references", "extra_reference_masks"):
            if isinstance(job.get(field), list):
                job[field] = [resolve(field, item) for item in job[field]]
        if isinstance(job.get("loras"), list):
            job["loras"] = [dict(lora, path=resolve("a LoRA", lora.get("path"))) if isinstance(lora, dict) else lora
                            for lora in job["loras"]]
    elif "source" in job:
        job["source"] = resolve("source", job["source"])
    return job, used
