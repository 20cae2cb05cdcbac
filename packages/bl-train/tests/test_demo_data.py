"""The demo folder: a folder written by an older bl-train is brought up to date, not used as it is."""

import shutil

from bl_model import BehaviorLlavaProcessor
from bl_train.demo import DEMO_FORMAT, build_demo_data


def test_an_older_demo_folder_gets_its_processor_rebuilt_and_the_same_model(demo_root, tmp_path):
    old = shutil.copytree(demo_root, tmp_path / "demo-data")
    shutil.rmtree(old / "processor")
    (old / "processor" / "tokenizer").mkdir(parents=True)  # the pre-ProcessorMixin layout's subfolder
    (old / "READY").write_text("demo data complete\n")  # what bl-train wrote before DEMO_FORMAT
    build_demo_data(old, n_train=16, n_heldout=4, n_images=16)  # the session's demo sizes
    assert (old / "READY").read_text() == DEMO_FORMAT
    assert not (old / "processor" / "tokenizer").exists()
    rebuilt = BehaviorLlavaProcessor.from_pretrained(old / "processor")
    original = BehaviorLlavaProcessor.from_pretrained(demo_root / "processor")
    assert rebuilt.tokenizer.get_vocab() == original.tokenizer.get_vocab()
    for name in ("model.safetensors", "config.json"):
        assert (old / "model" / name).read_bytes() == (demo_root / "model" / name).read_bytes(), name
