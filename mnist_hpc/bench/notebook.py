"""The notebook's training loop: the one faithful copy in this package.

``train_one_epoch``, ``evaluate`` and ``train_network`` are the seed notebook's functions
(Bethany Lusch's MNIST CNN notebook) as written, so the benchmark's baseline is the code
people ran, slow parts included: a ``.item()`` per evaluated batch, ``DataLoader`` over
``ToTensor``'d images, no shuffling. The only additions: batches move to ``device`` (the
notebook ran on the CPU), seeds (so runs start from the package's weights), and clocks.
Both the throughput case ``notebook`` and the epochs comparison train with this copy.
"""

from __future__ import annotations

import time
from typing import Iterable, Optional

import torch
from torch import nn

from .. import seeds
from ..step import engine
from ..step.models import MNISTClassifier
from .settings import SEED, SPLIT_SEED

LR = 0.01
BATCH_SIZE = 512


def datasets(data_dir: str, limit: Optional[int]):
    """The notebook's datasets: torchvision MNIST + ToTensor, split by ``random_split`` seeded
    55. ``limit`` keeps the first N of each split, as ``dataset.load_splits`` does."""
    import torchvision

    def mnist(train: bool):
        return torchvision.datasets.MNIST(root=data_dir, train=train, download=False,
                                          transform=torchvision.transforms.ToTensor())

    training_data, validation_data = torch.utils.data.random_split(
        mnist(True), [0.8, 0.2], generator=torch.Generator().manual_seed(SPLIT_SEED))
    if limit is not None:
        training_data = torch.utils.data.Subset(training_data, range(limit))
        validation_data = torch.utils.data.Subset(validation_data, range(limit))
    return training_data, validation_data


def network(device: torch.device):
    """The notebook's model, optimizer and loss, the weights seeded with ``SEED``."""
    torch.manual_seed(seeds.stream("init", SEED, SPLIT_SEED))  # as train seeds its weights
    cnn_model = MNISTClassifier().to(device)
    optimizer = torch.optim.Adam(cnn_model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    return cnn_model, optimizer, loss_fn


def train_one_epoch(dataloader: Iterable, model: nn.Module, loss_fn: nn.Module,
                    optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    model.train()
    for X, y in dataloader:  # noqa: N806 (the notebook's names)
        X, y = X.to(device), y.to(device)  # noqa: N806
        pred = model(X)
        loss = loss_fn(pred, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def evaluate(dataloader, model: nn.Module, loss_fn: nn.Module,
             device: torch.device) -> tuple[float, float]:
    model.eval()
    size = len(dataloader.dataset)
    num_batches = len(dataloader)
    loss, correct = 0, 0
    with torch.no_grad():
        for X, y in dataloader:  # noqa: N806
            X, y = X.to(device), y.to(device)  # noqa: N806
            pred = model(X)
            loss += loss_fn(pred, y).item()
            correct += (pred.argmax(1) == y).type(torch.float).sum().item()
    loss /= num_batches
    correct /= size
    return 100 * correct, loss


def train_network(data_dir: str, limit: Optional[int], device: torch.device,
                  epochs: int) -> dict:
    """The notebook's ``train_network(512, epochs, 0.01)``, timed like its ``%%time`` cell:
    from building the loaders and the model to the last evaluation. Seeded as train seeds
    rank 0, so it starts from the same weights as the package's run; the dropout masks then
    differ (the package keys them per sample: step.dropout), so the two histories agree only
    statistically."""
    training_data, validation_data = datasets(data_dir, limit)
    torch.backends.cudnn.benchmark = False  # the notebook never sets it
    engine.synchronize(device)
    start = time.perf_counter()
    train_s = eval_s = 0.0
    cnn_model, optimizer, loss_fn = network(device)
    train_dataloader = torch.utils.data.DataLoader(training_data, batch_size=BATCH_SIZE)
    val_dataloader = torch.utils.data.DataLoader(validation_data, batch_size=BATCH_SIZE)
    history = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        train_one_epoch(train_dataloader, cnn_model, loss_fn, optimizer, device)
        engine.synchronize(device)
        t1 = time.perf_counter()
        acc_train, loss_train = evaluate(train_dataloader, cnn_model, loss_fn, device)
        acc_val, loss_val = evaluate(val_dataloader, cnn_model, loss_fn, device)
        t2 = time.perf_counter()
        train_s, eval_s = train_s + t1 - t0, eval_s + t2 - t1
        history.append([acc_train, loss_train, acc_val, loss_val])
    wall_s = time.perf_counter() - start
    return {"wall_s": wall_s, "train_s": train_s, "eval_s": eval_s,
            "train_samples_per_s": epochs * len(training_data) / train_s, "history": history}
