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
    ScaleChoice,
    factor_for,
    model_diameter,
    resize_plane,
    scaled_shape,
    typical_diameter,
    within_tolerance,
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
    at its own scale and the message says so; when an enlarged pass finds objects
    ``FRAGMENTING`` times smaller than the pass before (nuclei split), that pass is kept.

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

    def measure_at(factor: float, crop: int = ESTIMATE_CROP):
        """(scores, labels, seen diameter in resampled px, whole) of the central crop
        (``crop`` px once resampled) resampled by ``factor``; scores None when stopped."""
        side = max(1, int(crop / factor))
        ch, cw = min(side, height), min(side, width)
        y0, x0 = (height - ch) // 2, (width - cw) // 2
        crop = resize_plane(plane[y0 : y0 + ch, x0 : x0 + cw], scaled_shape((ch, cw), factor))
        scores = _score_plane(crop, model, predictor, tile, stop)
        if scores is None:
            return None, None, None, False
        labels = plane_labels(scores, instances)[0]
        return scores, labels, typical_diameter(labels), (ch, cw) == (height, width)

    factor, measured, scores, labels, seen, whole = _first_pass(measure_at, reference)
    if scores is None:
        return ScaleChoice(factor, None, reference, True), None, None
    unsure = False
    before = None  # (factor, measured, scores, labels, whole) of the pass before
    for _ in range(MAX_PASSES):
        if seen is None:
            break
        previous, measured = measured, seen / factor
        if previous is not None and max(measured / previous, previous / measured) > 2:
            # real cells measure the same at any scale; texture or noise does not
            factor, scores, unsure = 1.0, None, True
            break
        if before is not None and factor > before[0] and measured * FRAGMENTING < previous:
            # enlarging made the objects smaller in image px: the network splits the
            # enlarged nuclei (texture, dim edges); the pass before saw them whole
            factor, measured, scores, labels, whole = before
            break
        wanted = factor_for(measured, reference)
        if within_tolerance(seen, reference) and (
            factor >= 1.0 or abs(np.log(wanted / factor)) < np.log(1.1)
        ):
            # near the model's size; a shrunk image is brought to it exactly (enlarging is
            # not: the network sees enlarged small nuclei a little smaller each time)
            break
        before = (factor, measured, scores, labels, whole)
        factor = wanted
        scores, labels, seen, whole = measure_at(factor)
        if scores is None:
            return ScaleChoice(factor, measured, reference, True), None, None
    if unsure:
        return _unsure_choice(previous, measured, reference), None, None
    choice = _estimated_choice(factor, measured, reference)
    return (choice, scores, labels) if whole and scores is not None else (choice, None, None)


#: The first pass. Real nuclei measure about the same (in image px) at any scale where the
#: network sees them well; large, blurry nuclei at their own scale come out as fragments
#: of about the model's cell size, which grow several-fold once the image is shrunk. So
#: the crop is measured at its own scale and shrunk 2x, 4x, 8x until two neighbouring
#: scales agree within ``PLATEAU``; of that pair, the scale whose objects are closest to
#: the model's size is used. Shrunk probes use a smaller crop (``PROBE_CROP`` px once
#: shrunk): on an ordinary image the only extra cost is one small 2x-shrunk pass.
PROBE_FACTORS = (1.0, 0.5, 0.25, 0.125)
#: an enlarged pass measuring objects this much smaller (in image px) than the pass
#: before is taken for fragments: the pass before is kept. Small blurred nuclei, which
#: partly merge at their own scale, measure up to ~1.25x smaller once enlarged; textured
#: 40 px nuclei enlarged from a 0.5x probe to their own scale measured 1.7x smaller.
FRAGMENTING = 1.4
PROBE_CROP = 384
PLATEAU = 1.5


def _first_pass(measure_at, reference: float):
    """(factor, measured (None), scores, labels, seen, whole) of the first pass (see
    ``PROBE_FACTORS``); the image's own scale when no two scales agree or no cells are
    found. scores is None when stopped."""
    probes = []  # (factor, scores, labels, seen, whole)
    for factor in PROBE_FACTORS:
        crop = ESTIMATE_CROP if factor == 1.0 else PROBE_CROP
        scores, labels, seen, whole = measure_at(factor, crop)
        if scores is None:
            return factor, None, None, None, None, False
        probes.append((factor, scores, labels, seen, whole and crop == ESTIMATE_CROP))
        if seen is None:
            if factor == 1.0:
                continue  # nothing at its own scale: maybe whole nuclei once shrunk
            break
        if len(probes) >= 2 and probes[-2][3] is not None:
            finer = probes[-2][3] / probes[-2][0]
            coarser = seen / factor
            if max(finer / coarser, coarser / finer) < PLATEAU:
                pair = probes[-2:]
                pick = min(pair, key=lambda p: abs(np.log(p[3] / reference)))
                return pick[0], None, *pick[1:]
    return 1.0, None, *probes[0][1:]


def _unsure_choice(previous: float, measured: float, reference: float) -> ScaleChoice:
    """The image's own scale, when two passes measured ``previous`` and ``measured`` px."""
    message = (
        "Could not measure the cell size consistently (objects of "
        f"{previous:.0f} px at the image's scale, {measured:.0f} px after resampling): "
        "predicted at the image's own scale. If cells come out split or merged, give "
        "their diameter in px."
    )
    return ScaleChoice(1.0, None, reference, True, message)


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
