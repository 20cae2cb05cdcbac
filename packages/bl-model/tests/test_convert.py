"""LLaMA-VID checkpoint import: a tiny model exported to the released key layout and read back."""

import json
import re

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

import bl_model
from bl_model import BehaviorLlavaForCausalLM
from bl_model.convert import CheckpointKeyError, convert, main


def to_llamavid_key(key: str) -> str | None:
    """Our key -> LLaMA-VID's, written from the released code's module names (None: vision tower)."""
    if key.startswith("vision_tower."):
        return None
    if key == "query_tokens":
        return "model.vlm_att_query"
    if key.startswith("qformer."):
        key = key.replace("qformer.", "model.vlm_att_encoder.bert.", 1)
        key = key.replace("embeddings.layernorm", "embeddings.LayerNorm")
        return re.sub(r"\.(attention|crossattention)\.attention\.", r".\1.self.", key)
    singles = {
        "qformer_ln.": "model.vlm_att_ln.",
        "query_projector.": "model.vlm_att_projector.",
        "key_projector.": "model.vlm_att_key_projector.",
        "val_projector.": "model.vlm_att_val_projector.",
        "mm_projector.": "model.mm_projector.",
        "language_model.model.": "model.",
        "language_model.lm_head.": "lm_head.",
    }
    for ours, theirs in singles.items():
        if key.startswith(ours):
            return theirs + key[len(ours) :]
    raise AssertionError(f"unmapped key {key}")


@pytest.fixture
def released_checkpoint(tmp_path):
    """(model, llamavid_dir, eva_path, config_path) in the released layouts: 2 HF shards, a 1-block-deeper EVA .pth."""
    torch.manual_seed(0)
    cfg = bl_model.tiny(image_compress="grid:2")
    model = BehaviorLlavaForCausalLM(cfg).eval()
    for p in model.parameters():  # no zero-initialised tensor may hide a mapping error
        torch.nn.init.normal_(p, std=0.05)
    theirs = {to_llamavid_key(k): v.clone() for k, v in model.state_dict().items() if to_llamavid_key(k)}
    theirs["model.vlm_att_encoder.bert.embeddings.position_ids"] = torch.arange(512)[None]
    names = sorted(theirs)
    ckpt = tmp_path / "llama-vid"
    ckpt.mkdir()
    save_file({k: theirs[k] for k in names[::2]}, ckpt / "model-00001-of-00002.safetensors")
    save_file({k: theirs[k] for k in names[1::2]}, ckpt / "model-00002-of-00002.safetensors")
    (ckpt / "config.json").write_text(
        json.dumps({"model_type": "llava", "compress_type": "mean", "num_query": 4})
    )
    eva = {
        k.removeprefix("vision_tower.eva."): v.clone()
        for k, v in model.state_dict().items()
        if k.startswith("vision_tower.")
    }
    depth = cfg.vision_config.num_hidden_layers
    eva |= {
        k.replace("blocks.0.", f"blocks.{depth}.", 1): torch.randn_like(v)
        for k, v in eva.items()
        if k.startswith("blocks.0.")
    }
    torch.save(eva, tmp_path / "eva_vit_g.pth")
    config_path = tmp_path / "config.json"
    cfg.to_json_file(config_path)
    return model, ckpt, tmp_path / "eva_vit_g.pth", config_path


def test_round_trip_gives_identical_logits(released_checkpoint, tmp_path, capsys):
    model, ckpt, eva, config_path = released_checkpoint
    main(
        [
            "--llamavid",
            str(ckpt),
            "--eva",
            str(eva),
            "--out",
            str(tmp_path / "out"),
            "--config",
            str(config_path),
        ]
    )
    assert "dropped" in capsys.readouterr().out
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    ids = torch.randint(0, 32000, (1, 12))
    ids[0, 3:8] = 32000  # one image with grid:2 -> 1 + 4 tokens
    media = dict(
        pixel_values=torch.randn(1, 3, 224, 224),
        media_frame_counts=torch.tensor([1]),
        media_is_video=torch.tensor([False]),
        query_input_ids=torch.randint(1000, 2000, (1, 5)),
        query_attention_mask=torch.ones(1, 5, dtype=torch.long),
        query_media_index=torch.tensor([0]),
    )
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids, **media).logits, loaded(input_ids=ids, **media).logits)


def test_processor_is_written_beside_the_weights(
    released_checkpoint, tmp_path, llama_tokenizer_dir, bert_vocab_path
):
    import shutil

    from bl_model import BehaviorLlavaProcessor, Media

    _, ckpt, eva, config_path = released_checkpoint
    for f in llama_tokenizer_dir.iterdir():  # a checkpoint directory ships its LLaMA tokenizer
        shutil.copy(f, ckpt / f.name)
    out = tmp_path / "out"
    main(
        [
            "--llamavid",
            str(ckpt),
            "--eva",
            str(eva),
            "--out",
            str(out),
            "--config",
            str(config_path),
            "--bert-vocab",
            str(bert_vocab_path),
        ]
    )
    model = AutoModelForCausalLM.from_pretrained(out)
    processor = BehaviorLlavaProcessor.from_pretrained(out)
    processor.check_config(model.config)
    sample = {
        "id": "s",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat is it?"},
            {"from": "gpt", "value": "A cat."},
        ],
    }
    inputs = processor(sample, [Media(torch.zeros(8, 8, 3, dtype=torch.uint8).numpy(), is_video=False)])
    assert int((inputs["input_ids"] == model.config.media_token_id).sum()) == model.config.media_tokens(
        1, False
    )
    assert processor.qformer_tokenizer.bos_token == "[DEC]" and len(processor.qformer_tokenizer) == 30523
    with torch.no_grad():
        batch = processor.collate([inputs])
        assert torch.isfinite(model(**batch).loss)


def test_missing_and_unknown_keys_are_listed(released_checkpoint, tmp_path):
    model, ckpt, eva, _ = released_checkpoint
    shard = ckpt / "model-00001-of-00002.safetensors"
    from safetensors.torch import load_file

    tensors = load_file(shard)
    dropped = sorted(tensors)[0]
    del tensors[dropped]
    tensors["model.vlm_att_mystery.weight"] = torch.zeros(2)
    save_file(tensors, shard)
    with pytest.raises(CheckpointKeyError) as err:
        convert(ckpt, eva, tmp_path / "out", model.config)
    message = str(err.value)
    assert "unknown: model.vlm_att_mystery.weight" in message
    assert "1 missing, 1 unknown" in message and "missing: " in message


def test_vision_weights_are_required(released_checkpoint, tmp_path):
    model, ckpt, _, _ = released_checkpoint
    with pytest.raises(CheckpointKeyError, match=r"missing: vision_tower\.eva\.cls_token"):
        convert(ckpt, None, tmp_path / "out", model.config)


@pytest.mark.parametrize("legacy", [True, False])
def test_processor_tokenizer_equals_llama_tokenizer(
    released_checkpoint, tmp_path, llama_spm_model, bert_vocab_path, legacy
):
    """A released directory (`model_type: "llava"`, tokenizer.model + tokenizer_config.json): the written
    processor tokenizes like `LlamaTokenizer` on those files, `legacy` kept through save and load."""
    import shutil

    from transformers import LlamaTokenizer

    from bl_model import BehaviorLlavaProcessor
    from bl_model.convert import save_processor

    model, ckpt, _, _ = released_checkpoint
    shutil.copyfile(llama_spm_model, ckpt / "tokenizer.model")
    settings = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "legacy": legacy}
    (ckpt / "tokenizer_config.json").write_text(json.dumps(settings))
    target = save_processor(ckpt, bert_vocab_path, tmp_path / "out", model.config)
    processor = BehaviorLlavaProcessor.from_pretrained(target)
    reference = LlamaTokenizer.from_pretrained(ckpt)
    assert (
        reference.legacy is legacy
        and processor.tokenizer.legacy is legacy
        and processor.preprocess == "llamavid"
    )
    for text in ["A cat.", "USER: hi ASSISTANT: A cat.</s>USER: and now?", "x\n\ny  z"]:
        assert processor.tokenizer(text)["input_ids"] == reference(text)["input_ids"]
    pieces = processor.tokenizer.convert_ids_to_tokens(processor.tokenizer("A cat.</s>USER")["input_ids"])
    assert pieces == ["<s>", "▁A", "▁cat", ".", "</s>", *(["▁US", "ER"] if legacy else ["USER"])]


def test_head_dim_is_derived_without_config(released_checkpoint, tmp_path, monkeypatch):
    """No --config: the LLM shape comes from config.json, with head_dim = hidden / heads (16 here), not the
    13B base's 128; a stated head_dim wins."""
    import bl_model.convert as convert_module

    model, ckpt, eva, _ = released_checkpoint
    text = model.config.text_config
    assert text.head_dim == 16
    base = bl_model.tiny(image_compress="grid:2")
    base.text_config = type(text)(
        **(
            text.to_dict()
            | {"hidden_size": 5120, "num_attention_heads": 40, "num_key_value_heads": 40, "head_dim": 128}
        )
    )
    monkeypatch.setattr(convert_module, "llama_vid_13b", lambda: base)
    stated = {
        k: getattr(text, k)
        for k in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
        )
    }
    config_json = {"model_type": "llava", "compress_type": "grid:2", **stated}
    (ckpt / "config.json").write_text(json.dumps(config_json))
    main(["--llamavid", str(ckpt), "--eva", str(eva), "--out", str(tmp_path / "out")])
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert loaded.config.text_config.head_dim == 16
    ids = torch.randint(0, 32000, (1, 9))
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, loaded(input_ids=ids).logits)
    (ckpt / "config.json").write_text(json.dumps(config_json | {"head_dim": 8}))
    with pytest.raises(RuntimeError, match="size mismatch"):  # a stated head size is used as stated
        convert(ckpt, eva, tmp_path / "out8")
