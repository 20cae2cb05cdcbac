"""The behaviour simulator web app: upload a cut, see the predicted likes, comments and replay graph.

    uv run apps/studio --model runs/demo/final [--host 127.0.0.1] [--port 7860] [--out runs/studio]

Needs the `bl-eval[studio]` extra (Gradio). Serves on --host:--port (127.0.0.1 by default; --share for a
public Gradio link); requests queue, --concurrency at a time on the one model in memory. The `/simulate` API
endpoint (video file, title, channel, platform) returns the record `apps/predict` writes for that video.
Everything a request writes (the upload, replay plot, predictions.jsonl) lies under --out. The logic is
`bl_eval.studio` and `bl_eval.simulate`.
"""

from __future__ import annotations

import argparse
import functools
import os
from pathlib import Path

from bl_data.cli import ArgumentParser, existing_dir, positive_int, run, setup_logging


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def port(text: str) -> int:
    """argparse type: a TCP port, 1-65535."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port in 1-65535, got {value}")
    return value


def main(argv: list[str] | None = None, prog: str = "apps/studio") -> int:
    p = ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument(
        "--model", required=True, type=existing_dir, help="model directory (config.json + weights)"
    )
    p.add_argument("--processor", type=existing_dir, help="processor directory (default: MODEL)")
    p.add_argument(
        "--out", type=Path, default=Path("runs") / "studio", help="output folder (uploads, results)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=port, default=7860)
    p.add_argument("--share", action="store_true", help="also serve through a public Gradio share link")
    p.add_argument(
        "--root-path", help="the URL path the app is served under behind a reverse proxy (/studio)"
    )
    p.add_argument("--concurrency", type=positive_int, default=1, help="requests run at once on the model")
    p.add_argument(
        "--max-seconds", type=positive_float, default=600.0, help="longest video accepted (seconds)"
    )
    p.add_argument(
        "--video-root", type=existing_dir, help="also let users pick videos under this server folder"
    )
    p.add_argument("--max-new-tokens", type=positive_int, default=1024)
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(out / "uploads")  # read when gradio is imported
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    # the libraries' caches too: nothing is written outside --out
    os.environ.setdefault("MPLCONFIGDIR", str(out / ".cache" / "matplotlib"))
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(out / ".cache" / "torchinductor"))

    from bl_eval.studio import Studio, launch
    from bl_model.inference import load

    model, processor = load(args.model, args.processor, args.device)
    studio = Studio(model, processor, out, max_seconds=args.max_seconds, max_new_tokens=args.max_new_tokens)
    launch(
        studio,
        host=args.host,
        port=args.port,
        share=args.share,
        concurrency=args.concurrency,
        video_root=args.video_root,
        root_path=args.root_path,
    )
    return 0


def console_script() -> int:
    """`bl-studio`, the installed console script: `main` under its own name."""
    return run(functools.partial(main, prog="bl-studio"), "bl-studio")
