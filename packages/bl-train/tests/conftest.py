"""Shared fixtures: the demo data (built once per session) and demo recipes pointing at it."""

from pathlib import Path

import pytest

from bl_train.config import load_recipe
from bl_train.demo import build_demo_data
from bl_train.testing import demo_overrides

CONFIGS = Path(__file__).parents[3] / "configs"


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    return build_demo_data(tmp_path_factory.mktemp("demo-data"), n_train=16, n_heldout=4, n_images=16)


@pytest.fixture(scope="session")
def demo_args(demo_root):
    """`demo_args(out_dir, *extra)` -> CLI overrides of the demo recipe pointing at the session's demo data."""
    return lambda out, *extra: demo_overrides(demo_root, out, *extra)


@pytest.fixture
def demo_recipe(demo_args, tmp_path):
    return lambda *extra: load_recipe(CONFIGS / "demo.yaml", demo_args(tmp_path / "run", *extra))
