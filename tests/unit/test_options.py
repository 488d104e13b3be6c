"""One declaration per option: the dataclass field, its choices, its flag, its help and
whether it belongs to the recipe all come from it; recipe hashes of existing configs stay put
(checkpoints resume by hash)."""

from __future__ import annotations

import pytest

from mnist_hpc.config.flags import load_yaml, preset_names, resolve_config_path
from mnist_hpc.config.options import RunConfig, make_config

# measured before options were declared in one place; a change here strands every checkpoint
PINNED_HASHES = {"RunConfig()": "37762bc40f2976e4", "default": "37762bc40f2976e4",
                 "fast": "e3816133cee5fbed", "resnet": "8f9c47a9acc03f32",
                 "seed": "5e7d53ce2381c6f3", "vit": "bb7f0c6bb94f1de0"}


@pytest.mark.parametrize("name", sorted(PINNED_HASHES))
def test_recipe_hashes_of_existing_configs_do_not_move(name):
    config = (RunConfig() if name == "RunConfig()"
              else make_config(load_yaml(resolve_config_path(name)), source=name))
    assert config.recipe_hash() == PINNED_HASHES[name]


def test_every_preset_has_a_pinned_hash():
    assert set(preset_names()) <= set(PINNED_HASHES)
