"""The networks: the notebook's, faithfully; its corrected form; the next ones by name."""

from __future__ import annotations

import pytest
import torch

from mnist_hpc.models import MODELS, MNISTClassifier, MNISTCNN, build_model, count_parameters


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
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_dropout_can_be_switched_off():
    model = build_model("cnn", dropout=False).train()
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(model(x), model(x))
