"""Formats other tools read: bioimage.io model packages and OME-Zarr labels.

``bioimageio``: ``export_bioimageio`` writes a model as a bioimage.io package (built and
tested with bioimageio.spec / bioimageio.core, the ``interop`` extra);
``load_bioimageio`` reads back a package this plugin exported (``load_model`` calls it;
needs only torch and PyYAML). Its parts: ``bioimageio_files`` (the files a package holds
and their names), ``bioimageio_describe`` (the spec 0.5 description),
``bioimageio_card`` (the README model card), ``bioimageio_read`` (loading back);
``unet2015.py`` is the network as standalone torch source, shipped inside packages.
``omezarr``: labels into an OME-Zarr image's ``labels/``
group, or a new OME-Zarr labels image (ome-zarr-py, the ``interop`` extra).

Nothing here is imported by ``napari_unet_cells`` at start-up; heavy imports (torch,
bioimageio, ome_zarr) happen inside the functions.
"""

from __future__ import annotations

from ..errors import UNetCellsError

INTEROP_HINT = "pip install 'napari-unet-cells[interop]'"


def require(module: str, purpose: str):
    """Import ``module`` or raise UNetCellsError saying how to install it.

    Parameters
    ----------
    module : str
        Dotted module name, e.g. "ome_zarr.writer".
    purpose : str
        What needs it, for the message ("Writing OME-Zarr").

    Returns
    -------
    module
        The imported module.

    Raises
    ------
    UNetCellsError
        The module cannot be imported; the message gives the ``interop`` extra's pip line.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise UNetCellsError(
            f"{purpose} needs the optional package {module.split('.')[0]!r} ({err}); install "
            f"it with: {INTEROP_HINT}"
        ) from None
