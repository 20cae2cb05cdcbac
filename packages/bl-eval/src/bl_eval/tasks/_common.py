"""Helpers the task modules share: media lookup, file reading, prompts, seeded choices."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

VIDEO_EXTS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".wmv", ".3gp")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class MediaIndex:
    """The media files below a folder, found by file name or by stem (name without extension).

    A name that is not there resolves to `folder / name` (plus `default_ext` when it has none), so the
    example still names the file it needs and the protocol reports it missing.
    """

    def __init__(self, folder: Path, exts: Sequence[str], default_ext: str = ""):
        self.folder, self.exts, self.default_ext = folder, tuple(exts), default_ext
        self.by_name: dict[str, Path] = {}
        self.by_stem: dict[str, Path] = {}
        if folder.is_dir():
            for path in sorted(folder.rglob("*")):
                if path.suffix.lower() in self.exts and path.is_file():
                    self.by_name.setdefault(path.name, path)
                    self.by_stem.setdefault(path.stem, path)

    def find(self, *names: str) -> Path:
        """The first of `names` found (by name, then stem); else the expected path of the first."""
        for name in names:
            base = Path(name).name
            if found := self.by_name.get(base) or self.by_stem.get(base) or self.by_stem.get(Path(base).stem):
                return found
        first = names[0]
        return self.folder / (first if Path(first).suffix.lower() in self.exts else first + self.default_ext)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def read_text(path: Path) -> str:
    """A text file in UTF-16 (with BOM), UTF-8 or, failing that, Latin-1."""
    raw = path.read_bytes()
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return raw.decode("utf-16")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_csv(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    """Rows of a headed CSV as dicts; header names and values stripped of spaces and quotes."""
    rows = list(csv.reader(read_text(path).splitlines(), delimiter=delimiter, skipinitialspace=True))
    header = [h.strip().strip("'\"") for h in rows[0]]
    return [
        dict(zip(header, (v.strip().strip("'\"") for v in row), strict=False)) for row in rows[1:] if any(row)
    ]


def first_existing(root: Path, *names: str) -> Path:
    """The first of `root / name` that exists; FileNotFoundError naming them all otherwise."""
    for name in names:
        if (root / name).exists():
            return root / name
    raise FileNotFoundError(f"none of {', '.join(names)} under {root}")


def choice_prompt(tag: str, question: str, labels: Iterable[str]) -> str:
    """A classification prompt listing the label words: the media placeholder, the question, the options."""
    return f"{tag}\n{question} Choose one of: {', '.join(labels)}. Answer with the label only."


def seeded(*parts: object) -> random.Random:
    """A random generator determined by `parts` alone (the same on every run and machine)."""
    return random.Random(":".join(str(p) for p in parts))


def words(label: str) -> str:
    """A label as prompt words: underscores to spaces."""
    return " ".join(label.replace("_", " ").split())
