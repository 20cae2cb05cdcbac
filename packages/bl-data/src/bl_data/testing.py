"""Synthetic media and models for tests and benchmarks: H.264 clips with shot cuts at known times (PyAV), a
tiny random LLaVA-NeXT captioner checkpoint."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np

# Saturated, well-separated colours (RGB) so every cut changes hue and luminance.
_PALETTE = np.array(
    [[200, 40, 40], [40, 170, 60], [50, 60, 210], [230, 200, 40], [150, 50, 170], [30, 180, 190]], np.int16
)


def make_clip(
    path: str | Path,
    *,
    size: tuple[int, int] = (320, 180),
    fps: int = 10,
    seconds: float = 6.0,
    cuts: Sequence[float] = (2.0, 4.0),
    audio: bool = False,
    pan: int = 0,
    flicker: int = 0,
    seed: int = 0,
    preset: str = "veryfast",
) -> Path:
    """Write an mp4 of len(cuts) + 1 shots, switching at the frames `round(cut * fps)`.

    Each shot is a solid palette colour plus a fixed random texture (±24) and grain (±4, cycling over 7
    frames), added to all three channels;
    `pan` shifts the texture by that many pixels per frame (camera motion, a realistic decode load).
    `flicker` (< 100) adds ±flicker brightness on alternate frames: a steady frame-to-frame change that
    hides the cuts from AdaptiveDetector (not from ContentDetector). `size` is (width, height). With
    `audio`, a 440 Hz mono AAC track is added. Returns `path`.
    """
    path = Path(path)
    width, height = size
    rng = np.random.default_rng(seed)
    num_frames = round(seconds * fps)
    cut_frames = [round(c * fps) for c in cuts]
    textures = rng.integers(-24, 25, (len(cuts) + 1, height, width), dtype=np.int16)
    grains = rng.integers(-4, 5, (7, height, width), dtype=np.int16)
    # colour + level -> RGB lookup tables: one gather per frame instead of per-channel arithmetic
    luts = np.clip(_PALETTE[:, None, :] + np.arange(-128, 128, dtype=np.int16)[None, :, None], 0, 255)
    luts = luts.astype(np.uint8)  # (colours, 256, 3)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": preset, "crf": "23"}
        sound = container.add_stream("aac", rate=44100, layout="mono") if audio else None
        for i in range(num_frames):
            shot = sum(i >= c for c in cut_frames)
            texture = np.roll(textures[shot], i * pan, axis=1) if pan else textures[shot]
            level = texture + grains[i % len(grains)] + (flicker if i % 2 else -flicker)
            image = np.take(luts[shot % len(luts)], (level + 128).astype(np.uint8), axis=0)
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode())
        if sound is not None:
            _write_tone(container, sound, seconds)
    return path


def zero_size_avi(path: str | Path) -> Path:
    """A rawvideo AVI whose headers say 0x0 pixels (avih and strf patched): pyscenedetect asserts on it."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("rawvideo", rate=5)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "rgb24"
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((24, 32, 3), 20 * i, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    data = bytearray(path.read_bytes())
    avih = data.find(b"avih") + 8 + 8 * 4  # MainAVIHeader: 8 DWORDs, then dwWidth, dwHeight
    strf = data.find(b"strf") + 8 + 4  # BITMAPINFOHEADER: biSize, then biWidth, biHeight
    data[avih : avih + 8] = data[strf : strf + 8] = struct.pack("<II", 0, 0)
    path.write_bytes(bytes(data))
    return path


def _write_tone(
    container: av.container.OutputContainer, stream: av.audio.stream.AudioStream, seconds: float
) -> None:
    rate, chunk = stream.rate, 1024
    total = round(seconds * rate)
    for start in range(0, total, chunk):
        n = min(chunk, total - start)
        t = (start + np.arange(n)) / rate
        frame = av.AudioFrame.from_ndarray(
            (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], "fltp", "mono"
        )
        frame.sample_rate, frame.pts = rate, start
        container.mux(stream.encode(frame))
    container.mux(stream.encode())


_PINPOINTS = [[32, 64], [64, 32], [64, 64]]


def save_tiny_llava(
    out: Path, tokenizer_dir: Path, *, chat_template: str | None = None, pad: bool = True
) -> Path:
    """A random LLaVA-NeXT (CLIP 32 px / 8 px patches, 2-layer LLaMA) with its processor, saved to `out`
    like a real checkpoint: `VlmCaptioner(out)` loads it (in tests, and in Ray workers, which cannot import
    test modules). `tokenizer_dir`: a saved LLaMA tokenizer."""
    import torch
    from tokenizers import AddedToken
    from transformers import (
        AutoTokenizer,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.add_tokens([AddedToken("<image>", special=True, normalized=False)], special_tokens=True)
    if pad:
        tokenizer.add_special_tokens({"pad_token": "<pad>"})
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_grid_pinpoints=_PINPOINTS
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token
        chat_template=chat_template,
    )
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(
            image_size=32,
            patch_size=8,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            projection_dim=16,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=_PINPOINTS,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(0)
    LlavaNextForConditionalGeneration(config).save_pretrained(out)
    processor.save_pretrained(out)
    return out


_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "ta", "vo", "zi", "pa", "se", "do", "fu", "gi", "ha", "jo", "be")


def synthetic_comments(
    n: int, *, seed: int = 0, vocabulary: int = 50_000, repeat_share: float = 0.25
) -> tuple[list[str], list[int]]:
    """`n` comment texts and like counts shaped like a popular video's: words drawn by a Zipf law (exponent
    1.07) from `vocabulary` made-up words, 4-60 words per comment (log-normal, median 11), likes Zipf
    distributed (most 0); `repeat_share` of the comments repeat a recent one, half of those with one word
    changed (near duplicates). Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    parts = rng.integers(0, len(_SYLLABLES), size=(vocabulary, 3))
    words = [
        "".join(_SYLLABLES[j] for j in row[: 2 + k % 2]) + (str(k) if k >= 1000 else "")
        for k, row in enumerate(parts)
    ]
    weights = 1.0 / np.arange(1, vocabulary + 1) ** 1.07
    lengths = np.clip(rng.lognormal(2.4, 0.6, n).astype(int), 4, 60)
    tokens = rng.choice(vocabulary, size=int(lengths.sum()), p=weights / weights.sum())
    ends = np.cumsum(lengths)
    repeat = rng.random(n) < repeat_share
    texts: list[str] = []
    for i in range(n):
        if repeat[i] and i > 0:
            text = texts[int(rng.integers(max(0, i - 5000), i))].split()
            if rng.random() < 0.5:
                text[int(rng.integers(len(text)))] = words[int(rng.integers(vocabulary))]
            texts.append(" ".join(text))
        else:
            texts.append(" ".join(words[t] for t in tokens[ends[i] - lengths[i] : ends[i]]))
    likes = (rng.zipf(1.8, n).clip(max=10**6) - 1).tolist()
    return texts, likes
