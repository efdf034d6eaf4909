"""Import hygiene: the core never pulls napari or Qt; the package import stays light."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

QT_AND_NAPARI = ("napari", "PyQt5", "PyQt6", "PySide2", "PySide6", "qtpy", "vispy")


def _modules_after(statement: str) -> set[str]:
    code = f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return {name.split(".")[0] for name in json.loads(out.splitlines()[-1])}


@pytest.mark.parametrize(
    "statement",
    [
        "import napari_unet_cells",
        "import napari_unet_cells.core",
        "import napari_unet_cells.core.unet, napari_unet_cells.core.checkpoint",
        "import napari_unet_cells.core.synthetic, napari_unet_cells.core.device",
        "import napari_unet_cells as uc; uc.UNet; uc.load_model; uc.synthetic_cells",
    ],
)
def test_core_imports_neither_napari_nor_qt(statement):
    loaded = _modules_after(statement)
    assert not loaded & set(QT_AND_NAPARI), loaded & set(QT_AND_NAPARI)


def test_package_import_does_not_import_torch():
    assert "torch" not in _modules_after("import napari_unet_cells")
    assert "torch" not in _modules_after("import napari_unet_cells.sample_data")


def test_public_api_is_complete_and_lazy():
    import napari_unet_cells as uc

    assert set(uc.__all__) - {"__version__"} == set(uc._LAZY)
    for name in uc.__all__:
        assert getattr(uc, name) is not None
    with pytest.raises(AttributeError):
        uc.does_not_exist  # noqa: B018
