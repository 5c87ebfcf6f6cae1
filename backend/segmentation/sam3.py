"""SAM 3 through transformers: text-prompted detection and tracking of every instance in a clip.

One `Sam3VideoModel` serves both clips (detector + memory tracker, streamed frame by frame
so only the current frame's pixels are held) and stills (its `detector_model`, a
`Sam3Model`). Preprocessing is done here - resize to the model's square input, rescale
to [0, 1], normalise with the folder's preprocessor_config.json mean/std - because the
transformers SAM 3 processors need torchvision, which the backend environment does not
ship; text goes through the folder's CLIP tokenizer.

The `tiny` profile is a random tiny config of the same classes (about 5 M parameters):
its masks are arbitrary, it exercises shapes, tracking bookkeeping, ordering and painting.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import numpy as np
import torch

from . import SegmentationError
from .preprocess import SamModel, load_pretrained
from .tracks import Tracks
from .weights import SAM3_REPO, resolve_weights

TEXT_TOKENS = 32  # SAM 3's text context length
DUPLICATE_IOU = 0.7  # stills: a weaker detection overlapping a stronger one this much is the same instance
TINY_SIZE, TINY_PATCH, TINY_HIDDEN = 56, 14, 128
# The tracker's memory channels: the memory attention's key/value width is fixed at 64 in
# transformers, and pointer splitting needs them below the hidden size.
TINY_MEMORY = 64
TINY_VOCAB = ["<|startoftext|>", "<|endoftext|>", "<unk>", "person", "people", "man", "woman", "dog", "cat"]


def tiny_video_config():
    """A Sam3VideoConfig small enough for CPU tests, with thresholds at 0 so random weights track something."""
    from transformers import CLIPTextConfig, Sam3Config, Sam3VideoConfig
    from transformers.models.sam3.configuration_sam3 import (
        Sam3DETRDecoderConfig,
        Sam3DETREncoderConfig,
        Sam3GeometryEncoderConfig,
        Sam3MaskDecoderConfig,
        Sam3VisionConfig,
        Sam3ViTConfig,
    )
    from transformers.models.sam3_tracker_video.configuration_sam3_tracker_video import (
        Sam3TrackerVideoConfig,
    )

    grid, hidden = TINY_SIZE // TINY_PATCH, TINY_HIDDEN
    vit = Sam3ViTConfig(hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                        image_size=TINY_SIZE, patch_size=TINY_PATCH, window_size=2, global_attn_indexes=[1],
                        pretrain_image_size=TINY_SIZE)
    small = dict(hidden_size=hidden, num_attention_heads=2, intermediate_size=64)
    detector = Sam3Config(
        vision_config=Sam3VisionConfig(backbone_config=vit, fpn_hidden_size=hidden,
                                       backbone_feature_sizes=[[4 * grid] * 2, [2 * grid] * 2, [grid] * 2]),
        text_config=CLIPTextConfig(vocab_size=len(TINY_VOCAB), hidden_size=64, intermediate_size=64,
                                   projection_dim=hidden, num_hidden_layers=1, num_attention_heads=2,
                                   max_position_embeddings=TEXT_TOKENS, bos_token_id=0, eos_token_id=1,
                                   pad_token_id=1),
        geometry_encoder_config=Sam3GeometryEncoderConfig(num_layers=1, **small),
        detr_encoder_config=Sam3DETREncoderConfig(num_layers=1, **small),
        detr_decoder_config=Sam3DETRDecoderConfig(num_layers=1, num_queries=8, **small),
        mask_decoder_config=Sam3MaskDecoderConfig(hidden_size=hidden, num_attention_heads=2),
    )
    tracker = Sam3TrackerVideoConfig(
        vision_config=detector.vision_config.to_dict(),
        prompt_encoder_config=dict(hidden_size=hidden),
        mask_decoder_config=dict(hidden_size=hidden, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
        memory_attention_hidden_size=hidden, memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64, memory_encoder_hidden_size=hidden,
        memory_encoder_output_channels=TINY_MEMORY, mask_downsampler_embed_dim=hidden, memory_fuser_num_layers=1,
        memory_fuser_embed_dim=hidden, memory_fuser_intermediate_dim=64, memory_attention_rope_feat_sizes=[grid] * 2,
    )
    config = Sam3VideoConfig(detector_config=detector, tracker_config=tracker, score_threshold_detection=0.0,
                             new_det_thresh=0.0, hotstart_delay=0, hotstart_unmatch_thresh=0, hotstart_dup_thresh=0,
                             max_num_objects=8)
    config.image_size = TINY_SIZE  # also sets the tracker's feature map sizes
    return config


def tiny_tokenizer():
    """A word-level stand-in for SAM 3's CLIP tokenizer over TINY_VOCAB."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({word: i for i, word in enumerate(TINY_VOCAB)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", unk_token="<unk>")


class Sam3Segmenter(SamModel):
    """Text prompt -> Tracks, for clips (`track`) and stills (`segment_still`)."""

    def __init__(self, model, tokenizer, name: str, device: str = "cpu", image_mean=(0.5,) * 3,
                 image_std=(0.5,) * 3, score_threshold: float = 0.5):
        super().__init__(model, name, device, image_mean, image_std)
        self.tokenizer = tokenizer
        self.score_threshold = score_threshold  # stills: detector score (class x presence) to keep a detection

    @classmethod
    def tiny(cls, device: str = "cpu", seed: int = 0) -> "Sam3Segmenter":
        """Random tiny Sam3VideoModel; keeps every detection (scores are meaningless)."""
        from transformers import Sam3VideoModel

        torch.manual_seed(seed)
        model = Sam3VideoModel(tiny_video_config()).eval().to(device)
        return cls(model, tiny_tokenizer(), "tiny", device, score_threshold=0.0)

    @classmethod
    def load(cls, folder: os.PathLike | str | None, device: str = "cpu") -> "Sam3Segmenter":
        """From a local copy of facebook/sam3 (or the hub cache when `folder` is None); nothing is downloaded."""
        from transformers import AutoTokenizer, Sam3VideoModel

        folder = resolve_weights(folder, SAM3_REPO)
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise SegmentationError(f"cannot load the SAM 3 tokenizer from {folder} ({str(exc).splitlines()[0]}): "
                                    f"download '{SAM3_REPO}' from Hugging Face into it") from None
        model, mean, std = load_pretrained(Sam3VideoModel, folder, SAM3_REPO, device, (0.5,) * 3, (0.5,) * 3)
        return cls(model, tokenizer, str(folder), device, mean, std)

    # -- inference ----------------------------------------------------------------------------

    def _text(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        encoded = self.tokenizer(prompt, return_tensors="pt", padding="max_length", max_length=TEXT_TOKENS,
                                 truncation=True)
        return encoded["input_ids"].to(self.device), encoded["attention_mask"].to(self.device)

    # -- inference ----------------------------------------------------------------------------

    def track(self, frames: Iterable[np.ndarray], frame_count: int, height: int, width: int, prompt: str,
              on_frame: Callable[[int], None] | None = None) -> Tracks:
        """Every instance of `prompt` through `frame_count` uint8 [H, W, 3] frames -> Tracks at height x width.

        `on_frame(t)` runs after frame t (progress; it may raise to cancel).
        """
        from transformers import Sam3VideoInferenceSession

        session = Sam3VideoInferenceSession(video_height=height, video_width=width, inference_device=self.device,
                                            video_storage_device=self.device, inference_state_device=self.device,
                                            dtype=self.dtype)
        prompt_id = session.add_prompt(prompt)
        ids, attention = self._text(prompt)
        session.prompt_input_ids[prompt_id], session.prompt_attention_masks[prompt_id] = ids, attention
        tracks, removed, spent = Tracks(frame_count, height, width), set(), torch.empty(0)
        with torch.inference_mode():
            for t, frame in enumerate(frames):
                output = self.model(inference_session=session, frame_idx=t, frame=self.pixels(frame))
                session.processed_frames[t] = spent  # only the current frame's pixels are ever read again
                removed |= set(output.removed_obj_ids or ())
                hidden = set(output.suppressed_obj_ids or ())
                for obj_id, low_res in output.obj_id_to_mask.items():
                    if obj_id not in hidden:
                        tracks.add(obj_id, t, low_res[0])
                if on_frame is not None:
                    on_frame(t)
        tracks.drop(removed | set(session.hotstart_removed_obj_ids))
        tracks.drop_empty()
        return tracks

    def segment_still(self, image: np.ndarray, prompt: str) -> Tracks:
        """Instances of `prompt` in one uint8 [H, W, 3] image -> Tracks with one frame (best score first)."""

        height, width = image.shape[:2]
        ids, attention = self._text(prompt)
        with torch.inference_mode():
            result = self.model.detector_model(pixel_values=self.pixels(image)[None], input_ids=ids,
                                               attention_mask=attention)
        scores = result.pred_logits[0].float().sigmoid()
        if result.presence_logits is not None:
            scores = scores * result.presence_logits[0].float().sigmoid()
        keep = torch.nonzero(scores >= self.score_threshold).flatten()
        keep = keep[torch.argsort(scores[keep], descending=True)]
        tracks = Tracks(1, height, width)
        kept: list[torch.Tensor] = []
        for index in keep.tolist():
            logits = result.pred_masks[0, index].float()
            on = logits > 0
            if not on.any() or any(_iou(on, other) >= DUPLICATE_IOU for other in kept):
                continue
            kept.append(on)
            tracks.add(index, 0, logits)
        tracks.drop_empty()
        return tracks


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = float((a | b).sum())
    return float((a & b).sum()) / union if union else 0.0
