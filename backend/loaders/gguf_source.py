"""GGUF quantisations of the SCAIL-2 transformer (ComfyUI-GGUF style files, Q3_K_M to Q8_0).

A GGUF file holds the Wan-native tensor names of the single safetensors file (possibly under
``model.diffusion_model.``), each tensor in its own GGML type: F32/F16/BF16, or block
quantisations (Q8_0, Q5_K, Q4_K, ...). Two conventions of ComfyUI-GGUF's converter matter:

* dimensions are stored innermost first (GGML's ``ne``), so a [out, in] weight reads as (in, out);
* a tensor whose last dimension does not divide into 256-wide blocks may be stored flattened to
  [n / 256, 256], its real shape in the metadata key ``comfy.gguf.orig_shape.<name>``.

`GGUFSource` is a `sources.Source`: every tensor reads back dequantised to float32 (numpy code of
the `gguf` package), so validation, conversion and LoRA merging treat it like any other layout.
`quantised` hands the 2-D weights of linear layers over as diffusers' `GGUFParameter`, which
`checkpoints.load_transformer` keeps quantised in memory (diffusers' `GGUFLinear` dequantises one
layer at a time in the forward pass), so a 10.9 GB Q4_K_M file stays about that size on the GPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import CheckpointError, first_line
from .gguf_files import FLOAT_TYPES, ORIG_SHAPE_KEY, file_type, read_gguf, summarize, tensor_shapes
from .layouts import GGUF
from .sources import Source


class GGUFSource(Source):
    """A GGUF file's tensors under Wan-native names, dequantised on read (see module doc)."""

    layout = GGUF

    def __init__(self, path: Path):
        from gguf import GGMLQuantizationType

        self.reader = read_gguf(path)
        self._tensors = {tensor.name: tensor for tensor in self.reader.tensors}
        self._shapes = tensor_shapes(self.reader)
        self._reshaped = {t.name for t in self.reader.tensors if self.reader.get_field(ORIG_SHAPE_KEY + t.name)}
        self._types = {name: GGMLQuantizationType(int(t.tensor_type)) for name, t in self._tensors.items()}
        super().__init__(path, list(self._tensors))
        self._check_types()

    def _check_types(self) -> None:
        from diffusers.quantizers.gguf.utils import SUPPORTED_GGUF_QUANT_TYPES

        unsupported = sorted({kind.name for kind in self._types.values()
                              if kind.name not in FLOAT_TYPES and kind not in SUPPORTED_GGUF_QUANT_TYPES})
        if unsupported:
            raise CheckpointError(f"{self.path}: GGUF quantisation {', '.join(unsupported)} is not supported by "
                                  "diffusers' GGUF loader; use a Q3_K_M to Q8_0 file")

    def raw_shape(self, key):
        return self._shapes[key]

    def raw_tensor(self, key):
        from gguf.quants import dequantize

        tensor = self._tensors[key]
        try:
            values = dequantize(np.asarray(tensor.data), self._types[key])
        except (NotImplementedError, ValueError) as exc:
            raise CheckpointError(f"{self.path}: cannot read {key} ({first_line(exc)})") from None
        return torch.from_numpy(np.array(values, dtype=np.float32)).reshape(self._shapes[key])  # a copy: the map is read-only

    def type_name(self, name: str) -> str:
        """The GGML type of Wan-native tensor `name` (e.g. "Q4_K", "F32")."""
        return self._types[self.refs[name].key].name

    def quantised(self, name: str):
        """Tensor `name` as diffusers' `GGUFParameter` (still quantised), or None for float tensors and
        tensors stored flattened (those are read dequantised)."""
        from diffusers.quantizers.gguf.utils import GGUFParameter

        key = self.refs[name].key
        if self._types[key].name in FLOAT_TYPES or key in self._reshaped or len(self._shapes[key]) != 2:
            return None
        return GGUFParameter(torch.from_numpy(np.array(self._tensors[key].data)), quant_type=self._types[key])

    def quantization(self) -> dict:
        return summarize({name: self.type_name(name) for name in self.refs}, file_type(self.reader))
