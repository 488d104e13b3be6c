"""The trainer with one injected fault, for the failure tests: ``python tests/faulty_train.py
[trainer args]`` under any launcher. At optimizer step ``FAULT_STEP`` of the first epoch, rank
``FAULT_RANK`` either dies by a real SIGKILL (``FAULT=kill``: the kernel ends the process, no
Python cleanup runs, its sockets close) or raises the error a CUDA out-of-memory gives
(``FAULT=raise``). Every other rank runs the unmodified trainer.
"""

import os
import signal
import sys

import torch.distributed

from mnist_hpc import engine, train

FAULT = os.environ["FAULT"]
FAULT_RANK = int(os.environ.get("FAULT_RANK", "1"))
FAULT_STEP = int(os.environ.get("FAULT_STEP", "3"))
OOM_MESSAGE = ("CUDA out of memory. Tried to allocate 2.00 GiB (simulated by "
               "tests/faulty_train.py)")
_train_one_epoch = engine.train_one_epoch


def _faulty_train_one_epoch(*args, on_step=lambda step: None, **kwargs):
    def step_then_fault(step: int) -> None:
        on_step(step)
        if torch.distributed.get_rank() == FAULT_RANK and step == FAULT_STEP:
            if FAULT == "kill":
                print(f"tests/faulty_train.py: rank {FAULT_RANK} (pid {os.getpid()}) sends itself "
                      f"SIGKILL at step {step}", file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(OOM_MESSAGE)

    return _train_one_epoch(*args, on_step=step_then_fault, **kwargs)


if __name__ == "__main__":
    engine.train_one_epoch = _faulty_train_one_epoch
    sys.exit(train.main())
