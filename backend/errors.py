"""Whose failure it is, decided once for the CLI and the worker: "your input" or "our failure".

`UserError` is the family of failures the user can fix: the job's settings, its input files, the
model and LoRA files they named, the output folder. Each subclass (`InputError`, `MediaError`,
`CheckpointError`, `LoraError`, `JobDirectoryError`, `SegmentationError`, ...) is one line for the
user. `error_code` maps any failure to the contract's error code (`protocol.errors`); the CLI
exits 2 with one line for the input codes, the worker sends the code in its `error` event, so a
corrupt checkpoint, say, is "bad input" on both.
"""

from __future__ import annotations

from pathlib import Path

from protocol import errors


class UserError(ValueError):
    """A failure the user can fix; its message is one line for them, `code` the error code it is sent with."""

    code = errors.BAD_INPUT


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is the host or the GPU running out of memory."""
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def unusable_folder(path: Path) -> str | None:
    """Why `path` can be no output folder (it is a file, or a file stands where one of its parents would be
    made), as words to follow its name; None when it is a folder or can be made. Nothing is made."""
    path = Path(path)
    if path.exists():
        return None if path.is_dir() else "is a file, not a folder"
    above = next((folder for folder in path.parents if folder.exists()), None)
    if above is not None and not above.is_dir():
        return f"cannot be made: {above} is a file, not a folder"
    return None


def inside(filename, folder: Path | None) -> bool:
    """Whether an OSError's file lies in `folder`."""
    if folder is None or not isinstance(filename, (str, bytes)) or not filename:
        return False
    try:
        return Path(filename if isinstance(filename, str) else filename.decode()).resolve().is_relative_to(folder)
    except (OSError, ValueError):
        return False


def error_code(exc: BaseException, job_dir: Path | None = None) -> str:
    """The error code of a failure: a UserError's own code; a write into the job's folder that the
    system refused (disk full, read-only) `output_error`; running out of memory `out_of_memory`;
    anything else `job_failed` (ours)."""
    if isinstance(exc, UserError):
        return exc.code
    if isinstance(exc, OSError) and inside(exc.filename, job_dir):
        return errors.OUTPUT_ERROR
    if is_out_of_memory(exc):
        return errors.OUT_OF_MEMORY
    return errors.JOB_FAILED


def is_user_error(exc: BaseException) -> bool:
    """Whether the user can fix what `exc` says (the CLI's exit status 2, the worker's input codes)."""
    return errors.is_input_error(error_code(exc))
