"""CLIP-224 preprocessing as LLaVA / LLaMA-VID apply it (transformers' `CLIPImageProcessor`), without torchvision:
`BehaviorLlavaImageProcessor`, a transformers image processor.

Per frame: optional pad-to-square (LLaVA's `expand2square`), resize the shortest side to `size` with PIL
bicubic, center crop `size`, scale to [0, 1], normalize with the CLIP mean and std.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PAD_COLOR = tuple(int(m * 255) for m in CLIP_MEAN)  # (122, 116, 104): LLaVA truncates, it does not round

Frame = Image.Image | np.ndarray
Frames = Frame | Sequence[Frame]


def expand2square(image: Image.Image, background: tuple[int, int, int] = PAD_COLOR) -> Image.Image:
    """Paste `image` centred on a square canvas of side max(W, H) filled with `background` (LLaVA)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), background)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def resize_shortest_side(image: Image.Image, size: int) -> Image.Image:
    """Bicubic resize so the shorter side is `size`; the longer is `int(size * long / short)` (transformers)."""
    width, height = image.size
    new_size = (size, int(size * height / width)) if width <= height else (int(size * width / height), size)
    return image.resize(new_size, Image.Resampling.BICUBIC)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """Crop the central `size` x `size` window; offsets round down, as transformers' `center_crop` does."""
    width, height = image.size
    left, top = (width - size) // 2, (height - size) // 2
    return image.crop((left, top, left + size, top + size))


def _to_pil(frame: Frame) -> Image.Image:
    if isinstance(frame, Image.Image):
        return frame.convert("RGB")
    if (
        not isinstance(frame, np.ndarray)
        or frame.dtype != np.uint8
        or frame.ndim != 3
        or frame.shape[-1] != 3
    ):
        raise ValueError(
            "a frame must be a PIL image or a uint8 numpy array of shape (H, W, 3), got "
            f"{type(frame).__name__} {getattr(frame, 'dtype', '')} {getattr(frame, 'shape', '')}"
        )
    return Image.fromarray(frame)


def as_frame_list(frames: Frames) -> list[Frame]:
    """Split a PIL image, an (H, W, 3) array, a (T, H, W, 3) array or a sequence of frames into frames."""
    if isinstance(frames, Image.Image):
        return [frames]
    if isinstance(frames, np.ndarray):
        if frames.ndim == 3:
            return [frames]
        if frames.ndim == 4:
            return list(frames)
        raise ValueError(f"expected an (H, W, 3) or (T, H, W, 3) array, got shape {frames.shape}")
    return list(frames)


class BehaviorLlavaImageProcessor(BaseImageProcessor):
    """CLIP-224 preprocessing of still images and video frames, as transformers' image processors are saved
    (`image_processor` in `processor_config.json`) and loaded (`AutoImageProcessor`).

    Args:
        size: output side (224 for the released models: the vision tower's `image_size`).
        pad_to_square: pad still images to a square with the mean colour before resizing (LLaVA's
            `image_aspect_ratio pad`, what LLaMA-VID stage 2 trained with); video frames are never padded.
        image_mean / image_std: per-channel normalization (CLIP's).
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        size: int = 224,
        pad_to_square: bool = True,
        image_mean: Sequence[float] = CLIP_MEAN,
        image_std: Sequence[float] = CLIP_STD,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.size = size
        self.pad_to_square = pad_to_square
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)

    def preprocess(
        self, images: Frames, is_video: bool = False, return_tensors: str | None = "pt"
    ) -> BatchFeature:
        """One still image (`is_video=False`) or the frames of one video.

        Args:
            images: a PIL image, a uint8 (H, W, 3) RGB array, a uint8 (T, H, W, 3) array, or a list of either.
            is_video: the frames are a video's (never padded to a square).

        Returns:
            `pixel_values`: float32 (T, 3, size, size); T = 0 gives (0, 3, size, size).
        """
        if return_tensors not in (None, "pt"):
            raise ValueError(
                f"{type(self).__name__} returns torch tensors only, got return_tensors={return_tensors!r}"
            )
        crops = []
        for frame in as_frame_list(images):
            image = _to_pil(frame)
            if self.pad_to_square and not is_video:
                image = expand2square(image)
            crops.append(np.asarray(center_crop(resize_shortest_side(image, self.size), self.size)))
        if not crops:
            return BatchFeature({"pixel_values": torch.empty(0, 3, self.size, self.size)})
        pixels = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255.0  # (T, 3, size, size)
        mean = torch.tensor(self.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std).view(1, 3, 1, 1)
        return BatchFeature({"pixel_values": (pixels - mean) / std})  # (T, 3, size, size)
