"""Keyed dropout (step.dropout): masks that are a function of the sample, the layer and the
element alone, so that any split of a batch over ranks draws what one process draws."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mnist_hpc import seeds
from mnist_hpc.step import dropout
from mnist_hpc.step.models import build_model

M64 = 2**64


def mix64(x: int) -> int:  # splitmix64's finaliser, in Python's unbounded integers
    x ^= x >> 30
    x = x * 0xBF58476D1CE4E5B9 % M64
    x ^= x >> 27
    x = x * 0x94D049BB133111EB % M64
    return x ^ (x >> 31)


def mix32(x: int) -> int:  # murmur3's finaliser
    x ^= x >> 16
    x = x * 0x85EBCA6B % 2**32
    x ^= x >> 13
    x = x * 0xC2B2AE35 % 2**32
    return x ^ (x >> 16)


def reference_mask(key: int, layer: int, features: int, p: float) -> list[bool]:
    """The documented draw, written out: one 32-bit hash per four elements, a byte each."""
    golden = 0x9E3779B97F4A7C15
    sample = mix64((key + layer * golden) % M64) % 2**32
    kept = []
    for group in range(-(-features // 4)):
        offset = mix64((group + golden) % M64) % 2**32
        word = mix32((sample + offset) % 2**32)
        kept += [(word >> (8 * byte)) & 0xFF >= round(p * 256) for byte in range(4)]
    return kept[:features]


KEYS = seeds.sample_keys(7, 55, 3, torch.tensor([0, 1, 4095, 47_999]))


@pytest.mark.parametrize("layer,shape,p", [(0, (4, 3, 2, 2), 0.25), (1, (4, 10), 0.5)])
def test_the_mask_is_the_documented_hash_bit_for_bit(layer, shape, p):
    mask = dropout.keep_mask(KEYS, layer, torch.Size(shape), p).reshape(len(KEYS), -1)
    for row, key in zip(mask, KEYS.tolist()):
        assert row.tolist() == reference_mask(key, layer, row.numel(), p)


def test_a_samples_mask_does_not_depend_on_its_batch():
    """What a rank's slice draws is what the whole batch draws for those samples."""
    keys = seeds.sample_keys(0, 55, 0, torch.randperm(512))
    shape = torch.Size([512, 64, 12, 12])
    whole = dropout.keep_mask(keys, 0, shape, 0.25)
    start = 0
    for part in torch.tensor_split(keys, 3):  # three ranks' slices: 171, 171, 170
        sliced = dropout.keep_mask(part, 0, torch.Size([len(part), *shape[1:]]), 0.25)
        assert torch.equal(sliced, whole[start:start + len(part)])
        start += len(part)


@pytest.mark.parametrize("p", [0.25, 0.5])
def test_masks_keep_one_minus_p_and_samples_and_layers_are_independent(p):
    keys = seeds.sample_keys(0, 55, 0, torch.arange(256))
    mask = dropout.keep_mask(keys, 0, torch.Size([256, 4096]), p).double()
    assert mask.mean().item() == pytest.approx(1 - p, abs=0.003)  # 1M draws: sd 4e-4
    # two samples (or two layers) agree on an element as independent draws do
    agree = p * p + (1 - p) ** 2
    assert (mask[0::2] == mask[1::2]).double().mean().item() == pytest.approx(agree, abs=0.005)
    other_layer = dropout.keep_mask(keys, 1, torch.Size([256, 4096]), p).double()
    assert (mask == other_layer).double().mean().item() == pytest.approx(agree, abs=0.005)
    # and within a sample, neighbouring elements too
    assert (mask[:, 0::2] == mask[:, 1::2]).double().mean().item() == pytest.approx(
        agree, abs=0.005)


def test_every_epoch_and_seed_draws_other_keys():
    index = torch.arange(60_000)
    keys = [seeds.sample_keys(s, 55, e, index) for s in (0, 1) for e in (0, 1)]
    assert len(set(torch.cat(keys).tolist())) == 4 * 60_000


def test_forward_scales_what_it_keeps_and_backward_follows_the_mask():
    layer = dropout.KeyedDropout(0.25, layer=0)
    x = torch.rand(8, 5, 7, requires_grad=True)
    layer.sample_keys = KEYS.repeat(2)
    y = layer(x)
    keep = dropout.keep_mask(layer.sample_keys, 0, x.shape, 0.25)
    assert torch.equal(y, torch.where(keep, x * (1 / 0.75), 0.0))
    y.sum().backward()
    assert torch.equal(x.grad, keep.float() / 0.75)
    assert torch.equal(layer.eval()(x), x)  # evaluation: the identity


def test_a_training_forward_without_the_batchs_keys_fails_loudly():
    layer = dropout.KeyedDropout(0.5, layer=0)
    with pytest.raises(RuntimeError, match="needs the batch's 3 sample keys"):
        layer(torch.ones(3, 4))
    layer.sample_keys = KEYS  # four keys, three samples
    with pytest.raises(RuntimeError, match="needs the batch's 3 sample keys"):
        layer(torch.ones(3, 4))
    with pytest.raises(ValueError, match="steps of 1/256"):
        dropout.KeyedDropout(0.3, layer=0)


def test_the_trainers_networks_key_every_dropout_and_keep_their_state_dict():
    model = build_model("seed")
    layers = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert [(type(m), m.p, m.layer) for m in layers] == [
        (dropout.KeyedDropout, 0.25, 0), (dropout.KeyedDropout, 0.5, 1)]
    plain = type(model)()  # the notebook's own layers: the same weights' names
    assert list(model.state_dict()) == list(plain.state_dict())
    dropout.set_sample_keys(model, KEYS)
    assert all(m.sample_keys is KEYS for m in layers)
    switched_off = build_model("seed", dropout=False).train()
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(switched_off(x), switched_off(x))  # p = 0: no keys needed
