"""VlmCaptioner on a tiny random LLaVA-NeXT checkpoint saved like a real one; the tag and caption parsers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bl_data.captioner import CAPTION_QUESTION, TAGS_QUESTION, VlmCaptioner, first_sentence, parse_tags
from bl_data.testing import save_tiny_llava

CHAT_TEMPLATE = (
    "{% for message in messages %}[{{ message['role'] }}]"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>"
    "{% else %} {{ part['text'] }}{% endif %}{% endfor %} {% endfor %}"
    "{% if add_generation_prompt %}[assistant]{% endif %}"
)


@pytest.fixture(scope="module")
def templated(tmp_path_factory: pytest.TempPathFactory, llama_tokenizer_dir: Path) -> Path:
    """A checkpoint whose processor has a chat template and a `<pad>` token."""
    out = tmp_path_factory.mktemp("llava-next-tiny")
    return save_tiny_llava(out, llama_tokenizer_dir, chat_template=CHAT_TEMPLATE, pad=True)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, llama_tokenizer_dir: Path) -> Path:
    """A checkpoint whose processor has neither a chat template nor a pad token."""
    out = tmp_path_factory.mktemp("llava-next-plain")
    return save_tiny_llava(out, llama_tokenizer_dir, chat_template=None, pad=False)


@pytest.fixture(scope="module")
def keyframes() -> list[np.ndarray]:
    """Three RGB keyframes of different aspect ratios (so different image-token counts and padding)."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(40, 80), (64, 64), (90, 30)]]


def test_captions_through_chat_template(templated: Path, keyframes: list[np.ndarray]) -> None:
    captioner = VlmCaptioner(templated, batch_size=2, device="cpu", max_new_tokens=6)
    assert captioner.name == f"{templated.name} (llava_next)"
    assert captioner.prompts == (
        f"[user]<image> {CAPTION_QUESTION} [assistant]",
        f"[user]<image> {TAGS_QUESTION} [assistant]",
    )
    result = captioner(keyframes)
    assert len(result) == len(keyframes)
    for caption, tags in result:
        assert isinstance(caption, str) and isinstance(tags, list) and len(tags) <= 10
        assert all(isinstance(t, str) and t == t.lower() for t in tags)
    assert captioner(keyframes) == result
    assert captioner([]) == []
    with pytest.raises(ValueError, match="uint8"):
        captioner([keyframes[0].astype(np.float32)])


def test_fallback_prompt_and_batching(plain: Path, keyframes: list[np.ndarray]) -> None:
    batched = VlmCaptioner(plain, batch_size=2, device="cpu", max_new_tokens=6)
    assert batched.prompts == (
        f"USER: <image>\n{CAPTION_QUESTION} ASSISTANT:",
        f"USER: <image>\n{TAGS_QUESTION} ASSISTANT:",
    )
    assert batched.processor.tokenizer.pad_token == batched.processor.tokenizer.eos_token
    single = VlmCaptioner(plain, batch_size=1, device="cpu", max_new_tokens=6)
    assert batched(keyframes) == single(keyframes)
    # raw answers of one left-padded batch == each prompt generated alone (no padding at all)
    from PIL import Image

    images = [Image.fromarray(kf) for kf in keyframes for _ in range(2)]
    prompts = list(batched.prompts) * len(keyframes)
    together = batched.generate(images, prompts)
    assert together == [batched.generate([im], [p])[0] for im, p in zip(images, prompts, strict=True)]
    assert any(together)


def test_errors(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        VlmCaptioner(missing)
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        VlmCaptioner(tmp_path)
    text_only = tmp_path / "llama-tiny"
    text_only.mkdir()
    (text_only / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match=r"llama-tiny.*'llama'"):
        VlmCaptioner(text_only)


def test_workers_decode_while_the_main_process_captions(templated: Path, tmp_path: Path) -> None:
    """`prepare` with a captioner and 2 workers writes the samples one process writes, byte for byte."""
    from bl_data.demo import synthesize_youtube
    from bl_data.pipeline import PrepareConfig, prepare

    folder = synthesize_youtube(tmp_path / "dl", 3, seed=8)
    captioner = VlmCaptioner(templated, device="cpu", max_new_tokens=4)
    shards = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        prepare(
            PrepareConfig(source="youtube", input=folder, out=out, workers=workers, max_side=64), captioner
        )
        shards[workers] = sorted(out.glob("*.tar"))[0].read_bytes()
    assert shards[1] == shards[2]
    assert f'"captioner": "{captioner.name}' in shards[2].decode(errors="replace")


def test_pipeline_import_stays_light() -> None:
    code = "import sys, bl_data.captioner, bl_data.pipeline; print('torch' in sys.modules, 'transformers' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["False", "False"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A man rides a bike. He is fast.", "A man rides a bike."),
        ("  The image shows a red\n car parked outside!  Then more", "a red car parked outside!"),
        ("this photo depicts two dogs", "two dogs"),
        ("The scene is dark and rainy. Nothing else.", "The scene is dark and rainy."),
        ("3.5 inch floppy disk on a desk", "3.5 inch floppy disk on a desk"),
        ("", ""),
    ],
)
def test_first_sentence(text: str, expected: str) -> None:
    assert first_sentence(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Dog, cat, Park, dog, running.", ["dog", "cat", "park", "running"]),
        (
            "Tags: beach, sunset\n- ocean\n2. palm tree\nand sand",
            ["beach", "sunset", "ocean", "palm tree", "sand"],
        ),
        ("a red car; 42, #city, <s>, über, x1, very long tag phrase here", ["red car", "city", "über"]),
        (", ".join(f"tag{i}" for i in range(12)), []),
        (", ".join("abcdefghijkl"), list("abcdefghij")),
        ("", []),
    ],
)
def test_parse_tags(text: str, expected: list[str]) -> None:
    assert parse_tags(text) == expected
