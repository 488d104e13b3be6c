"""The resolved record of a run's config (config.resolve): every auto replaced, the run id
filled in, loadable back as --config, and one recipe hash with its request."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from mnist_hpc.config.flags import load_yaml
from mnist_hpc.config.options import RunConfig, make_config
from mnist_hpc.config.resolve import precision_ran, recipe_hashes, record_yaml, resolved

AUTO_FIELDS = ("device", "backend", "precision", "cuda_graphs")


@pytest.mark.parametrize("device, backend, graphs, precision", [
    ("cpu", "gloo", False, "fp32"), ("cuda", "nccl", True, "bf16"),
    ("cuda", "nccl", False, "fp32"), ("mps", "gloo", False, "fp32")])
def test_every_auto_is_replaced_by_what_was_chosen(device, backend, graphs, precision):
    ran = resolved(RunConfig(), device_type=device, backend=backend, cuda_graphs=graphs,
                   run_id="r1")
    assert all(getattr(RunConfig(), name) == "auto" for name in AUTO_FIELDS)
    assert (ran.device, ran.backend, ran.precision, ran.cuda_graphs, ran.run_id) == (
        device, backend, precision, "on" if graphs else "off", "r1")


def test_an_explicit_precision_is_kept():
    config = RunConfig(precision="bf16")
    assert resolved(config, device_type="cpu", backend="gloo", cuda_graphs=False,
                    run_id="r").precision == "bf16"
    assert precision_ran("fp32", True) == "fp32"


def test_a_run_continued_by_directory_records_no_run_id():
    """--run-id and --resume RUN_DIR exclude each other: the record of a resumed run stays
    loadable; --resume auto names its run by --run-id, which is recorded."""
    by_dir = RunConfig(resume="/somewhere/r7")
    assert resolved(by_dir, device_type="cpu", backend="gloo", cuda_graphs=False,
                    run_id="r7").run_id is None
    by_name = RunConfig(resume="auto", run_id="r7")
    assert resolved(by_name, device_type="cpu", backend="gloo", cuda_graphs=False,
                    run_id="r7").run_id == "r7"


def test_the_record_loads_back_as_the_same_config(tmp_path):
    ran = resolved(RunConfig(batch_size=256, batch_mode="per-rank", data_dir="data"),
                   device_type="cpu", backend="gloo", cuda_graphs=False, run_id="r1")
    text = record_yaml(ran, world_size=4)
    assert "# batch per rank: 256 (global batch 1024 over 4 ranks)" in text.splitlines()
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert make_config(load_yaml(path), source=str(path)) == ran
    assert "auto" not in yaml.safe_load(text).values()


@pytest.mark.parametrize("graphs", [False, True])
def test_resolution_leaves_the_recipe_hash_a_checkpoint_matches(graphs):
    """A checkpoint records the request's hash (precision auto); started again with its own
    command line or with its config.yaml, the run accepts it."""
    request = RunConfig()
    ran = resolved(request, device_type="cuda", backend="nccl", cuda_graphs=graphs, run_id="r")
    assert request.recipe_hash() in recipe_hashes(request, graphs)
    assert request.recipe_hash() in recipe_hashes(ran, graphs)
    assert recipe_hashes(request, graphs) == recipe_hashes(ran, graphs)
    # a precision auto would not have chosen here is another recipe
    other = dataclasses.replace(request, precision="fp32" if graphs else "bf16")
    assert request.recipe_hash() not in recipe_hashes(other, graphs)
