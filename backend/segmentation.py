"""Automatic colour masks for real footage with SAM 3 (spec section 1).

A text prompt such as "person" finds and tracks every instance in a clip (or a
still); at most six are kept, ordered left to right by the centre x of their
first-frame box, and painted with the SCAIL-2 palette on the mode's background.

Engines:
  * real weights (`--weights DIR`, a local copy of `facebook/sam3`): clips go
    through `Sam3VideoModel` (detector + memory tracker), stills through `Sam3Model`.
  * the `tiny` profile: a random tiny config of the same `Sam3Model` class, run
    per frame, with a simple greedy mask-IoU tracker joining detections into
    tracks. A tiny random `Sam3VideoModel` builds, but its tracker fails on its
    first memory-conditioned frame in transformers 5.23 (object pointers of
    different rank are concatenated), so the tiny profile does not use it. Its
    masks are arbitrary: it only exercises shapes, ordering and painting.

Preprocessing is done here (resize to the model's square input, rescale to
[0, 1], normalise with the folder's preprocessor_config.json mean/std, 0.5 by
default) because the transformers SAM 3 processors need torchvision, which the
backend environment does not ship; the tokenizer is the folder's CLIP tokenizer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from protocol import MAX_IDENTITIES, PALETTE

from .options import DEFAULT_PROMPT, SAM3_REPO
TRACK_IOU = 0.3  # per-frame engine: a detection continues a track at this mask IoU or more
DUPLICATE_IOU = 0.7  # per-frame engine: a weaker detection overlapping a stronger one this much is dropped


class SegmentationError(ValueError):
    """Segmentation that cannot run, as one line."""


# ---------------------------------------------------------------------------------------------
# Pure selection and ordering (no model)


def mask_box(mask: np.ndarray, threshold: float = 0.5) -> tuple[float, float, float, float] | None:
    """Pixel box (x0, y0, x1, y1) of coverage >= threshold in [H, W], x1/y1 exclusive; None when empty."""
    on = np.asarray(mask) >= threshold
    cols, rows = np.flatnonzero(on.any(axis=0)), np.flatnonzero(on.any(axis=1))
    if cols.size == 0:
        return None
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def first_boxes(coverage: np.ndarray) -> np.ndarray:
    """Each instance's box [N, 4] in the first frame where it appears (NaN if it never does).

    coverage: [N, T, H, W] in [0, 1].
    """
    coverage = np.asarray(coverage)
    boxes = np.full((coverage.shape[0], 4), np.nan, np.float32)
    for n in range(coverage.shape[0]):
        for frame in coverage[n]:
            box = mask_box(frame)
            if box is not None:
                boxes[n] = box
                break
    return boxes


def left_to_right(boxes: np.ndarray) -> list[int]:
    """Indices of `boxes` [N, 4] (x0, y0, x1, y1) by box centre x, left first; boxes with NaN go last."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    centres = (boxes[:, 0] + boxes[:, 2]) / 2
    keys = [(np.isnan(c), 0.0 if np.isnan(c) else c, i) for i, c in enumerate(centres)]
    return [i for _, _, i in sorted(keys)]


def select_instances(coverage: np.ndarray, max_identities: int = MAX_IDENTITIES,
                     pick: list[int] | None = None) -> tuple[list[int], list[str]]:
    """Which instances of coverage [N, T, H, W] to keep, and warnings.

    `pick` (instance indices chosen by the caller) wins; otherwise the `max_identities`
    largest by mean area are kept. More than MAX_IDENTITIES either way is an error.
    """
    count = int(np.asarray(coverage).shape[0])
    warnings: list[str] = []
    if pick is not None:
        pick = [int(i) for i in pick]
        if len(pick) > MAX_IDENTITIES:
            raise SegmentationError(f"SCAIL-2 binds at most {MAX_IDENTITIES} identities, {len(pick)} were picked")
        if len(set(pick)) != len(pick):
            raise SegmentationError(f"picked instances repeat: {pick}")
        bad = [i for i in pick if not 0 <= i < count]
        if bad:
            raise SegmentationError(f"picked instances {bad} do not exist: {count} instance(s) were found")
        return pick, warnings
    if not 1 <= max_identities <= MAX_IDENTITIES:
        raise SegmentationError(f"SCAIL-2 binds 1 to {MAX_IDENTITIES} identities, {max_identities} were asked for")
    areas = np.asarray(coverage, np.float64).reshape(count, -1).mean(axis=1) if count else np.zeros(0)
    keep = sorted(range(count), key=lambda i: (-areas[i], i))[:max_identities]
    if count > max_identities:
        warnings.append(f"{count} instances found; kept the {max_identities} largest by mean area")
    return sorted(keep), warnings


def arrange_identities(coverage: np.ndarray, boxes: np.ndarray | None = None,
                       max_identities: int = MAX_IDENTITIES, pick: list[int] | None = None):
    """Select and order instances as SCAIL-2 identities.

    coverage [N, T, H, W]; boxes [N, 4] first-frame boxes (computed from coverage when None).
    Returns (coverage [M, T, H, W] in identity order, boxes [M, 4], instance index of each
    identity, warnings). Identity 0 (blue) is the leftmost kept instance.
    """
    coverage = np.asarray(coverage, np.float32)
    boxes = first_boxes(coverage) if boxes is None else np.asarray(boxes, np.float32).reshape(-1, 4)
    keep, warnings = select_instances(coverage, max_identities, pick)
    order = [keep[i] for i in left_to_right(boxes[keep])] if keep else []
    return coverage[order], boxes[order], order, warnings


def paint(coverage: np.ndarray, mode: str, for_reference: bool = False) -> np.ndarray:
    """Identity-ordered coverage [M, ..., H, W] -> uint8 RGB [..., H, W, 3] with the mode's background."""
    import torch

    from .masks import paint_identities

    return paint_identities(torch.from_numpy(np.ascontiguousarray(coverage, np.float32)), mode,
                            for_reference=for_reference).numpy()


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix [A, B] of boolean masks a [A, H, W] and b [B, H, W]."""
    a = a.reshape(a.shape[0], -1).astype(np.float32)
    b = b.reshape(b.shape[0], -1).astype(np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def link_detections(per_frame: list[np.ndarray], iou_threshold: float = TRACK_IOU) -> np.ndarray:
    """Join per-frame detections (each [D_t, H, W] coverage, best first) into tracks [N, T, H, W].

    Greedy: each track's latest mask takes the unclaimed detection it overlaps most, at
    `iou_threshold` or more; a detection nobody takes starts a new track.
    """
    frames = len(per_frame)
    height, width = per_frame[0].shape[-2:]
    tracks: list[np.ndarray] = []
    last: list[np.ndarray] = []
    for t, detections in enumerate(per_frame):
        on = detections >= 0.5
        taken = set()
        if tracks and len(detections):
            iou = mask_iou(np.stack(last), on)
            for k in np.argsort(-iou.max(axis=1), kind="stable"):
                for d in np.argsort(-iou[k], kind="stable"):
                    if iou[k, d] < iou_threshold:
                        break
                    if d not in taken:
                        taken.add(d)
                        tracks[k][t] = detections[d]
                        last[k] = on[d]
                        break
        for d in range(len(detections)):
            if d not in taken:
                track = np.zeros((frames, height, width), np.float32)
                track[t] = detections[d]
                tracks.append(track)
                last.append(on[d])
    return np.stack(tracks) if tracks else np.zeros((0, frames, height, width), np.float32)


# ---------------------------------------------------------------------------------------------
# Models


def _tiny_detector_config(hidden: int = 64):
    """The smallest Sam3Config found to build and run on CPU (about 1 M parameters)."""
    from transformers import CLIPTextConfig, Sam3Config
    from transformers.models.sam3.configuration_sam3 import (
        Sam3DETRDecoderConfig,
        Sam3DETREncoderConfig,
        Sam3GeometryEncoderConfig,
        Sam3MaskDecoderConfig,
        Sam3VisionConfig,
        Sam3ViTConfig,
    )

    size, patch = 56, 14
    grid = size // patch
    vit = Sam3ViTConfig(hidden_size=hidden, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                        image_size=size, patch_size=patch, window_size=2, global_attn_indexes=[1],
                        pretrain_image_size=size)
    small = dict(hidden_size=hidden, num_attention_heads=2, intermediate_size=64)
    return Sam3Config(
        vision_config=Sam3VisionConfig(backbone_config=vit, fpn_hidden_size=hidden,
                                       backbone_feature_sizes=[[4 * grid] * 2, [2 * grid] * 2, [grid] * 2]),
        text_config=CLIPTextConfig(vocab_size=len(_TINY_VOCAB), hidden_size=hidden, intermediate_size=64,
                                   projection_dim=hidden, num_hidden_layers=1, num_attention_heads=2,
                                   max_position_embeddings=32, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        geometry_encoder_config=Sam3GeometryEncoderConfig(num_layers=1, **small),
        detr_encoder_config=Sam3DETREncoderConfig(num_layers=1, **small),
        detr_decoder_config=Sam3DETRDecoderConfig(num_layers=1, num_queries=8, **small),
        mask_decoder_config=Sam3MaskDecoderConfig(hidden_size=hidden, num_attention_heads=2),
    )


_TINY_VOCAB = ["<|startoftext|>", "<|endoftext|>", "<unk>", "person", "people", "man", "woman", "dog", "cat"]


def _tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(_TINY_VOCAB)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", unk_token="<unk>")


def _weights_problem(folder: Path) -> str | None:
    if not folder.is_dir():
        return "is not a folder"
    if not (folder / "config.json").is_file():
        return "has no config.json"
    if not any(folder.glob("*.safetensors")):
        return "has no *.safetensors"
    return None


@dataclass
class Segmenter:
    """SAM 3 with a text prompt: instance coverage for clips and stills."""

    name: str
    image_model: object = None
    video_model: object = None
    tokenizer: object = None
    device: str = "cpu"
    image_mean: tuple = (0.5, 0.5, 0.5)
    image_std: tuple = (0.5, 0.5, 0.5)
    score_threshold: float = 0.5  # detector score (class x presence) to keep a detection
    folder: Path | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def tiny(cls, device: str = "cpu", seed: int = 0) -> "Segmenter":
        """Random tiny Sam3Model, per-frame engine; keeps every query (scores are meaningless)."""
        import torch
        from transformers import Sam3Model

        torch.manual_seed(seed)
        model = Sam3Model(_tiny_detector_config()).eval().to(device)
        return cls("tiny", image_model=model, tokenizer=_tiny_tokenizer(), device=device, score_threshold=0.0)

    @classmethod
    def load(cls, folder: os.PathLike | str, device: str = "cpu") -> "Segmenter":
        """From a local copy of facebook/sam3; nothing is downloaded. Models load on first use."""
        folder = Path(folder)
        problem = _weights_problem(folder)
        if problem:
            raise SegmentationError(
                f"SAM 3 weights folder {folder} {problem}: download '{SAM3_REPO}' from Hugging Face "
                f"(config.json, model.safetensors, tokenizer and processor files) into {folder}"
            )
        mean, std = (0.5,) * 3, (0.5,) * 3
        pre = folder / "preprocessor_config.json"
        if pre.is_file():
            data = json.loads(pre.read_text())
            mean, std = tuple(data.get("image_mean", mean)), tuple(data.get("image_std", std))
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise SegmentationError(f"cannot load the SAM 3 tokenizer from {folder} ({str(exc).splitlines()[0]}): "
                                    f"download '{SAM3_REPO}' from Hugging Face into {folder}") from None
        return cls(str(folder), tokenizer=tokenizer, device=device, image_mean=mean, image_std=std, folder=folder)

    # -- models ------------------------------------------------------------------------------

    def _image(self):
        if self.image_model is None:
            from transformers import Sam3Model

            self.image_model = self._from_folder(Sam3Model)
        return self.image_model

    def _video(self):
        if self.video_model is None:
            from transformers import Sam3VideoModel

            self.video_model = self._from_folder(Sam3VideoModel)
        return self.video_model

    def _from_folder(self, model_class):
        try:
            model = model_class.from_pretrained(self.folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise SegmentationError(f"cannot load SAM 3 from {self.folder} ({str(exc).splitlines()[0]}): "
                                    f"download '{SAM3_REPO}' from Hugging Face into {self.folder}") from None
        return model.eval().to(self.device)

    def _text(self, prompt: str):
        encoded = self.tokenizer(prompt, return_tensors="pt", padding="max_length", max_length=32, truncation=True)
        return encoded["input_ids"].to(self.device), encoded["attention_mask"].to(self.device)

    def _pixels(self, frames: np.ndarray, size: int):
        """uint8 [T, H, W, 3] -> float [T, 3, size, size], normalised."""
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(self.image_mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std, device=self.device).view(1, 3, 1, 1)
        return (x - mean) / std

    # -- inference -----------------------------------------------------------------------------

    def detect(self, frames: np.ndarray, prompt: str) -> list[np.ndarray]:
        """Per frame: detections' coverage [D, H, W] in [0, 1], best score first, duplicates dropped."""
        import torch
        import torch.nn.functional as F

        model = self._image()
        frames = _check_frames(frames)
        height, width = frames.shape[1:3]
        ids, attention = self._text(prompt)
        size = int(model.config.vision_config.image_size)
        out = []
        with torch.inference_mode():
            for frame in frames:
                result = model(pixel_values=self._pixels(frame[None], size), input_ids=ids, attention_mask=attention)
                scores = result.pred_logits[0].sigmoid()
                if result.presence_logits is not None:
                    scores = scores * result.presence_logits[0].sigmoid()
                keep = torch.nonzero(scores >= self.score_threshold).flatten()
                keep = keep[torch.argsort(scores[keep], descending=True)]
                masks = F.interpolate(result.pred_masks[0, keep][None].float(), size=(height, width),
                                      mode="bilinear", align_corners=False)[0].sigmoid().cpu().numpy()
                kept: list[int] = []
                for d in range(masks.shape[0]):
                    on = masks[d] >= 0.5
                    if not on.any():
                        continue
                    if kept and mask_iou(masks[kept] >= 0.5, on[None]).max() >= DUPLICATE_IOU:
                        continue
                    kept.append(d)
                out.append(masks[kept].astype(np.float32))
        return out

    def track_instances(self, frames: np.ndarray, prompt: str = DEFAULT_PROMPT) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [T, H, W, 3] -> (coverage [N, T, H, W] in [0, 1], first-appearance boxes [N, 4] xyxy)."""
        frames = _check_frames(frames)
        if self.folder is not None:
            coverage = self._track_video(frames, prompt)
        else:
            coverage = link_detections(self.detect(frames, prompt))
        return coverage, first_boxes(coverage)

    def segment_image(self, image: np.ndarray, prompt: str = DEFAULT_PROMPT) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [H, W, 3] -> (coverage [N, 1, H, W], boxes [N, 4])."""
        coverage = self.detect(np.asarray(image)[None], prompt)[0][:, None]
        return coverage, first_boxes(coverage)

    def _track_video(self, frames: np.ndarray, prompt: str) -> np.ndarray:
        """Sam3VideoModel over a whole clip (real weights only)."""
        import torch
        import torch.nn.functional as F
        from transformers import Sam3VideoInferenceSession

        model = self._video()
        count, height, width = frames.shape[:3]
        size = int(model.config.image_size)
        session = Sam3VideoInferenceSession(
            video=self._pixels(frames, size), video_height=height, video_width=width,
            inference_device=self.device, video_storage_device=self.device, inference_state_device=self.device,
            dtype=torch.float32,
        )
        prompt_id = session.add_prompt(prompt)
        ids, attention = self._text(prompt)
        session.prompt_input_ids[prompt_id] = ids
        session.prompt_attention_masks[prompt_id] = attention
        tracks: dict[int, np.ndarray] = {}
        with torch.inference_mode():
            for output in model.propagate_in_video_iterator(session):
                hidden = set(output.suppressed_obj_ids or ()) | set(session.hotstart_removed_obj_ids)
                for obj_id, low_res in output.obj_id_to_mask.items():
                    if obj_id in hidden:
                        continue
                    mask = F.interpolate(low_res[None].float(), size=(height, width), mode="bilinear",
                                         align_corners=False)[0, 0]
                    track = tracks.setdefault(obj_id, np.zeros((count, height, width), np.float32))
                    track[output.frame_idx] = (mask > 0).float().cpu().numpy()
        for obj_id in set(session.hotstart_removed_obj_ids) & set(tracks):
            del tracks[obj_id]
        kept = [tracks[k] for k in sorted(tracks) if tracks[k].any()]
        return np.stack(kept) if kept else np.zeros((0, count, height, width), np.float32)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise SegmentationError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    return frames


# ---------------------------------------------------------------------------------------------
# The `masks` command


def _parse_size(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SegmentationError(f"--size must be WIDTHxHEIGHT, got {text!r}") from None
    if width < 1 or height < 1:
        raise SegmentationError(f"--size must be positive, got {text!r}")
    return width, height


def _resize(frames: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or frames.shape[2] == size[0] and frames.shape[1] == size[1]:
        return frames
    import cv2

    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


def _write_json_atomic(path: Path, data: dict) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temp, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def make_masks(segmenter: Segmenter, out: Path, *, video: str | None = None, image: str | None = None,
               prompt: str = DEFAULT_PROMPT, mode: str = "animate", max_identities: int = MAX_IDENTITIES,
               pick: list[int] | None = None, max_frames: int | None = None,
               size: tuple[int, int] | None = None) -> dict:
    """Segment a clip (driving mask frames) or a still (reference mask) into `out`; returns masks.json's data."""
    from .media import probe_clip, read_frames, read_image, write_png_atomic

    if (video is None) == (image is None):
        raise SegmentationError("give exactly one of a video or an image")
    if pick is None and not 1 <= max_identities <= MAX_IDENTITIES:
        raise SegmentationError(f"SCAIL-2 binds 1 to {MAX_IDENTITIES} identities, {max_identities} were asked for")
    if video is not None:
        info = probe_clip(video)
        count = info.frame_count if max_frames is None else max(1, min(info.frame_count, max_frames))
        frames = _resize(read_frames(info, range(count)), size)
        coverage, boxes = segmenter.track_instances(frames, prompt)
        source, fps = video, info.fps
    else:
        still, _ = read_image(image)
        frames = _resize(still[None], size)
        coverage, boxes = segmenter.segment_image(frames[0], prompt)
        source, fps = image, None
    chosen, boxes, instances, warnings = arrange_identities(coverage, boxes, max_identities, pick)
    if coverage.shape[0] == 0:
        warnings.append(f"no instance of '{prompt}' found: the mask is background only")
    painted = paint(chosen, mode, for_reference=image is not None)  # [T, H, W, 3]
    out.mkdir(parents=True, exist_ok=True)
    files = []
    if video is not None:
        for t, frame in enumerate(painted):
            name = f"mask_{t:05d}.png"
            write_png_atomic(out / name, frame)
            files.append(name)
    else:
        write_png_atomic(out / "mask.png", painted[0])
        files.append("mask.png")
    data = {
        "kind": "video" if video is not None else "image",
        "source": str(source),
        "prompt": prompt,
        "mode": mode,
        "model": segmenter.name,
        "frame_count": len(files),
        "fps": fps,
        "width": int(frames.shape[2]),
        "height": int(frames.shape[1]),
        "instances_found": int(coverage.shape[0]),
        "identities": [
            {"identity": i, "colour": list(PALETTE[i]), "instance": int(instances[i]),
             "box": [None if np.isnan(v) else round(float(v), 2) for v in boxes[i]]}
            for i in range(len(instances))
        ],
        "files": files,
        "warnings": warnings,
    }
    _write_json_atomic(out / "masks.json", data)
    return data


def run_masks(args: argparse.Namespace) -> int:
    """Handler of `python -m backend masks`: one line on stderr and exit code 2 on bad input."""
    from .media import MediaError

    try:
        size = _parse_size(args.size)
        device = args.device or ("cuda" if _cuda() else "cpu")
        segmenter = Segmenter.tiny(device) if args.model else Segmenter.load(args.weights, device)
        data = make_masks(segmenter, args.out, video=args.video, image=args.image, prompt=args.prompt,
                          mode=args.mode, max_identities=args.max_identities, pick=args.pick,
                          max_frames=args.max_frames, size=size)
    except (SegmentationError, MediaError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    for warning in data["warnings"]:
        print(f"warning: {warning}")
    print(f"{data['frame_count']} mask frame(s), {len(data['identities'])} identities: {args.out / 'masks.json'}")
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
