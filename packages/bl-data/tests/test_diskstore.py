"""The on-disk bookkeeping (`bl_data.diskstore`, `MediaIndex`, `MediaLedger`) against plain in-memory
dicts and sets doing the same."""

from __future__ import annotations

import gc
import os
import random
import tempfile
from pathlib import Path

from bl_data import diskstore
from bl_data.diskstore import DiskSet, DiskStore
from bl_data.pipeline import MediaLedger
from bl_data.sources._common import MEDIA_EXTENSIONS, index_media, media_names


def test_disk_set_is_a_set_across_transactions(monkeypatch) -> None:
    monkeypatch.setattr(diskstore, "BATCH", 64)  # many commits and batches in a small test
    rng = random.Random(0)
    items = [rng.choice([f"k{rng.randrange(400)}", rng.randrange(400)]) for _ in range(1500)]
    reference: set[str | int] = set()
    with DiskSet(items[:700]) as disk:
        reference.update(items[:700])
        for item in items[700:]:
            assert disk.add(item) == (item not in reference)
            reference.add(item)
        probes = [*reference, "k9999", 9999, "9", 9]
        assert [p in disk for p in probes] == [p in reference for p in probes]
        assert len(disk) == len(reference)


def test_a_store_lives_in_a_local_temp_dir_and_is_removed_on_close_and_collection(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # as $TMPDIR
    closed, dropped = DiskStore("CREATE TABLE t (x);"), DiskStore("CREATE TABLE t (x);")
    assert Path(closed.folder).parent == tmp_path and (Path(closed.folder) / "store.db").is_file()
    closed.close()
    closed.close()  # idempotent
    folder = dropped.folder
    del dropped  # an owner dropped on an error path
    gc.collect()
    assert not Path(closed.folder).exists() and not Path(folder).exists()


def _media_folder(tmp_path: Path) -> Path:
    """Keys with several files (extension rank, case, yt-dlp's `.f137` parts), a folder named like a video,
    files of other types."""
    folder = tmp_path / "media"
    folder.mkdir()
    names = ["a.jpg", "a.mp4", "a.webm", "b.PNG", "b.png", "c.f137.mp4", "c.mp4", "d.gif", "e.txt", "f.MKV"]
    rng = random.Random(1)
    names += [f"r{rng.randrange(50):03d}.{rng.choice(MEDIA_EXTENSIONS)}" for _ in range(120)]
    for name in names:
        (folder / name).write_bytes(name.encode())
    (folder / "dir.mp4").mkdir()
    return folder


def _best(folder: Path) -> dict[str, str]:
    """The reference: a dict over the sorted names, the earliest-ranked extension winning."""
    rank = lambda name: MEDIA_EXTENSIONS.index(os.path.splitext(name)[1][1:].lower())  # noqa: E731
    best: dict[str, str] = {}
    for name in sorted(os.listdir(folder)):
        ext = os.path.splitext(name)[1][1:].lower()
        if ext in MEDIA_EXTENSIONS and (folder / name).is_file():
            key = os.path.splitext(name)[0]
            if key not in best or rank(name) < rank(best[key]):
                best[key] = name
    return best


def test_media_index_matches_a_dict_and_claims_once(tmp_path) -> None:
    folder = _media_folder(tmp_path)
    best = _best(folder)
    assert {
        "a": "a.mp4",
        "b": "b.PNG",
        "c": "c.mp4",
        "c.f137": "c.f137.mp4",
        "f": "f.MKV",
    }.items() <= best.items()
    with index_media(folder) as index:
        assert len(index) == len(best)
        for key in [*best, "dir", "e", "zzz"]:
            assert index.get(key) == (folder / best[key] if key in best else None)
        claims = ["a", "a", "zzz", "zzz", "c.f137", "c", "c", "e", "r001"]
        reference: set[str] = set()
        expected = [not (key in reference or reference.add(key)) for key in claims]
        assert [index.claim(key) for key in claims] == expected


def test_media_ledger_matches_a_dict(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(diskstore, "BATCH", 16)  # orphans and hashes come in several pages
    folder = _media_folder(tmp_path)
    names = list(media_names(folder))
    files = sorted(names)
    rng = random.Random(2)
    with MediaLedger(folder, iter(names)) as ledger:
        assert len(ledger) == len(files)
        outcomes: dict[str, str] = {}  # the reference: path -> first outcome, of the files
        others: dict[str, str] = {}  # and of the media that are not among them
        claimed: set[str] = set()
        for _ in range(300):
            media = str(rng.choice([*(folder / n for n in files), folder / "gone.mp4", tmp_path / "x.mp4"]))
            is_file = Path(media).parent == folder and Path(media).name in files
            if rng.random() < 0.5:
                outcome = rng.choice(["written", "dropped:x", "failed:media", "already_done"])
                ledger.record(media, outcome)
                (outcomes if is_file else others).setdefault(media, outcome)
            else:
                assert ledger.claim(media) == (not is_file or media not in claimed)
                claimed.add(media)
        assert ledger.others == others
        counted: dict[str, int] = {}
        for outcome in outcomes.values():
            counted[outcome] = counted.get(outcome, 0) + 1
        summary = ledger.summary()
        assert summary["files"] == len(files) and summary["written"] == counted.get("written", 0)
        assert summary["dropped"] == ({"x": counted["dropped:x"]} if "dropped:x" in counted else {})
        used_stems = {Path(m).stem for m in [*outcomes, *ledger.others]}
        orphans = [(folder / n, Path(n).stem in used_stems) for n in files if str(folder / n) not in outcomes]
        seen = []
        for path, used in ledger.orphans():
            seen.append((path, used))
            ledger.record(path, "failed:import")  # recording as it goes changes no verdict
        assert seen == orphans
        assert ledger.summary()["failed"].get("import") == len(orphans)
