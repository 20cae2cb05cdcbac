"""The GPU check of bl-model's Triton kernels, one module per job (entry point: `benchmarks/gpu_check.py`).

- `runner`: sizes (GPU and CPU self-test), timing with `do_bench`, the time budget, the report files;
- `ceilings`: the device's name, copy bandwidth and bf16 GEMM rate measured in the same run;
- `correctness`: runs bl-model's GPU-marked pytest tests (the CPU self-test: the interpreted kernel tests);
- `compression`, `attention`: the timing cases and their derived rates;
- `report`: the targets and the markdown report;
- `train_step`: one training step of a few real-width 13B layers, max_memory_allocated beside bl_train.plan's
  prediction;
- `compile_gate`: `--compile-only`, every kernel config compiled for sm_80 / sm_90 on the CPU, resources checked;
- `main`: the command line and the order of the sections (`python -m benchmarks.gpu_bench` = gpu_check.py).
"""
