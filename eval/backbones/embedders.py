"""Image / text embedders around loaded backbones: batched, eval mode, no gradient.

Each takes images [N, 3, H, W] in [0, 1] and returns float32 embeddings [N, D] on the CPU.
Loading (local path, cache, hub id) lives in ``eval.backbones``; these classes only wrap objects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from couplednoise.eval.metrics.checks import check_images


def _check_prompts(prompts: list[str]) -> list[str]:
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompts must be a list of strings")
    return list(prompts)


def resize_and_crop(
    images: torch.Tensor,
    size: tuple[int, int],
    *,
    interpolation: str = "bicubic",
    resize_mode: str = "shortest",
    fill: float = 0.0,
) -> torch.Tensor:
    """open_clip's eval transform on tensors: [N, 3, H, W] -> [N, 3, *size], values clamped to [0, 1].

    ``resize_mode``: "shortest" (resize the short side, centre crop), "squash" (resize both
    sides) or "longest" (resize the long side, pad with ``fill``). Antialiased resizing, so it
    matches PIL's up to rounding; runs batched on the images' device.
    """
    height, width = images.shape[-2:]
    if resize_mode == "squash":
        target = size
    elif resize_mode in ("shortest", "longest"):
        # torchvision's Resize(int) rule: the chosen side to size, the other truncated.
        pick = max if resize_mode == "shortest" else min
        scale = pick(size[0] / height, size[1] / width)
        target = (int(height * scale), int(width * scale))
        target = (size[0], target[1]) if scale == size[0] / height else (target[0], size[1])
    else:
        raise ValueError(f"resize_mode must be shortest, squash or longest, got {resize_mode!r}")
    if target != (height, width):
        antialias = interpolation in ("bilinear", "bicubic")
        images = F.interpolate(images, size=target, mode=interpolation, antialias=antialias)
    images = images.clamp(0, 1)
    if resize_mode == "longest":
        pad_h, pad_w = size[0] - images.shape[-2], size[1] - images.shape[-1]
        padding = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
        return F.pad(images, padding, value=fill)
    top = round((images.shape[-2] - size[0]) / 2.0)
    left = round((images.shape[-1] - size[1]) / 2.0)
    return images[..., top : top + size[0], left : left + size[1]]


class BatchedEmbedder:
    """Shared by the embedders (dataclasses with ``model`` and ``batch_size`` fields)."""

    model: torch.nn.Module
    batch_size: int

    @property
    def _param(self) -> torch.Tensor:
        return next(self.model.parameters())

    def _batched(self, items, embed: Callable[..., torch.Tensor]) -> torch.Tensor:
        """``embed`` on ``batch_size`` items at a time: its [n, D] outputs as float32 on the CPU."""
        starts = range(0, len(items), self.batch_size)
        return torch.cat([embed(items[s : s + self.batch_size]).float().cpu() for s in starts])


class _Clip(BatchedEmbedder):
    """A CLIP embedder: also its temperature."""

    @property
    def logit_scale(self) -> float:
        """The model's learned temperature exp(t)."""
        return float(self.model.logit_scale.exp())


@dataclass(eq=False)
class OpenClipEmbedder(_Clip):
    """An open_clip model with its tokenizer and preprocessing settings."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    batch_size: int = 32

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """Image embeddings [N, D] (not normalised) of images [N, 3, H, W] in [0, 1]."""
        check_images(images)
        cfg = self.model.visual.preprocess_cfg
        device = self._param.device
        mean = torch.tensor(cfg["mean"], dtype=torch.float32, device=device).view(1, 3, 1, 1)
        std = torch.tensor(cfg["std"], dtype=torch.float32, device=device).view(1, 3, 1, 1)
        size = cfg["size"] if isinstance(cfg["size"], (tuple, list)) else (cfg["size"],) * 2

        def embed(chunk: torch.Tensor) -> torch.Tensor:
            x = resize_and_crop(
                chunk.to(device, torch.float32),
                tuple(size),
                interpolation=cfg["interpolation"],
                resize_mode=cfg["resize_mode"],
                fill=cfg.get("fill_color", 0) / 255,
            )
            return self.model.encode_image(((x - mean) / std).to(self._param.dtype))

        return self._batched(images, embed)

    @torch.no_grad()
    def embed_texts(self, prompts: list[str]) -> torch.Tensor:
        """Text embeddings [N, D] (not normalised) of ``prompts``."""
        prompts = _check_prompts(prompts)
        return self._batched(
            prompts,
            lambda chunk: self.model.encode_text(self.tokenizer(chunk).to(self._param.device)),
        )


def _tensor_output(output) -> torch.Tensor:
    """transformers 5 returns an output object from get_*_features; older versions a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@dataclass(eq=False)
class _HFEmbedder(BatchedEmbedder):
    """A transformers model with its processor, which takes images as 0-255 values."""

    model: torch.nn.Module
    processor: object
    name: str
    batch_size: int = 32

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """Image embeddings [N, D] of images [N, 3, H, W] in [0, 1] (given to the processor * 255)."""
        check_images(images)
        return self._batched(images, lambda chunk: self._image_features(self._pixel_values(chunk)))

    def _pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        pixels = self.processor(images=list((images.float() * 255).cpu()), return_tensors="pt")
        return pixels["pixel_values"].to(self._param.device, self._param.dtype)

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """The model's ``pooler_output`` (DINOv2: the layer-normed CLS token)."""
        return self.model(pixel_values=pixels).pooler_output


@dataclass(eq=False)
class HFClipEmbedder(_HFEmbedder, _Clip):
    """A transformers CLIP model (e.g. PickScore) with its processor."""

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """The projected image embedding."""
        return _tensor_output(self.model.get_image_features(pixels))

    @torch.no_grad()
    def embed_texts(self, prompts: list[str]) -> torch.Tensor:
        """Text embeddings [N, D] of ``prompts`` (truncated to the model's context length)."""
        prompts = _check_prompts(prompts)
        max_length = self.model.config.text_config.max_position_embeddings

        def embed(chunk: list[str]) -> torch.Tensor:
            tokens = self.processor(
                text=chunk,
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=max_length,
            )
            features = self.model.get_text_features(
                tokens["input_ids"].to(self._param.device),
                tokens["attention_mask"].to(self._param.device),
            )
            return _tensor_output(features)

        return self._batched(prompts, embed)


@dataclass(eq=False)
class HFImageEmbedder(_HFEmbedder):
    """A transformers vision model (e.g. DINOv2) with its image processor; embedding = pooled CLS."""
