"""Colour naming, dominant colours and tone on synthetic images."""

from __future__ import annotations

import numpy as np
import pytest

from bl_data.colors import (
    PALETTE,
    center_mask,
    dominant_colors,
    foreground_background,
    name_color,
    srgb_to_lab,
    tone,
)


def _image(rgb: tuple[int, int, int], h: int = 8, w: int = 8) -> np.ndarray:
    return np.full((h, w, 3), rgb, np.uint8)


def test_srgb_to_lab_reference_values() -> None:
    # Published CIELAB (D65) values of sRGB white, black, red and blue.
    np.testing.assert_allclose(srgb_to_lab(np.array([255, 255, 255])), [100.0, 0.0, 0.0], atol=1e-3)
    np.testing.assert_allclose(srgb_to_lab(np.array([0, 0, 0])), [0.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(srgb_to_lab(np.array([255, 0, 0])), [53.24, 80.09, 67.20], atol=0.01)
    np.testing.assert_allclose(srgb_to_lab(np.array([0, 0, 255])), [32.30, 79.19, -107.86], atol=0.01)


def test_palette_names_itself_and_nearby_colours() -> None:
    assert len(PALETTE) == 30
    for name, rgb in PALETTE.items():
        assert name_color(rgb) == name
    assert name_color((250, 10, 10)) == "red"
    assert name_color((20, 20, 240)) == "blue"
    assert name_color((100, 100, 100)) == "gray"
    assert name_color((30, 30, 30)) == "black"
    assert name_color(np.array([90, 60, 30], np.uint8)) == "dark brown"


def test_dominant_colors_counts_named_pixels() -> None:
    image = _image((255, 0, 0), 10, 10)
    image[:, 6:] = (0, 0, 255)  # 60 red, 40 blue
    image[0, 0] = (255, 255, 255)  # 59 red, 40 blue, 1 white
    assert dominant_colors(image) == ["red", "blue", "white"]
    assert dominant_colors(image, k=1) == ["red"]
    assert dominant_colors(_image((0, 0, 0))) == ["black"]  # fewer than k when the image is flat
    half = _image((255, 0, 0), 4, 4)
    half[:, 2:] = (0, 255, 0)
    assert dominant_colors(half) == ["red", "green"]  # equal counts: palette order


def test_dominant_colors_with_mask() -> None:
    image = _image((255, 255, 0), 4, 4)
    image[:, :2] = (0, 0, 128)
    mask = np.zeros((4, 4), bool)
    mask[:, :2] = True
    assert dominant_colors(image, mask) == ["navy"]
    assert dominant_colors(image, ~mask) == ["yellow"]
    assert dominant_colors(image, np.zeros((4, 4), bool)) == []
    with pytest.raises(ValueError, match="mask shape"):
        dominant_colors(image, np.ones((3, 4), bool))


def test_large_images_are_subsampled_deterministically() -> None:
    image = _image((255, 165, 0), 400, 400)
    image[:100] = (0, 100, 0)
    assert dominant_colors(image, k=2) == ["orange", "dark green"]


def test_center_mask_is_a_centred_ellipse() -> None:
    mask = center_mask(100, 200)
    assert mask[50, 100] and not mask[0, 0] and not mask[50, 10] and not mask[5, 100]
    assert mask[50, 100 - 69] and not mask[50, 100 - 71]  # semi-axis 0.7 * 100 columns
    assert abs(mask.mean() - np.pi / 4 * 0.7**2) < 0.01


def test_foreground_background_of_a_framed_subject() -> None:
    image = _image((0, 0, 255), 60, 80)  # blue border
    image[15:45, 20:60] = (255, 0, 0)  # red subject in the centre
    foreground, background = foreground_background(image)
    assert foreground == ["red", "blue"]
    assert background == ["blue"]  # the subject lies inside the ellipse


@pytest.mark.parametrize(
    ("rgb", "expected"),
    [
        ((0, 0, 0), "dark"),
        ((40, 40, 40), "dark"),
        ((255, 255, 255), "bright"),
        ((128, 128, 128), "neutral"),
        ((200, 80, 40), "warm"),
        ((40, 80, 200), "cool"),
    ],
)
def test_tone(rgb: tuple[int, int, int], expected: str) -> None:
    assert tone(_image(rgb)) == expected


def test_tone_of_half_warm_half_cool_is_the_mean() -> None:
    image = _image((200, 80, 40))  # b* ≈ +46
    image[:, 4:] = (40, 80, 200)  # b* ≈ -66: the mean is ≈ -10, inside ±15
    assert tone(image) == "neutral"


def test_bad_pixels_raise() -> None:
    with pytest.raises(ValueError, match="uint8"):
        tone(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="empty"):
        dominant_colors(np.zeros((0, 4, 3), np.uint8))
