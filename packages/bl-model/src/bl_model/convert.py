"""Import a released LLaMA-VID checkpoint (HF shards + LAVIS `eva_vit_g.pth`) as a Behavior-LLaVA model.

    uv run python -m bl_model.convert --llamavid DIR --eva PATH --out DIR [--config CONFIG_JSON] [--bert-vocab VOCAB]

With `--bert-vocab` (bert-base-uncased's vocab.txt) the processor is written too, into `DIR` beside the weights: the
checkpoint's `LlamaTokenizer` (its `legacy` setting kept) plus the Q-Former's BERT tokenizer, preprocessing
training samples the way LLaMA-VID did (`preprocess="llamavid"`). Without `--config` the LLM shape comes
from the checkpoint's `config.json` (`head_dim` as stated, else hidden_size / num_attention_heads).

Key layout of the released LLaMA-VID checkpoints: `model.vlm_att_query`, `model.vlm_att_encoder.bert.*`
(LAVIS Q-Former), `model.vlm_att_ln.*`, `model.vlm_att_{,key_,val_}projector.*`, `model.mm_projector.*`,
`model.embed_tokens.*`, `model.layers.*`, `model.norm.*`, `lm_head.*`. Every key must map and every
parameter must be filled: otherwise `CheckpointKeyError` lists the offenders.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch
from safetensors import safe_open

from .builders import llama_vid_13b
from .configuration import BehaviorLlavaConfig
from .modeling import BehaviorLlavaForCausalLM

# (LLaMA-VID prefix, our prefix), first match wins: the specific `model.vlm_att_*` before the LLM's `model.`.
PREFIX_MAP: tuple[tuple[str, str], ...] = (
    ("model.vlm_att_query", "query_tokens"),
    ("model.vlm_att_encoder.bert.", "qformer."),
    ("model.vlm_att_ln.", "qformer_ln."),
    ("model.vlm_att_projector.", "query_projector."),
    ("model.vlm_att_key_projector.", "key_projector."),
    ("model.vlm_att_val_projector.", "val_projector."),
    ("model.mm_projector.", "mm_projector."),
    ("model.vision_tower.vision_tower.", "vision_tower.eva."),
    ("model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
)
# LAVIS BertModel -> transformers InstructBlipQFormerModel module names.
QFORMER_RENAMES: tuple[tuple[str, str], ...] = (
    (".attention.self.", ".attention.attention."),
    (".crossattention.self.", ".crossattention.attention."),
    ("embeddings.LayerNorm.", "embeddings.layernorm."),
)
# Buffers that older transformers saved and that carry no weights.
IGNORED_KEYS = re.compile(
    r"(^model\.vlm_att_encoder\.bert\.embeddings\.position_ids$|\.rotary_emb\.inv_freq$)"
)
EVA_BLOCK = re.compile(r"^blocks\.(\d+)\.")


class CheckpointKeyError(KeyError):
    """A checkpoint whose keys do not match the model: lists missing and unknown keys."""

    def __init__(self, missing: list[str], unknown: list[str]):
        self.missing, self.unknown = sorted(missing), sorted(unknown)
        lines = [
            f"checkpoint does not match the model: {len(self.missing)} missing, {len(self.unknown)} unknown keys"
        ]
        lines += [f"  missing: {k}" for k in self.missing] + [f"  unknown: {k}" for k in self.unknown]
        super().__init__("\n".join(lines))

    def __str__(self) -> str:
        return self.args[0]


def map_llamavid_key(key: str) -> str | None:
    """LLaMA-VID key -> our key; None for keys the layout does not know."""
    for src, dst in PREFIX_MAP:
        if key == src or (src.endswith(".") and key.startswith(src)):
            new = dst + key[len(src) :]
            if dst == "qformer.":
                for old, rep in QFORMER_RENAMES:
                    new = new.replace(old, rep)
            return new
    return None


def map_checkpoint(
    llamavid: dict[str, torch.Tensor], eva: dict[str, torch.Tensor] | None, expected: set[str], eva_depth: int
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename both checkpoints into our layout. -> (state dict, notes on dropped keys).

    Raises `CheckpointKeyError` for unknown keys, for parameters nobody fills, and for vision weights given twice.
    """
    state, unknown, notes = {}, [], []
    for key, value in llamavid.items():
        if IGNORED_KEYS.search(key):
            continue
        new = map_llamavid_key(key)
        if new is None or new not in expected:
            unknown.append(key)
        else:
            state[new] = value
    if eva is not None:
        if any(k.startswith("vision_tower.") for k in state):
            raise ValueError(
                "vision tower weights are both in the LLaMA-VID shards and in --eva; give only one"
            )
        dropped = 0
        for key, value in eva.items():
            block = EVA_BLOCK.match(key)
            if block and int(block.group(1)) >= eva_depth:
                dropped += 1  # LAVIS builds 39 of the checkpoint's 40 blocks
                continue
            new = "vision_tower.eva." + key
            if new not in expected:
                unknown.append(f"{key} (eva)")
            else:
                state[new] = value
        if dropped:
            notes.append(
                f"dropped {dropped} EVA tensors of blocks >= {eva_depth} (LAVIS uses the first {eva_depth})"
            )
    missing = sorted(expected - state.keys())
    if missing or unknown:
        raise CheckpointKeyError(missing, unknown)
    return state, notes


def load_state_dict_files(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a file or of a directory of `*.safetensors` / `pytorch_model*.bin` shards."""
    path = Path(path)
    files = (
        [path]
        if path.is_file()
        else sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
    )
    if not files:
        raise FileNotFoundError(f"no *.safetensors or pytorch_model*.bin weights in {path}")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        if file.suffix == ".safetensors":
            with safe_open(file, framework="pt") as f:
                state.update({k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118 (safe_open is not a dict)
        else:
            loaded = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            state.update(loaded.get("model", loaded) if isinstance(loaded, dict) else loaded)
    return state


def config_from_llamavid(config_json: dict, llamavid: dict[str, torch.Tensor]) -> BehaviorLlavaConfig:
    """Our config for a LLaMA-VID checkpoint: LLM shape from its config.json, Q-Former sizes from its tensors."""
    text_keys = (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "max_position_embeddings",
        "rms_norm_eps",
        "rope_theta",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "tie_word_embeddings",
    )
    base = llama_vid_13b()
    text = base.text_config.to_dict() | {k: config_json[k] for k in text_keys if k in config_json}
    # the checkpoint's head size when it states one, else LLaMA's hidden_size / num_attention_heads
    text["head_dim"] = config_json.get("head_dim") or text["hidden_size"] // text["num_attention_heads"]
    qformer = base.qformer_config.to_dict()
    qformer["vocab_size"] = llamavid["model.vlm_att_encoder.bert.embeddings.word_embeddings.weight"].shape[0]
    layer_ids = {int(m.group(1)) for k in llamavid if (m := re.search(r"bert\.encoder\.layer\.(\d+)\.", k))}
    qformer["num_hidden_layers"] = max(layer_ids) + 1
    compress = config_json.get("compress_type") or "none"
    return BehaviorLlavaConfig(
        vision_config=base.vision_config,
        qformer_config=qformer,
        text_config=text,
        num_query=llamavid["model.vlm_att_query"].shape[1],
        video_compress=compress,
        image_compress=compress,
    )


def convert(
    llamavid_dir: Path, eva_path: Path | None, out_dir: Path, config: BehaviorLlavaConfig | None = None
) -> list[str]:
    """Convert and save HF safetensors to `out_dir`. -> notes on dropped keys."""
    llamavid_dir = Path(llamavid_dir)
    llamavid = load_state_dict_files(llamavid_dir)
    if config is None:
        config = config_from_llamavid(json.loads((llamavid_dir / "config.json").read_text()), llamavid)
    eva = load_state_dict_files(Path(eva_path)) if eva_path is not None else None
    with torch.device("meta"):
        model = BehaviorLlavaForCausalLM(config)
    expected = set(model.state_dict())
    state, notes = map_checkpoint(llamavid, eva, expected, config.vision_config.num_hidden_layers)
    model.load_state_dict(state, strict=True, assign=True)
    model.apply_freeze_policy()
    model.save_pretrained(out_dir)
    return notes


def load_llama_tokenizer(llamavid_dir: Path):
    """The checkpoint's prompt tokenizer as the `LlamaTokenizer` it was saved as, with its `legacy` setting.

    The released `config.json` says `model_type: "llava"`, for which `AutoTokenizer` builds a generic tokenizer
    that drops the SentencePiece prefix of the first word. A `tokenizer_config.json` without `legacy` was
    written before transformers 4.31 introduced the flag, so it gets the legacy behaviour it was trained with
    (and the slow tokenizer's bos, unless `add_bos_token` says otherwise).
    """
    from transformers import LlamaTokenizer

    llamavid_dir = Path(llamavid_dir)
    config_path = llamavid_dir / "tokenizer_config.json"
    settings = json.loads(config_path.read_text()) if config_path.is_file() else {}
    if settings.get("tokenizer_class", "LlamaTokenizer") not in ("LlamaTokenizer", "LlamaTokenizerFast"):
        raise ValueError(
            f"{config_path}: tokenizer_class {settings['tokenizer_class']!r} is not a LLaMA tokenizer"
        )
    return LlamaTokenizer.from_pretrained(
        llamavid_dir, legacy=settings.get("legacy", True), add_bos_token=settings.get("add_bos_token", True)
    )


def save_processor(llamavid_dir: Path, bert_vocab: Path, out_dir: Path, config: BehaviorLlavaConfig) -> Path:
    """Write the processor into `out_dir`, beside the weights (transformers' layout): the checkpoint's LLaMA
    tokenizer and a bert-base-uncased Q-Former tokenizer, with LLaMA-VID's training preprocessing
    (`preprocess="llamavid"`)."""
    from transformers import BertTokenizerFast

    from .processing import BehaviorLlavaProcessor

    if not Path(bert_vocab).is_file():
        raise FileNotFoundError(f"bert vocab not found: {bert_vocab}")
    tokenizer = load_llama_tokenizer(llamavid_dir)
    qformer_tokenizer = BertTokenizerFast(vocab=str(bert_vocab), truncation_side="left")
    target = Path(out_dir)
    processor = BehaviorLlavaProcessor.from_config(
        tokenizer, qformer_tokenizer, config, preprocess="llamavid"
    )
    processor.save_pretrained(target)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bl_model.convert", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--llamavid",
        type=Path,
        required=True,
        help="LLaMA-VID checkpoint directory (HF shards + config.json)",
    )
    parser.add_argument(
        "--eva", type=Path, help="LAVIS eva_vit_g.pth (omit if the shards hold the vision tower)"
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory (HF safetensors)")
    parser.add_argument(
        "--config", type=Path, help="a BehaviorLlavaConfig config.json to use instead of deriving one"
    )
    parser.add_argument(
        "--bert-vocab", type=Path, help="bert-base-uncased vocab.txt: also write the processor into OUT"
    )
    args = parser.parse_args(argv)
    config = BehaviorLlavaConfig.from_json_file(args.config) if args.config else None
    for note in convert(args.llamavid, args.eva, args.out, config):
        print(note)
    print(f"saved {args.out}")
    if args.bert_vocab:
        saved = BehaviorLlavaConfig.from_pretrained(args.out)
        print(f"saved {save_processor(args.llamavid, args.bert_vocab, args.out, saved)}")


if __name__ == "__main__":
    main()
