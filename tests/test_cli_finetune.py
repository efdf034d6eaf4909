from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_unet_cells.cli import main
from napari_unet_cells.core.checkpoint import CellModel, load_model, save_model
from napari_unet_cells.core.config import ModelConfig
from napari_unet_cells.core.synthetic import synthetic_cells

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write_pair(folder, name, seed, shape=(80, 96)):
    image, labels = synthetic_cells(shape, seed=seed)
    tifffile.imwrite(folder / f"{name}.tif", image)
    tifffile.imwrite(folder / f"{name}_lab.tif", labels)
    return folder / f"{name}.tif", folder / f"{name}_lab.tif"


def test_finetune_writes_a_loadable_model_with_a_summary(tmp_path, capsys):
    start = tmp_path / "start.npz"
    save_model(CellModel.new(ModelConfig(base=4, depth=2, dropout=0.0), seed=0), start)
    image, labels = _write_pair(tmp_path, "a", 1)
    out = tmp_path / "models" / "tuned.npz"
    out.parent.mkdir()
    argv = ["finetune", "--image", str(image), "--labels", str(labels), "-o", str(out)]
    argv += ["--model", str(start), "--steps", "3", "--batch-size", "2", "--device", "cpu"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "step 3/3" in captured.err  # the progress bar
    assert "validation (kept model, step 3): AP50" in captured.out and "wrote" in captured.out
    assert "validation of the start model (step 0): AP50" in captured.out
    # the held-out strip of an 80 x 96 image has far fewer than 100 cells
    assert "post-processing: the start model's, kept (" in captured.out
    model = load_model(out)
    assert model.config.base == 4
    training = model.provenance["training"]
    assert training["steps"] == 3 and training["data"][0]["name"] == "a.tif"
    assert model.provenance["trained_from"] == str(start)
    # never overwrites, errors are one line with exit code 2
    before = out.read_bytes()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "exists" in err and err.count("\n") == 0
    assert out.read_bytes() == before


def test_finetune_from_scratch_with_separate_validation_and_ignore(tmp_path, capsys):
    image, labels = _write_pair(tmp_path, "a", 1, (64, 64))
    val_image, val_labels = _write_pair(tmp_path, "b", 2, (64, 64))
    ignore = tmp_path / "a_ignore.tif"
    mask = np.zeros((64, 64), np.uint8)
    mask[:, :20] = 1
    tifffile.imwrite(ignore, mask)
    out = tmp_path / "m.npz"
    argv = ["finetune", "--image", str(image), "--labels", str(labels), "--ignore", str(ignore)]
    argv += ["--val-image", str(val_image), "--val-labels", str(val_labels), "-o", str(out)]
    argv += ["--scratch", "--steps", "2", "--tile", "60", "--batch-size", "1"]
    argv += ["--optimizer", "sgd", "--preset", "fiji"]
    assert main(argv) == 0
    model = load_model(out)
    training = model.provenance["training"]
    assert training["config"]["optimizer"] == "sgd"
    assert training["config"]["weight_map"]["w0"] == 50
    assert training["validation_data"][0]["name"] == "b.tif"
    assert model.provenance["trained_from"].startswith("scratch")
    assert (
        main(
            [
                "finetune",
                "--image",
                str(image),
                "--labels",
                str(tmp_path / "no.tif"),
                "-o",
                str(tmp_path / "x.npz"),
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err


def test_a_tile_size_the_network_cannot_take_is_snapped_and_said(tmp_path, capsys):
    image, labels = _write_pair(tmp_path, "a", 1, (64, 64))
    argv = ["finetune", "--image", str(image), "--labels", str(labels)]
    argv += ["-o", str(tmp_path / "m.npz"), "--scratch", "--steps", "1", "--tile", "3"]
    assert main([*argv, "--batch-size", "1"]) == 0
    err = capsys.readouterr().err
    assert "px tiles" in err and "the nearest valid size to the 3 px asked" in err


def test_out_of_memory_is_one_line_and_saves_nothing(tmp_path, capsys, monkeypatch):
    import napari_unet_cells.core.train as train

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore details")
        yield  # a generator, like train_iter

    monkeypatch.setattr(train, "train_iter", out_of_memory)
    image, labels = _write_pair(tmp_path, "a", seed=1)
    out = tmp_path / "tuned.npz"
    argv = ["finetune", "--image", str(image), "--labels", str(labels), "-o", str(out)]
    assert main([*argv, "--steps", "2", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "ran out of memory" in err and "--batch-size" in err
    assert not out.exists()


def test_unwritable_outputs_fail_at_once_in_one_line(tmp_path, capsys, unwritable_dir):
    """Issue 16.2/16.10: finetune trained to the end, then a traceback; predict and
    weightmap gave tracebacks for an unwritable folder."""
    image, labels = _write_pair(tmp_path, "a", 1)
    runs = [
        ["finetune", "--image", str(image), "--labels", str(labels), "--steps", "1"],
        ["predict", str(image)],
        ["weightmap", str(labels)],
    ]
    for argv in runs:
        assert main([*argv, "-o", str(unwritable_dir / "out.tif")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Cannot write" in err and "Traceback" not in err


def test_failed_save_after_training_rescues_the_model(tmp_path, capsys, monkeypatch):
    import napari_unet_cells.core.train as T

    calls = []
    real = T.save_model

    def fails_once(model, path):
        calls.append(path)
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(T, "save_model", fails_once)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    start = tmp_path / "start.npz"
    real(CellModel.new(ModelConfig(base=4, depth=2, dropout=0.0), seed=0), start)
    image, labels = _write_pair(tmp_path, "a", 1)
    argv = ["finetune", "--image", str(image), "--labels", str(labels), "--model", str(start)]
    argv += ["-o", str(tmp_path / "tuned.npz"), "--steps", "1", "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Operation not permitted" in err and "saved to" in err
    [rescued] = (tmp_path / "tmp").glob("tuned-*.npz")
    assert load_model(rescued).provenance["training"]["steps"] == 1
