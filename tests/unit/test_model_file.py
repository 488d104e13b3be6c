"""model.pt round trips: every network saved and loaded back, as data only; bad files and bad
run directories refused with one line naming the file and the fix; image folders read as
MNIST-shaped digits."""

from __future__ import annotations

import pytest
import torch

import mnist_hpc
from mnist_hpc.config.options import RunConfig
from mnist_hpc.data import images
from mnist_hpc.errors import UsageError
from mnist_hpc.run import evaluation, model_file
from mnist_hpc.step.engine import Precision
from mnist_hpc.step.models import MODELS, build_model, probabilities


def saved_run(tmp_path, name: str = "cnn", normalize: bool = False):
    """A run directory holding model.pt of a freshly initialised ``name``."""
    torch.manual_seed(3)
    model = build_model(name).to(memory_format=torch.channels_last)
    model_file.save(tmp_path, model, RunConfig(model=name, normalize=normalize),
                    Precision(channels_last=True, normalize=normalize))
    return model


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_network_comes_back_with_its_weights_in_eval_mode(tmp_path, name):
    model = saved_run(tmp_path, name)
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    assert payload["model"] == name and payload["args"] == model_file.constructor_args(name)
    loaded = mnist_hpc.load_model(tmp_path)
    assert type(loaded) is MODELS[name] and not loaded.training
    want = model.state_dict()
    assert set(loaded.state_dict()) == set(want)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, want[key]), key
    inputs = torch.rand(3, 1, 28, 28)
    with torch.inference_mode():
        assert torch.equal(loaded(inputs), model.eval()(inputs))
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left


def test_constructor_arguments_are_recorded_by_name():
    assert model_file.constructor_args("resnet") == {"width": 32}
    assert model_file.constructor_args("vit") == {"dim": 64, "depth": 4, "heads": 4}


def test_the_input_scaling_travels_with_the_model(tmp_path):
    saved_run(tmp_path, normalize=True)
    saved = model_file.load(tmp_path)
    assert saved.precision == Precision(channels_last=True, normalize=True)
    assert saved.eval_batch_size is None


def test_the_seed_networks_probabilities_are_not_squashed_twice():
    model = build_model("seed").eval()
    inputs = torch.rand(2, 1, 28, 28)
    with torch.inference_mode():
        assert torch.allclose(probabilities(model, inputs), model(inputs))


class _Code:
    """Pickled as a call: a file holding it is refused by weights_only loading."""

    def __reduce__(self):
        return (print, ("ran",))


BAD_FILES = {
    "empty": lambda path: path.write_bytes(b""),
    "garbage": lambda path: path.write_bytes(b"\x00not a model" * 100),
    "truncated": lambda path: path.write_bytes(path.read_bytes()[:2000]),
    "code": lambda path: torch.save({"format": 1, "x": _Code()}, path),
}


@pytest.mark.parametrize("damage", sorted(BAD_FILES))
def test_an_unreadable_model_is_a_usage_error_naming_the_file(tmp_path, damage, capsys):
    saved_run(tmp_path)
    BAD_FILES[damage](tmp_path / "model.pt")
    with pytest.raises(UsageError) as caught:
        mnist_hpc.load_model(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"cannot read {tmp_path / 'model.pt'} (")
    assert message.endswith("copy it again from the run, or retrain")
    assert "weights_only" not in message and "\n" not in message  # never torch's advice
    if damage in ("garbage", "code"):
        assert "(UnpicklingError: torch's weights-only reader refused it)" in message
    assert "ran" not in capsys.readouterr().out


@pytest.mark.parametrize("payload, problem", [
    ({"format": 1, "model": "cnn", "args": {}}, "is not a mnist_hpc model.pt of format 1"),
    ({"format": 2, "model": "cnn", "args": {}, "state_dict": {}}, "of format 1"),
    ({"format": 1, "model": "cnn", "args": {}, "state_dict": {"w": torch.zeros(2)}},
     "does not fit the network 'cnn' (RuntimeError: "),
    ({"format": 1, "model": "resnet", "args": {"depth": 3}, "state_dict": {}},
     "does not fit the network 'resnet' (TypeError: "),
], ids=["no weights", "other format", "other weights", "other arguments"])
def test_a_foreign_model_file_is_refused(tmp_path, payload, problem):
    torch.save(payload, tmp_path / "model.pt")
    with pytest.raises(UsageError) as caught:
        model_file.load(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'model.pt'} ") and problem in message, message
    assert message.endswith("give the directory of a completed run, or train one")


def test_a_missing_run_or_model_says_which(tmp_path):
    with pytest.raises(UsageError, match=r"run directory \S+nowhere does not exist; give"):
        mnist_hpc.load_model(tmp_path / "nowhere")
    with pytest.raises(UsageError, match=r"model\.pt does not exist: the run has not completed"):
        mnist_hpc.load_model(tmp_path)


def write_png(path, array) -> None:
    from PIL import Image

    Image.fromarray(array).save(path)


def test_image_folders_become_28x28_greyscale_digits(tmp_path):
    import numpy as np

    digit = (np.arange(28 * 28, dtype=np.uint16) % 256).astype(np.uint8).reshape(28, 28)
    write_png(tmp_path / "b.png", digit)
    write_png(tmp_path / "a.PNG", np.zeros((56, 40, 3), np.uint8) + 255)
    (tmp_path / "c.txt").write_text("skipped")
    paths = images.image_files(tmp_path)
    assert [p.name for p in paths] == ["a.PNG", "b.png"]
    read = images.read_digits(paths)
    assert read.dtype == torch.uint8 and read.shape == (2, 28, 28)
    assert torch.equal(read[1], torch.from_numpy(digit)) and int(read[0].min()) == 255
    assert int(images.read_digits(paths, invert=True)[0].max()) == 0


def test_images_are_predicted_as_the_model_sees_them(tmp_path):
    import numpy as np

    (tmp_path / "run").mkdir()
    model = saved_run(tmp_path / "run")
    pictures = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    for i, picture in enumerate(pictures):
        write_png(tmp_path / f"{i}.png", picture)
    predicted = evaluation.predict(model_file.load(tmp_path / "run"),
                                   images.image_files(tmp_path), invert=False)
    with torch.inference_mode():
        want = torch.softmax(model.eval()(torch.from_numpy(pictures).unsqueeze(1) / 255), 1)
    assert [d for d, _ in predicted] == want.argmax(1).tolist()
    assert [p for _, p in predicted] == pytest.approx(want.max(1).values.tolist(), abs=1e-6)


@pytest.mark.parametrize("make, problem", [
    (lambda root: root / "missing", r"--images \S+missing: no such directory"),
    (lambda root: root, r"--images \S+ holds no \.png file"),
])
def test_an_image_folder_without_pngs_is_refused(tmp_path, make, problem):
    with pytest.raises(UsageError, match=problem):
        images.image_files(make(tmp_path))


def test_an_unreadable_png_names_the_file(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(UsageError, match=r"cannot read image \S+bad\.png \(Unidentified"):
        images.read_digits(images.image_files(tmp_path))
