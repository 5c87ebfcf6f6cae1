"""Loading the SCAIL-2 backbone from the checkpoint layouts users download.

`open_checkpoint` reads any layout (`layouts`: the official SAT release, a single safetensors
file, our converted folder) through its source (`sources`), checks that it is SCAIL-2, works out
the model config from the tensor shapes and validates every name and shape against it.
`load_transformer` then gives the model itself. Whatever the layout, tensors come out under the
Wan-native names of `SCAIL2Transformer3DModel`.

Safety: a pickle is only ever read by torch's weights-only unpickler (see `sat`). Nothing in a
checkpoint can run code.

Memory: sources are memory-mapped and read one tensor at a time; `load_transformer` builds the
model on the meta device and assigns the loaded tensors, so the weights exist once.
"""

from __future__ import annotations

import inspect
import math
import re
from pathlib import Path

import torch

from ..models.transformer_scail2 import SCAIL2_14B_CONFIG, SCAIL2Transformer3DModel
from .errors import CheckpointError, few
from .gguf_source import GGUFSource
from .layouts import GGUF, detect_layout
from .sources import open_source

MASK_CHANNELS = 28  # `patch_embedding_mask` input channels: what makes a Wan file SCAIL-2
STOCK_I2V_CHANNELS = 36  # Wan 2.1 I2V's patch_embedding: 16 latent + 4 mask + 16 image-latent
T2V_CHANNELS = 16
SCAIL2_CHANNELS = 20
WAN_HEAD_DIM = 128  # every released Wan 2.1 model (1.3B: 1536/12, 14B: 5120/40)


def check_is_scail2(where, shapes: dict[str, tuple[int, ...]]) -> None:
    """Raise CheckpointError when `shapes` (Wan-native name -> shape) is another model's.

    SCAIL-2 is recognisable by `patch_embedding_mask.weight` of shape (dim, 28, 1, 2, 2).
    """
    mask = shapes.get("patch_embedding_mask.weight")
    if mask is not None:
        if len(mask) != 5 or mask[1] != MASK_CHANNELS:
            raise CheckpointError(
                f"{where}: patch_embedding_mask.weight has shape {tuple(mask)}; SCAIL-2's is (dim, 28, 1, 2, 2)"
            )
        return
    embed = shapes.get("patch_embedding.weight")
    if embed is None:
        if any("lora" in name.lower() for name in shapes):
            raise CheckpointError(f"{where}: this is a LoRA, not the SCAIL-2 base model")
        if not any(name.startswith("blocks.") for name in shapes):
            raise CheckpointError(
                f"{where}: no SCAIL-2 transformer weights in this file (a VAE, text or image encoder?)"
            )
        return  # a backbone with pieces missing: reported as a partial checkpoint
    channels = embed[1] if len(embed) > 1 else None
    if channels == SCAIL2_CHANNELS:
        return  # SCAIL-2-like but without the mask conv: reported as a partial checkpoint
    if channels == STOCK_I2V_CHANNELS:
        raise CheckpointError(f"{where}: this is a stock Wan 2.1 I2V checkpoint, not SCAIL-2 "
                              f"(patch_embedding takes 36 channels and there is no patch_embedding_mask)")
    if channels == T2V_CHANNELS:
        raise CheckpointError(f"{where}: this is a Wan text-to-video checkpoint, not SCAIL-2 "
                              f"(patch_embedding takes 16 channels and there is no patch_embedding_mask)")
    raise CheckpointError(f"{where}: not a SCAIL-2 checkpoint (no patch_embedding_mask; "
                          f"patch_embedding takes {channels} channels, SCAIL-2's takes 20)")


_CONFIG_KEYS = [name for name in inspect.signature(SCAIL2Transformer3DModel.__init__).parameters if name != "self"]


def infer_config(shapes: dict[str, tuple[int, ...]], stored: dict | None = None, where="checkpoint") -> dict:
    """The `SCAIL2Transformer3DModel` config of weights with these Wan-native shapes.

    Sizes read from the shapes, which a `stored` config (config.json, the safetensors metadata
    `config`, or the caller's) must agree with: dim, in_dim and patch_size (patch_embedding),
    mask_dim, ffn_dim, freq_dim, text_dim, out_dim. Structure, where `stored` wins so that a
    partial file is reported as missing tensors rather than loaded as a smaller model:
    num_layers (highest block index + 1), qk_norm and cross_attn_norm (whether their norm weights
    exist). Without `stored`, a dim-5120 file is taken to be the released 14B model and gets
    `SCAIL2_14B_CONFIG` as its stored config. Not in the weights: text_len (512) and eps (1e-6),
    the constructor defaults, and the head count: `stored`'s, else dim // 128 as in every released
    Wan 2.1 model; a model whose dim is not a multiple of 128 (the tiny test model) needs `stored`.
    """
    sizes: dict = {}
    structure: dict = {}

    def first(pattern: str):
        regex = re.compile(pattern)
        return next((shapes[name] for name in shapes if regex.fullmatch(name)), None)

    embed = shapes.get("patch_embedding.weight")
    if embed is not None and len(embed) == 5:
        sizes.update(dim=embed[0], in_dim=embed[1], patch_size=tuple(embed[2:]))
    if (mask := shapes.get("patch_embedding_mask.weight")) is not None and len(mask) > 1:
        sizes["mask_dim"] = mask[1]
    if (ffn := first(r"blocks\.\d+\.ffn\.0\.weight")) is not None:
        sizes["ffn_dim"] = ffn[0]
    if (time := shapes.get("time_embedding.0.weight")) is not None and len(time) == 2:
        sizes["freq_dim"] = time[1]
    if (text := shapes.get("text_embedding.0.weight")) is not None and len(text) == 2:
        sizes["text_dim"] = text[1]
    if (head := shapes.get("head.head.weight")) is not None and "patch_size" in sizes:
        sizes["out_dim"] = head[0] // math.prod(sizes["patch_size"])
    blocks = [int(m.group(1)) for name in shapes if (m := re.match(r"blocks\.(\d+)\.", name))]
    if blocks:
        structure["num_layers"] = max(blocks) + 1
    structure["qk_norm"] = first(r"blocks\.\d+\.self_attn\.norm_q\.weight") is not None
    structure["cross_attn_norm"] = first(r"blocks\.\d+\.norm3\.weight") is not None

    if stored is None and sizes.get("dim") == SCAIL2_14B_CONFIG["dim"]:
        stored = SCAIL2_14B_CONFIG
    config = {key: value for key, value in (stored or {}).items() if key in _CONFIG_KEYS}
    for key, value in sizes.items():
        if key in config and _normalised(config[key]) != _normalised(value):
            raise CheckpointError(f"{where}: the config says {key}={config[key]}, the weights have {key}={value}")
        config[key] = value
    for key, value in structure.items():
        config.setdefault(key, value)
    if "num_heads" not in config and "dim" in config:
        if config["dim"] % WAN_HEAD_DIM:
            raise CheckpointError(
                f"{where}: cannot tell the attention head count of a dim={config['dim']} model from its weights "
                f"(Wan uses {WAN_HEAD_DIM}-wide heads); give a config with num_heads"
            )
        config["num_heads"] = config["dim"] // WAN_HEAD_DIM
    # Anything still unknown (a file missing its patch_embedding) takes the 14B default; the
    # validation that follows then names the missing tensors.
    return config


def _normalised(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _expected_shapes(model: SCAIL2Transformer3DModel) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def meta_model(config: dict) -> SCAIL2Transformer3DModel:
    """A `SCAIL2Transformer3DModel` with no storage (meta device): shapes and names only."""
    with torch.device("meta"):
        return SCAIL2Transformer3DModel(**config)


def keeps_float32(name: str) -> bool:
    """Whether parameter `name` belongs to `_keep_in_fp32_modules` (the rule of `to_inference_dtype`)."""
    keep = SCAIL2Transformer3DModel._keep_in_fp32_modules
    return any(part in keep for part in name.split("."))


def storage_dtype(name: str, dtype: torch.dtype | None) -> torch.dtype | None:
    """`dtype` for parameter `name`, float32 for `_keep_in_fp32_modules`; None keeps the file's."""
    if dtype is None:
        return None
    return torch.float32 if keeps_float32(name) else dtype


class Checkpoint:
    """A validated SCAIL-2 checkpoint: its layout, config and tensors under Wan-native names.

    `config` is the resolved constructor config, `model` a matching `SCAIL2Transformer3DModel` on
    the meta device, `shapes` its parameter shapes; `names` follow its `state_dict()` order and
    `read` loads one tensor at a time.
    """

    def __init__(self, path: str | Path, config: dict | None = None):
        self.path = Path(path)
        self._source = GGUFSource(self.path) if detect_layout(self.path) == GGUF else open_source(self.path)
        self.layout = self._source.layout
        shapes = {name: self._source.shape(name) for name in self._source.names}
        check_is_scail2(self._source.path, shapes)
        self.config = infer_config(shapes, config or self._source.stored_config, where=self._source.path)
        self.model = meta_model(self.config)
        self.shapes = _expected_shapes(self.model)
        self._source.validate(self.shapes)
        self.names = list(self.shapes)

    def read(self, name: str, dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> torch.Tensor:
        """Tensor `name` in `dtype` (None: the file's, float32 for fp8 and GGUF) on `device`."""
        return self._source.read(name, dtype, device)

    def quantization(self) -> dict:
        """How the file stores its weights (`Source.quantization`; GGUF: `gguf_files.summarize`)."""
        return self._source.quantization()

    def read_quantised(self, name: str):
        """Tensor `name` still quantised (GGUF linear weights, diffusers' `GGUFParameter`), else None."""
        return self._source.quantised(name) if isinstance(self._source, GGUFSource) else None


def open_checkpoint(path: str | Path, config: dict | None = None) -> Checkpoint:
    """Open and validate the checkpoint at `path` (any layout). `config` overrides a stored one."""
    return Checkpoint(path, config)


def load_state_dict(
    path: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu", config: dict | None = None
) -> dict[str, torch.Tensor]:
    """All backbone tensors under Wan-native names, validated complete.

    dtype None keeps each tensor's stored dtype (fp8 is dequantised to float32); otherwise
    tensors are cast to `dtype`, except `_keep_in_fp32_modules`' which become float32.
    """
    checkpoint = open_checkpoint(path, config)
    return {name: checkpoint.read(name, storage_dtype(name, dtype), device) for name in checkpoint.names}


def load_transformer(
    path: str | Path,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    config: dict | None = None,
) -> SCAIL2Transformer3DModel:
    """A `SCAIL2Transformer3DModel` in eval mode with the weights at `path` (any layout).

    The config is `config`, else the stored one (config.json / safetensors metadata), else
    inferred from the shapes (see `infer_config`). Parameters are `dtype`, with
    `_keep_in_fp32_modules` in float32. The model is built on the meta device and the loaded
    tensors are assigned to it, so the weights are never held twice; tensors already in the
    wanted dtype on the CPU stay memory-mapped views of the file. A GGUF file's linear weights stay
    quantised (`install_gguf_linears`); everything else is dequantised to `dtype`. The model's
    `quantization` attribute records how the file stored its weights (`Checkpoint.quantization`).
    """
    checkpoint = open_checkpoint(path, config)
    model = checkpoint.model
    quantised = gguf_linear_weights(checkpoint, model) if checkpoint.layout == GGUF else {}
    state = {name: checkpoint.read(name, storage_dtype(name, dtype), device)
             for name in checkpoint.names if name not in quantised}
    if quantised:
        install_gguf_linears(model, quantised, dtype, device)
    result = model.load_state_dict(state, strict=not quantised, assign=True)
    missing = [name for name in getattr(result, "missing_keys", []) if name not in quantised]
    leftover = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if missing or leftover:  # a buffer outside the state dict would stay without storage
        raise CheckpointError(f"{path}: no data for {few(missing or leftover)}")
    model.quantization = checkpoint.quantization()
    return model.eval()


def gguf_linear_weights(checkpoint: Checkpoint, model: SCAIL2Transformer3DModel) -> dict:
    """The GGUF weights to keep quantised: 2-D weights of `nn.Linear` layers outside
    `_keep_in_fp32_modules` that the file stores block-quantised (diffusers' `GGUFParameter`)."""
    linears = {name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    quantised = {}
    for name in checkpoint.names:
        module = name.rsplit(".", 1)[0]
        if name.endswith(".weight") and module in linears and not keeps_float32(name):
            tensor = checkpoint.read_quantised(name)
            if tensor is not None:
                quantised[name] = tensor
    return quantised


def install_gguf_linears(model, quantised: dict, dtype: torch.dtype, device) -> None:
    """Swap the layers of `quantised` weights for diffusers' `GGUFLinear` and give them the weights.

    The same steps as diffusers' `from_single_file(..., quantization_config=GGUFQuantizationConfig)`
    (its `GGUFQuantizer` before and during weight loading), for a model class diffusers' single-file
    loader does not know. `GGUFLinear` dequantises its weight in each forward pass, in `dtype`.
    """
    from diffusers import GGUFQuantizationConfig
    from diffusers.quantizers.gguf import GGUFQuantizer

    quantizer = GGUFQuantizer(GGUFQuantizationConfig(compute_dtype=dtype))
    quantizer.preprocess_model(model=model, device_map=None,
                               keep_in_fp32_modules=list(model._keep_in_fp32_modules), state_dict=quantised)
    for name, tensor in quantised.items():
        quantizer.create_quantized_param(model, tensor, name, torch.device(device))
    model.hf_quantizer = quantizer
