"""The networks: the notebook's, faithfully; its corrected form; the next ones by name."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from mnist_hpc.bench.accuracy import bench_time_to_accuracy
from mnist_hpc.bench.cli import build_parser as bench_parser
from mnist_hpc.bench.published import Net
from mnist_hpc.bench.settings import settings_from
from mnist_hpc.config.flags import parse_args
from mnist_hpc.step.dropout import set_sample_keys
from mnist_hpc.step.models import (
    MNISTCNN,
    MODELS,
    MNISTClassifier,
    build_model,
    count_parameters,
)


@pytest.mark.parametrize("name", ["seed", "cnn"])
def test_seed_networks_have_the_notebooks_parameter_count(name):
    assert count_parameters(build_model(name)) == 1_199_882


def test_seed_layers_are_the_notebooks():
    model = MNISTClassifier()
    assert [name for name, _ in model.named_children()] == [
        "conv_1", "conv_2", "drop_3", "dense_4", "drop_5", "dense_6"]
    assert (model.conv_1.out_channels, model.conv_2.out_channels) == (32, 64)
    assert (model.drop_3.p, model.drop_5.p) == (0.25, 0.5)
    assert model.dense_4.in_features == 9216


def test_seed_outputs_probabilities_and_cnn_the_logits_behind_them():
    torch.manual_seed(0)
    seed = MNISTClassifier().eval()
    cnn = MNISTCNN().eval()
    cnn.load_state_dict(seed.state_dict())
    x = torch.rand(4, 1, 28, 28)
    probabilities, logits = seed(x), cnn(x)
    assert torch.allclose(probabilities.sum(1), torch.ones(4))
    assert torch.allclose(probabilities, logits.softmax(1))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_maps_a_batch_to_ten_classes(name):
    model = build_model(name)
    set_sample_keys(model, torch.arange(3))  # the batch's dropout keys, as the engine gives
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_dropout_can_be_switched_off():
    model = build_model("cnn", dropout=False).train()
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(model(x), model(x))


def test_seed_forward_equals_the_notebooks_layer_order_bit_for_bit():
    """models.py pools before the last ReLU for speed; values and gradients must not move."""

    def notebook_forward(m, x):  # the notebook's forward, verbatim in order
        h = F.relu(m.conv_2(F.relu(m.conv_1(x))))
        h = torch.flatten(m.drop_3(F.max_pool2d(h, kernel_size=2)), start_dim=1)
        return F.softmax(m.dense_6(m.drop_5(F.relu(m.dense_4(h)))), dim=1)

    torch.manual_seed(0)
    model, x, y = MNISTClassifier().train(), torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    outputs, grads = [], []
    for forward in (notebook_forward, lambda m, x: m(x)):
        torch.manual_seed(1)  # the same dropout masks
        out = forward(model, x)
        outputs.append(out)
        grads.append(torch.autograd.grad(F.cross_entropy(out, y), list(model.parameters())))
    assert torch.equal(outputs[0], outputs[1])
    assert all(torch.equal(a, b) for a, b in zip(*grads))


@pytest.mark.parametrize("preset, model", [("seed", "seed"), ("default", "cnn"),
                                           ("resnet", "resnet"), ("vit", "vit")])
def test_every_model_runs_in_the_bench(preset, model):
    """The bench's time-to-accuracy run of each model's preset on a small subset (bf16 where
    the preset asks for it): every step of the epoch is taken and the test subset evaluated."""
    config = parse_args(["--config", preset])
    assert config.model == model
    args = bench_parser().parse_args(["--quick", "--device", "cpu", "--limit", "512"])
    settings = settings_from(args, torch.device("cpu"))
    report = bench_time_to_accuracy(preset, settings, log=lambda line: None)
    assert report["config"]["model"] == model
    assert report["precision"] == ("bf16" if config.precision == "bf16" else "fp32")  # CPU
    assert report["curve"][-1]["step"] == -(-512 // config.batch_size)
    assert report["train_samples_per_s"] > 0
    assert 0 < report["final_test_acc"] <= 100 and math.isfinite(report["final_test_loss"])


@pytest.mark.parametrize("name, precision", [("resnet", "bf16"), ("vit", "auto")])
def test_new_presets_train_their_own_model_with_their_own_recipe(name, precision):
    """Each preset picks its network, a one-cycle schedule, shift augmentation, and its
    precision: bf16 for the ResNet's convolutions; auto for the ViT (fp32 on a CPU, where
    bf16 autocast slows its small matrices down, bf16 with CUDA graphs)."""
    config = parse_args(["--config", name])
    assert (config.model, config.schedule, config.augment) == (name, "onecycle", "shift")
    assert config.precision == precision


def test_the_small_network_is_the_published_recipes():
    """The fast preset's network computes what the published notebook's ``Net`` computes (its
    log-softmax aside: CrossEntropyLoss applies that), weight for weight."""
    ours, theirs = build_model("small"), Net()
    assert [p.shape for p in ours.parameters()] == [p.shape for p in theirs.parameters()]
    theirs.load_state_dict(dict(zip(theirs.state_dict(), ours.state_dict().values())))
    x = torch.randn(8, 1, 28, 28)
    torch.testing.assert_close(F.log_softmax(ours(x), dim=1), theirs(x))
    assert count_parameters(ours) == 215_194
