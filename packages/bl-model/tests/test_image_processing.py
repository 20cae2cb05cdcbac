"""CLIP-224 preprocessing against hand computations and transformers' PIL CLIP processor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bl_model.image_processing import CLIP_MEAN, CLIP_STD, BehaviorLlavaImageProcessor


def clip_pixels(frames, pad_to_square: bool = False, is_video: bool = False) -> torch.Tensor:
    """(T, 3, 224, 224) pixel values of `BehaviorLlavaImageProcessor` (the processor tests' reference too)."""
    return BehaviorLlavaImageProcessor(pad_to_square=pad_to_square)(frames, is_video=is_video)["pixel_values"]


MEAN = np.array(CLIP_MEAN, dtype=np.float64)
STD = np.array(CLIP_STD, dtype=np.float64)


def normalized(rgb) -> np.ndarray:
    """(3,) CLIP-normalized value of a uint8 RGB colour, in float64."""
    return (np.asarray(rgb, dtype=np.float64) / 255.0 - MEAN) / STD


def test_constant_colour_gives_the_normalized_constant():
    colour = (10, 200, 255)
    image = np.broadcast_to(np.array(colour, dtype=np.uint8), (50, 80, 3)).copy()
    out = clip_pixels(image)
    assert out.shape == (1, 3, 224, 224) and out.dtype == torch.float32
    expected = torch.tensor(normalized(colour), dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, 224, 224)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_small_landscape_image_matches_hand_resize_and_crop():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (17, 29, 3), dtype=np.uint8)  # H=17, W=29
    # shortest side 17 -> 224, longest 29 -> int(224 * 29 / 17) = 382; crop left (382 - 224) // 2 = 79
    resized = np.asarray(Image.fromarray(image).resize((382, 224), Image.Resampling.BICUBIC))
    crop = resized[:, 79 : 79 + 224].astype(np.float64)  # (224, 224, 3)
    expected = ((crop / 255.0 - MEAN) / STD).transpose(2, 0, 1)[None]  # (1, 3, 224, 224)
    out = clip_pixels(image)
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-5)


def test_matches_transformers_pil_clip_processor():
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    reference = CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    rng = np.random.default_rng(1)
    for shape in [(37, 61, 3), (90, 41, 3), (300, 240, 3)]:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        expected = reference(images=Image.fromarray(image), return_tensors="pt")["pixel_values"]
        torch.testing.assert_close(clip_pixels(image), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("height, width", [(20, 64), (64, 20), (224, 224), (300, 500)])
def test_video_array_shapes_for_non_square_frames(height, width):
    frames = np.random.default_rng(2).integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    out = clip_pixels(frames)
    assert out.shape == (3, 3, 224, 224) and out.dtype == torch.float32
    torch.testing.assert_close(out[1:2], clip_pixels(frames[1]))  # frames are processed independently


def test_accepts_pil_images_and_lists():
    frames = np.random.default_rng(3).integers(0, 256, (2, 30, 40, 3), dtype=np.uint8)
    from_array = clip_pixels(frames)
    torch.testing.assert_close(clip_pixels([Image.fromarray(f) for f in frames]), from_array)
    torch.testing.assert_close(clip_pixels(list(frames)), from_array)
    torch.testing.assert_close(clip_pixels(Image.fromarray(frames[0])), from_array[:1])
    grey = Image.fromarray(frames[0]).convert("L")  # converted to RGB first
    assert clip_pixels(grey).shape == (1, 3, 224, 224)
    assert clip_pixels([]).shape == (0, 3, 224, 224)


def test_pad_to_square_fills_with_the_truncated_mean_colour():
    colour = (250, 20, 30)
    image = np.broadcast_to(np.array(colour, dtype=np.uint8), (20, 40, 3)).copy()  # wide: padded top/bottom
    out = clip_pixels(image, pad_to_square=True)[0]  # (3, 224, 224)
    pad = (122, 116, 104)  # LLaVA's expand2square colour: int(mean * 255)
    torch.testing.assert_close(
        out[:, 0, 112], torch.tensor(normalized(pad), dtype=torch.float32), rtol=0, atol=1e-6
    )
    torch.testing.assert_close(
        out[:, 223, 0], torch.tensor(normalized(pad), dtype=torch.float32), rtol=0, atol=1e-6
    )
    torch.testing.assert_close(
        out[:, 112, 0], torch.tensor(normalized(colour), dtype=torch.float32), rtol=0, atol=1e-6
    )
    # Without padding the whole crop is the image colour.
    torch.testing.assert_close(
        clip_pixels(image)[0, :, 0, 0],
        torch.tensor(normalized(colour), dtype=torch.float32),
        rtol=0,
        atol=1e-6,
    )


@pytest.mark.parametrize(
    "frames",
    [
        np.zeros((8, 8, 3), dtype=np.float32),  # not uint8
        np.zeros((8, 8, 4), dtype=np.uint8),  # RGBA array
        np.zeros((1, 1, 8, 8, 3), dtype=np.uint8),  # 5-D
    ],
)
def test_rejects_bad_arrays(frames):
    with pytest.raises(ValueError, match=r"uint8|shape"):
        clip_pixels(frames)


def test_video_frames_are_never_padded():
    frames = np.random.default_rng(4).integers(0, 256, (2, 20, 40, 3), dtype=np.uint8)
    padded = BehaviorLlavaImageProcessor(pad_to_square=True)
    torch.testing.assert_close(
        padded(frames, is_video=True)["pixel_values"], clip_pixels(frames), rtol=0, atol=0
    )
    assert not torch.equal(padded(frames)["pixel_values"], clip_pixels(frames))


def test_saved_settings_load_through_auto_image_processor(tmp_path):
    from transformers import AutoImageProcessor

    import bl_model  # noqa: F401  registers the class with AutoImageProcessor

    original = BehaviorLlavaImageProcessor(
        size=64, pad_to_square=False, image_mean=(0.5,) * 3, image_std=(0.25,) * 3
    )
    original.save_pretrained(tmp_path)
    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(loaded) is BehaviorLlavaImageProcessor
    image = np.random.default_rng(5).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    out = loaded(image)["pixel_values"]
    assert out.shape == (1, 3, 64, 64)
    torch.testing.assert_close(out, original(image)["pixel_values"], rtol=0, atol=0)
    crop = np.asarray(Image.fromarray(image).resize((106, 64), Image.Resampling.BICUBIC))[
        :, 21:85
    ]  # (64, 64, 3)
    expected = ((crop / 255.0 - 0.5) / 0.25).transpose(2, 0, 1)[None]
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-5)
