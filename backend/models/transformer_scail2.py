"""The SCAIL-2 diffusion transformer (Wan 2.1 I2V backbone with in-context conditioning).

Over 450 lines on purpose: one model per file, as diffusers keeps its models (blocks, embeddings, forward).

Parameter names are the Wan-native names of the official checkpoint, so an
official state dict loads with `load_state_dict(strict=True)` as is. How the
inputs become one token sequence: `docs/model.md`, section "Token layout"; the
position embedding: section "RoPE".

Precision follows the reference: the residual stream, modulation, time
embedding and output head run in float32; linear layers of the blocks and the
attention run in the compute dtype, the dtype of `patch_embedding`'s weight
(bfloat16 in production, float32 for parity tests).
"""

from __future__ import annotations

import math
import dataclasses
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import AttentionModuleMixin
from diffusers.models._modeling_parallel import ContextParallelInput, ContextParallelOutput
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import FP32LayerNorm, RMSNorm

from .rope import SCAIL2RotaryEmbedding, TokenLayout, apply_rotary

CLIP_DIM = 1280
# diffusers attention backends that take a key mask under context parallelism (None: the default, native)
MASKED_BACKENDS = frozenset({None, "native", "_native_cudnn", "_native_npu"})
HISTORY_CHANNELS = 4  # the "mask" channels appended to every 16-channel latent


def timestep_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal [cos | sin] embedding [B, dim], computed in float64 like the reference.

    diffusers' `get_timestep_embedding` works in float32, which moves the angles
    of t ~ 1000 by ~1e-4: too much for parity.
    """
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=timesteps.device) / half)
    angles = timesteps.to(torch.float64)[:, None] * freqs[None, :]
    return torch.cat([angles.cos(), angles.sin()], dim=1).float()


class SCAIL2AttnProcessor:
    """Attention through diffusers' dispatcher, so `set_attention_backend` picks the kernel.

    Under context parallelism (`_parallel_config`, set by `enable_parallelism`) only the
    self-attention is distributed (Ulysses all-to-all or ring): each rank holds a slice of the
    queries but needs every key. Cross-attention stays local, since every rank holds the whole
    (replicated) context and each query attends it on its own.
    """

    _attention_backend = None
    _parallel_config = None

    def __call__(self, attn, hidden_states, context=None, rotary=None, key_mask=None):
        heads = attn.heads

        def split(t):
            return t.unflatten(2, (heads, -1))

        if context is None:  # self-attention over the whole SCAIL-2 sequence
            q = split(attn.norm_q(attn.q(hidden_states)))
            k = split(attn.norm_k(attn.k(hidden_states)))
            v = split(attn.v(hidden_states))
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
            out = self._attend(q, k, v, key_mask, self._parallel_config)
        else:  # cross-attention: [CLIP image tokens | text tokens]
            image_tokens = context.shape[1] - attn.text_len
            context_img, context_txt = context[:, :image_tokens], context[:, image_tokens:]
            q = split(attn.norm_q(attn.q(hidden_states)))
            k = split(attn.norm_k(attn.k(context_txt)))
            v = split(attn.v(context_txt))
            k_img = split(attn.norm_k_img(attn.k_img(context_img)))
            v_img = split(attn.v_img(context_img))
            out = self._attend(q, k, v) + self._attend(q, k_img, v_img)
        return attn.o(out.flatten(2))

    def _attend(self, q, k, v, key_mask=None, parallel_config=None):
        # q/k leave their float32 norms and RoPE in float32; attention runs in v's compute dtype.
        q, k = q.to(v.dtype), k.to(v.dtype)
        return dispatch_attention_fn(
            q, k, v, attn_mask=key_mask, backend=self._attention_backend, parallel_config=parallel_config
        )


class SCAIL2Attention(nn.Module, AttentionModuleMixin):
    """Self-attention (`cross=False`) or I2V cross-attention (`cross=True`) with q/k RMSNorm."""

    _default_processor_cls = SCAIL2AttnProcessor
    _available_processors = [SCAIL2AttnProcessor]

    def __init__(self, dim: int, num_heads: int, qk_norm: bool, eps: float, cross: bool, text_len: int = 512):
        super().__init__()
        self.dim, self.heads, self.text_len = dim, num_heads, text_len
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = RMSNorm(dim, eps=eps) if qk_norm else nn.Identity()
        self.norm_k = RMSNorm(dim, eps=eps) if qk_norm else nn.Identity()
        if cross:
            self.k_img = nn.Linear(dim, dim)
            self.v_img = nn.Linear(dim, dim)
            self.norm_k_img = RMSNorm(dim, eps=eps) if qk_norm else nn.Identity()
        self.set_processor(self._default_processor_cls())

    def forward(self, hidden_states, context=None, rotary=None, key_mask=None):
        """hidden_states [B, S, dim] -> [B, S, dim]. Self-attention takes `rotary`, (cos, sin) each
        [S, head_dim // 2], and `key_mask` (bool [1, 1, 1, S_total], false on padding) or None;
        cross-attention takes `context` [B, 257 + text_len, dim]."""
        return self.processor(self, hidden_states, context=context, rotary=rotary, key_mask=key_mask)


class SCAIL2TransformerBlock(nn.Module):
    """One Wan 2.1 I2V block: modulated self-attention, cross-attention, modulated FFN."""

    def __init__(self, dim, ffn_dim, num_heads, qk_norm, cross_attn_norm, eps, text_len):
        super().__init__()
        self.norm1 = FP32LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.self_attn = SCAIL2Attention(dim, num_heads, qk_norm, eps, cross=False)
        self.norm3 = FP32LayerNorm(dim, eps=eps, elementwise_affine=True) if cross_attn_norm else nn.Identity()
        self.cross_attn = SCAIL2Attention(dim, num_heads, qk_norm, eps, cross=True, text_len=text_len)
        self.norm2 = FP32LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(self, x, e0, context, rotary, key_mask=None):
        """x: [B, S, dim] float32; e0: [B, 6, dim] float32; context: [B, 257 + text_len, dim]."""
        dtype = context.dtype
        shift, scale, gate, ffn_shift, ffn_scale, ffn_gate = (self.modulation.float() + e0).chunk(6, dim=1)
        y = self.self_attn((self.norm1(x) * (1 + scale) + shift).to(dtype), rotary=rotary, key_mask=key_mask)
        x = x + y.float() * gate
        x = x + self.cross_attn(self.norm3(x).to(dtype), context=context).float()
        y = self.ffn((self.norm2(x) * (1 + ffn_scale) + ffn_shift).to(dtype))
        return x + y.float() * ffn_gate


class SCAIL2Head(nn.Module):
    """Final modulated LayerNorm and projection to `out_dim * prod(patch_size)` per token."""

    def __init__(self, dim, out_dim, patch_size, eps):
        super().__init__()
        self.norm = FP32LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.head = nn.Linear(dim, out_dim * math.prod(patch_size))
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    def forward(self, x, e):
        """x [B, S, dim], e [B, dim] (float32) -> [B, S, out_dim * prod(patch_size)] float32."""
        shift, scale = (self.modulation.float() + e[:, None, :]).chunk(2, dim=1)
        return self.head((self.norm(x) * (1 + scale) + shift).to(self.head.weight.dtype)).float()


class SCAIL2ImageProjection(nn.Module):
    """CLIP vision tokens (1280 wide) to the model width: LN, Linear, GELU, Linear, LN."""

    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Sequential(
            FP32LayerNorm(CLIP_DIM, eps=1e-5),
            nn.Linear(CLIP_DIM, CLIP_DIM),
            nn.GELU(),
            nn.Linear(CLIP_DIM, dim),
            FP32LayerNorm(dim, eps=1e-5),
        )

    def forward(self, clip_fea):
        """[B, 257, 1280] -> [B, 257, dim]."""
        return self.proj(clip_fea)


def _as_batch(tensors) -> torch.Tensor | None:
    """A list of per-sample tensors, or an already batched tensor, as one batch."""
    if tensors is None or isinstance(tensors, torch.Tensor):
        return tensors
    return torch.stack(list(tensors))


def _with_channels(latents: torch.Tensor, fill: float) -> torch.Tensor:
    """Append the 4 constant "mask" channels to latents [B, 16, T, H, W]."""
    b, _, t, h, w = latents.shape
    return torch.cat([latents, latents.new_full((b, HISTORY_CHANNELS, t, h, w), fill)], dim=1)


def _tokens(embedded: torch.Tensor) -> torch.Tensor:
    """[B, C, t, h, w] -> [B, t*h*w, C]."""
    return embedded.flatten(2).transpose(1, 2)


def _expand(tensor: torch.Tensor | None, batch: int) -> torch.Tensor | None:
    """A conditioning tensor of batch 1 (shared by CFG's passes) or `batch`, as `batch`."""
    if tensor is None or tensor.shape[0] == batch:
        return tensor
    if tensor.shape[0] != 1:
        raise ValueError(f"conditioning of batch {tensor.shape[0]} cannot serve a batch of {batch}")
    return tensor.expand(batch, *tensor.shape[1:])


@dataclass
class SCAIL2Conditioning:
    """What stays fixed over a segment's denoising steps, embedded once (`forward` without `x`).

    prefix_tokens [B, P, dim] (extra refs, then the reference) and driving_tokens [B, D, dim],
    float32; video_channels [B, 4, T, H, W] (the history mask, or zeros) and video_mask_embedding
    [B, dim, T, H/2, W/2], in the compute dtype; context [C, 257 + text_len, dim] with one row per
    text context (CFG's conditional and unconditional passes share every other tensor, batch 1);
    rotary (cos, sin) [S + padding, head_dim / 2] and key_mask as the self-attention takes them.
    """

    layout: TokenLayout
    prefix_tokens: torch.Tensor
    driving_tokens: torch.Tensor
    video_channels: torch.Tensor
    video_mask_embedding: torch.Tensor
    context: torch.Tensor
    rotary: tuple[torch.Tensor, torch.Tensor]
    padding: int = 0
    key_mask: torch.Tensor | None = None

    def first_sample(self) -> "SCAIL2Conditioning":
        """The conditioning with sample 0's tensors alone (every text context kept), for passes that
        share everything but the text: embedding all of them and keeping one gives exactly the values
        a whole-batch call computes, in a batch's memory less."""
        return dataclasses.replace(self, prefix_tokens=self.prefix_tokens[:1], driving_tokens=self.driving_tokens[:1],
                       video_channels=self.video_channels[:1], video_mask_embedding=self.video_mask_embedding[:1])


class SCAIL2Transformer3DModel(ModelMixin, ConfigMixin):
    """SCAIL-2 backbone. Constructor arguments are the reference's; 14B values in `SCAIL2_14B_CONFIG`.

    `in_dim` is 16 latent + 4 extra channels, `mask_dim` the 28 mask channels, `out_dim` the
    predicted latent channels; `patch_size` (t, h, w) serves all three patch embeddings.
    `model_type` must be "i2v" and `window_size` (-1, -1), as in every release.
    """

    _supports_gradient_checkpointing = False
    _no_split_modules = ["SCAIL2TransformerBlock"]
    _repeated_blocks = ["SCAIL2TransformerBlock"]
    # Kept in float32 whatever the load dtype: the reference computes them in float32.
    _keep_in_fp32_modules = [
        "time_embedding", "time_projection", "modulation", "head",
        "norm3", "norm_q", "norm_k", "norm_k_img",
    ]
    _skip_layerwise_casting_patterns = [
        "patch_embedding", "time_embedding", "time_projection", "norm", "head", "img_emb",
    ]
    # Context parallelism (diffusers' `enable_parallelism`): the whole token sequence (extra refs,
    # ref, video, driving) is split across ranks as it enters the first block, the RoPE factors
    # with it; e0 and the cross-attention context stay replicated; the head's per-token output is
    # gathered. Padding to a multiple of the degree: `_sequence_padding`.
    _cp_plan = {
        "rope": {
            0: ContextParallelInput(split_dim=0, expected_dims=2, split_output=True),
            1: ContextParallelInput(split_dim=0, expected_dims=2, split_output=True),
        },
        "blocks.0": {"x": ContextParallelInput(split_dim=1, expected_dims=3, split_output=False)},
        "head": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }

    @register_to_config
    def __init__(
        self,
        model_type: str = "i2v",
        patch_size: tuple[int, int, int] = (1, 2, 2),
        text_len: int = 512,
        in_dim: int = 20,
        mask_dim: int = 28,
        dim: int = 5120,
        ffn_dim: int = 13824,
        freq_dim: int = 256,
        text_dim: int = 4096,
        out_dim: int = 16,
        num_heads: int = 40,
        num_layers: int = 40,
        window_size: tuple[int, int] = (-1, -1),
        qk_norm: bool = True,
        cross_attn_norm: bool = True,
        eps: float = 1e-6,
    ):
        super().__init__()
        if model_type != "i2v":
            raise ValueError(f"SCAIL-2 is an i2v model; model_type={model_type!r} is not supported")
        if tuple(window_size) != (-1, -1):
            raise ValueError("SCAIL-2 uses global attention; window_size must be (-1, -1)")
        if dim % num_heads or (dim // num_heads) % 2:
            raise ValueError(f"dim {dim} must split into {num_heads} heads of even size")
        patch_size = tuple(patch_size)
        self.patch_embedding = nn.Conv3d(in_dim, dim, kernel_size=patch_size, stride=patch_size)
        self.patch_embedding_pose = nn.Conv3d(in_dim, dim, kernel_size=patch_size, stride=patch_size)
        self.patch_embedding_mask = nn.Conv3d(mask_dim, dim, kernel_size=patch_size, stride=patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim * 6))
        self.blocks = nn.ModuleList(
            SCAIL2TransformerBlock(dim, ffn_dim, num_heads, qk_norm, cross_attn_norm, eps, text_len)
            for _ in range(num_layers)
        )
        self.head = SCAIL2Head(dim, out_dim, patch_size, eps)
        self.img_emb = SCAIL2ImageProjection(dim)
        self.rope = SCAIL2RotaryEmbedding(dim // num_heads)

    def to_inference_dtype(self, dtype: torch.dtype) -> "SCAIL2Transformer3DModel":
        """Cast parameters to `dtype`, keeping `_keep_in_fp32_modules` in float32 as the reference computes them."""
        for name, param in self.named_parameters():
            keep = any(part in self._keep_in_fp32_modules for part in name.split("."))
            param.data = param.data.to(torch.float32 if keep else dtype)
        return self

    def layout(self, frames: int, height: int, width: int, extra_refs: int = 0, replace: bool = False) -> TokenLayout:
        """Token layout for a latent video of frames x height x width (latent pixels)."""
        _, ph, pw = self.config.patch_size
        return TokenLayout(frames, height // ph, width // pw, extra_refs, replace)

    def forward(
        self,
        x=None,
        pose_latents=None,
        driving_masks=None,
        ref_latents=None,
        ref_masks=None,
        t=None,
        context=None,
        seq_len=None,
        replace_flag: bool = False,
        history_mask=None,
        clip_fea=None,
        additional_ref_latents=None,
        additional_ref_masks=None,
        conditioning: SCAIL2Conditioning | None = None,
    ):
        """Predict the flow velocity of the video latents (a list of B tensors [16, T, H, W]).

        Per sample (lists, as in the reference, or batched tensors with a leading B):
        x [16, T, H, W]; pose_latents [16, T, H/2, W/2]; driving_masks [28, T, H/2, W/2];
        ref_latents [16, 1, H, W]; ref_masks [28, 1+T, H, W]; history_mask [4, T, H, W] or None;
        additional_ref_latents [16, N, H, W] with additional_ref_masks [28, N, H, W] or None;
        context: list of [L, text_dim] (L <= text_len). t: [B] or scalar; clip_fea: [B or 1, 257, 1280].
        `seq_len` is accepted for compatibility and unused.

        What stays fixed over a segment's steps can be embedded once: called without `x`, the
        model returns that `SCAIL2Conditioning`; called with `x`, `t` and `conditioning=`, it
        embeds only the noisy latents. Both go through `forward`, so offloading hooks and
        context-parallel plans see every call.
        """
        if conditioning is None:
            conditioning = self._condition(
                pose_latents, driving_masks, ref_latents, ref_masks, context, clip_fea, bool(replace_flag),
                history_mask, additional_ref_latents, additional_ref_masks,
            )
            if x is None:
                return conditioning
        return self._denoise(x, t, conditioning)

    def _condition(self, pose_latents, driving_masks, ref_latents, ref_masks, context, clip_fea, replace,
                   history_mask, additional_ref_latents, additional_ref_masks) -> SCAIL2Conditioning:
        """Embed everything but the noisy latents: the chunks around the video, its constant channels
        and mask embedding, the cross-attention context, the RoPE factors and the key mask."""
        if clip_fea is None:
            raise ValueError("SCAIL-2 needs CLIP image features (clip_fea)")
        if (additional_ref_latents is None) != (additional_ref_masks is None):
            raise ValueError("additional_ref_latents and additional_ref_masks come together")
        dtype = self.patch_embedding.weight.dtype
        ref = _as_batch(ref_latents).to(dtype)
        height, width = ref.shape[-2:]
        device = ref.device
        pose = _as_batch(pose_latents).to(dtype)
        frames = pose.shape[2]
        if pose.shape[-2:] != (height // 2, width // 2):
            raise ValueError(f"pose_latents must be half the video latent size, got {tuple(pose.shape)}")

        # The reference masks cover [ref | video] frames; their embedding is fixed over the steps.
        masks = self.patch_embedding_mask(_as_batch(ref_masks).to(dtype))
        prefix = [self.patch_embedding(_with_channels(ref, 1.0)) + masks[:, :, :1]]
        extra_refs = 0
        if additional_ref_latents is not None:
            extra = _with_channels(_as_batch(additional_ref_latents).to(dtype), 1.0)
            extra_refs = extra.shape[2] // self.config.patch_size[0]
            extra = self.patch_embedding(extra) + self.patch_embedding_mask(_as_batch(additional_ref_masks).to(dtype))
            prefix.insert(0, extra)
        driving = self.patch_embedding_pose(_with_channels(pose, 1.0))
        driving = driving + self.patch_embedding_mask(_as_batch(driving_masks).to(dtype))

        history = _as_batch(history_mask)
        b = ref.shape[0]
        video_channels = (ref.new_zeros(b, HISTORY_CHANNELS, frames, height, width) if history is None
                          else history.to(dtype))

        layout = self.layout(frames, height, width, extra_refs, replace)
        padding = self._sequence_padding(layout.total_tokens)
        key_mask = None
        if padding:
            key_mask = (torch.arange(layout.total_tokens + padding, device=device) < layout.total_tokens)
            key_mask = key_mask[None, None, None, :]
        return SCAIL2Conditioning(
            layout=layout,
            prefix_tokens=torch.cat([_tokens(chunk) for chunk in prefix], dim=1).float(),
            driving_tokens=_tokens(driving).float(),
            video_channels=video_channels,
            video_mask_embedding=masks[:, :, 1:],
            context=self._context(context, clip_fea, dtype),
            rotary=self.rope(layout, padding, device),
            padding=padding,
            key_mask=key_mask,
        )

    def _denoise(self, x, t, cond: SCAIL2Conditioning) -> list[torch.Tensor]:
        """The velocity of x [B, 16, T, H, W] (or a list) at timestep t, given the segment's conditioning."""
        dtype = self.patch_embedding.weight.dtype
        x = _as_batch(x).to(dtype)
        batch = x.shape[0]
        layout = cond.layout
        if tuple(x.shape[2:]) != tuple(cond.video_channels.shape[2:]):
            raise ValueError(f"x {tuple(x.shape)} does not match the conditioning's video latent "
                             f"{tuple(cond.video_channels.shape[2:])}")
        video = torch.cat([x, _expand(cond.video_channels, batch)], dim=1)
        video = self.patch_embedding(video) + _expand(cond.video_mask_embedding, batch)
        hidden = torch.cat(
            [_expand(cond.prefix_tokens, batch), _tokens(video).float(), _expand(cond.driving_tokens, batch)], dim=1
        )
        if cond.padding:
            hidden = F.pad(hidden, (0, 0, 0, cond.padding))

        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(batch)
        time_dtype = self.time_embedding[0].weight.dtype
        e = self.time_embedding(timestep_embedding(t, self.config.freq_dim).to(time_dtype)).float()
        e0 = self.time_projection(e.to(time_dtype)).float().unflatten(1, (6, self.config.dim))

        context = _expand(cond.context, batch)
        for block in self.blocks:
            hidden = block(hidden, e0, context, cond.rotary, cond.key_mask)

        # The head is per token: each rank projects its own slice and the plan gathers them.
        start = layout.prefix_tokens
        out = self.head(hidden, e)[:, start : start + layout.video_tokens]
        return list(self._unpatchify(out, layout))

    def _sequence_padding(self, tokens: int) -> int:
        """Tokens to append so that Ulysses can split the sequence evenly (0 without it).

        The padding is exact: the padded tokens are zeros with the identity rotation, and every
        self-attention gets a key mask that is false on them, so their logits are -inf and their
        softmax weights exactly 0: they add nothing to any real token's numerator or denominator.
        Everything else in a block (norms, modulation, linear layers, FFN, cross-attention) works
        token by token, so no real token ever reads a padded one; the padded outputs are sliced
        away with the video chunk. Ring attention (`ring_anything`) and Ulysses on a kernel that
        takes no mask (`ulysses_anything`) split any length themselves, unpadded.
        """
        parallel = getattr(self, "_parallel_config", None)
        cp = getattr(parallel, "context_parallel_config", None)
        if cp is None or cp.ring_degree > 1:
            return 0
        backend = self.blocks[0].self_attn.processor._attention_backend
        if getattr(backend, "value", backend) not in MASKED_BACKENDS:
            return 0
        return -tokens % cp.ulysses_degree

    def _context(self, context, clip_fea, dtype) -> torch.Tensor:
        """[CLIP tokens | text tokens zero-padded to text_len] projected to the model width:
        [len(context), 257 + text_len, dim]; one CLIP batch serves every text context."""
        text_len = self.config.text_len
        if isinstance(context, torch.Tensor) and context.dim() == 2:
            context = [context]
        padded = torch.stack([F.pad(c, (0, 0, 0, text_len - c.shape[0])) for c in context])
        text = self.text_embedding(padded.to(dtype))
        image = self.img_emb(clip_fea.to(dtype))
        if image.shape[0] != text.shape[0]:
            image = image.expand(text.shape[0], -1, -1)
        return torch.cat([image, text], dim=1)

    def _unpatchify(self, tokens: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        """Video tokens [B, T*h*w, C*pt*ph*pw] -> latents [B, C, T*pt, h*ph, w*pw]."""
        pt, ph, pw = self.config.patch_size
        c = self.config.out_dim
        grid = tokens.reshape(tokens.shape[0], layout.frames, layout.height, layout.width, pt, ph, pw, c)
        grid = grid.permute(0, 7, 1, 4, 2, 5, 3, 6)
        return grid.reshape(
            tokens.shape[0], c, layout.frames * pt, layout.height * ph, layout.width * pw
        )


SCAIL2_14B_CONFIG = dict(
    model_type="i2v", patch_size=(1, 2, 2), text_len=512, in_dim=20, mask_dim=28,
    dim=5120, ffn_dim=13824, freq_dim=256, text_dim=4096, out_dim=16,
    num_heads=40, num_layers=40, qk_norm=True, cross_attn_norm=True, eps=1e-6,
)
