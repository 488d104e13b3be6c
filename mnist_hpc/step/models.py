"""Networks by name: the notebook's CNN (faithful), its corrected form, the published fast
recipe's small CNN, and the next steps the notebook points at (a small ResNet and a small
ViT). Models know nothing of data or ranks.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .dropout import keyed


class MNISTClassifier(nn.Module):
    """The notebook's network, layer for layer. ``forward`` ends in softmax, as the notebook's
    does, so CrossEntropyLoss applies log-softmax a second time: that is what it measured."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_1 = nn.Conv2d(in_channels=1, out_channels=32, kernel_size=3)
        self.conv_2 = nn.Conv2d(in_channels=32, out_channels=64, kernel_size=3)
        self.drop_3 = nn.Dropout(p=0.25)
        self.dense_4 = nn.Linear(in_features=9216, out_features=128)
        self.drop_5 = nn.Dropout(p=0.5)
        self.dense_6 = nn.Linear(in_features=128, out_features=10)

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv_1(inputs))
        # max-pool before ReLU: both are monotone, so the values and gradients are the
        # notebook's bit for bit, but ReLU and its backward touch a quarter of the elements
        x = F.relu(F.max_pool2d(self.conv_2(x), kernel_size=2))
        x = self.drop_3(x)
        x = torch.flatten(x, start_dim=1)
        x = F.relu(self.dense_4(x))
        x = self.drop_5(x)
        return self.dense_6(x)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.logits(inputs), dim=1)


class MNISTCNN(MNISTClassifier):
    """The same network returning logits, the form CrossEntropyLoss expects."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.logits(inputs)


class SmallCNN(nn.Module):
    """The network of the fastest published MNIST recipe (tuomaso/train_mnist_fast): conv
    1->24 5x5, max-pool, conv 24->32 3x3, max-pool, linear 800->256->10, ReLUs, no dropout.
    215k weights and a tenth of the notebook CNN's FLOPs per image (1.2 M multiply-adds
    against 12 M): the `fast` preset's network. Returns logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_1 = nn.Conv2d(1, 24, kernel_size=5)
        self.conv_2 = nn.Conv2d(24, 32, kernel_size=3)
        self.dense_3 = nn.Linear(800, 256)
        self.dense_4 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # pool before ReLU, as the published network does: ReLU touches a quarter of the values
        x = F.relu(F.max_pool2d(self.conv_1(x), 2))
        x = F.relu(F.max_pool2d(self.conv_2(x), 2))
        return self.dense_4(F.relu(self.dense_3(torch.flatten(x, 1))))


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm_a = nn.BatchNorm2d(channels)
        self.conv_b = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm_b = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm_a(self.conv_a(x)))
        return F.relu(x + self.norm_b(self.conv_b(y)))  # the skip connection: f(x) + x


class ResNet(nn.Module):
    """A small ResNet for 28x28 digits: stem, three stages of residual blocks (32, 64, 128
    channels at 28, 14 and 7 pixels), pooled head. The third stage widens each feature's
    field of view to the whole digit before the pooling (two stages see 17x17 pixels, three
    37x37)."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.stage_1 = _ResidualBlock(width)
        self.down_1 = _downsample(width)
        self.stage_2 = _ResidualBlock(2 * width)
        self.down_2 = _downsample(2 * width)
        self.stage_3 = _ResidualBlock(4 * width)
        self.head = nn.Linear(4 * width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage_1(self.stem(x))
        x = self.stage_3(self.down_2(self.stage_2(self.down_1(x))))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _downsample(channels: int) -> nn.Sequential:
    """Halve the resolution, double the channels."""
    return nn.Sequential(nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(2 * channels), nn.ReLU())


class ViT(nn.Module):
    """A small vision transformer: a convolutional stem makes 7x7 tokens, then learned position
    embeddings, a class token and pre-norm encoder layers.

    The stem (two stride-2 3x3 convolutions, as in Xiao et al. 2021, "Early convolutions help
    transformers see better") replaces the 7x7-pixel patchify: on MNIST it gives 49 tokens of
    overlapping views where 7x7 patches gave 16 disjoint ones (97.46 % test after the 6-epoch
    recipe with patches; docs/recipes.md)."""

    def __init__(self, dim: int = 64, depth: int = 4, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Conv2d(1, dim // 2, 3, stride=2, padding=1), nn.GELU(),
                                   nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1))
        patches = 7 * 7  # 28 -> 14 -> 7
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, patches + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1) + self.pos
        return self.head(self.norm(self.encoder(tokens)[:, 0]))


MODELS = {"seed": MNISTClassifier, "cnn": MNISTCNN, "small": SmallCNN, "resnet": ResNet,
          "vit": ViT}


def build_model(name: str, dropout: bool = True) -> nn.Module:
    """A fresh network by name (see MODELS), as the trainer trains it: dropout keyed per
    sample (step.dropout), or off. Initialised from torch's global RNG."""
    model = keyed(MODELS[name]())
    if not dropout:
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
    return model


def probabilities(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Class probabilities (B, 10). The seed network's output is a softmax already: its
    logits are taken instead, so the probabilities are not squashed a second time."""
    outputs = model.logits(inputs) if isinstance(model, MNISTClassifier) else model(inputs)
    return F.softmax(outputs.float(), dim=1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
