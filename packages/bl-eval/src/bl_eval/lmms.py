"""lmms-eval model `behavior_llava` (optional extra `bl-eval[lmms]`): any lmms-eval task on a saved checkpoint.

    uv run apps/eval --lmms -- --model behavior_llava --model_args pretrained=runs/demo/final \\
        --tasks videomme --batch_size 4 --output_path out/lmms
    lmms-eval --model behavior_llava --model_args pretrained=PATH,dtype=bfloat16,max_frames=64 --tasks mme

bl-eval's wheel declares the `lmms_eval.models` entry point (`bl_eval.lmms_plugin`), so lmms-eval finds the
model by name in any environment where bl-eval is installed; `launch` also registers it itself. Requests go through `bl_model.inference`: the context becomes the human
turn with one `<image>` / `<video>` placeholder per visual (before the text, as LLaMA-VID prompts), the vicuna_v1
template closes it, generation is batched (greedy unless the task asks for `temperature > 0`), and a
log-likelihood is the continuation's summed log-probability as the assistant's answer.
Visuals: PIL images, image paths, video paths (sampled at `fps`, at most `max_frames` frames).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from PIL import Image
from tqdm.auto import tqdm

from bl_data.media import sample_frames
from bl_model import Media
from bl_model.inference import Sampling, continuation_logprobs, generate_texts, load

from .lmms_plugin import MODEL_NAME, manifest

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


class BehaviorLlavaLMM(lmms):
    """A Behavior-LLaVA checkpoint as an lmms-eval "simple" model.

    Args (`--model_args k=v,...`): pretrained (checkpoint dir), processor (default `<pretrained>`),
    device, dtype ("auto", "bfloat16", "float16", "float32"), batch_size, max_frames (default: the processor's),
    fps (video sampling rate, 1 as in training), max_new_tokens (when the task does not set it).
    """

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        processor: str | None = None,
        device: str | None = None,
        dtype: str = "auto",
        batch_size: int | str = 1,
        max_frames: int | str | None = None,
        fps: float | str = 1.0,
        max_new_tokens: int | str = 256,
        **unused: Any,
    ):
        super().__init__()
        if unused:
            raise ValueError(f"unknown model_args for {MODEL_NAME}: {sorted(unused)}")
        self.model, self.processor = load(pretrained, processor, device, dtype)
        self.batch_size = int(batch_size)
        self.max_frames = int(max_frames) if max_frames is not None else self.processor.max_frames
        self.fps = float(fps)
        self.max_new_tokens = int(max_new_tokens)

    # ---- requests -> prompts ------------------------------------------------------------------------------
    def _visuals(self, doc_to_visual, doc_id: int, task: str, split: str) -> list[Any]:
        if doc_to_visual is None:
            return []
        visuals = doc_to_visual(self.task_dict[task][split][doc_id])
        return [v for v in (visuals if isinstance(visuals, list | tuple) else [visuals]) if v is not None]

    def _media(self, visual: Any) -> Media:
        """One lmms-eval visual -> `Media`: a PIL image or image path -> image, another path -> video."""
        if isinstance(visual, Image.Image):
            return Media(visual.convert("RGB"), is_video=False)
        if isinstance(visual, str | Path):
            path = Path(visual)
            if path.suffix.lower() in IMAGE_SUFFIXES:
                with Image.open(path) as image:
                    return Media(image.convert("RGB"), is_video=False)
            frames, _ = sample_frames(path, fps=self.fps, max_frames=self.max_frames)
            return Media(frames, is_video=True)
        raise TypeError(f"unsupported visual {type(visual).__name__}: give PIL images or image / video paths")

    def _turn(self, context: str, visuals: Sequence[Any]) -> tuple[str, list[Media]]:
        """The human turn: a placeholder per visual, then the context."""
        media = [self._media(v) for v in visuals]
        placeholders = "".join("<video>\n" if m.is_video else "<image>\n" for m in media)
        return placeholders + context, media

    # ---- lmms API -----------------------------------------------------------------------------------------
    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Batched decoding per distinct generation setting; each answer cut at the task's `until` strings."""
        answers: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(json.dumps(request.args[1], sort_keys=True, default=str), []).append(i)
        with tqdm(total=len(requests), desc=MODEL_NAME, disable=self.rank != 0) as bar:
            for key, indices in groups.items():
                gen_kwargs = json.loads(key)
                if int(gen_kwargs.get("num_beams") or 1) != 1:
                    raise ValueError(
                        f"{MODEL_NAME} decodes greedily or by sampling; num_beams > 1 is not supported"
                    )
                until = gen_kwargs.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                temperature = float(gen_kwargs.get("temperature") or 0)
                sampling = None
                if gen_kwargs.get("do_sample") or temperature > 0:
                    sampling = Sampling(
                        temperature=temperature or 1.0, top_p=float(gen_kwargs.get("top_p") or 1.0)
                    )
                encoded = []
                for i in indices:
                    context, _, doc_to_visual, doc_id, task, split = requests[i].args
                    turn, media = self._turn(context, self._visuals(doc_to_visual, doc_id, task, split))
                    encoded.append(self.processor.prompt_for_generation(turn, media))
                max_new = int(gen_kwargs.get("max_new_tokens") or self.max_new_tokens)
                texts = generate_texts(
                    self.model, self.processor, encoded, max_new, self.batch_size, sampling
                )
                for i, text in zip(indices, texts, strict=True):
                    for stop in until:
                        text = text.split(stop, 1)[0] if stop else text
                    answers[i] = text
                bar.update(len(indices))
        return answers

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """(summed log-probability of the continuation as the answer, whether greedy decoding gives it)."""
        out = []
        for request in tqdm(requests, desc=MODEL_NAME, disable=self.rank != 0):
            context, doc_to_target, doc_to_visual, doc_id, task, split = request.args
            continuation = (
                doc_to_target
                if isinstance(doc_to_target, str)
                else doc_to_target(self.task_dict[task][split][doc_id])
            )
            turn, media = self._turn(context, self._visuals(doc_to_visual, doc_id, task, split))
            scores = continuation_logprobs(
                self.model, self.processor, turn, media, [continuation], batch_size=1
            )
            out.append((float(scores.logprobs[0]), bool(scores.greedy[0])))
        return out

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError(
            f"{MODEL_NAME} answers single-round requests (generate_until, loglikelihood)"
        )


def launch(args: Sequence[str]) -> int:
    """Run lmms-eval's command line with `args`, `behavior_llava` registered first (also without the entry
    point, e.g. from a source checkout) -> its exit status."""
    from lmms_eval.cli.dispatch import main
    from lmms_eval.models import MODEL_REGISTRY_V2

    MODEL_REGISTRY_V2.register_manifest(manifest(), overwrite=True)
    argv, sys.argv = sys.argv, ["lmms-eval", *args]
    try:
        main()
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else int(done.code is not None)
    finally:
        sys.argv = argv
    return 0
