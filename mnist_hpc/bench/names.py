"""The names of what ``python -m mnist_hpc.bench`` measures, and their groups: torch-free, so
the command line (``bench.cli``) is answered before torch loads."""

from __future__ import annotations

THROUGHPUT_CASES = ("notebook", "loader", "device", "torch_dropout", "device_cl", "bf16_cl",
                    "compiled")
# larger batches, CUDA graphs and max-autotune only pay off (or only run) on a GPU
CUDA_CASES = ("bf16_cl_2048", "compiled_2048", "graphed_256", "graphed_bf16_256", "graphed_512",
              "graphed_bf16_512", "graphed_compiled_2048", "max_autotune_2048")
TTA_PRESETS = ("default", "fast")  # the presets timed to each accuracy target

GROUPS = {"throughput": THROUGHPUT_CASES + CUDA_CASES, "epochs": ("epochs",),
          "tta": tuple(f"tta_{p}" for p in TTA_PRESETS), "overhead": ("overhead",),
          "race": ("race",),  # the fast preset against the fastest published recipe
          "allocator": ("allocator",)}  # glibc's large-block thresholds, whole CPU runs
# every name --only takes: the groups, then each measurement of them
NAMES = tuple(dict.fromkeys([*GROUPS, *(n for group in GROUPS.values() for n in group)]))
