"""Colour words for the scene sentence: named colours (nearest in CIELAB), dominant colours, and the tone.

Pixels are RGB `uint8` arrays of shape (H, W, 3) (convert OpenCV's BGR first). The paper takes foreground and
background from U²-Net saliency; without a saliency model, `center_mask` stands in: the centred ellipse is the
foreground, the rest the background.
"""

from __future__ import annotations

import numpy as np

PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "dark gray": (64, 64, 64),
    "gray": (128, 128, 128),
    "light gray": (192, 192, 192),
    "white": (255, 255, 255),
    "red": (255, 0, 0),
    "dark red": (139, 0, 0),
    "pink": (255, 182, 193),
    "magenta": (255, 0, 255),
    "purple": (128, 0, 128),
    "lavender": (181, 126, 220),
    "navy": (0, 0, 128),
    "blue": (0, 0, 255),
    "sky blue": (135, 206, 235),
    "light blue": (173, 216, 230),
    "teal": (0, 128, 128),
    "cyan": (0, 255, 255),
    "turquoise": (64, 224, 208),
    "dark green": (0, 100, 0),
    "green": (0, 255, 0),
    "light green": (144, 238, 144),
    "olive": (128, 128, 0),
    "mud green": (96, 102, 2),
    "yellow": (255, 255, 0),
    "gold": (255, 215, 0),
    "orange": (255, 165, 0),
    "brown": (150, 75, 0),
    "dark brown": (101, 67, 33),
    "tan": (210, 180, 140),
    "beige": (245, 245, 220),
}
"""The named colours, in tie-break order."""

_NAMES = tuple(PALETTE)
_MAX_PIXELS = 65_536  # pixels beyond this are subsampled with a fixed stride
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])
_RGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB values in [0, 255], shape (..., 3) -> (..., 3) float64 `L*, a*, b*`."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _RGB_TO_XYZ.T / _WHITE_D65
    delta = 6 / 29
    f = np.where(xyz > delta**3, np.cbrt(xyz), xyz / (3 * delta**2) + 4 / 29)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1
    )


_PALETTE_LAB = srgb_to_lab(np.array(list(PALETTE.values())))


def _nearest(lab: np.ndarray) -> np.ndarray:
    """Palette index of each Lab row (CIE76 distance; ties: earlier palette entry)."""
    distances = ((lab[:, None, :] - _PALETTE_LAB[None, :, :]) ** 2).sum(axis=-1)
    return distances.argmin(axis=1)


def name_color(rgb: tuple[int, int, int] | np.ndarray) -> str:
    """The palette name nearest to one sRGB colour in CIELAB."""
    return _NAMES[int(_nearest(srgb_to_lab(np.asarray(rgb).reshape(1, 3)))[0])]


def _check_pixels(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8 RGB pixels, got {pixels.shape} {pixels.dtype}")
    if pixels.size == 0:
        raise ValueError(f"empty image {pixels.shape}")
    return pixels


def _sample(flat: np.ndarray) -> np.ndarray:
    stride = -(-len(flat) // _MAX_PIXELS)
    return flat[::stride]


def dominant_colors(pixels: np.ndarray, mask: np.ndarray | None = None, k: int = 3) -> list[str]:
    """The `k` most frequent palette names among the (masked) pixels, most frequent first.

    Each pixel is named by `name_color`; counts break ties by palette order, so the result is deterministic.
    Names no pixel has are left out (fewer than `k` for a flat image); an empty mask gives [].
    """
    flat = _check_pixels(pixels).reshape(-1, 3)
    if mask is not None:
        if mask.shape != pixels.shape[:2]:
            raise ValueError(f"mask shape {mask.shape} != pixel shape {pixels.shape[:2]}")
        flat = flat[mask.reshape(-1).astype(bool)]
    if len(flat) == 0:
        return []
    counts = np.bincount(_nearest(srgb_to_lab(_sample(flat))), minlength=len(_NAMES))
    order = np.argsort(-counts, kind="stable")[:k]
    return [_NAMES[i] for i in order if counts[i] > 0]


def center_mask(height: int, width: int, scale: float = 0.7) -> np.ndarray:
    """Boolean (H, W) mask of the centred ellipse with semi-axes `scale` x half the frame (~38% of it at 0.7)."""
    y = (np.arange(height) + 0.5 - height / 2) / (scale * height / 2)
    x = (np.arange(width) + 0.5 - width / 2) / (scale * width / 2)
    return y[:, None] ** 2 + x[None, :] ** 2 <= 1.0


def foreground_background(pixels: np.ndarray, k: int = 3) -> tuple[list[str], list[str]]:
    """Dominant colours inside and outside `center_mask` (the stand-in for a saliency mask)."""
    mask = center_mask(*_check_pixels(pixels).shape[:2])
    return dominant_colors(pixels, mask, k), dominant_colors(pixels, ~mask, k)


DARK_BELOW = 30.0
BRIGHT_ABOVE = 75.0
WARMTH_THRESHOLD = 15.0


def tone(pixels: np.ndarray) -> str:
    """One word for the whole frame, from the mean CIELAB values.

    "dark" when mean L* < 30, "bright" when mean L* > 75; otherwise by warmth, the mean b* (yellow/red
    positive, blue negative): "warm" above +15, "cool" below -15, else "neutral".
    """
    lab = srgb_to_lab(_sample(_check_pixels(pixels).reshape(-1, 3)))
    lightness, warmth = lab[:, 0].mean(), lab[:, 2].mean()
    if lightness < DARK_BELOW:
        return "dark"
    if lightness > BRIGHT_ABOVE:
        return "bright"
    if warmth > WARMTH_THRESHOLD:
        return "warm"
    if warmth < -WARMTH_THRESHOLD:
        return "cool"
    return "neutral"
