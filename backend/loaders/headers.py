"""Checkpoint files judged by their headers alone: nothing is unpickled and no tensor data is read.

`check_file` says whether a weights file is whole and safe to load, in one line, for `doctor`, for
`layouts.find_transformer` (a truncated download is named as such, not "not found") and for any
caller that wants to refuse a file before a model is built:

* safetensors: an 8-byte little-endian header length, then that many bytes of JSON naming every
  tensor's dtype, shape and `data_offsets` into the data that follows. The file is whole when its
  size is exactly 8 + header + the last tensor's end; each tensor's byte count must match its
  dtype and shape (the safetensors format's own rules). Last, the safetensors library itself, which
  every loader opens the files with, must take the header (`_loader_refusal`), so doctor and the
  loaders never disagree.
* torch (`torch.save`, a zip): the zip's central directory sits at the file's end, so a cut-short
  download has none. The pickle inside (`<name>/data.pkl`) is read as opcodes only (`pickletools`,
  which never executes anything) for the globals it would import: any outside the weights-only
  unpickler's allowlist (plus numpy's RNG-state types, `numpy_rng_globals`) means the file carries code or
  objects, which this backend never loads.

* GGUF: the metadata and tensor table at the file's start (the `gguf` package's reader, which
  maps the data without reading it); the file is whole when every tensor's bytes lie inside it.

Statuses: "ok", "empty", "truncated", "damaged", "code", "unsupported" (a legacy non-zip pickle,
or not a checkpoint at all).
"""

from __future__ import annotations

import _compat_pickle  # the standard library's Python 2 -> 3 names, as pickle's fix_imports uses them
import json
import math
import os
import pickletools
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

OK, EMPTY, TRUNCATED, DAMAGED, CODE, UNSUPPORTED = "ok", "empty", "truncated", "damaged", "code", "unsupported"
SCAIL2_MARKER = "patch_embedding_mask.weight"
_MAX_HEADER = 100 << 20  # the safetensors format's own limit on the JSON header
_MAX_PICKLE = 256 << 20  # a state dict's pickle is KBs to MBs; tensor data lives in other records
_ITEM_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I16": 2, "U16": 2,
               "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}
_MEMO_PUT = {"BINPUT", "LONG_BINPUT", "PUT"}
_MEMO_GET = {"BINGET", "LONG_BINGET", "GET"}


@dataclass
class FileCheck:
    """What a weights file's header says. `detail` is one line (empty when the file is fine)."""

    path: str
    kind: str  # "safetensors" | "torch" | "gguf" | "other"
    status: str
    detail: str = ""
    tensors: int | None = None  # tensors (safetensors, GGUF) or tensor records (torch zip)
    names: list[str] = field(default_factory=list, repr=False)  # tensor names (safetensors, GGUF)
    globals: list[str] = field(default_factory=list)  # refused pickle globals (status "code")

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def names_scail2(self) -> bool:
        return any(name.endswith(SCAIL2_MARKER) for name in self.names)

    def line(self) -> str:
        return f"{self.path}: {self.detail}" if self.detail else f"{self.path}: {self.kind}, {self.tensors} tensors"


def check_file(path: str | os.PathLike) -> FileCheck:
    """The header check of a safetensors or torch file, told apart by its first bytes."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(9)
    except OSError as exc:
        return FileCheck(str(path), "other", DAMAGED, f"cannot read ({exc.strerror or exc})")
    if size == 0:
        return FileCheck(str(path), "other", EMPTY, "the file is empty (an interrupted download?)")
    if head.startswith(b"PK\x03\x04"):
        return check_torch_zip(path)
    if head.startswith(b"GGUF"):
        return check_gguf(path)
    if head[:1] == b"\x80":
        return FileCheck(str(path), "torch", UNSUPPORTED,
                         "a legacy (non-zip) torch pickle, which this backend does not read; re-save it with torch.save")
    if len(head) < 8 or head[8:9] == b"{" or path.suffix == ".safetensors":
        return check_safetensors(path)
    return FileCheck(str(path), "other", UNSUPPORTED, "neither a safetensors file nor a torch checkpoint")


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e7 else f"{n} bytes"


def check_safetensors(path: str | os.PathLike) -> FileCheck:
    path = Path(path)
    where = str(path)
    size = path.stat().st_size
    if size < 8:
        return FileCheck(where, "safetensors", TRUNCATED if size else EMPTY,
                         f"truncated: {size} bytes, not even a header length (an interrupted download?)")
    with path.open("rb") as f:
        length = struct.unpack("<Q", f.read(8))[0]
        if length > _MAX_HEADER:
            return FileCheck(where, "safetensors", DAMAGED,
                             f"damaged: a header length of {length} bytes (not a safetensors file?)")
        if 8 + length > size:
            return FileCheck(where, "safetensors", TRUNCATED, f"truncated inside its header ({size} bytes of "
                             f"{8 + length} just for the header; an interrupted download?)")
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return FileCheck(where, "safetensors", DAMAGED, "damaged: its header is not JSON")
    if not isinstance(header, dict):
        return FileCheck(where, "safetensors", DAMAGED, "damaged: its header is not a JSON object")
    names = [name for name in header if name != "__metadata__"]
    end = 0
    for name in names:
        problem = _tensor_problem(header[name])
        if problem:
            return FileCheck(where, "safetensors", DAMAGED, f"damaged: tensor {name} {problem}", len(names), names)
        end = max(end, header[name]["data_offsets"][1])
    expected = 8 + length + end
    if size < expected:
        return FileCheck(where, "safetensors", TRUNCATED,
                         f"truncated: its header promises {_gb(expected)}, the file holds {_gb(size)} "
                         f"(an interrupted download?)", len(names), names)
    if size > expected:
        return FileCheck(where, "safetensors", DAMAGED,
                         f"damaged: {size - expected} bytes after its last tensor", len(names), names)
    refusal = _loader_refusal(path)
    if refusal:
        return FileCheck(where, "safetensors", DAMAGED, f"damaged: {refusal}", len(names), names)
    return FileCheck(where, "safetensors", OK, "", len(names), names)


def _loader_refusal(path: Path) -> str:
    """Why the safetensors library, which every loader opens these files with, refuses the header ('' when it
    takes it): tensors sharing bytes, a dtype the format lacks, and whatever else its validation covers. The
    checks above say the common faults (a cut-short download) in the artist's words; this one makes sure a
    file called ok here is one `generate` and `convert` open. Maps the file; reads no tensor data."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="numpy"):
            return ""
    except (SafetensorError, OSError) as exc:
        text = str(exc).strip()
        return text.splitlines()[0] if text else type(exc).__name__


def _tensor_problem(entry) -> str:
    """Why a safetensors header entry is impossible ('' when it is fine)."""
    if not isinstance(entry, dict):
        return "is not described by an object"
    shape, offsets, dtype = entry.get("shape"), entry.get("data_offsets"), entry.get("dtype")
    if not (isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape)):
        return f"has the shape {shape!r}"
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(n, int) for n in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        return f"has the data offsets {offsets!r}"
    if not isinstance(dtype, str):
        return f"has the dtype {dtype!r}"
    item = _ITEM_BYTES.get(dtype)
    if item is not None and math.prod(shape) * item != offsets[1] - offsets[0]:
        return f"({dtype}, shape {shape}) needs {math.prod(shape) * item} bytes, its offsets give {offsets[1] - offsets[0]}"
    return ""


def check_gguf(path: str | os.PathLike) -> FileCheck:
    path = Path(path)
    where = str(path)
    try:
        from gguf import GGUFReader
    except ImportError:
        return FileCheck(where, "gguf", UNSUPPORTED, "a GGUF file; reading it needs the gguf package (pip install gguf)")
    size = path.stat().st_size
    try:
        reader = GGUFReader(path)
    except (ValueError, IndexError, KeyError, TypeError, OSError) as exc:
        return FileCheck(where, "gguf", TRUNCATED if size < 1 << 20 or "size" in str(exc) else DAMAGED,
                         f"truncated or damaged GGUF file ({_gb(size)}; {str(exc)[:80]})")
    end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    names = [t.name for t in reader.tensors]
    if end > size:
        return FileCheck(where, "gguf", TRUNCATED, f"truncated: its tensor table promises {_gb(end)}, the file "
                         f"holds {_gb(size)} (an interrupted download?)", len(names), names)
    return FileCheck(where, "gguf", OK, "", len(names), names)


def check_torch_zip(path: str | os.PathLike) -> FileCheck:
    path = Path(path)
    where = str(path)
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            pickles = [info for info in infos if info.filename.endswith("data.pkl")]
            if not pickles:
                return FileCheck(where, "torch", UNSUPPORTED, "a zip without data.pkl: not a torch.save checkpoint")
            start = getattr(archive, "start_dir", None)
            if start is not None and any(info.header_offset + info.compress_size > start for info in infos):
                return FileCheck(where, "torch", DAMAGED, "damaged: a record runs past the zip directory")
            pickle_info = min(pickles, key=lambda info: info.filename.count("/"))
            if pickle_info.file_size > _MAX_PICKLE:
                return FileCheck(where, "torch", DAMAGED, f"damaged: its data.pkl is {_gb(pickle_info.file_size)}")
            records = sum(1 for info in infos if "/data/" in info.filename)
            with archive.open(pickle_info) as stream:
                found = pickle_globals(stream)
    except zipfile.BadZipFile:
        return FileCheck(where, "torch", TRUNCATED, "truncated or damaged: a torch checkpoint without its zip "
                         "directory at the end (an interrupted download?)")
    except (ValueError, EOFError, struct.error, zipfile.LargeZipFile, OSError) as exc:
        return FileCheck(where, "torch", DAMAGED, f"damaged: its pickle cannot be read ({str(exc)[:80]})")
    refused = sorted(found - allowed_globals())
    if refused:
        shown = ", ".join(refused[:4]) + (", ..." if len(refused) > 4 else "")
        return FileCheck(where, "torch", CODE, f"carries code or objects the safe loader refuses ({shown}); it is "
                         "never loaded, and model weights never need them", records, [], refused)
    return FileCheck(where, "torch", OK, "", records)


def pickle_globals(stream) -> set[str]:
    """Every "module.name" a pickle would import (GLOBAL, INST, STACK_GLOBAL), read as opcodes.

    STACK_GLOBAL takes its module and name from the stack; they are the last two strings pushed,
    directly or from the memo (the way pickle writes them), which is what is tracked here.
    """
    found: set[str] = set()
    strings: list[str] = []
    memo: dict = {}
    last = None
    for opcode, arg, _ in pickletools.genops(stream):
        name = opcode.name
        if name in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
            found.add(_python3_name(module, attr))
        elif name == "STACK_GLOBAL":
            found.add(".".join(strings[-2:]) if len(strings) >= 2 else "an unreadable global")
        elif name in _STRING_OPS:
            last = arg if isinstance(arg, str) else arg.decode("latin-1") if isinstance(arg, bytes) else str(arg)
            strings.append(last)
            continue
        elif name == "MEMOIZE":
            memo[len(memo)] = last
        elif name in _MEMO_PUT:
            memo[arg] = last
        elif name in _MEMO_GET:
            value = memo.get(arg)
            if isinstance(value, str):
                strings.append(value)
            last = value
            continue
        last = None
    return found


def _python3_name(module: str, attr: str) -> str:
    """A protocol-2 pickle's Python 2 spelling (`__builtin__.exec`) as Python 3 unpickles it."""
    module, attr = _compat_pickle.NAME_MAPPING.get((module, attr), (module, attr))
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{attr}"


def allowed_globals() -> set[str]:
    """The globals torch's weights-only unpickler builds, and the numpy RNG-state types."""
    try:
        from torch import _weights_only_unpickler

        allowed = set(_weights_only_unpickler._get_allowed_globals())
    except (ImportError, AttributeError):  # a torch without this internal: the usual torch.save globals
        allowed = {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
                   "torch.device", "torch.Size"}
        allowed |= {f"torch.{kind}Storage" for kind in ("Float", "Half", "BFloat16", "Double", "Long", "Int",
                                                         "Short", "Char", "Byte", "Bool")}
    return allowed | allowed_numpy_names()


def numpy_rng_globals() -> list:
    """Numpy types the weights-only unpickler may build: the release stores numpy's RNG state
    (a uint32 array) beside the weights (as a public port of the converter found). Arrays,
    dtypes and scalars of plain numeric types carry data only; both module spellings of the
    reconstructors are listed since numpy 2 moved `numpy.core` to `numpy._core`."""
    import numpy as np

    multiarray = np._core.multiarray
    allowed = [np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar]
    allowed += [(multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
                (multiarray.scalar, "numpy.core.multiarray.scalar")]
    allowed += [type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFD"]
    return allowed


def allowed_numpy_names() -> set[str]:
    names = set()
    for item in numpy_rng_globals():
        obj, name = item if isinstance(item, tuple) else (item, None)
        names.add(name or f"{obj.__module__}.{obj.__qualname__}")
    return names
