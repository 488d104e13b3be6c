"""Every random stream of a run, each with a named purpose, none able to collide with another;
and the process's generator state, which checkpoints and the warm-up save and restore.

A run draws from five streams: the 80/20 split (``split_seed`` itself: the notebook's
``torch.Generator().manual_seed(55)``), the initial weights, each epoch's shuffle, each
epoch's augmentation and each epoch's dropout (all four from ``--seed``). No stream belongs
to a rank: augmentation and dropout are drawn per sample (``sample_keys``), so N ranks draw
what one process draws. torch's CPU
generator keeps only the low 32 bits of a seed (``manual_seed(2**32 + 5)`` draws what
``manual_seed(5)`` draws), so the streams are told apart within 32 bits, by construction::

    stream = split_seed + 1 + scramble(seed) + purpose * 2**28 + key        (mod 2**32)

``scramble`` is a bijection of [0, 2**31); ``purpose`` (< 8) names the stream and ``key``
(< 2**28) is its epoch. The offset after ``split_seed`` lies in [1, 2**32), so no
stream equals the split's, and for one ``--seed`` distinct (purpose, key) pairs give distinct
offsets. Neighbouring seeds land far apart, so seed 1 does not replay seed 0's later epochs.
"""

from __future__ import annotations

import torch

MAX_SEED = 2**31  # seeds are scrambled within 31 bits (see above)
MAX_KEY = 2**28  # epochs
SAMPLE_BITS = 20  # training-split positions below 2**20 (MNIST's file has 60,000 images)
_BITS32 = 2**32
_PURPOSES = ("init", "shuffle", "augment", "dropout")


def _scramble(seed: int) -> int:
    """A bijection of [0, 2**31) that spreads consecutive seeds apart."""
    x = (seed * 0x5BD1E995) % MAX_SEED  # odd multiplier: invertible modulo a power of two
    return x ^ (x >> 15)  # an xor-shift to the right is invertible too


def stream(purpose: str, seed: int, split_seed: int, key: int = 0) -> int:
    """The seed of one named stream (``purpose``: init, shuffle, augment or dropout)."""
    if not 0 <= seed < MAX_SEED:
        raise ValueError(f"seed must be in [0, 2**31), got {seed}")
    if not 0 <= key < MAX_KEY:
        raise ValueError(f"a stream's key (an epoch) must be in [0, 2**28), got {key}")
    offset = _scramble(seed) + _PURPOSES.index(purpose) * MAX_KEY + key
    return (split_seed + 1 + offset) % _BITS32


def generator(purpose: str, seed: int, split_seed: int, key: int = 0) -> torch.Generator:
    """A CPU generator on one stream: every device draws the same numbers from it."""
    return torch.Generator().manual_seed(stream(purpose, seed, split_seed, key))


def sample_keys(seed: int, split_seed: int, epoch: int, index: torch.Tensor) -> torch.Tensor:
    """int64 keys of the samples at training-split positions ``index`` in ``epoch``, on
    ``index``'s device: what their dropout masks are drawn from (``step.dropout``). Distinct
    for every (epoch, sample) of a run, and the same whichever rank holds the sample."""
    return index.to(torch.int64) + stream("dropout", seed, split_seed, epoch) * 2**SAMPLE_BITS


def run_streams(seed: int, split_seed: int, epochs: int) -> dict[str, int]:
    """Every stream a run of ``epochs`` epochs draws from, by name (at any world size)."""
    streams = {"split": split_seed % _BITS32,
               "init": stream("init", seed, split_seed)}
    for epoch in range(epochs):
        streams[f"shuffle/epoch {epoch}"] = stream("shuffle", seed, split_seed, epoch)
        streams[f"augment/epoch {epoch}"] = stream("augment", seed, split_seed, epoch)
        streams[f"dropout/epoch {epoch}"] = stream("dropout", seed, split_seed, epoch)
    return streams


def rng_state(device: torch.device) -> dict:
    """The process's generators (the initial weights come from them; the warm-up and CUDA
    graph capture put them back)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
