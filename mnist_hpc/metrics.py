"""``python -m mnist_hpc.metrics status RUN_DIR``: a run's status for shell scripts (empty when
there is none to read). The file's schema: ``mnist_hpc.run.metrics_json``. Torch-free."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from .run.metrics_json import status


def main(argv: Optional[list[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "status":
        print("usage: python -m mnist_hpc.metrics status RUN_DIR", file=sys.stderr)
        return 2
    print(status(Path(args[1])) or "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
