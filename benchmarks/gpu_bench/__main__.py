"""`python -m benchmarks.gpu_bench` from the repository root: the same command line as benchmarks/gpu_check.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path

if "--self-test" in sys.argv[1:]:
    os.environ["TRITON_INTERPRET"] = (
        "1"  # before torch, triton or bl_model is imported: kernels run on the CPU
    )
elif "--compile-only" in sys.argv[1:]:
    os.environ["TRITON_INTERPRET"] = "0"  # real compilation for GPUs that are not here
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # _ancestors, as gpu_check.py does

from .main import main

sys.exit(main())
