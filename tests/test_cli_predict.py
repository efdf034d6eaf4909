"""`unet-cells predict`: TIFF and zarr in/out, dask chunks, dask.distributed, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from napari_unet_cells.cli import main
from napari_unet_cells.core.checkpoint import CellModel, save_model
from napari_unet_cells.core.config import InstanceConfig, ModelConfig
from napari_unet_cells.core.instances import probabilities_to_labels
from napari_unet_cells.core.predict import predict
from napari_unet_cells.core.synthetic import synthetic_cells


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_predict")
    model = CellModel.new(ModelConfig(base=4, depth=2, dropout=0.0), seed=0)
    save_model(model, folder / "model.npz")
    image, _ = synthetic_cells((150, 170), seed=1)
    tifffile.imwrite(folder / "image.tif", image)
    z = zarr.open_array(
        str(folder / "image.zarr"), mode="w", shape=image.shape, chunks=(64, 64), dtype=image.dtype
    )
    z[:] = image
    # an OME-Zarr image: group with multiscales metadata, (t, c, y, x) array "0"
    group = zarr.open_group(str(folder / "ome.zarr"), mode="w")
    group.attrs["multiscales"] = [{"version": "0.4", "datasets": [{"path": "0"}]}]
    arr = group.create_array("0", shape=(1, 1, *image.shape), chunks=(1, 1, 80, 80), dtype="u2")
    arr[:] = image[None, None]
    return folder, model, image


def _args(folder, *extra):
    return ["predict", *map(str, extra), "--model", str(folder / "model.npz"), "--device", "cpu"]


def _sequential(labels):
    np.testing.assert_array_equal(np.unique(labels), np.arange(labels.max() + 1))


def test_tiff_in_tiff_out_equals_api(files, tmp_path, capsys):
    folder, model, image = files
    out = tmp_path / "cells.tif"
    assert main(_args(folder, folder / "image.tif", "-o", out, "--tile", "60")) == 0
    assert "cells" in capsys.readouterr().out
    labels = tifffile.imread(out)
    assert labels.dtype == np.int32 and labels.shape == image.shape
    np.testing.assert_array_equal(labels, predict(image, model, device="cpu"))
    _sequential(labels)


@pytest.mark.parametrize("source", ["image.zarr", "ome.zarr"])
def test_zarr_in_zarr_out_chunked(files, tmp_path, source):
    folder, model, image = files
    out = tmp_path / "cells.zarr"
    argv = _args(folder, folder / source, "-o", out, "--probabilities", "--chunk", "48")
    assert main([*argv, "--min-size", "10"]) == 0
    probs = zarr.open_array(str(tmp_path / "cells_probabilities.zarr"))[:]
    _, expected = predict(image, model, device="cpu", return_probabilities=True)
    np.testing.assert_allclose(probs, expected, atol=1e-5)  # chunks are seamless
    labels = zarr.open_array(str(out))[:]
    assert labels.dtype == np.int32 and labels.shape == image.shape
    _sequential(labels)  # unique across chunks
    reference = probabilities_to_labels(probs, InstanceConfig(min_size=10))
    pairs = np.unique(np.stack([reference.ravel(), labels.ravel()]), axis=1)
    assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def test_rerun_into_an_existing_zarr_output_is_refused(files, tmp_path, capsys):
    # a .zarr result is a folder on disk: re-running must refuse, not write inside it
    folder, _, _ = files
    out = tmp_path / "cells.zarr"
    argv = _args(folder, folder / "image.zarr", "-o", out)
    assert main(argv) == 0
    before = sorted(p.name for p in out.iterdir())
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == before


def test_distributed_scheduler(files, tmp_path):
    from distributed import LocalCluster

    folder, _, _ = files
    local = tmp_path / "local.zarr"
    assert main(_args(folder, folder / "image.zarr", "-o", local, "--chunk", "64")) == 0
    with LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        out = tmp_path / "cluster.zarr"
        argv = _args(folder, folder / "image.zarr", "-o", out, "--chunk", "64")
        assert main([*argv, "--scheduler", cluster.scheduler_address]) == 0
    np.testing.assert_array_equal(zarr.open_array(str(out))[:], zarr.open_array(str(local))[:])


def test_several_images_into_a_folder(files, tmp_path):
    folder, _, _ = files
    argv = _args(folder, folder / "image.tif", folder / "image.zarr", "-o", tmp_path)
    assert main(argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image_cells.tif", "image_cells.zarr"]


def _bad_inputs(tmp_path):
    (tmp_path / "garbage.tif").write_bytes(b"not a tiff at all")
    tifffile.imwrite(tmp_path / "line.tif", np.arange(10, dtype=np.uint16))
    zarr.open_array(str(tmp_path / "cube.zarr"), mode="w", shape=(3, 40, 40), dtype="u2")
    zarr.open_array(str(tmp_path / "empty.zarr"), mode="w", shape=(0, 40), dtype="u2")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    return {
        "missing.tif": "does not exist",
        "garbage.tif": "cannot read",
        "line.tif": "two spatial axes",
        "cube.zarr": "2D",
        "empty.zarr": "empty",
        "image.png": "unsupported format",
    }


def test_bad_input_one_line_nonzero_exit_nothing_written(files, tmp_path, capsys, monkeypatch):
    folder, _, _ = files
    cases = _bad_inputs(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for name, reason in cases.items():
        out = out_dir / "cells.tif"
        code = main(_args(folder, tmp_path / name, "-o", out))
        err = capsys.readouterr().err.strip()
        assert code != 0, name
        assert len(err.splitlines()) == 1 and reason in err, (name, err)
        assert list(out_dir.iterdir()) == [], name
    # an existing output is never overwritten
    existing = out_dir / "taken.tif"
    existing.write_bytes(b"mine")
    assert main(_args(folder, folder / "image.tif", "-o", existing)) == 2
    assert existing.read_bytes() == b"mine"
    # no model and no bundled model (a build without the file)
    import napari_unet_cells.core.registry as R

    monkeypatch.setattr(R, "bundled_model_path", lambda: None)
    assert main(["predict", str(folder / "image.tif"), "-o", str(out_dir / "x.tif")]) == 2
    assert "no bundled model yet" in capsys.readouterr().err
    assert sorted(p.name for p in out_dir.iterdir()) == ["taken.tif"]


def test_several_images_into_a_zarr_store_are_refused(files, tmp_path, capsys):
    folder, _, _ = files
    store = tmp_path / "results.zarr"
    store.mkdir()
    argv = _args(folder, folder / "image.tif", folder / "image.zarr", "-o", store)
    assert main(argv) == 2
    assert "not a .zarr store" in capsys.readouterr().err
    assert not any(store.iterdir())


def test_post_processing_options_reach_the_instance_step(files, tmp_path):
    import dataclasses

    from napari_unet_cells.core.instances import instance_defaults

    folder, model, image = files
    _, probs = predict(image, model, device="cpu", return_probabilities=True)
    results = []
    for option, value, field in (
        ("--seed-threshold", "none", {"seed_threshold": None}),
        ("--seed-threshold", "0", {"seed_threshold": None}),  # as the dock: 0 = no seeds
        ("--seed-threshold", "0.8", {"seed_threshold": 0.8}),
        ("--min-confidence", "0.6", {"min_confidence": 0.6}),
    ):
        out = tmp_path / f"cells_{option}_{value}.tif"
        assert main(_args(folder, folder / "image.tif", "-o", out, option, value)) == 0
        expected = dataclasses.replace(instance_defaults(model), **field)
        labels = tifffile.imread(out)
        np.testing.assert_array_equal(labels, probabilities_to_labels(probs, expected))
        results.append(labels.max())
    assert len(set(results)) > 1  # the options change the result


def test_same_named_inputs_are_refused_before_anything_is_written(tmp_path, capsys):
    """Issue 16.10: a/img.tif b/img.tif -o dir wrote the first, then failed on its own
    output ("already exists")."""
    import tifffile

    from napari_unet_cells.core.synthetic import synthetic_cells

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        tifffile.imwrite(tmp_path / folder / "img.tif", synthetic_cells((48, 48), seed=1)[0])
    (tmp_path / "out").mkdir()
    argv = ["predict", str(tmp_path / "a" / "img.tif"), str(tmp_path / "b" / "img.tif")]
    assert main([*argv, "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Several images would be written to" in err and err.count("\n") == 1
    assert list((tmp_path / "out").iterdir()) == []  # nothing written


def test_info_says_no_seeds(tmp_path, capsys):
    from napari_unet_cells.core.checkpoint import CellModel, save_model
    from napari_unet_cells.core.config import ModelConfig

    model = CellModel.new(
        ModelConfig(base=4, depth=2),
        seed=0,
        extra={
            "instances": {
                "threshold": 0.5,
                "seed_threshold": None,
                "min_size": 10,
                "min_confidence": 0.0,
            }
        },
    )
    save_model(model, tmp_path / "m.npz")
    assert main(["info", str(tmp_path / "m.npz")]) == 0
    out = capsys.readouterr().out
    assert "no seeds" in out and "seeds at None" not in out


def test_channels_are_read_from_metadata_or_asked_for(files, tmp_path, capsys):
    """Issue 16.4: (Y, X, 2) ran as 512 planes of 512x2 px, (C, Y, X) and ImageJ ZCYX
    hyperstacks channel by channel as planes; the noise channel gave false cells."""
    folder, model, image = files
    noise = np.random.default_rng(0).integers(0, 4000, image.shape).astype(image.dtype)
    two = np.stack([noise, image], axis=-1)  # (Y, X, 2): nuclei in channel 1
    tifffile.imwrite(tmp_path / "yxc.tif", two)
    tifffile.imwrite(tmp_path / "cyx.tif", np.moveaxis(two, -1, 0))  # no axes metadata
    hyper = np.stack([np.moveaxis(two, -1, 0)] * 3)  # (Z, C, Y, X)
    tifffile.imwrite(tmp_path / "zcyx.tif", hyper, imagej=True, metadata={"axes": "ZCYX"})
    expected = predict(image, model, device="cpu")
    runs = {
        "yxc.tif": ([], 2, "2 channels"),
        "cyx.tif": ([], 2, "2 planes or 2 channels"),
        "zcyx.tif": ([], 2, "2 channels"),
    }
    for name, (extra, code, message) in runs.items():
        argv = _args(folder, tmp_path / name, "-o", tmp_path / f"{name}.out.tif", *extra)
        assert main(argv) == code
        err = capsys.readouterr().err
        assert message in err and "--channel N" in err and err.count("\n") == 1
        assert not (tmp_path / f"{name}.out.tif").exists()
    for name, understood in (
        ("yxc.tif", "1 plane of 150x170, channel 1 of 2"),
        ("cyx.tif", "1 plane of 150x170, channel 1 of 2"),
        ("zcyx.tif", "3 planes of 150x170, channel 1 of 2"),
    ):
        out = tmp_path / f"{name}.cells.tif"
        assert main(_args(folder, tmp_path / name, "-o", out, "--channel", "1")) == 0
        assert understood in capsys.readouterr().out
        labels = tifffile.imread(out)
        np.testing.assert_array_equal(labels.reshape(-1, *image.shape)[-1] > 0, expected > 0)
    out = tmp_path / "planes.tif"
    assert main(_args(folder, tmp_path / "cyx.tif", "-o", out, "--planes")) == 0
    assert "2 planes of 150x170" in capsys.readouterr().out
    assert tifffile.imread(out).shape == (2, *image.shape)


def test_api_refuses_two_channels_without_a_choice(files):
    _, model, image = files
    two = np.stack([image, image], axis=-1)
    with pytest.raises(Exception, match="2 channels and the model reads 1: choose one"):
        predict(two, model, device="cpu")
    assert predict(two, model, device="cpu", channel=0).shape == image.shape
    assert predict(np.stack([image, image]), model, device="cpu", channel=1).shape == image.shape


@pytest.mark.parametrize("shape", [(1, 1), (10, 10)])
def test_tiny_images_get_a_hint(files, tmp_path, capsys, shape):
    """Issue 16 (also): a 1x1 or 10x10 image gave '0 cells' with no hint."""
    from napari_unet_cells.core.predict import predict_iter
    from napari_unet_cells.core.progress import run

    folder, model, _ = files
    image = np.full(shape, 100, np.uint16)
    result = run(predict_iter(image, model, diameter=None))
    assert any("too small" in m for m in result.messages)
    tifffile.imwrite(tmp_path / "tiny.tif", image)
    assert main(_args(folder, tmp_path / "tiny.tif", "-o", tmp_path / "out.tif")) == 0
    assert f"only {shape[0]}x{shape[1]} px" in capsys.readouterr().out
    big = run(predict_iter(np.zeros((64, 64), np.uint16), model, diameter=None))
    assert not any("too small" in m for m in big.messages)


def _tiny_tiffs(folder, *names):
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(folder / name, synthetic_cells((48, 48), seed=1)[0])
    return [folder / name for name in names]


def test_output_names_keep_the_whole_stem(files, tmp_path):
    """Issue 13.4: names were cut at the first dot, so a.1.tif and a.2.tif both became
    a_cells.tif; .ome.tif counts as one extension."""
    folder, _, _ = files
    inputs = _tiny_tiffs(tmp_path / "in", "a.1.tif", "a.2.tif", "img.ome.tif", "b.tiff")
    out = tmp_path / "out"
    out.mkdir()
    assert main(_args(folder, *inputs, "-o", out, "--probabilities")) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "a.1_cells.tif",
        "a.1_cells_probabilities.tif",
        "a.2_cells.tif",
        "a.2_cells_probabilities.tif",
        "b_cells.tif",
        "b_cells_probabilities.tif",
        "img_cells.tif",
        "img_cells_probabilities.tif",
    ]


def test_probabilities_name_keeps_a_double_suffix(files, tmp_path):
    folder, _, _ = files
    (image,) = _tiny_tiffs(tmp_path, "image.tif")
    out = tmp_path / "cells.v2.ome.tif"
    assert main(_args(folder, image, "-o", out, "--probabilities")) == 0
    assert (tmp_path / "cells.v2_probabilities.ome.tif").is_file() and out.is_file()


@pytest.mark.parametrize(
    "names",
    [("x/img.tif", "y/img.tif"), ("img.tif", "img.ome.tif"), ("img.tif", "img.tiff")],
)
def test_colliding_outputs_name_the_inputs_before_any_work(files, tmp_path, capsys, names):
    """Issue 13.4: jobs were not checked against each other by input: the message now
    says which inputs collide and what to do; nothing is written."""
    folder, _, _ = files
    ok, first, second = _tiny_tiffs(tmp_path / "in", "ok.tif", *names)  # ok: no collision
    out = tmp_path / "out"
    out.mkdir()
    assert main(_args(folder, ok, first, second, "-o", out)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "img_cells.tif" in err
    assert str(first) in err and str(second) in err and "-o" in err
    assert list(out.iterdir()) == []


def test_an_existing_output_of_a_later_job_is_refused_before_any_work(files, tmp_path, capsys):
    folder, _, _ = files
    inputs = _tiny_tiffs(tmp_path / "in", "a.tif", "b.tif")
    out = tmp_path / "out"
    out.mkdir()
    (out / "b_cells.tif").write_bytes(b"mine")
    assert main(_args(folder, *inputs, "-o", out)) == 2
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["b_cells.tif"]
    assert (out / "b_cells.tif").read_bytes() == b"mine"
