"""The tiny LLaMA-VID model: media tokens against an ancestor-style computation, LM behaviour, round trips."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM

import bl_model
from bl_model import BehaviorLlavaForCausalLM, MediaBatch

MEDIA_ID = 32000


def make_model(**overrides) -> BehaviorLlavaForCausalLM:
    torch.manual_seed(0)
    return BehaviorLlavaForCausalLM(bl_model.tiny(**overrides)).eval()


def make_media(cfg, seed=0) -> tuple[MediaBatch, int]:
    """A 3-frame video asked with two prompts, then a still image with a third prompt."""
    g = torch.Generator().manual_seed(seed)
    media = MediaBatch(
        pixel_values=torch.randn(4, 3, 224, 224, generator=g),
        media_frame_counts=torch.tensor([3, 1]),
        media_is_video=torch.tensor([True, False]),
        query_input_ids=torch.randint(1000, 2000, (3, 6), generator=g),
        query_attention_mask=torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 5 + [0]]),
        query_media_index=torch.tensor([0, 0, 1]),
    )
    slots = 2 * cfg.media_tokens(3, True) + cfg.media_tokens(1, False)
    return media, slots


def batch_with_media(cfg, seed=0):
    media, slots = make_media(cfg, seed)
    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(3, 32000, (2, 30), generator=g)
    ids[0, 2 : 2 + 2 * cfg.media_tokens(3, True)] = MEDIA_ID  # two placeholders of the video, back to back
    ids[1, 4 : 4 + cfg.media_tokens(1, False)] = MEDIA_ID
    assert int((ids == MEDIA_ID).sum()) == slots
    labels = ids.masked_fill(ids == MEDIA_ID, -100)
    return ids, labels, media


def ancestor_media_tokens(model, media: MediaBatch) -> torch.Tensor:
    """LLaMA-VID's `vlm_attention` + `token_generation`, one (prompt, frame) at a time, K projected per token."""
    cfg = model.config
    feats = model.vision_tower(media.pixel_values)  # (S, 1+N, C)
    starts = [0, *media.media_frame_counts.cumsum(0).tolist()]
    out = []
    for qi, m in enumerate(media.query_media_index.tolist()):
        ids = media.query_input_ids[qi : qi + 1]
        mask = media.query_attention_mask[qi : qi + 1]
        for t in range(starts[m], starts[m + 1]):
            frame = feats[t : t + 1]  # (1, 1+N, C)
            hidden = model.qformer(
                input_ids=ids,
                attention_mask=torch.cat([torch.ones(1, cfg.num_query, dtype=mask.dtype), mask], 1),
                query_embeds=model.query_tokens,
                encoder_hidden_states=model.qformer_ln(frame),
            ).last_hidden_state[:, : cfg.num_query]
            text_q = model.query_projector(hidden)[0]  # (M, C)
            vis = frame[0, 1:]  # (N, C)
            keys = model.key_projector(vis)  # (N, C)
            attn = torch.softmax(text_q @ keys.T / math.sqrt(vis.shape[-1]), dim=-1)  # (M, N)
            ctx = model.val_projector((attn @ vis).mean(0, keepdim=True))  # (1, H)
            mode = cfg.video_compress if media.media_is_video[m] else cfg.image_compress
            if mode == "mean":
                content = vis.mean(0, keepdim=True)
            else:  # grid:k, LLaMA-VID's avg_pool2d over the patch grid
                k, side = int(mode.split(":")[1]), int(vis.shape[0] ** 0.5)
                grid = vis.T.reshape(1, -1, side, side)
                content = torch.nn.functional.avg_pool2d(grid, side // k).flatten(2)[0].T
            out += [ctx, model.mm_projector(content)]
    return torch.cat(out)


@pytest.mark.parametrize("image_compress", ["mean", "grid:2", "grid:6"])
def test_media_tokens_match_ancestor_computation(image_compress):
    """grid:6 on the 16 x 16 patch grid: stride 16 // 6 = 2, so 8 x 8 content tokens, as LLaMA-VID pools."""
    model = make_model(image_compress=image_compress)
    media, slots = make_media(model.config)
    with torch.no_grad():
        ours = model.encode_media(media)
        ref = ancestor_media_tokens(model, media)
    assert ours.shape == (slots, model.config.text_config.hidden_size)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def test_text_only_equals_llama():
    model = make_model()
    llama = LlamaForCausalLM(model.config.text_config).eval()
    llama.load_state_dict(model.language_model.state_dict())
    ids = torch.randint(0, 32000, (2, 17))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, llama(input_ids=ids).logits, rtol=0, atol=0)


def test_trainable_parameters_get_gradients_and_frozen_ones_none():
    model = make_model().train()
    ids, labels, media = batch_with_media(model.config)
    out = model(input_ids=ids, labels=labels, **vars(media))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("language_model.", "mm_projector.")) for n in trainable)
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_unfrozen_model_trains_everything_the_maths_uses():
    model = make_model(
        freeze_vision_tower=False, freeze_qformer=False, freeze_attention_projectors=False
    ).train()
    ids, labels, media = batch_with_media(model.config)
    model(input_ids=ids, labels=labels, **vars(media)).loss.backward()
    no_grad = {n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()}
    # Only the query outputs of the Q-Former are read, so the last layer's text-token FFN is unused (as in LLaMA-VID).
    last = model.config.qformer_config.num_hidden_layers - 1
    assert no_grad == {
        f"qformer.encoder.layer.{last}.{name}"
        for name in (
            "intermediate.dense.weight",
            "intermediate.dense.bias",
            "output.dense.weight",
            "output.dense.bias",
            "output.LayerNorm.weight",
            "output.LayerNorm.bias",
        )
    }


def test_placeholder_count_is_checked():
    model = make_model()
    ids, _, media = batch_with_media(model.config)
    ids[1, 0] = MEDIA_ID
    with pytest.raises(ValueError, match="placeholder tokens but the media give"):
        model(input_ids=ids, **vars(media))
    with pytest.raises(ValueError, match="no media were given"):
        model(input_ids=ids)


def manual_greedy(model, ids, media, steps):
    """Greedy decoding by re-running the full sequence each step (no KV cache)."""
    embeds = model.embed_inputs(ids, media)
    new = []
    for _ in range(steps):
        logits = model.language_model(inputs_embeds=embeds).logits[:, -1]
        token = logits.argmax(-1)  # (B,)
        new.append(token)
        embeds = torch.cat([embeds, model.get_input_embeddings()(token)[:, None]], dim=1)
    return torch.stack(new, dim=1)


def test_greedy_generation_is_deterministic_and_matches_uncached_decoding():
    model = make_model()
    ids, _, media = batch_with_media(model.config)
    kwargs = {k: v for k, v in vars(media).items()}
    first = model.generate(ids, **kwargs, max_new_tokens=6, eos_token_id=None)
    second = model.generate(ids, **kwargs, max_new_tokens=6, eos_token_id=None)
    assert torch.equal(first, second)
    # transformers' convention: the prompt, then the new tokens
    assert torch.equal(first[:, : ids.shape[1]], ids)
    with torch.no_grad():
        assert torch.equal(first[:, ids.shape[1] :], manual_greedy(model, ids, media, 6))


def test_save_load_round_trip_is_bit_identical(tmp_path):
    model = make_model(image_compress="grid:2")
    ids, _, media = batch_with_media(model.config)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is BehaviorLlavaForCausalLM and loaded.config.image_compress == "grid:2"
    with torch.no_grad():
        assert torch.equal(
            model(input_ids=ids, **vars(media)).logits, loaded(input_ids=ids, **vars(media)).logits
        )
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == {
        n for n, p in model.named_parameters() if p.requires_grad
    }


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    model = make_model(freeze_vision_tower=False).train()
    ids, labels, media = batch_with_media(model.config)
    grads = []
    for checkpointing in (False, True):
        model.zero_grad()
        if checkpointing:
            model.gradient_checkpointing_enable()
        loss = model(input_ids=ids, labels=labels, **vars(media)).loss
        loss.backward()
        grads.append((loss.detach(), model.vision_tower.eva.blocks[0].mlp.fc1.weight.grad.clone()))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


def test_label_nll_is_the_mean_loss_times_the_labelled_tokens():
    model = make_model()
    ids, labels, media = batch_with_media(model.config)
    with torch.no_grad():
        loss = model(input_ids=ids, labels=labels, **vars(media)).loss
    total, count = model.label_nll(input_ids=ids, labels=labels, **vars(media))
    assert count == int((labels[:, 1:] != -100).sum())
    torch.testing.assert_close(torch.tensor(total / count), loss, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("k", "tokens"), [(3, 9), (6, 64)])
def test_grid_token_count_floors_the_stride(k, tokens):
    """A 16 x 16 patch grid pooled with kernel = stride = 16 // k gives (16 // (16 // k))**2 tokens."""
    from bl_model.configuration import CompressMode

    assert CompressMode.parse(f"grid:{k}").num_tokens(256) == tokens
    model = make_model(image_compress=f"grid:{k}")
    media = MediaBatch(
        pixel_values=torch.randn(1, 3, 224, 224),
        media_frame_counts=torch.tensor([1]),
        media_is_video=torch.tensor([False]),
        query_input_ids=torch.randint(1000, 2000, (1, 4)),
        query_attention_mask=torch.ones(1, 4, dtype=torch.long),
        query_media_index=torch.tensor([0]),
    )
    with torch.no_grad():
        assert model.encode_media(media).shape[0] == model.config.media_tokens(1, False) == 1 + tokens


def test_grid_wider_than_the_patch_grid_is_an_error():
    from bl_model.configuration import CompressMode

    with pytest.raises(ValueError, match="at least 17 wide"):
        CompressMode.parse("grid:17").num_tokens(256)
