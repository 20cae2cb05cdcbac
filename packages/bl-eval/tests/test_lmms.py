"""The lmms-eval adapter, offline, with lmms-eval's own `Instance` objects on the tiny demo checkpoint: its answers
and log-likelihoods equal those of `bl_model.inference` and of an independent forward pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

pytest.importorskip("lmms_eval", reason="bl-eval[lmms] extra not installed")
from lmms_eval.api.instance import Instance

from bl_data.media import sample_frames
from bl_eval.lmms import BehaviorLlavaLMM, launch
from bl_model import Media
from bl_model.inference import Sampling, generate_texts

QUESTION = "What colour is the object? Answer with one word."


@pytest.fixture(scope="module")
def lmm(demo: Path) -> BehaviorLlavaLMM:
    torch.manual_seed(0)
    model = BehaviorLlavaLMM(
        pretrained=str(demo / "model"),
        processor=str(demo / "processor"),
        device="cpu",
        batch_size="2",
        max_frames="4",
    )
    images = [demo / e["image"] for e in json.loads((demo / "instructions.json").read_text())[:2]]
    return model, images


def _docs(lmm: BehaviorLlavaLMM, images: list[Path], video: Path) -> None:
    lmm.task_dict = {
        "toy": {"test": [{"image": Image.open(images[0])}, {"image": str(images[1])}, {"video": str(video)}]}
    }


def _visual(doc: dict) -> list:
    return [doc.get("image") or doc["video"]]


def _instance(kind: str, context: str, second, doc_id: int) -> Instance:
    return Instance(
        kind,
        (context, second, _visual, doc_id, "toy", "test"),
        idx=0,
        metadata={"task": "toy", "doc_id": doc_id, "repeats": 1},
    )


def _media(images: list[Path], video: Path, max_frames: int) -> list[Media]:
    frames, _ = sample_frames(video, fps=1.0, max_frames=max_frames)
    return [
        Media(Image.open(images[0]).convert("RGB"), False),
        Media(Image.open(images[1]).convert("RGB"), False),
        Media(frames, True),
    ]


def test_generate_until_equals_the_inference_module(lmm, bikes_mp4):
    model, images = lmm
    _docs(model, images, bikes_mp4)
    greedy = {"max_new_tokens": 5, "until": ["\n\n\n"]}
    sampled = {"max_new_tokens": 4, "temperature": 0.8, "do_sample": True}
    requests = [_instance("generate_until", QUESTION, greedy, i) for i in range(3)]
    answers = model.generate_until(requests)

    media = _media(images, bikes_mp4, 4)
    encoded = [
        model.processor.prompt_for_generation(("<video>\n" if m.is_video else "<image>\n") + QUESTION, [m])
        for m in media
    ]
    assert answers == generate_texts(model.model, model.processor, encoded, 5, batch_size=1)
    assert all(isinstance(a, str) for a in answers)

    torch.manual_seed(3)
    [drawn] = model.generate_until([_instance("generate_until", QUESTION, sampled, 2)])
    torch.manual_seed(3)
    assert [drawn] == generate_texts(model.model, model.processor, encoded[2:], 4, sampling=Sampling(0.8))


@torch.no_grad()
def _independent(model: BehaviorLlavaLMM, turn: str, media: list[Media], answer: str) -> tuple[float, bool]:
    """Forward prompt + answer once; sum log-softmax over the answer's tokens ("</s>" excluded), greedy = argmax."""
    processor = model.processor
    prompt = processor.prompt_for_generation(turn, media)["input_ids"]
    full = processor(
        {"conversations": [{"from": "human", "value": turn}, {"from": "gpt", "value": answer}]}, media
    )
    ids = full.pop("input_ids")
    full.pop("labels")
    logits = model.model(input_ids=ids[None], **full).logits[0].float()  # (L, V)
    positions = range(prompt.numel(), ids.numel() - 1)
    logp = torch.log_softmax(logits, -1)
    total = sum(float(logp[t - 1, ids[t]]) for t in positions)
    return total, all(int(logits[t - 1].argmax()) == int(ids[t]) for t in positions)


def test_loglikelihood_equals_an_independent_forward_pass(lmm, bikes_mp4):
    model, images = lmm
    _docs(model, images, bikes_mp4)
    media = _media(images, bikes_mp4, 4)
    requests = [
        _instance("loglikelihood", QUESTION, " red", 0),
        _instance("loglikelihood", QUESTION, "blue square", 2),
    ]
    got = model.loglikelihood(requests)
    want = [
        _independent(model, "<image>\n" + QUESTION, media[:1], " red"),
        _independent(model, "<video>\n" + QUESTION, media[2:], "blue square"),
    ]
    for (lp, greedy), (want_lp, want_greedy) in zip(got, want, strict=True):
        assert lp == pytest.approx(want_lp, rel=1e-4, abs=1e-4) and greedy == want_greedy


def test_bad_model_args_and_visuals_are_clear_errors(lmm, demo):
    model, _ = lmm
    with pytest.raises(ValueError, match="unknown model_args for behavior_llava: \\['conv_template'\\]"):
        BehaviorLlavaLMM(pretrained=str(demo / "model"), conv_template="vicuna_v1")
    with pytest.raises(TypeError, match="unsupported visual int"):
        model._media(3)
    with pytest.raises(ValueError, match="num_beams > 1 is not supported"):
        model.generate_until([_instance("generate_until", QUESTION, {"num_beams": 3}, 0)])


TASK_YAML = """\
task: bl_toy
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function bl_toy_utils.doc_to_visual
doc_to_text: "{{{{question}}}}"
doc_to_target: "answer"
generation_kwargs:
  max_new_tokens: 4
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""


def test_lmms_eval_cli_runs_a_local_task_through_the_launcher(lmm, demo, tmp_path):
    """`apps/eval --lmms -- …`: lmms-eval's own CLI, task loading and request building drive the model."""
    model, images = lmm
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    rows = [{"question": "What colour?", "answer": "red", "image": str(path)} for path in images]
    (tasks / "toy.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tasks / "bl_toy.yaml").write_text(TASK_YAML.format(data=tasks / "toy.jsonl"))
    (tasks / "bl_toy_utils.py").write_text(
        "from PIL import Image\n\ndef doc_to_visual(doc):\n    return [Image.open(doc['image']).convert('RGB')]\n"
    )
    out = tmp_path / "out"
    status = launch(
        [
            "--model",
            "behavior_llava",
            "--model_args",
            f"pretrained={demo / 'model'},processor={demo / 'processor'},device=cpu",
            "--tasks",
            "bl_toy",
            "--include_path",
            str(tasks),
            "--batch_size",
            "2",
            "--output_path",
            str(out),
            "--log_samples",
        ]
    )
    assert status == 0
    [samples] = out.rglob("*_samples_bl_toy.jsonl")
    answers = [json.loads(line)["filtered_resps"] for line in samples.read_text().splitlines()]
    encoded = [
        model.processor.prompt_for_generation(
            "<image>\nWhat colour?", [Media(Image.open(p).convert("RGB"), False)]
        )
        for p in images
    ]
    assert answers == generate_texts(model.model, model.processor, encoded, 4)
