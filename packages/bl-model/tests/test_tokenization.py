"""`tokenization`: ids and offsets as transformers 4.31's slow LlamaTokenizer, against raw SentencePiece."""

from __future__ import annotations

import re
import shutil

import pytest
from transformers import LlamaTokenizer

from bl_model.tokenization import add_media_token, encode_text, split_at_added_tokens, tokenize_with_media

from .test_llamavid_tokens import SlowLlama

TEXTS = [
    "Hello world",
    " ASSISTANT: yes",  # leading space: SentencePiece keeps its prefix run
    "this  please",  # a run of spaces merges last
    "A man.</s>USER: Why?",  # after </s>: legacy keeps "▁US", non-legacy drops the "▁"
    "</s> spaced</s>",
    "  1 and\ttabs\nnew line",
]


@pytest.fixture(scope="module")
def llama(llama_spm_model, tmp_path_factory) -> dict[bool, LlamaTokenizer]:
    """legacy -> transformers 5's LLaMA tokenizer on the SentencePiece model, `<im_start>` 32000, `<media>` 32001."""
    spm_dir = tmp_path_factory.mktemp("spm")
    shutil.copyfile(llama_spm_model, spm_dir / "tokenizer.model")
    tokenizers = {}
    for legacy in (True, False):
        tokenizer = LlamaTokenizer.from_pretrained(spm_dir, legacy=legacy, add_bos_token=True)
        tokenizer.add_tokens(["<im_start>"], special_tokens=True)
        add_media_token(tokenizer, 32001)
        tokenizers[legacy] = tokenizer
    return tokenizers


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "non-legacy"])
def test_encode_text_is_sentencepiece_split_at_eos(llama, llama_spm_model, legacy):
    slow = SlowLlama(llama_spm_model, legacy)
    for text in TEXTS:
        assert encode_text(llama[legacy], text, specials=False)[0] == slow.encode(text), text
        assert encode_text(llama[legacy], text, specials=True)[0] == [1, *slow.encode(text)], text


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "non-legacy"])
def test_prompt_with_media_hand_checked(llama, legacy):
    """Each piece between placeholders is a text of its own (" there" -> "▁", "▁there"); bos only before the
    first; after </s> non-legacy drops the "▁" of "▁US"; "  1" -> "▁▁", "1" (no "▁1" merge)."""
    tokenizer = llama[legacy]
    text = "Hi<media> there\n</s>USER:  1"
    ids, offsets = tokenize_with_media(tokenizer, text, media_token_id=32001)
    us = "▁US" if legacy else "US"
    expected = ["<s>", "▁Hi", "<media>", "▁", "▁there", "<0x0A>", "</s>", us, "ER", ":", "▁▁", "1"]
    assert tokenizer.convert_ids_to_tokens(ids.tolist()) == expected
    assert offsets.shape == (len(expected), 2)
    assert [text[a:b] for a, b in offsets.tolist()] == [
        "",
        "Hi",
        "<media>",
        " ",
        " there",
        "\n",
        "</s>",
        "US",
        "ER",
        ":",
        " ",
        "1",
    ]


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "non-legacy"])
def test_offsets_cover_each_tokens_text(llama, legacy):
    """Labels come from offsets: every token's span is the text its piece writes (less a "▁" prefix)."""
    tokenizer = llama[legacy]
    for text in [*TEXTS, "USER: <media>\nWhat?  ok <media> end</s>"]:
        ids, offsets = tokenize_with_media(tokenizer, text, media_token_id=32001)
        assert (offsets[1:, 0] >= offsets[:-1, 0]).all() and (offsets[:, 1] <= len(text)).all()
        for piece, (a, b) in zip(
            tokenizer.convert_ids_to_tokens(ids.tolist()), offsets.tolist(), strict=True
        ):
            written = text[a:b]
            if byte := re.fullmatch(r"<0x([0-9A-F]{2})>", piece):
                assert written == chr(int(byte.group(1), 16)), (text, piece, written)
            elif set(piece) == {"▁"}:  # may be SentencePiece's prefix alone, spanning the whitespace after it
                assert written.isspace(), (text, piece, written)
            elif piece != "<s>":
                assert piece.endswith(written.replace(" ", "▁")) and written, (text, piece, written)


def test_split_at_added_tokens_strips_beside_unnamed_tokens_only(llama):
    """As 4.31: the whitespace beside eos ("</s>", an AddedToken without strip) is kept; beside any other added
    token ("<im_start>") it is stripped on both sides."""
    text = "a </s> b <im_start> c"
    assert split_at_added_tokens(llama[True], text) == [
        (0, 2, None),  # "a "
        (2, 6, 2),  # "</s>"
        (6, 8, None),  # " b" (the space before <im_start> stripped)
        (9, 19, 32000),  # "<im_start>"
        (20, 21, None),  # "c" (the space after it stripped)
    ]


def test_add_media_token_checks_the_id(llama):
    with pytest.raises(ValueError, match="gives <media> id 32001 but media_token_id is 32000"):
        add_media_token(llama[True], 32000)
