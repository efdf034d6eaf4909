"""Training data: samples, validation split, weight maps and biased tile sampling.

A training sample is one plane: an image (Y, X), its instance labels (Y, X) (0 =
background, k > 0 = cell k) and optionally an ignore mask (Y, X) of unannotated pixels,
which get loss weight 0, so a partially annotated image trains correctly (as in the
paper). Stacks (Z, Y, X) with labels (Z, Y, X) become one sample per annotated plane.

Each sample is prepared once (``prepare_sample``): the image normalised with
``core.normalize.normalize`` (the function prediction uses, on the whole plane), the
separation target and the loss weight map from ``core.weightmap`` on the whole plane.

Tiles are network input tiles of a valid size. Their output window (the part the loss
sees) is centred on a pixel drawn in proportion to the loss weight with probability
``cell_bias`` (which favours cells and, most of all, the gaps between touching cells)
and uniformly over annotated pixels otherwise. Context beyond the image is mirrored
(numpy "reflect", as in prediction); the loss weight is 0 outside the image.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from .config import ModelConfig, NormalizationConfig, TrainConfig, WeightMapConfig
from .errors import UNetCellsError
from .labels import check_labels, mask_to_instances
from .normalize import normalize
from .tiling import reflect_indices
from .unet import context_margin, input_size_for_output, nearest_valid_input_size, output_size

logger = logging.getLogger(__name__)


@dataclass
class TrainingSample:
    """One annotated plane.

    image: (Y, X) any real dtype. labels: (Y, X) integer, 0 background, k > 0 cell k.
    ignore: optional (Y, X) bool, True where the image is not annotated (weight 0).
    name: for messages and provenance.
    """

    image: np.ndarray
    labels: np.ndarray
    ignore: np.ndarray | None = None
    name: str = ""


def _as_list(value, name: str) -> list:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [None if v is None else np.asarray(v) for v in value]
    try:
        return [np.asarray(value)]
    except Exception as err:
        raise UNetCellsError(f"{name} must be an array or a list of arrays ({err}).") from None


def as_samples(
    images,
    labels,
    ignore=None,
    names: Sequence[str] | None = None,
) -> list[TrainingSample]:
    """Training samples from arrays or lists of arrays (one entry per image).

    Parameters
    ----------
    images : (Y, X) planes or (Z, Y, X) stacks, or a list of them.
    labels : the same shapes, integer instance ids (0 = background).
    ignore : None, or per image None / a mask of the same shape (nonzero = unannotated).
    names : one name per image for the provenance (default: "image 0", ...).

    Returns
    -------
    One TrainingSample per plane; stacks give one per plane with at least one labelled
    cell.

    Raises UNetCellsError for mismatched shapes, non-integer labels or no annotation.
    """
    image_list = _as_list(images, "images")
    label_list = _as_list(labels, "labels")
    if not image_list:
        raise UNetCellsError("No training images given: add at least one image with labels.")
    if len(image_list) != len(label_list):
        raise UNetCellsError(
            f"Got {len(image_list)} image(s) but {len(label_list)} label image(s); give one "
            "label image per image."
        )
    ignore_list = _as_list(ignore, "ignore") or [None] * len(image_list)
    if len(ignore_list) != len(image_list):
        raise UNetCellsError(
            f"Got {len(ignore_list)} ignore mask(s) for {len(image_list)} image(s); give one "
            "per image (None where the whole image is annotated)."
        )
    names = list(names) if names is not None else [f"image {i}" for i in range(len(image_list))]
    samples: list[TrainingSample] = []
    for image, lab, ign, name in zip(image_list, label_list, ignore_list, names, strict=False):
        lab, notice = mask_to_instances(lab, f"The labels of {name}")
        if notice:  # 0/1 or 0/255 masks: numbered, never trained as one giant cell
            logger.warning(notice)
        lab = check_labels(lab, f"labels of {name}")
        if image.ndim == 3 and image.shape[-1] in (3, 4) and lab.ndim == 2:
            raise UNetCellsError(
                f"{name} looks like an RGB image {image.shape}; training reads greyscale "
                "planes: convert it to one channel first."
            )
        if image.shape != lab.shape:
            raise UNetCellsError(
                f"{name} has shape {image.shape} but its labels have shape {lab.shape}; they "
                "must match pixel for pixel."
            )
        if ign is not None and ign.shape != image.shape:
            raise UNetCellsError(
                f"The ignore mask of {name} has shape {ign.shape} but the image has shape "
                f"{image.shape}; they must match pixel for pixel."
            )
        if image.ndim == 2:
            planes = [(image, lab, ign, name)]
        elif image.ndim == 3:
            planes = [
                (image[z], lab[z], None if ign is None else ign[z], f"{name} [plane {z}]")
                for z in range(image.shape[0])
                if lab[z].any()
            ]
        else:
            raise UNetCellsError(
                f"{name} has {image.ndim} dimensions (shape {image.shape}); training takes "
                "(Y, X) planes or (Z, Y, X) stacks: split it into such stacks first."
            )
        for img, lb, ig, nm in planes:
            if not np.issubdtype(img.dtype, np.number) or np.iscomplexobj(img):
                raise UNetCellsError(
                    f"{nm} must be a real-valued (integer or float) image, got dtype {img.dtype}."
                )
            if min(img.shape) < 8:
                raise UNetCellsError(
                    f"{nm} is too small ({img.shape}); training needs at least 8x8 px."
                )
            ig = None if ig is None else np.asarray(ig) != 0
            annotated = ~ig if ig is not None else np.ones(img.shape, bool)
            if not annotated.any():
                raise UNetCellsError(
                    f"{nm} is entirely marked as ignored: nothing to learn. Erase the ignore "
                    "mask where you annotated cells, or leave this image out."
                )
            samples.append(TrainingSample(img, np.asarray(lb), ig, nm))
    if not any(s.labels.any() for s in samples):
        raise UNetCellsError(
            "The labels contain no cells: paint at least a few cells (each its own label) "
            "before training."
        )
    return samples


# --------------------------------------------------------------------------------------
# prepared samples and the validation split
# --------------------------------------------------------------------------------------


@dataclass
class PreparedSample:
    """A sample ready for training; all arrays (Y, X).

    image: float32 normalised. labels: int32 ids. target: uint8 class (``class_target``:
    0 background including the carved separation borders, 1 cell; 2 boundary with 3
    classes). weight: float32 loss weight, 0 in
    the ignore mask and in the held-out validation region.
    """

    image: np.ndarray
    labels: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    name: str = ""
    _weighted_cdf: np.ndarray | None = field(default=None, repr=False)
    _supervised: np.ndarray | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape  # type: ignore[return-value]

    @property
    def n_supervised(self) -> int:
        return int(self.supervised_index.size)

    @property
    def supervised_index(self) -> np.ndarray:
        if self._supervised is None:
            self._supervised = np.flatnonzero(self.weight > 0)
        return self._supervised

    @property
    def weighted_cdf(self) -> np.ndarray:
        if self._weighted_cdf is None:
            self._weighted_cdf = np.cumsum(self.weight.ravel(), dtype=np.float64)
        return self._weighted_cdf


def class_target(
    labels: np.ndarray, n_classes: int = 2, weight_config: WeightMapConfig | None = None
) -> np.ndarray:
    """The per-pixel training class of a label plane.

    Parameters
    ----------
    labels : (Y, X) integer instance ids.
    n_classes : 2 (the paper) or 3 (with a boundary class).
    weight_config : how the separation borders are carved (default WeightMapConfig()).

    Returns
    -------
    uint8 (Y, X). 2 classes: 1 = cell, 0 = background and the separation borders carved
    between touching cells (``weightmap.separation_target``). 3 classes: 0 background,
    2 boundary = every cell pixel with a 4- or 8-neighbour outside the cell (its 1 px
    outline, so the carved seams between touching cells too), 1 = the cell's interior.
    """
    from .weightmap import separation_target

    if n_classes == 2:
        return separation_target(labels, config=weight_config)
    if n_classes != 3:
        raise UNetCellsError(
            f"Training targets exist for 2 classes (background, cell) or 3 (background, "
            f"cell, boundary), not {n_classes}: start from a 2- or 3-class model."
        )
    labels = np.asarray(labels)
    highest = ndi.maximum_filter(labels, size=3, mode="nearest")
    lowest = ndi.minimum_filter(labels, size=3, mode="nearest")
    outline = (labels > 0) & ((highest != labels) | (lowest != labels))
    return np.where(labels > 0, np.where(outline, 2, 1), 0).astype(np.uint8)


def prepare_sample(
    sample: TrainingSample,
    normalization: NormalizationConfig | None = None,
    weight_config: WeightMapConfig | None = None,
    n_classes: int = 2,
) -> PreparedSample:
    """Normalise the image and compute target and weight map of the whole plane.

    Parameters
    ----------
    sample : one (Y, X) image with labels and optional ignore mask.
    normalization : the model's input normalisation (default NormalizationConfig()).
    weight_config : the loss weight map's settings (paper eq. 2; w0, sigma in px).
    n_classes : 2 (paper) or 3 (with a boundary class), see ``class_target``.

    Returns
    -------
    A PreparedSample: float32 image, int32 labels, uint8 target, float32 weight (0 in
    the ignore mask), all (Y, X). The loss weight map is the paper's with either number
    of classes (its border term sits on the seams).
    """
    from .weightmap import weight_map

    labels = np.asarray(sample.labels).astype(np.int32, copy=False)
    image = normalize(sample.image, normalization)
    weight = weight_map(labels, ignore=sample.ignore, config=weight_config)
    target = class_target(labels, n_classes, weight_config)
    if sample.ignore is not None:
        weight = np.where(sample.ignore, np.float32(0), weight).astype(np.float32)
    return PreparedSample(
        image, labels, target, weight.astype(np.float32, copy=False), sample.name
    )


@dataclass
class ValidationRegion:
    """A region for validation; the image carries context around it for prediction.

    image: float32 normalised crop (Y', X') including up to ``margin`` px of real context.
    core: (y0, y1, x0, x1) of the evaluated region inside ``image``.
    labels, target, weight: the evaluated region only; ignore: bool or None.
    """

    image: np.ndarray
    core: tuple[int, int, int, int]
    labels: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    ignore: np.ndarray | None
    name: str = ""


def _region(prepared: PreparedSample, box, margin: int, ignore, name: str) -> ValidationRegion:
    y0, y1, x0, x1 = box
    h, w = prepared.shape
    cy0, cy1 = max(0, y0 - margin), min(h, y1 + margin)
    cx0, cx1 = max(0, x0 - margin), min(w, x1 + margin)
    return ValidationRegion(
        image=prepared.image[cy0:cy1, cx0:cx1],
        core=(y0 - cy0, y1 - cy0, x0 - cx0, x1 - cx0),
        labels=prepared.labels[y0:y1, x0:x1],
        target=prepared.target[y0:y1, x0:x1],
        weight=prepared.weight[y0:y1, x0:x1],
        ignore=None if ignore is None else ignore[y0:y1, x0:x1],
        name=name,
    )


def split_validation(
    samples: Sequence[TrainingSample],
    val_samples: Sequence[TrainingSample] | None,
    config: TrainConfig,
    model_config: ModelConfig,
    normalization: NormalizationConfig | None = None,
) -> tuple[list[PreparedSample], list[ValidationRegion]]:
    """Prepared training samples and validation regions.

    With ``val_samples``: those, whole, are the validation set. Otherwise, if
    ``config.val_fraction`` > 0, a strip of that share at the end of each image's longer
    axis (or its start, if only the start has cells) is held out: its pixels get loss
    weight 0 in training and it is predicted with the rest of the image as context.
    Images whose strip would be under 16 px keep all their pixels for training.

    Parameters
    ----------
    samples : the training samples.
    val_samples : separate validation samples, or None (hold out strips).
    config : ``val_fraction``, ``weight_map``.
    model_config : the network (number of classes, context reach).
    normalization : the model's input normalisation.

    Returns
    -------
    (one PreparedSample per training sample, the ValidationRegions).
    """
    margin = context_margin(model_config.depth, model_config.padding)
    wcfg = config.weight_map
    n_classes = model_config.n_classes
    train = [prepare_sample(s, normalization, wcfg, n_classes) for s in samples]
    regions: list[ValidationRegion] = []
    if val_samples:
        for s in val_samples:
            p = prepare_sample(s, normalization, wcfg, n_classes)
            h, w = p.shape
            regions.append(_region(p, (0, h, 0, w), 0, s.ignore, s.name))
        return train, regions
    if config.val_fraction <= 0:
        return train, regions
    for sample, prepared in zip(samples, train, strict=True):
        h, w = prepared.shape
        axis = 0 if h >= w else 1
        length = (h, w)[axis]
        size = round(config.val_fraction * length)
        if size < 16 or length - size < 16:
            continue
        ends = [(length - size, length), (0, size)]
        chosen = ends[0]
        for lo, hi in ends:
            strip = prepared.labels[lo:hi] if axis == 0 else prepared.labels[:, lo:hi]
            if strip.any():
                chosen = (lo, hi)
                break
        lo, hi = chosen
        box = (lo, hi, 0, w) if axis == 0 else (0, h, lo, hi)
        region = _region(prepared, box, margin, sample.ignore, f"{sample.name} (held out)")
        regions.append(region)
        weight = prepared.weight.copy()
        weight[box[0] : box[1], box[2] : box[3]] = 0
        prepared.weight = weight
        prepared._supervised = prepared._weighted_cdf = None
    train = [p for p in train if p.weight.any()]
    if not train:
        raise UNetCellsError(
            "No annotated pixels are left for training once the validation strip (20% of each "
            "image by default) is held out: annotate more of the image, or give "
            "separate validation images."
        )
    return train, regions


# --------------------------------------------------------------------------------------
# tiles
# --------------------------------------------------------------------------------------


def choose_tile(
    model_config: ModelConfig, shapes: Sequence[tuple[int, int]], tile: int | None = None
) -> tuple[int, int]:
    """The input and output tile sizes for training.

    Parameters
    ----------
    model_config : the network (depth, padding).
    shapes : the (Y, X) shapes of the training planes, px.
    tile : requested input size, px, snapped down to a valid size (up to the smallest).
        None: an output of about twice the context margin (196 px from a 380 px input
        for depth 4, a good compromise between context overhead and step time), but not
        much larger than the largest image.

    Returns
    -------
    (input tile, output tile), px.
    """
    depth, padding = model_config.depth, model_config.padding
    if tile is None:
        largest = max(max(s) for s in shapes)
        wanted = 2 * context_margin(depth, padding) if padding == "valid" else 256
        tile = input_size_for_output(max(1, min(wanted, largest)), depth, padding)
    else:
        snapped = nearest_valid_input_size(tile, depth, padding, direction="down")
        tile = snapped or nearest_valid_input_size(tile, depth, padding, direction="up")
    return int(tile), int(output_size(tile, depth, padding))


def _crop(array: np.ndarray, y0: int, x0: int, size: int) -> np.ndarray:
    """A size x size crop starting at (y0, x0), mirrored beyond the edges."""
    rows = reflect_indices(y0, y0 + size, array.shape[0])
    cols = reflect_indices(x0, x0 + size, array.shape[1])
    return array[np.ix_(rows, cols)]


def _crop_zero(array: np.ndarray, y0: int, x0: int, size: int) -> np.ndarray:
    """A size x size crop starting at (y0, x0), zero beyond the edges."""
    out = np.zeros((size, size), array.dtype)
    h, w = array.shape
    sy0, sy1 = max(0, y0), min(h, y0 + size)
    sx0, sx1 = max(0, x0), min(w, x0 + size)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = array[sy0:sy1, sx0:sx1]
    return out


@dataclass
class TileBatch:
    """N network input tiles (N, S, S): image float32, weight float32, target uint8,
    labels int32 (mirrored beyond the image; weight 0 there). origins: (N, 2) int, the
    image position of each tile's top-left pixel; sources: index of the sample."""

    image: np.ndarray
    weight: np.ndarray
    target: np.ndarray
    labels: np.ndarray
    origins: np.ndarray
    sources: np.ndarray


class TileSampler:
    """Draws training tiles from prepared samples (see the module docstring).

    tile: network input size S; out: its output size O (the loss window is centred).
    """

    def __init__(
        self, samples: Sequence[PreparedSample], tile: int, out: int, cell_bias: float = 0.5
    ):
        self.samples = [s for s in samples if s.n_supervised > 0]
        if not self.samples:
            raise UNetCellsError(
                "No annotated pixels to train on: every pixel is in the ignore mask or held "
                "out for validation; annotate more of the images."
            )
        self.tile, self.out, self.cell_bias = int(tile), int(out), float(cell_bias)
        sizes = np.array([s.n_supervised for s in self.samples], np.float64)
        self._p_sample = sizes / sizes.sum()

    def _centre(self, s: PreparedSample, rng: np.random.Generator) -> tuple[int, int]:
        if rng.random() < self.cell_bias:
            cdf = s.weighted_cdf
            flat = int(np.searchsorted(cdf, rng.uniform(0.0, cdf[-1]), side="right"))
            flat = min(flat, cdf.size - 1)
        else:
            flat = int(s.supervised_index[rng.integers(s.supervised_index.size)])
        return divmod(flat, s.shape[1])

    def _start(self, centre: int, length: int, rng: np.random.Generator) -> int:
        o = self.out
        if length <= o:
            return (length - o) // 2
        jitter = int(rng.integers(-(o // 4), o // 4 + 1))
        return int(np.clip(centre - o // 2 + jitter, 0, length - o))

    def sample(self, rng: np.random.Generator, n: int) -> TileBatch:
        """Draw ``n`` tiles; randomness only from ``rng``.

        Parameters
        ----------
        rng : the only source of randomness.
        n : how many tiles.

        Returns
        -------
        A TileBatch of (n, S, S) arrays, S the input tile size in px."""
        s_size, off = self.tile, (self.tile - self.out) // 2
        images = np.empty((n, s_size, s_size), np.float32)
        weights = np.empty((n, s_size, s_size), np.float32)
        targets = np.empty((n, s_size, s_size), np.uint8)
        labels = np.empty((n, s_size, s_size), np.int32)
        origins = np.empty((n, 2), np.int64)
        sources = rng.choice(len(self.samples), size=n, p=self._p_sample)
        for i, k in enumerate(sources):
            s = self.samples[k]
            cy, cx = self._centre(s, rng)
            y0 = self._start(cy, s.shape[0], rng) - off
            x0 = self._start(cx, s.shape[1], rng) - off
            images[i] = _crop(s.image, y0, x0, s_size)
            targets[i] = _crop(s.target, y0, x0, s_size)
            labels[i] = _crop(s.labels, y0, x0, s_size)
            weights[i] = _crop_zero(s.weight, y0, x0, s_size)
            origins[i] = (y0, x0)
        return TileBatch(images, weights, targets, labels, origins, sources)
