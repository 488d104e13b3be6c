"""The doctor's own options, as its command line (``doctor.cli``) gives them to the run
(``doctor.run``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class Options:
    """The doctor's own flags; the rest of the command line is a trainer's RunConfig."""

    max_bytes: int
    quick: bool
    out: Optional[Path]
