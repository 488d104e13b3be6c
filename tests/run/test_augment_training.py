"""Augmentation: a sample's transform depends on (seed, epoch, index) only, so 1 rank and 2
give the same images; shapes, dtype and range are kept; and it is off by default."""

from __future__ import annotations


def test_training_sees_the_augmented_images(tmp_path):
    from mnist_hpc import train

    def history(mode: str) -> str:
        argv = ["--limit", "128", "--batch-size", "64", "--epochs", "1", "--device", "cpu",
                "--augment", mode, "--results-dir", str(tmp_path), "--run-id", mode]
        assert train.main(argv) == 0
        return (tmp_path / mode / "history.csv").read_text()

    assert history("shift") != history("none")
