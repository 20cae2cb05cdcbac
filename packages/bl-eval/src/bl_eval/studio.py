"""The behaviour simulator web app (Gradio; the `bl-eval[studio]` extra): upload a cut, see the predicted likes,
top comments and replay graph; compare two cuts; download the records. `uv run apps/studio` starts it.

    studio = Studio(*bl_model.inference.load("runs/demo/final"), out_dir=Path("runs/studio"))
    build_app(studio).queue(default_concurrency_limit=1).launch(css=CSS)

The predictions are `bl_eval.simulate.simulate`'s (the code of `apps/predict`): the `/simulate` API endpoint
(inputs: video file, title, channel, platform) returns the record `apps/predict` writes for that video. An upload
that is not a usable video raises `gr.Error` with a message naming the file: the page shows it, and a
`gradio_client` call raises with it. Every file a request makes (the upload, replay plot and
predictions.jsonl) lies under `out_dir`; Gradio's upload folder must be set there before Gradio is imported
(GRADIO_TEMP_DIR, as `apps/studio` does).
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from bl_data.media import MediaError, probe
from bl_model import BehaviorLlavaForCausalLM, BehaviorLlavaProcessor

from .simulate import PLATFORMS, VideoRequest, simulate
from .studio_view import CSS, SceneView, compare_html, replay_html, scene_views, summary_html

__all__ = ["CSS", "Studio", "UploadError", "build_app", "check_video"]


class UploadError(ValueError):
    """An upload that is not a usable video; the message names the file and the problem."""


def check_video(path: Path, max_seconds: float) -> None:
    """Raise `UploadError` unless `path` is a readable, non-empty video of at most `max_seconds`."""
    name = path.name
    try:
        size = path.stat().st_size
        if size == 0:
            raise UploadError(f"{name}: the file is empty (0 bytes); upload a video file")
        with path.open("rb"):
            pass
        info = probe(path)
    except MediaError as err:
        raise UploadError(f"{name}: not a readable video ({err.reason})") from None
    except OSError as err:
        raise UploadError(f"{name}: the file cannot be read ({err.strerror or err})") from None
    if not info.is_video:
        raise UploadError(f"{name}: a still image, not a video")
    if info.duration > max_seconds:
        raise UploadError(
            f"{name}: the video is {info.duration:.1f} s long, over this server's limit of {max_seconds:g} s"
        )


@dataclass
class Studio:
    """One model in memory and the folder every request writes under (`out_dir/requests/<id>/`)."""

    model: BehaviorLlavaForCausalLM
    processor: BehaviorLlavaProcessor
    out_dir: Path
    max_seconds: float = 600.0
    max_new_tokens: int = 1024
    _ids: itertools.count = field(default_factory=itertools.count)

    def request_dir(self) -> Path:
        folder = self.out_dir / "requests" / f"{time.strftime('%Y%m%d-%H%M%S')}-{next(self._ids):04d}"
        folder.mkdir(parents=True)
        return folder

    def run(
        self,
        videos: Sequence[Path],
        title: str | None,
        channel: str | None,
        platform: str,
        progress: Callable[[float, str], None] = lambda done, say: None,
    ) -> tuple[list[dict[str, Any]], list[list[SceneView]], Path]:
        """Simulate each video (one at a time, as `apps/predict` would one video) -> the records, each video's
        scene views, and the request's predictions.jsonl. Raises `UploadError` for a video that cannot be used."""
        for video in videos:
            check_video(video, self.max_seconds)
        folder = self.request_dir()
        requests = [VideoRequest(video, title or None, channel or None, platform) for video in videos]
        views: list[list[SceneView]] = []

        def on_media(request: VideoRequest, meta: dict[str, Any], frames) -> None:
            views.append(scene_views(meta, frames))
            progress(
                len(views) / (len(requests) + 1), f"generating the audience's reaction to {request.name}"
            )

        progress(0.0, "analysing scenes")
        records = list(
            simulate(
                self.model,
                self.processor,
                requests,
                out_dir=folder,
                max_new_tokens=self.max_new_tokens,
                batch_size=1,
                on_media=on_media,
            )
        )
        for record in records:
            if record.get("error") == "media":  # named by the file's name, not its path on the server
                name = Path(record["video"]).name
                raise UploadError(record["reason"].replace(record["video"], name))
        jsonl = folder / "predictions.jsonl"
        jsonl.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
        return records, views, jsonl


def _path(upload: str | None, label: str) -> Path:
    if not upload:
        raise gr.Error(f"{label}: no video uploaded; choose a video file first", duration=None)
    return Path(upload)


def _simulate_one(studio: Studio) -> Callable:
    def simulate_video(video, title, channel, platform, progress=gr.Progress()):  # noqa: B008 (Gradio injects it)
        """Predict the audience's reaction to one video: the record `apps/predict` writes for it."""
        try:
            records, views, jsonl = studio.run(
                [_path(video, "video")], title, channel, platform, lambda f, say: progress(f, desc=say)
            )
        except UploadError as err:
            raise gr.Error(str(err), duration=None) from None
        return records[0], (views[0], str(jsonl))

    return simulate_video


def _show_one(record: dict[str, Any], state: tuple[list[SceneView], str]) -> tuple[str, str, str]:
    views, jsonl = state
    return summary_html(record), replay_html(record, views), jsonl


def _compare(studio: Studio) -> Callable:
    def compare_cuts(video_a, video_b, title, channel, platform, progress=gr.Progress()):  # noqa: B008 (Gradio injects it)
        """Predict the reactions to two cuts of one video (same title, channel and platform): [record A, B]."""
        videos = [_path(video_a, "cut A"), _path(video_b, "cut B")]
        try:
            records, views, jsonl = studio.run(
                videos, title, channel, platform, lambda f, say: progress(f, desc=say)
            )
        except UploadError as err:
            raise gr.Error(str(err), duration=None) from None
        return records, (views, str(jsonl))

    return compare_cuts


def _show_two(records: list[dict[str, Any]], state: tuple[list[list[SceneView]], str]) -> tuple[str, ...]:
    (views_a, views_b), jsonl = state
    a, b = records
    return (
        compare_html(a, b),
        summary_html(a),
        replay_html(a, views_a),
        summary_html(b),
        replay_html(b, views_b),
        jsonl,
    )


def _inputs(
    video_root: Path | None, *labels: str
) -> tuple[list[gr.File], gr.Textbox, gr.Textbox, gr.Dropdown]:
    files = []
    with gr.Row():
        for label in labels:
            with gr.Column():
                file = gr.File(label=label, type="filepath", elem_classes=["bl-upload"])
                if video_root is not None:
                    path = gr.Textbox(label="or the name of a video in the server's video folder")
                    load = gr.Button("Use this server file")
                    load.click(
                        lambda p: str(_server_video(video_root, p)), path, file, api_visibility="private"
                    )
            files.append(file)
    title = gr.Textbox(label="Title", placeholder="default: the file name")
    channel = gr.Textbox(label="Channel / brand (on Reddit: the subreddit)")
    platform = gr.Dropdown(list(PLATFORMS), value="youtube", label="Platform")
    return files, title, channel, platform


def _server_video(root: Path, text: str) -> Path:
    path = (root / text).resolve()
    if not path.is_relative_to(root.resolve()) or not path.is_file():
        raise gr.Error(f"{text}: no such video in the server's video folder", duration=None)
    return path


def build_app(studio: Studio, video_root: Path | None = None) -> gr.Blocks:
    """The page: a Simulate tab (API `/simulate`) and an A/B tab (API `/compare`); `video_root` also lets
    users pick a video already on the server (launch with `allowed_paths=[video_root]`)."""
    with gr.Blocks(title="Behaviour simulator") as app:
        gr.Markdown(
            "# How will my audience react?\nUpload a cut: the model predicts the likes, the top comments and "
            "where viewers would replay. Hover a scene to see what the model was told about it."
        )
        with gr.Tab("Simulate"):
            with gr.Row():
                with gr.Column(scale=1):
                    (video,), title, channel, platform = _inputs(video_root, "Video")
                    run = gr.Button("Simulate", variant="primary", elem_id="bl-run")
                with gr.Column(scale=2):
                    summary = gr.HTML(elem_id="bl-summary")
                    replay = gr.HTML(elem_id="bl-replay")
                    download = gr.File(
                        label="Download (JSON lines, as apps/predict writes)", elem_id="bl-download"
                    )
                    with gr.Accordion("JSON record", open=False):
                        record = gr.JSON(elem_id="bl-record")
            state = gr.State()
            run.click(
                _simulate_one(studio), [video, title, channel, platform], [record, state], api_name="simulate"
            ).success(_show_one, [record, state], [summary, replay, download], api_visibility="private")
        with gr.Tab("A/B compare"):
            (video_a, video_b), title_ab, channel_ab, platform_ab = _inputs(video_root, "Cut A", "Cut B")
            run_ab = gr.Button("Compare", variant="primary", elem_id="bl-compare-run")
            differences = gr.HTML(elem_id="bl-differences")
            with gr.Row():
                with gr.Column():
                    summary_a, replay_a = gr.HTML(elem_id="bl-summary-a"), gr.HTML(elem_id="bl-replay-a")
                with gr.Column():
                    summary_b, replay_b = gr.HTML(elem_id="bl-summary-b"), gr.HTML(elem_id="bl-replay-b")
            download_ab = gr.File(label="Download both (JSON lines)", elem_id="bl-download-ab")
            records_ab, state_ab = gr.JSON(visible=False), gr.State()
            run_ab.click(
                _compare(studio),
                [video_a, video_b, title_ab, channel_ab, platform_ab],
                [records_ab, state_ab],
                api_name="compare",
            ).success(
                _show_two,
                [records_ab, state_ab],
                [differences, summary_a, replay_a, summary_b, replay_b, download_ab],
                api_visibility="private",
            )
    return app


def upload_dir(out_dir: Path) -> Path:
    """Where Gradio keeps uploads for an app writing under `out_dir` (GRADIO_TEMP_DIR)."""
    return out_dir / "uploads"


def launch(
    studio: Studio,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    concurrency: int = 1,
    video_root: Path | None = None,
    root_path: str | None = None,
) -> None:
    """Serve the app until interrupted; requests queue, `concurrency` at a time on the one model."""
    if Path(os.environ.get("GRADIO_TEMP_DIR", "")).resolve() != upload_dir(studio.out_dir).resolve():
        raise RuntimeError(f"set GRADIO_TEMP_DIR={upload_dir(studio.out_dir)} before importing gradio")
    app = build_app(studio, video_root).queue(default_concurrency_limit=concurrency)
    app.launch(
        server_name=host,
        server_port=port,
        share=share,
        css=CSS,
        ssr_mode=False,
        root_path=root_path,
        allowed_paths=[str(studio.out_dir / "requests"), *([str(video_root)] if video_root else [])],
        footer_links=["api"],
    )
