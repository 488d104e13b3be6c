"""A 2-rank torchrun run's model.pt scores the run's test accuracy exactly: through
``mnist_hpc.load_model`` and through ``python -m mnist_hpc.evaluate`` started by torchrun and
by mpiexec with 2 ranks each (each rank a shard, the counts all-reduced, as in training)."""

from __future__ import annotations

import pytest
from conftest import read_metrics
from launchers import LIMIT, launch, launcher, trained
from model_checks import api_score, printed_score


def test_the_api_scores_a_two_rank_runs_test_accuracy_exactly(tmp_path_factory):
    run_dir = trained("torchrun", True, tmp_path_factory)
    assert api_score(run_dir, LIMIT, world_size=2).accuracy == read_metrics(
        run_dir)["final"]["test_acc"]


@pytest.mark.parametrize("kind", ["torchrun", "mpiexec"])
def test_evaluate_on_two_ranks_scores_the_runs_test_accuracy_exactly(kind, tmp_path_factory):
    run_dir = trained("torchrun", True, tmp_path_factory)
    result = launch(launcher(kind) + ["-m", "mnist_hpc.evaluate", str(run_dir), "--limit",
                                      str(LIMIT), "--device", "cpu", "--backend", "gloo"],
                    timeout=180)
    assert result.returncode == 0, str(result)
    assert "model.pt on 2 rank(s), cpu" in result.output
    assert result.output.count("Test accuracy: ") == 1, "only rank 0 prints"
    score, printed = printed_score(result.output)
    final = read_metrics(run_dir)["final"]
    assert score.count == LIMIT and score.accuracy == final["test_acc"]
    assert printed == f"{final['test_acc']:.4f}"
