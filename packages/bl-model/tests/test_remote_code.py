"""HF-native checkpoints: a saved model loads through transformers' Auto classes, with bl-model (registered
classes) and without it (the source saved beside the weights, `trust_remote_code=True`), and computes the same."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoProcessor
from transformers.dynamic_module_utils import get_class_from_dynamic_module
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

import bl_model
from bl_model import (
    BehaviorLlavaConfig,
    BehaviorLlavaForCausalLM,
    BehaviorLlavaImageProcessor,
    BehaviorLlavaProcessor,
    Media,
)
from bl_model.conversation import get_template
from bl_model.remote_code import code_closure

from .test_modeling import batch_with_media, make_model


@pytest.fixture(autouse=True)
def _auto_registries_restored(monkeypatch):
    """Remote code imported in this process re-registers its own classes with the Auto classes; each test's
    registrations are undone after it, so later modules (transformers' ConfigTester, the converter) see bl_model's."""
    for mapping in (CONFIG_MAPPING, MODEL_FOR_CAUSAL_LM_MAPPING, PROCESSOR_MAPPING, IMAGE_PROCESSOR_MAPPING):
        monkeypatch.setattr(mapping, "_extra_content", dict(mapping._extra_content))


ROOT = Path(__file__).parents[3]  # the workspace (its uv.lock)

# Runs with bl_model off sys.path: loads model + processor as remote code; writes logits and tokens on the given
# inputs, and the processor's encoding of a prompt (its text from the chat template) with the tokens generated from it.
_WITHOUT_BL_MODEL = textwrap.dedent(
    """
    import importlib.util, sys
    import numpy as np, torch
    from transformers import AutoModelForCausalLM, AutoProcessor
    for name in ("bl_model", "torchvision"):
        assert importlib.util.find_spec(name) is None, f"{name} must not be importable here"
    ckpt, inputs_path, frames_path, out_path = sys.argv[1:]
    model = AutoModelForCausalLM.from_pretrained(ckpt, trust_remote_code=True).eval()
    inputs = torch.load(inputs_path)
    with torch.no_grad():
        logits = model(**inputs).logits
    tokens = model.generate(**inputs, max_new_tokens=6, eos_token_id=None)
    processor = AutoProcessor.from_pretrained(ckpt, trust_remote_code=True)
    Media = sys.modules[type(processor).__module__].Media
    conversation = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    encoded = processor.prompt_for_generation("<video>\\nWhat happens?", [Media(np.load(frames_path), True)])
    answer = model.generate(**processor.collate([encoded]), max_new_tokens=6, eos_token_id=None)
    torch.save({"logits": logits, "tokens": tokens, "class": type(model).__module__, "prompt": prompt,
                "encoded": encoded, "answer": answer, "processor": type(processor).__module__,
                "image_processor": type(processor.image_processor).__module__}, out_path)
    """
)


def test_saved_checkpoint_carries_auto_map_and_flat_source(tmp_path):
    model = make_model()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration.BehaviorLlavaConfig",
        "AutoModelForCausalLM": "modeling.BehaviorLlavaForCausalLM",
    }
    saved = {p.name for p in tmp_path.glob("*.py")}
    assert saved == {
        f"{name}.py" for name in code_closure(sys.modules[BehaviorLlavaForCausalLM.__module__].__file__)
    }
    assert {
        "modeling.py",
        "configuration.py",
        "eva_vit.py",
        "ops.py",
        "compress.py",
        "varlen_attention.py",
    } <= saved
    for path in tmp_path.glob("*.py"):  # flat: transformers' loader follows only `from .name import`
        source = path.read_text()
        assert "from bl_model" not in source and "import bl_model" not in source
        assert not any(line.lstrip().startswith("from ..") for line in source.splitlines()), path.name
        assert "from .ops.varlen_attention" not in source


def test_config_alone_saves_its_code_and_auto_map(tmp_path):
    bl_model.tiny().save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "configuration.BehaviorLlavaConfig"
    }
    assert (tmp_path / "configuration.py").is_file() and (tmp_path / "remote_code.py").is_file()


def test_auto_classes_load_without_trust_remote_code_once_bl_model_is_imported(tmp_path):
    model = make_model(image_compress="grid:2")
    ids, _, media = batch_with_media(model.config)
    model.save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is BehaviorLlavaConfig
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is BehaviorLlavaForCausalLM
    with torch.no_grad():
        assert torch.equal(
            model(input_ids=ids, **vars(media)).logits, loaded(input_ids=ids, **vars(media)).logits
        )


def saved_with_processor(ckpt, llama_tokenizer, bert_tokenizer):
    """A tiny model (grid:2 still images) and its processor saved to `ckpt`."""
    model = make_model(image_compress="grid:2")
    processor = BehaviorLlavaProcessor.from_config(
        llama_tokenizer, bert_tokenizer, model.config, max_frames=4
    )
    model.save_pretrained(ckpt)
    processor.save_pretrained(ckpt)
    return model, processor


def test_with_bl_model_auto_processor_gives_its_class_and_encodes_the_same(
    llama_tokenizer, bert_tokenizer, tmp_path
):
    model, processor = saved_with_processor(tmp_path, llama_tokenizer, bert_tokenizer)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["auto_map"] == {"AutoProcessor": "processing.BehaviorLlavaProcessor"}
    assert saved["image_processor"]["auto_map"] == {
        "AutoImageProcessor": "image_processing.BehaviorLlavaImageProcessor"
    }
    assert {"processing.py", "image_processing.py", "conversation.py"} <= {
        p.name for p in tmp_path.glob("*.py")
    }
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert (
        type(loaded) is BehaviorLlavaProcessor and type(loaded.image_processor) is BehaviorLlavaImageProcessor
    )
    loaded.check_config(model.config)
    media = [Media(np.random.default_rng(0).integers(0, 256, (3, 30, 40, 3), dtype=np.uint8), True)]
    expected = processor.prompt_for_generation("<video>\nWhat happens?", media)
    for key, value in loaded.prompt_for_generation("<video>\nWhat happens?", media).items():
        assert torch.equal(value, expected[key]), key


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory) -> str:
    """The Python of a new venv with only torch, transformers and Pillow (an image processor needs an image
    library), at the workspace lock's versions: no bl_model, no torchvision. uv installs it from its cache."""
    uv, venv = shutil.which("uv"), tmp_path_factory.mktemp("fresh-venv")
    assert uv is not None, "the tests run under uv (see the README)"
    constraints = venv / "constraints.txt"
    export = [
        uv,
        "export",
        "--locked",
        "--all-packages",
        "--no-emit-workspace",
        "--no-hashes",
        "-q",
        "--format",
        "requirements-txt",
        "-o",
        str(constraints),
    ]
    subprocess.run(export, check=True, cwd=ROOT)
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv / "env")], check=True)
    python = str(venv / "env" / "bin" / "python")
    install = [
        uv,
        "pip",
        "install",
        "-q",
        "--python",
        python,
        "--constraint",
        str(constraints),
        "torch",
        "transformers",
        "pillow",
    ]
    subprocess.run(install, check=True, env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"})
    return python


def test_without_bl_model_the_checkpoint_loads_as_remote_code_and_computes_the_same(
    llama_tokenizer, bert_tokenizer, tmp_path, fresh_python
):
    """A fresh venv with only torch + transformers (+ Pillow): the model and processor load with
    `trust_remote_code=True` and compute what the original objects do."""
    ckpt = tmp_path / "ckpt"
    model, processor = saved_with_processor(ckpt, llama_tokenizer, bert_tokenizer)
    ids, _, media = batch_with_media(model.config)
    inputs = {"input_ids": ids, **vars(media)}
    torch.save(inputs, tmp_path / "inputs.pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    tokens = model.generate(**inputs, max_new_tokens=6, eos_token_id=None)
    frames = np.random.default_rng(0).integers(0, 256, (3, 30, 40, 3), dtype=np.uint8)
    np.save(tmp_path / "frames.npy", frames)
    encoded = processor.prompt_for_generation("<video>\nWhat happens?", [Media(frames, True)])
    answer = model.generate(**processor.collate([encoded]), max_new_tokens=6, eos_token_id=None)

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "out.pt"
    args = [str(ckpt), str(tmp_path / "inputs.pt"), str(tmp_path / "frames.npy"), str(out)]
    subprocess.run([fresh_python, "-c", _WITHOUT_BL_MODEL, *args], check=True, cwd=tmp_path, env=env)
    remote = torch.load(out)
    assert all(
        remote[k].startswith("transformers_modules.") for k in ("class", "processor", "image_processor")
    )
    assert torch.equal(remote["logits"], logits)
    assert torch.equal(remote["tokens"], tokens)
    assert remote["encoded"].keys() == encoded.keys()
    for key, value in encoded.items():
        assert torch.equal(remote["encoded"][key], value), key
    assert torch.equal(remote["answer"], answer)
    assert remote["prompt"] == get_template("vicuna_v1").render(["<video>\nWhat happens?"]).text


def test_remote_copy_and_bl_model_each_build_their_own_vision_config(tmp_path, monkeypatch):
    """Both copies in one process: importing the remote configuration re-registers `bl_eva_vit` with AutoConfig;
    each copy's config still builds its vision sub-config from its own class."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    make_model().save_pretrained(tmp_path)
    remote_cls = get_class_from_dynamic_module("configuration.BehaviorLlavaConfig", tmp_path)
    assert remote_cls is not BehaviorLlavaConfig
    remote = remote_cls.from_pretrained(
        tmp_path
    )  # would fail its own type check if built by bl-model's class
    assert type(remote.vision_config).__module__ == remote_cls.__module__
    local = BehaviorLlavaConfig.from_pretrained(tmp_path)
    assert type(local.vision_config) is bl_model.EvaVisionConfig
