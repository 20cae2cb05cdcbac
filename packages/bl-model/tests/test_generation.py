"""`generate` is transformers' `GenerationMixin.generate`: media consumed at prefill and carried by the KV cache,
prompt + new tokens returned, the same tokens as the model's earlier generate (embed the media, then the LLM's
generate on the embeddings), generation_config saved beside the weights, streamers, cache continuation."""

import copy
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, GenerationConfig, TextIteratorStreamer

import bl_model
from bl_model import BehaviorLlavaForCausalLM, MediaBatch

from .test_modeling import batch_with_media, make_model, manual_greedy

NEW = 5


@pytest.fixture(scope="module")
def model():
    return make_model()


@pytest.fixture(scope="module")
def prompts(model):
    """Two prompts with media, the second left-padded by 3 tokens."""
    ids, _, media = batch_with_media(model.config)
    mask = torch.ones_like(ids)  # (B, L)
    mask[1, :3] = 0
    ids[1, :3] = model.config.text_config.pad_token_id
    return {"input_ids": ids, "attention_mask": mask, **vars(media)}


def earlier_generate(
    model,
    input_ids,
    attention_mask,
    pixel_values,
    media_frame_counts,
    media_is_video,
    query_input_ids,
    query_attention_mask,
    query_media_index,
    **options,
):
    """The model's generate before GenerationMixin: media embedded once, then the LLM's own generate on the
    embeddings (which returns only the new tokens)."""
    media = MediaBatch(
        pixel_values,
        media_frame_counts,
        media_is_video,
        query_input_ids,
        query_attention_mask,
        query_media_index,
    )
    embeds = model.embed_inputs(input_ids, media)  # (B, L, H)
    return model.language_model.generate(
        inputs_embeds=embeds, attention_mask=attention_mask, use_cache=True, **options
    )


@pytest.mark.parametrize(
    "options",
    [
        {"do_sample": False},
        {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 50},
        {"do_sample": False, "num_beams": 3},
        {"do_sample": False, "num_beams": 2, "num_return_sequences": 2},
    ],
    ids=["greedy", "sampling", "beam", "beam-2-sequences"],
)
def test_same_tokens_as_the_earlier_generate(model, prompts, options):
    options = {"max_new_tokens": NEW, "eos_token_id": None, "pad_token_id": 0, **options}
    torch.manual_seed(3)
    want = earlier_generate(model, **prompts, **options)  # (B * n, NEW)
    torch.manual_seed(3)
    got = model.generate(**prompts, **options)  # (B * n, L + NEW)
    width = prompts["input_ids"].shape[1]
    assert got.shape == (want.shape[0], width + NEW)
    copies = want.shape[0] // prompts["input_ids"].shape[0]
    assert torch.equal(got[:, :width], prompts["input_ids"].repeat_interleave(copies, 0))
    assert torch.equal(got[:, width:], want)


class ForwardLog:
    """Records, per `forward` call, the length of input_ids and whether media came with it."""

    def __init__(self, model):
        self.calls: list[tuple[int, bool]] = []
        self.handle = model.register_forward_pre_hook(self.record, with_kwargs=True)

    def record(self, module, args, kwargs):
        self.calls.append((kwargs["input_ids"].shape[1], kwargs.get("pixel_values") is not None))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.mark.parametrize("use_cache", [True, False])
def test_media_go_to_prefill_and_the_cache_carries_them_unless_use_cache_is_false(model, prompts, use_cache):
    ids, media = prompts["input_ids"], {k: v for k, v in prompts.items() if k != "input_ids"}
    with ForwardLog(model) as log:
        out = model.generate(
            ids,
            **media,
            max_new_tokens=NEW,
            eos_token_id=None,
            pad_token_id=0,
            use_cache=use_cache,
            return_dict_in_generate=True,
        )
    width = ids.shape[1]
    if use_cache:
        assert log.calls == [(width, True)] + [(1, False)] * (NEW - 1)
        assert out.past_key_values.get_seq_length() == width + NEW - 1
    else:
        assert log.calls == [(width + i, True) for i in range(NEW)]  # the whole sequence, media included
        assert out.past_key_values is None
    with torch.no_grad():
        reference = manual_greedy(model, ids[:1], _row_media(prompts, 0), NEW)
    assert torch.equal(out.sequences[:1, width:], reference)


def _row_media(prompts, row):
    """`batch_with_media` asks about the video twice in row 0 (prompts 0, 1) and the image in row 1 (prompt 2)."""
    media = MediaBatch.pop_from(dict(prompts))
    keep = [0, 1] if row == 0 else [2]
    return replace(
        media,
        query_input_ids=media.query_input_ids[keep],
        query_attention_mask=media.query_attention_mask[keep],
        query_media_index=media.query_media_index[keep],
    )


def test_generation_config_is_saved_beside_the_weights_and_gives_the_defaults(model, prompts, tmp_path):
    assert model.can_generate()
    assert (model.generation_config.bos_token_id, model.generation_config.eos_token_id) == (1, 2)
    saved = make_model()
    saved.generation_config = GenerationConfig.from_model_config(saved.config)
    saved.generation_config.update(max_new_tokens=3, eos_token_id=None)
    saved.save_pretrained(tmp_path)
    assert GenerationConfig.from_pretrained(tmp_path).max_new_tokens == 3
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.generation_config.max_new_tokens == 3
    out = loaded.generate(**prompts, pad_token_id=0)  # (B, L + 3): the saved default
    assert torch.equal(out, model.generate(**prompts, pad_token_id=0, max_new_tokens=3, eos_token_id=None))


def test_streamer_gets_the_prompt_then_each_new_token(model, prompts, llama_tokenizer):
    row = {k: v[:1] for k, v in prompts.items() if k in ("input_ids", "attention_mask")}
    media = vars(_row_media(prompts, 0))
    streamer = TextIteratorStreamer(llama_tokenizer, skip_prompt=True)
    out = model.generate(**row, **media, max_new_tokens=NEW, eos_token_id=None, streamer=streamer)
    streamed = "".join(streamer)  # generate has finished: the queue holds every chunk and the end marker
    width = row["input_ids"].shape[1]
    assert streamed == llama_tokenizer.decode(out[0, width:])


def test_continuing_from_the_cache_needs_neither_the_media_nor_a_new_prefill(model, prompts):
    options = {"eos_token_id": None, "pad_token_id": 0}
    whole = model.generate(**prompts, max_new_tokens=2 * NEW, **options)  # (B, L + 2 NEW)
    first = model.generate(**prompts, max_new_tokens=NEW, return_dict_in_generate=True, **options)
    text = {
        "input_ids": first.sequences,
        "attention_mask": F.pad(prompts["attention_mask"], (0, NEW), value=1),
    }
    media = {k: v for k, v in prompts.items() if k not in text}
    for with_media in (False, True):  # media given again are not re-encoded: their placeholders are cached
        cache = copy.deepcopy(first.past_key_values)
        with ForwardLog(model) as log:
            more = model.generate(
                **text, **(media if with_media else {}), past_key_values=cache, max_new_tokens=NEW, **options
            )
        assert torch.equal(more, whole)
        assert log.calls[0] == (1, False)  # only the uncached last token is computed


def test_assisted_decoding_gives_the_greedy_tokens(model, prompts):
    options = {"max_new_tokens": NEW, "eos_token_id": None, "pad_token_id": 0}
    row = {k: v[:1] for k, v in prompts.items() if k in ("input_ids", "attention_mask")} | vars(
        _row_media(prompts, 0)
    )  # assisted decoding takes one prompt at a time
    config = bl_model.tiny()
    config.text_config.num_hidden_layers = (
        1  # a smaller draft model (its own random weights), same vocabulary
    )
    assistant = BehaviorLlavaForCausalLM(config).eval()
    assert torch.equal(
        model.generate(**row, assistant_model=assistant, **options), model.generate(**row, **options)
    )
