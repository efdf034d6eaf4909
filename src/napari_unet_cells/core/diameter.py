"""The cell diameter of an image, estimated by running the network (``diameter="auto"``).

core/scale.py holds the numbers (tolerance, passes, crop) and the measurements without
torch; here the network runs on a central crop, through the shared tile loop
(core/tile_loop.py), so the estimate gets the same out-of-memory handling and stop flag
as prediction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .predictor import Predictor, auto_tile_and_batch, cell_score_weights, predictor_device
from .progress import StopFlag, run
from .scale import (
    ESTIMATE_CROP,
    MAX_FACTOR,
    MAX_PASSES,
    TOLERANCE,
    ScaleChoice,
    factor_for,
    model_diameter,
    resize_plane,
    scaled_shape,
    typical_diameter,
)
from .tile_loop import predict_plane

if TYPE_CHECKING:  # pragma: no cover
    from .checkpoint import CellModel
    from .config import InstanceConfig


def given_scale(diameter: float, reference: float) -> ScaleChoice:
    """The ScaleChoice for a diameter the user gave (px), with the message to show.

    Parameters
    ----------
    diameter : float
        The image's nucleus diameter, image px (> 0).
    reference : float
        The diameter the model was trained around, px (> 0).

    Returns
    -------
    ScaleChoice
        ``factor_for(diameter, reference)``, ``estimated=False``; the message says how
        the image is resampled ("" when it is not).
    """
    factor = factor_for(diameter, reference)
    message = ""
    if factor != 1.0:
        message = (
            f"Cells of {diameter:g} px (model: {reference:g} px): the image is resampled "
            f"x{factor:.2f} for prediction; labels come back on the image's grid."
        )
    return ScaleChoice(factor, diameter, reference, estimated=False, message=message)


def _score_plane(
    plane: np.ndarray, model: CellModel, predictor: Predictor, tile: int | None, stop: StopFlag
) -> np.ndarray | None:
    """Cell scores of one normalised (Y, X, C) plane, float32 (Y, X); None if stopped."""
    tile, batch = auto_tile_and_batch(model.config, predictor_device(predictor), tile)
    done = run(
        predict_plane(
            predictor,
            plane,
            model.config,
            cell_score_weights(model),
            tile=tile,
            batch_size=batch,
            stop=stop,
        )
    )
    return None if done is None else done.scores


def estimate_diameter(
    plane: np.ndarray,
    model: CellModel,
    predictor: Predictor,
    instances: InstanceConfig,
    *,
    tile: int | None = None,
    stop: StopFlag = None,
) -> tuple[ScaleChoice, np.ndarray | None, np.ndarray | None]:
    """The typical nucleus diameter of a normalised plane, by running the network.

    The network and the instance step run on a central crop (up to ``ESTIMATE_CROP`` px
    on the model's grid), first at the image's own scale; the median equivalent diameter
    of the objects found (``typical_diameter``) gives the factor to the model's diameter;
    while that factor is far from the current one, the crop is resampled and measured
    again (up to ``MAX_PASSES`` passes), so the last measurement is made with nuclei near
    the model's size. Real cells measure about the same at every scale; when two passes
    disagree by more than 2x (noise or texture taken for cells), the image is predicted
    at its own scale and the message says so.

    Parameters
    ----------
    plane : numpy.ndarray
        (Y, X) or (Y, X, C) float32, normalised.
    model : CellModel
        Its ``extra["diameter"]`` (px) is the reference; without one, nothing is run.
    predictor : Predictor
        Runs the network (``TorchPredictor``).
    instances : InstanceConfig
        The instance step that turns scores into cells.
    tile : int, optional
        Input tile size, px (None: by memory).
    stop : StopFlag
        Checked between batches.

    Returns
    -------
    (ScaleChoice, numpy.ndarray or None, numpy.ndarray or None)
        The choice (factor, measured diameter in image px, message), and the last pass's
        float32 cell scores and int32 instance labels (sequential, on the scores' grid)
        when that pass covered the whole plane at the chosen factor (to be re-used), else
        None, None.
    """
    from .instances import plane_labels

    reference = model_diameter(model)
    if reference is None:
        return ScaleChoice(), None, None
    plane = plane if plane.ndim == 3 else plane[..., None]
    height, width = plane.shape[:2]
    factor, measured, scores, whole = 1.0, None, None, False
    unsure = False
    for _ in range(MAX_PASSES):
        side = max(1, int(ESTIMATE_CROP / factor))
        ch, cw = min(side, height), min(side, width)
        y0, x0 = (height - ch) // 2, (width - cw) // 2
        crop = resize_plane(plane[y0 : y0 + ch, x0 : x0 + cw], scaled_shape((ch, cw), factor))
        scores = _score_plane(crop, model, predictor, tile, stop)
        if scores is None:
            return ScaleChoice(factor, measured, reference, True), None, None
        whole = (ch, cw) == (height, width)
        labels = plane_labels(scores, instances)[0]
        seen = typical_diameter(labels)
        if seen is None:
            break
        previous, measured = measured, seen / factor
        if previous is not None and max(measured / previous, previous / measured) > 2:
            # real cells measure the same at any scale; texture or noise does not
            factor, scores, unsure = 1.0, None, True
            break
        if 1 / TOLERANCE <= seen / reference <= TOLERANCE:
            break
        factor = factor_for(measured, reference)
        scores = None
    if unsure:
        message = (
            "Could not measure the cell size consistently (objects of "
            f"{previous:.0f} px at the image's scale, {measured:.0f} px after resampling): "
            "predicted at the image's own scale. If cells come out split or merged, give "
            "their diameter in px."
        )
        return ScaleChoice(1.0, None, reference, True, message), None, None
    choice = _estimated_choice(factor, measured, reference)
    return (choice, scores, labels) if whole and scores is not None else (choice, None, None)


def _estimated_choice(factor: float, measured: float | None, reference: float) -> ScaleChoice:
    if measured is None:
        message = (
            "No cells found to estimate their size: predicted at the image's own scale. "
            "If the image has cells, give their diameter in px."
        )
        return ScaleChoice(factor, None, reference, True, message)
    low, high = reference / MAX_FACTOR, reference * MAX_FACTOR
    if not low <= measured <= high:
        message = (
            f"Estimated cell diameter {measured:.0f} px is outside what this model covers by "
            f"rescaling ({low:.0f}-{high:.0f} px): check the result, or give the diameter."
        )
    elif factor != 1.0:
        message = (
            f"Estimated cell diameter {measured:.0f} px (model: {reference:g} px): the image "
            f"is resampled x{factor:.2f} for prediction; labels come back on its own grid."
        )
    else:
        message = f"Estimated cell diameter {measured:.0f} px (model: {reference:g} px)."
    return ScaleChoice(factor, measured, reference, True, message)
