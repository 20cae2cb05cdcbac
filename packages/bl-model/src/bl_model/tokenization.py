"""A prompt's LLaMA token ids and character offsets exactly as LLaMA-VID tokenized it (transformers 4.31's slow tokenizer).

LLaVA's `tokenizer_image_token` splits the prompt at each placeholder and tokenizes every piece as a text of its
own (so each piece gets SentencePiece's "▁" prefix whatever the tokenizer's `legacy` setting), the first with bos;
the placeholder ids join the pieces. Each piece is encoded as transformers 4.31's slow `LlamaTokenizer` (what
LLaMA-VID ran) encoded it, after `</s>` and other added tokens too (`encode_text`), on today's fast tokenizer.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from tokenizers import AddedToken, pre_tokenizers
from transformers import PreTrainedTokenizerBase

from .conversation import MEDIA_TOKEN

Encoded = tuple[list[int], list[tuple[int, int]]]  # token ids, their [start, end) character offsets


def add_media_token(tokenizer: PreTrainedTokenizerBase, media_token_id: int) -> None:
    """Add `<media>` to `tokenizer` as a special token (in place) if missing; ValueError unless its id is
    `media_token_id`. The LLM's embedding table is not resized: the model masks media ids before its lookup."""
    if MEDIA_TOKEN not in tokenizer.get_added_vocab():
        tokenizer.add_tokens([AddedToken(MEDIA_TOKEN, special=True, normalized=False)], special_tokens=True)
    media_id = tokenizer.convert_tokens_to_ids(MEDIA_TOKEN)
    if media_id != media_token_id:
        raise ValueError(
            f"the tokenizer gives {MEDIA_TOKEN} id {media_id} but media_token_id is {media_token_id}; "
            f"set the model config's media_token_id={media_id} or use a matching tokenizer"
        )


def tokenize_with_media(
    tokenizer: PreTrainedTokenizerBase, text: str, media_token_id: int
) -> tuple[torch.Tensor, np.ndarray]:
    """LLaVA's `tokenizer_image_token` on a prompt with `<media>` placeholders -> ids (L0,), offsets (L0, 2).

    The pieces between placeholders are tokenized separately (each a text of its own, `encode_text`), the
    first with the tokenizer's special tokens (bos), the rest without; the placeholder ids join them.
    Offsets are character spans in `text`.
    """
    ids: list[int] = []
    offsets: list[tuple[int, int]] = []
    start = 0
    for i, piece in enumerate(text.split(MEDIA_TOKEN)):
        if i:
            ids.append(media_token_id)
            offsets.append((start - len(MEDIA_TOKEN), start))
        piece_ids, piece_offsets = encode_text(tokenizer, piece, specials=i == 0)
        ids += piece_ids
        offsets += [(a + start, b + start) for a, b in piece_offsets]
        start += len(piece) + len(MEDIA_TOKEN)
    return torch.tensor(ids, dtype=torch.long), np.asarray(offsets, dtype=np.int64).reshape(-1, 2)


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str, specials: bool) -> Encoded:
    """Ids and offsets of one text as transformers 4.31's slow `LlamaTokenizer` (what LLaMA-VID ran) encodes it.

    The slow tokenizer splits the text at its added tokens (`</s>`, `<s>`, ...), strips the whitespace beside
    them (`split_at_added_tokens`) and encodes each part as a SentencePiece text of its own (`encode_piece`:
    with the "▁" prefix). With `legacy=False`
    (a Metaspace with prepend_scheme "first") a part after an added token that does not start with a space
    loses that prefix again: its first piece "▁x" becomes the piece "x" (the unknown token where "x" is no
    piece; nothing for a lone "▁"). A tokenizer without SentencePiece's prefix encodes the text itself.
    """
    if not has_sentencepiece_prefix(tokenizer):
        return encode_with_offsets(tokenizer, text, specials)
    ids, offsets = encode_with_offsets(tokenizer, "", True) if specials else ([], [])
    legacy = tokenizer.backend_tokenizer.pre_tokenizer.prepend_scheme == "always"
    text = text.replace("▁", " ")  # SentencePiece reads "▁" as a space (so does the slow tokenizer)
    for index, (start, end, token_id) in enumerate(split_at_added_tokens(tokenizer, text)):
        if token_id is not None:
            ids.append(token_id)
            offsets.append((start, end))
            continue
        part_ids, part_offsets = encode_piece(tokenizer, text[start:end], shift=start)
        first = tokenizer.convert_ids_to_tokens(part_ids[0]) if part_ids else ""
        if index and not legacy and text[start] != " " and first.startswith("▁"):
            if first == "▁":
                part_ids, part_offsets = part_ids[1:], part_offsets[1:]
            else:
                part_ids = [tokenizer.convert_tokens_to_ids(first[1:]), *part_ids[1:]]
        ids += part_ids
        offsets += part_offsets
    return ids, offsets


def split_at_added_tokens(tokenizer: PreTrainedTokenizerBase, text: str) -> list[tuple[int, int, int | None]]:
    """`text` as (start, end, token id) of its added tokens and (start, end, None) of the non-empty text parts
    between them, the whitespace beside each token stripped as transformers 4.31's slow tokenizer strips it:
    as bos / eos / unk / pad say (`LlamaTokenizer` makes them `AddedToken`s), on both sides of any other."""
    added = {token.content: (i, token) for i, token in tokenizer.added_tokens_decoder.items()}
    named = {tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token, tokenizer.pad_token}
    pattern = re.compile("|".join(map(re.escape, sorted(added, key=len, reverse=True))) or "(?!)")
    spans: list[list] = []  # [start, end, token id or None]
    position = 0
    for match in pattern.finditer(text):
        spans += [[position, match.start(), None], [match.start(), match.end(), added[match.group()][0]]]
        position = match.end()
    spans.append([position, len(text), None])
    for i in range(1, len(spans), 2):  # the tokens; text parts sit at the even indices
        token = added[text[spans[i][0] : spans[i][1]]][1]
        left, right = spans[i - 1], spans[i + 1]
        if token.rstrip or token.content not in named:
            right[0] = right[1] - len(text[right[0] : right[1]].lstrip())
        if token.lstrip or token.content not in named:
            left[1] = left[0] + len(text[left[0] : left[1]].rstrip())
    return [(start, end, token) for start, end, token in spans if token is not None or end > start]


def encode_with_offsets(
    tokenizer: PreTrainedTokenizerBase, text: str, with_specials: bool = False, shift: int = 0
) -> Encoded:
    """The tokenizer's ids of `text` and their character offsets, moved by `shift`."""
    enc = tokenizer(text, add_special_tokens=with_specials, return_offsets_mapping=True)
    return enc["input_ids"], [(a + shift, b + shift) for a, b in enc["offset_mapping"]]


def encode_piece(tokenizer: PreTrainedTokenizerBase, piece: str, shift: int = 0) -> Encoded:
    """Token ids and character offsets (moved by `shift`) of one text without special tokens, as SentencePiece
    encodes it.

    SentencePiece encodes a text word by word, a word starting at the first space of a run, and merges the
    whitespace-only pieces ("▁▁", scored lowest in LLaMA's model) last: `"this  please"` -> "▁this", "▁",
    "▁please", where a `tokenizers` BPE gives "▁▁", "ple", "ase". So the text is cut before each run of two or
    more spaces inside it, and each such word of k spaces is encoded as a text of its own with k - 1 leading
    spaces (SentencePiece's "▁" prefix stands for the first), by `encode_leading_spaces`.
    """
    cuts = [match.start() for match in re.finditer(r"(?<=[^ ]) {2,}(?=[^ ])", piece)]
    ids: list[int] = []
    offsets: list[tuple[int, int]] = []
    for start, end in zip([0, *cuts], [*cuts, len(piece)], strict=True):
        start += 1 if start else 0  # a later word's first space is the prefix "▁"
        word_ids, word_offsets = encode_leading_spaces(tokenizer, piece[start:end], shift + start)
        ids += word_ids
        offsets += word_offsets
    return ids, offsets


def encode_leading_spaces(tokenizer: PreTrainedTokenizerBase, piece: str, shift: int) -> Encoded:
    """Ids and offsets of a text that may start with spaces, as SentencePiece encodes it.

    SentencePiece adds its "▁" prefix even to a text that starts with k spaces, and encodes the k + 1 "▁"
    as "▁"*k then "▁word" (" ASSISTANT" -> "▁", "▁ASS"), or as one "▁"*(k+1) run when the word does not
    start with a "▁" piece (" 1" -> "▁▁", "1"); a `tokenizers` Metaspace adds no prefix there (-> "▁ASS").
    Such a text is encoded as its spaces and the text from its last space on, put together that way.
    """
    spaces = len(piece) - len(piece.lstrip(" "))
    if not (spaces and spaces < len(piece)):
        return encode_with_offsets(tokenizer, piece, shift=shift)
    rest_ids, rest_offsets = encode_with_offsets(tokenizer, piece[spaces - 1 :], shift=shift + spaces - 1)
    if tokenizer.convert_ids_to_tokens(rest_ids[0]) == "▁":  # the word has no "▁" piece
        run = " " * (spaces + 1)  # the whole "▁" run
        head_ids, head_offsets = encode_with_offsets(tokenizer, run, shift=shift)
        head_offsets = [(min(a, shift + spaces), min(b, shift + spaces)) for a, b in head_offsets]
        rest_ids, rest_offsets = rest_ids[1:], rest_offsets[1:]
    else:
        head_ids, head_offsets = encode_with_offsets(tokenizer, piece[:spaces], shift=shift)
    return head_ids + rest_ids, head_offsets + rest_offsets


def has_sentencepiece_prefix(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer starts a text with SentencePiece's "▁" (a prepending Metaspace)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pre = getattr(backend, "pre_tokenizer", None)
    return isinstance(pre, pre_tokenizers.Metaspace) and pre.prepend_scheme in ("always", "first")
