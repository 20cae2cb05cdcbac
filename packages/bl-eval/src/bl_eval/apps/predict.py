"""Simulate an audience: predict likes, top comments and per-scene replay for one or many videos.

    uv run apps/predict --model PATH --video FILE [--title T] [--channel C] [--platform youtube|reddit] [--out DIR]
    uv run apps/predict --model PATH --video FOLDER [FILE ...] [--video-list LIST.txt] [--channel C] [--out DIR]

Writes one JSON line per video to OUT/predictions.jsonl (and stdout), and each replay graph to
OUT/<video stem>.replay.png (<stem>-2, ... for a repeated stem). A video that cannot be processed is reported
with its error and skipped; an answer without a behaviour block gives {"error": "malformed answer", "raw": ...}.
The last line on stderr counts the videos predicted, answered malformed and failed; the exit status is 1 when
every video failed (none could be read), else 0.
The logic is `bl_eval.simulate`.
"""

from __future__ import annotations

import functools
import json
import sys
from collections import Counter
from pathlib import Path

from bl_data.cli import (
    ArgumentParser,
    existing_dir,
    existing_file,
    model_dir,
    output_dir,
    positive_int,
    run,
    setup_logging,
)


def main(argv: list[str] | None = None, prog: str = "apps/predict") -> int:
    p = ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument(
        "--model",
        required=True,
        type=model_dir,
        help="model directory (config.json + weights) or a LoRA adapter folder",
    )
    p.add_argument("--processor", type=existing_dir, help="processor directory (default: MODEL)")
    p.add_argument("--video", nargs="*", type=Path, default=[], help="video files and/or folders of videos")
    p.add_argument("--video-list", type=existing_file, help="a text file with one video path per line")
    p.add_argument("--title", help="the video's title (one video only; default: the file name)")
    p.add_argument("--channel", help="the brand / channel name (on Reddit: the subreddit)")
    p.add_argument(
        "--platform",
        choices=("youtube", "reddit"),
        default="youtube",
        help="where the video is posted: youtube (likes, comments, replay) or reddit (upvotes, comments)",
    )
    p.add_argument("--out", type=output_dir, default=Path("runs") / "predict", help="output folder")
    p.add_argument("--max-new-tokens", type=positive_int, default=1024)
    p.add_argument("--batch-size", type=positive_int, default=4)
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    paths = list(args.video)
    if args.video_list:
        paths += [Path(line.strip()) for line in args.video_list.read_text().splitlines() if line.strip()]

    from bl_eval.simulate import VideoRequest, find_videos, simulate

    try:
        videos = find_videos(paths)
    except FileNotFoundError as err:
        p.error(f"--video: {err}")
    if not videos:
        p.error("no videos given (--video FILE/FOLDER ... or --video-list)")
    if args.title and len(videos) > 1:
        p.error("--title names one video; several videos are titled by their file names")

    from bl_model.inference import load

    model, processor = load(args.model, args.processor, args.device)
    requests = [VideoRequest(video, args.title, args.channel, args.platform) for video in videos]
    args.out.mkdir(parents=True, exist_ok=True)
    outcomes: Counter[str] = Counter()
    with (args.out / "predictions.jsonl").open("w", encoding="utf-8") as out:
        for report in simulate(
            model,
            processor,
            requests,
            out_dir=args.out,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
        ):
            line = json.dumps(report)
            out.write(line + "\n")
            out.flush()
            print(line, flush=True)
            outcomes[report.get("error", "predicted")] += 1
    return _summary(outcomes, len(requests), args.out, prog)


def _summary(outcomes: Counter[str], total: int, out: Path, prog: str) -> int:
    """Say how many videos were predicted, answered malformed and failed; 1 when every video failed."""
    failed = outcomes["media"]
    print(
        f"{prog}: {total} videos: {outcomes['predicted']} predicted, "
        f"{outcomes['malformed answer']} malformed answers, {failed} failed (see {out}/predictions.jsonl)",
        file=sys.stderr,
    )
    return 1 if failed == total else 0


def console_script() -> int:
    """`bl-predict`, the installed console script: `main` under its own name."""
    return run(functools.partial(main, prog="bl-predict"), "bl-predict")
