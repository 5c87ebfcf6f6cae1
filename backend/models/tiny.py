"""The built-in `tiny` profile: random-weight miniatures of the real SCAIL-2 stack.

Same classes as production (AutoencoderKLWan, UMT5EncoderModel + a fast
tokenizer, CLIPVisionModel, SCAIL2Transformer3DModel) at toy sizes, so the whole
pipeline runs on a CPU in seconds. Deterministic from the seed; nothing is
downloaded (the tokenizer is built in code). The output is noise.
"""

from __future__ import annotations

import torch

from .encoders import Encoders, ImageEncoder, TextEncoder, VideoVAE
from .labels import TINY_LABEL  # noqa: F401  (re-exported: the profile's label)
from .transformer_scail2 import CLIP_DIM, SCAIL2Transformer3DModel


# The reference fixture's tiny backbone (fixtures/scail2_parity/README.md).
TINY_TRANSFORMER_CONFIG = dict(
    model_type="i2v", patch_size=(1, 2, 2), text_len=512, in_dim=20, mask_dim=28,
    dim=48, ffn_dim=96, freq_dim=32, text_dim=32, out_dim=16, num_heads=2, num_layers=2,
    window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=1e-6,
)
# Wan 2.1 VAE structure (z 16, stride 4x8x8, 2 res blocks, Wan 2.1 latent statistics by default) at width 4:
# CPU conv3d is slow, and the output is noise anyway.
TINY_VAE_CONFIG = dict(base_dim=4, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                       temperal_downsample=[False, True, True])
# umT5 with d_model = the tiny transformer's text_dim.
TINY_UMT5_CONFIG = dict(d_model=TINY_TRANSFORMER_CONFIG["text_dim"], d_kv=16, d_ff=64, num_layers=2,
                        num_heads=2, relative_attention_num_buckets=32, relative_attention_max_distance=128,
                        feed_forward_proj="gated-gelu", layer_norm_epsilon=1e-6, dropout_rate=0.0)
# ViT-H/14 width and token grid (224 / 14 -> 256 patches + class token = 257), 2 thin layers.
TINY_CLIP_CONFIG = dict(hidden_size=CLIP_DIM, intermediate_size=64, num_hidden_layers=2, num_attention_heads=16,
                        image_size=224, patch_size=14, hidden_act="gelu", layer_norm_eps=1e-5)


def tiny_tokenizer():
    """A byte-level tokenizer with T5's special ids (<pad> 0, </s> 1, <unk> 2) that appends </s>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(specials + alphabet)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )


def tiny_encoders(seed: int = 0) -> Encoders:
    """Tiny random text/image encoders and VAE (float32, CPU)."""
    from diffusers import AutoencoderKLWan
    from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    tokenizer = tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), pad_token_id=0, eos_token_id=1,
                                           **TINY_UMT5_CONFIG))
        image = CLIPVisionModel(CLIPVisionConfig(**TINY_CLIP_CONFIG))
        vae = AutoencoderKLWan(**TINY_VAE_CONFIG)
    return Encoders(
        text=TextEncoder(text, tokenizer),
        image=ImageEncoder(image),
        vae=VideoVAE(vae),
        label=TINY_LABEL,
    )


def tiny_transformer(seed: int = 0) -> SCAIL2Transformer3DModel:
    """Tiny random SCAIL-2 backbone with the reference fixture's configuration (float32, CPU)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SCAIL2Transformer3DModel(**TINY_TRANSFORMER_CONFIG)
    return model.eval().requires_grad_(False)
