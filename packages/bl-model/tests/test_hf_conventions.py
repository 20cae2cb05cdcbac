"""Conventions code written for any transformers model relies on: loading info, resizable embeddings, the base
model, and media that are used or refused (never silently dropped)."""

import pytest
import torch
from transformers import LlamaForCausalLM

import bl_model
from bl_model import BehaviorLlavaForCausalLM

from .test_modeling import batch_with_media, make_model


def test_output_loading_info_gives_the_tuple_and_the_freeze_policy_still_applies(tmp_path):
    model = make_model()
    model.save_pretrained(tmp_path)
    loaded, info = BehaviorLlavaForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(loaded, BehaviorLlavaForCausalLM)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    trainable = {n for n, p in loaded.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("language_model.", "mm_projector.")) for n in trainable)


def test_resize_token_embeddings_resizes_input_output_and_config(tmp_path):
    """A user's token added after `<media>` (32000): id 32001, so 32002 rows."""
    model = make_model()
    old_in = model.get_input_embeddings().weight.detach().clone()  # (32000, H)
    old_out = model.get_output_embeddings().weight.detach().clone()  # (32000, H)
    ids = torch.randint(0, 32000, (2, 9))
    with torch.no_grad():
        before = model(input_ids=ids).logits  # (2, 9, 32000)

    model.resize_token_embeddings(32002)
    assert model.get_input_embeddings().weight.shape == (32002, old_in.shape[1])
    assert model.get_output_embeddings().weight.shape == (32002, old_out.shape[1])
    assert model.config.text_config.vocab_size == model.language_model.config.vocab_size == 32002
    torch.testing.assert_close(model.get_input_embeddings().weight[:32000], old_in, rtol=0, atol=0)
    torch.testing.assert_close(model.get_output_embeddings().weight[:32000], old_out, rtol=0, atol=0)
    assert model.get_output_embeddings().weight.requires_grad  # the freeze policy's choice is kept

    with_new = torch.cat([ids, torch.full((2, 1), 32001)], dim=1)  # the added token, in input and labels
    with torch.no_grad():
        out = model(input_ids=with_new, labels=with_new)
        torch.testing.assert_close(out.logits[:, :9, :32000], before, rtol=1e-5, atol=1e-5)
    assert out.logits.shape[-1] == 32002 and torch.isfinite(out.loss)

    model.save_pretrained(tmp_path)
    loaded = BehaviorLlavaForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.config.text_config.vocab_size == 32002
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=with_new).logits, out.logits)


def test_base_model_is_the_llm_and_an_llm_checkpoint_loads_into_it(tmp_path):
    """`base_model_prefix` names the LLM: a plain LLaMA checkpoint (e.g. Vicuna) loads into it by that prefix."""
    config = bl_model.tiny()
    torch.manual_seed(1)
    llama = LlamaForCausalLM(config.text_config).eval()
    llama.save_pretrained(tmp_path)
    model, info = BehaviorLlavaForCausalLM.from_pretrained(tmp_path, config=config, output_loading_info=True)
    assert model.base_model is model.language_model
    assert info["missing_keys"] and not any(k.startswith("language_model.") for k in info["missing_keys"])
    ids = torch.randint(0, 32000, (2, 9))
    with torch.no_grad():
        assert torch.equal(model.eval()(input_ids=ids).logits, llama(input_ids=ids).logits)


def test_inputs_embeds_with_media_is_refused_and_embedded_media_give_the_same_logits():
    model = make_model()
    ids, _, media = batch_with_media(model.config)
    with torch.no_grad():
        text_only = model.get_input_embeddings()(ids.masked_fill(ids == model.config.media_token_id, 0))
        with pytest.raises(ValueError, match=r"media \(pixel_values\) need input_ids"):
            model(inputs_embeds=text_only, **vars(media))
        embedded = model.embed_inputs(ids, media)  # (B, L, H)
        torch.testing.assert_close(
            model(inputs_embeds=embedded).logits, model(input_ids=ids, **vars(media)).logits, rtol=0, atol=0
        )


def test_an_llm_checkpoint_without_config_is_refused_not_read_as_the_7b_defaults(tmp_path):
    LlamaForCausalLM(bl_model.tiny().text_config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"config\.json is a 'llama' config, not 'behavior_llava'"):
        BehaviorLlavaForCausalLM.from_pretrained(tmp_path)
