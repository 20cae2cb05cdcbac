#!/usr/bin/env python3
# ruff: noqa: E402
# (imports follow code: TRITON_INTERPRET must be set before torch, triton and bl_model are imported)
"""One-call GPU check of bl-model's Triton kernels: ceilings, correctness on CUDA, timings side by side.

    python benchmarks/gpu_check.py --out DIR               # a CUDA machine; < 8 min on an H100, compiles included
    python benchmarks/gpu_check.py --out DIR --self-test   # the CPU, under TRITON_INTERPRET=1, tiny shapes

Writes DIR/gpu_check.json and DIR/gpu_check.md after every section. The work is in `gpu_bench/` (one module
per job); benchmarks/README.md describes the sections, models and targets.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

if "--self-test" in sys.argv[1:]:
    os.environ["TRITON_INTERPRET"] = (
        "1"  # before torch, triton or bl_model is imported: kernels run on the CPU
    )

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))  # gpu_bench and _ancestors
if importlib.util.find_spec("bl_model") is None:  # a bare checkout (the GPU machine): use the source tree
    sys.path.insert(0, str(_HERE.parent / "packages" / "bl-model" / "src"))

from gpu_bench.main import main

if __name__ == "__main__":
    sys.exit(main())
