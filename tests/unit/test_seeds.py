"""Every random stream of a run has a named purpose and none collides with another, within the
32 bits that torch's CPU generator keeps of a seed."""

from __future__ import annotations

import pytest
import torch

from mnist_hpc import seeds
from mnist_hpc.config.options import RunConfig
from mnist_hpc.data.batches import BatchPlan


def test_torch_keeps_only_the_low_32_bits_of_a_seed():
    """Why streams are told apart within 32 bits: distinct 64-bit seeds can draw alike."""
    def draw(seed):
        return torch.rand(3, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(5), draw(2**32 + 5))


@pytest.mark.parametrize("seed, split_seed", [(0, 55), (1, 55), (2**31 - 1, 0), (7, 2**32 - 1),
                                              (123, 2**31)])
def test_every_stream_of_a_run_is_distinct_in_the_generator_s_32_bits(seed, split_seed):
    streams = seeds.run_streams(seed, split_seed, epochs=200)
    assert len(streams) == 2 + 3 * 200
    low_bits = [value % 2**32 for value in streams.values()]
    assert len(set(low_bits)) == len(low_bits), "two streams of one run collide"
    assert streams["split"] == split_seed  # the notebook's manual_seed(55), unchanged


def test_the_old_collision_is_gone():
    """Before, epoch 1's shuffle and rank 0's dropout (and epoch 0's shuffle and the initial
    weights at seed 0) were seeded with the same number."""
    streams = seeds.run_streams(0, 55, epochs=2)
    assert streams["shuffle/epoch 1"] != streams["dropout/epoch 0"]
    assert streams["shuffle/epoch 0"] != streams["init"]


def test_neighbouring_seeds_do_not_replay_each_other_s_streams():
    one, two = (set(seeds.run_streams(s, 55, epochs=50).values()) - {55}
                for s in (0, 1))
    assert not one & two


def test_the_run_draws_from_the_named_streams():
    """The shuffle and the dropout keys the batches carry are the streams ``run_streams``
    lists; no stream depends on the rank."""
    streams = seeds.run_streams(3, 55, 2)
    plan = BatchPlan(1000, 100, seed=3, split_seed=55)
    expected = torch.randperm(1000, generator=torch.Generator().manual_seed(
        streams["shuffle/epoch 1"]))
    assert torch.equal(plan.order(1), expected)
    step = plan.steps(1)[0]
    keys = plan.sample_keys(step, step.local)
    assert torch.equal(keys >> seeds.SAMPLE_BITS,
                       torch.full_like(keys, streams["dropout/epoch 1"]))
    assert torch.equal(keys % 2**seeds.SAMPLE_BITS, step.local)


def test_seeds_out_of_range_are_refused():
    with pytest.raises(ValueError, match="seed must be in"):
        seeds.stream("init", 2**31, 55)
    with pytest.raises(ValueError, match="key"):
        seeds.stream("shuffle", 0, 55, 2**28)
    assert RunConfig(seed=2**31 - 1).seed == 2**31 - 1
