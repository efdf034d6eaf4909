"""Frozen configuration dataclasses.

Every config is saved inside each model file (as a plain dict), so a model file alone
rebuilds the network and its pre-processing. Later modules add their own configs here
(weight map, training, prediction).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from .errors import UNetCellsError

T = TypeVar("T")


@dataclass(frozen=True)
class ModelConfig:
    """The 2015 U-Net's shape. Defaults are the paper's network (31,030,658 parameters).

    in_channels: image channels the network reads (1 for greyscale).
    n_classes: output classes; class 0 is background, class 1 is cell.
    base: channels of the first level (paper: 64); doubled at every pooling.
    depth: number of 2x2 max-poolings (paper: 4).
    padding: "valid" (paper: unpadded convolutions, output smaller than input)
        or "same" (zero-padded, output = input; tiling is then not exact).
    dropout: drop probability at the end of the contracting path (0 disables).
    batch_norm: add batch normalisation after each 3x3 convolution (not in the paper).
    """

    in_channels: int = 1
    n_classes: int = 2
    base: int = 64
    depth: int = 4
    padding: Literal["valid", "same"] = "valid"
    dropout: float = 0.5
    batch_norm: bool = False

    def __post_init__(self) -> None:
        if self.in_channels < 1 or self.n_classes < 2:
            raise UNetCellsError(
                f"ModelConfig needs in_channels >= 1 and n_classes >= 2, got "
                f"in_channels={self.in_channels}, n_classes={self.n_classes}."
            )
        if self.base < 1 or not 1 <= self.depth <= 6:
            raise UNetCellsError(
                f"ModelConfig needs base >= 1 and depth between 1 and 6, got "
                f"base={self.base}, depth={self.depth}."
            )
        if self.padding not in ("valid", "same"):
            raise UNetCellsError(
                f"ModelConfig.padding must be 'valid' or 'same', got {self.padding!r}."
            )
        if not 0.0 <= self.dropout < 1.0:
            raise UNetCellsError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout}.")


@dataclass(frozen=True)
class NormalizationConfig:
    """Percentile normalisation of the input image, identical in training and prediction.

    Intensities are mapped so that percentile ``p_low`` becomes 0 and ``p_high`` becomes 1
    (computed per plane, over all channels). Values outside are kept unless ``clip``.
    """

    p_low: float = 1.0
    p_high: float = 99.8
    clip: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.p_low < self.p_high <= 100.0:
            raise UNetCellsError(
                f"NormalizationConfig needs 0 <= p_low < p_high <= 100, got "
                f"p_low={self.p_low}, p_high={self.p_high}."
            )


def config_to_dict(config: Any) -> dict[str, Any]:
    """A frozen config as a JSON-ready dict (``dataclasses.asdict``: nested configs too).

    Parameters
    ----------
    config : dataclass instance
        A config of this module (PredictConfig, TrainConfig, ...).

    Returns
    -------
    dict of str to Any
        One key per field; :func:`config_from_dict` rebuilds a flat config from it.
    """
    return dataclasses.asdict(config)


def config_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild ``cls`` from a dict; unknown keys are an error, missing keys take defaults.

    The values are passed to ``cls`` as they are, so its own checks (``__post_init__``)
    apply; a nested dict is not turned back into a config.

    Parameters
    ----------
    cls : type
        The config dataclass to build.
    data : dict of str to Any
        Its settings, e.g. from a model file's header.

    Returns
    -------
    cls
        The rebuilt config.

    Raises
    ------
    UNetCellsError
        ``data`` is not a dict, holds a key ``cls`` has no field for (a model file saved by
        a newer version), or a value the config refuses.
    """
    if not isinstance(data, dict):
        raise UNetCellsError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}.")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UNetCellsError(
            f"{cls.__name__} has no setting(s) {unknown}: the model file was probably saved "
            "by a newer version of napari-unet-cells; upgrade it (pip install -U "
            "napari-unet-cells) to load this model."
        )
    return cls(**data)


@dataclass(frozen=True)
class PredictConfig:
    """Overlap-tile inference settings (see core/tiling.py and core/predict.py).

    device: "auto" (CUDA with bf16 autocast if present, else CPU in fp32), "cpu", "cuda:N".
    tile: network input tile size in pixels per axis, or None for "auto" (by the device's
        memory); snapped down to a valid size, shrunk for small images.
    batch_size: tiles per network call, or None for auto (by memory).
    tta: flip test-time augmentation (mean of 4 flipped predictions; 4x slower).
    """

    device: str = "auto"
    tile: int | None = None
    batch_size: int | None = None
    tta: bool = False

    def __post_init__(self) -> None:
        if self.tile is not None and self.tile < 1:
            raise UNetCellsError(
                f"The tile size must be a positive number of pixels (or auto), got {self.tile}."
            )
        if self.batch_size is not None and self.batch_size < 1:
            raise UNetCellsError(
                f"The batch size must be a positive number of tiles (or auto), got "
                f"{self.batch_size}."
            )


@dataclass(frozen=True)
class InstanceConfig:
    """Class probabilities -> instance labels (see core/instances.py).

    threshold: cell-class probability above which a pixel seeds a cell (0..1).
    min_size: objects smaller than this many pixels are removed.
    border_width: how far (px) cells grow back over the separation border they lost.
    connectivity: 1 (4-neighbourhood, separates cells that touch only diagonally) or 2.
    min_confidence: objects whose mean cell probability is below this are removed
        (faint responses to background texture, debris, noise); 0 keeps all.
    seed_threshold: hysteresis. When above ``threshold``, cells are seeded by the
        components of probability > seed_threshold and flooded (watershed on the
        probability) over the pixels above ``threshold``; regions there without a seed
        are dropped. Splits touching cells whose shared border is only moderately
        uncertain. None (or <= threshold): seeds are the components above ``threshold``.

    A model file may store its own defaults (``CellModel.extra["instances"]``), tuned
    for the cell sizes it was trained on; ``instance_defaults(model)`` reads them.
    """

    threshold: float = 0.5
    min_size: int = 25
    border_width: int = 2
    connectivity: int = 1
    min_confidence: float = 0.0
    seed_threshold: float | None = None

    @property
    def hysteresis(self) -> bool:
        """True when cells are seeded above ``seed_threshold`` (see above)."""
        return self.seed_threshold is not None and self.seed_threshold > self.threshold

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise UNetCellsError(
                f"The threshold is a cell probability and must be between 0 and 1 "
                f"(exclusive), got {self.threshold}; 0.5 is the usual value."
            )
        if self.min_size < 0 or self.border_width < 0:
            raise UNetCellsError(
                f"The minimum cell size must be 0 or more pixels (0 keeps all objects), got "
                f"{self.min_size}."
                if self.min_size < 0
                else f"border_width must be 0 or more pixels, got {self.border_width}."
            )
        if self.connectivity not in (1, 2):
            raise UNetCellsError(
                f"connectivity must be 1 (4 neighbours: cells touching only at a corner stay "
                f"apart) or 2 (8 neighbours), got {self.connectivity}."
            )
        if self.seed_threshold is not None and not 0.0 < self.seed_threshold < 1.0:
            raise UNetCellsError(
                f"seed_threshold must be a probability between 0 and 1 (exclusive), or None, "
                f"got {self.seed_threshold}."
            )
        if not 0.0 <= self.min_confidence < 1.0:
            raise UNetCellsError(
                f"min_confidence is a mean cell probability and must be in [0, 1) (0 keeps all "
                f"objects), got {self.min_confidence}."
            )


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation (see core/augment.py). Set a field to 0/False to disable.

    elastic_sigma: standard deviation, in pixels, of the random displacement vectors on
        the coarse grid (paper: 10 px); upsampled bicubically to every pixel.
    elastic_grid: points per axis of the coarse displacement grid (paper: 3).
    flip: random horizontal/vertical flips.
    rotate90: random rotations by multiples of 90 degrees.
    gain: intensity scale drawn from [1 - gain, 1 + gain] (on the normalised image).
    offset: intensity offset drawn from [-offset, offset] (normalised units).
    noise: std of added Gaussian noise, drawn per sample from [0, noise] (normalised).
    scale: zoom drawn log-uniformly from [1 / (1 + scale), 1 + scale] (0: none); cells
        appear up to (1 + scale) times larger or smaller. The loss window stays inside
        real image content for zooms down to about 0.55.
    """

    elastic_sigma: float = 10.0
    elastic_grid: int = 3
    flip: bool = True
    rotate90: bool = True
    gain: float = 0.1
    offset: float = 0.1
    noise: float = 0.02
    scale: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.scale <= 0.8:
            raise UNetCellsError(
                f"AugmentConfig.scale must be in [0, 0.8] (0.5: zoom 0.67-1.5), got {self.scale}."
            )
        if self.elastic_sigma < 0 or self.gain < 0 or self.offset < 0 or self.noise < 0:
            raise UNetCellsError(
                "AugmentConfig: elastic_sigma, gain, offset and noise must be >= 0, got "
                f"{self.elastic_sigma}, {self.gain}, {self.offset}, {self.noise}."
            )
        if self.gain >= 1:
            raise UNetCellsError(f"AugmentConfig.gain must be below 1, got {self.gain}.")
        if self.elastic_grid < 2:
            raise UNetCellsError(
                f"AugmentConfig.elastic_grid needs at least 2 points, got {self.elastic_grid}."
            )

    def scaled(self, strength: float) -> AugmentConfig:
        """The same recipe with deformation and intensity changes scaled by ``strength``.

        0 turns off elastic deformation and intensity changes (flips/rotations stay).
        """
        if strength < 0:
            raise UNetCellsError(f"The augmentation strength must be >= 0, got {strength}.")
        return dataclasses.replace(
            self,
            elastic_sigma=self.elastic_sigma * strength,
            gain=min(self.gain * strength, 0.9),
            offset=self.offset * strength,
            noise=self.noise * strength,
        )


WEIGHT_MAP_PRESETS: dict[str, dict[str, Any]] = {
    # Ronneberger et al. 2015, eq. 2: w0 = 10, sigma = 5 px, w_c from class frequencies
    "paper": {},
    # the Fiji U-Net plugin's defaults (Falk et al. 2019): border weight factor 50,
    # border sigma 6 px, foreground/background ratio 0.1, sigma1 = 10 px
    "fiji": {"w0": 50.0, "sigma": 6.0, "background_weight": 0.1, "balance_sigma": 10.0},
}


@dataclass(frozen=True)
class WeightMapConfig:
    """The loss weight map (paper eq. 2), see core/weightmap.py for the exact definition.

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2)) on background pixels,
    w(x) = w_c(x) on cell pixels, 0 in the ignore mask.

    w0: amplitude of the border term (paper: 10; Fiji "border weight factor": 50).
    sigma: width of the border term, pixels (paper: 5; Fiji: 6).
    class_balance: weight classes by w_c; False gives w_c = 1 everywhere.
    border_width: pixels carved away on EACH side of a border between touching cells
        (made background in the training target); 0 disables carving.
    background_weight: None (paper): w_c from inverse class frequencies, background 1 and
        cells n_background / n_cell (counted over the non-ignored pixels of the target).
        A number v in (0, 1] (Fiji "foreground/background ratio", 0.1): cells 1,
        background v.
    balance_sigma: pixels; only with background_weight set: the background weight rises
        towards 1 near cells, v + (1 - v) * exp(-d1^2 / (2 balance_sigma^2)) (Fiji
        "sigma1": 10 px); 0 disables this term.
    tolerance: a distance term smaller than ``tolerance`` times its amplitude is set to 0;
        it fixes how far from each cell distances are computed (5.7 sigma for 1e-7).
    """

    w0: float = 10.0
    sigma: float = 5.0
    class_balance: bool = True
    border_width: int = 1
    background_weight: float | None = None
    balance_sigma: float = 0.0
    tolerance: float = 1e-7

    def __post_init__(self) -> None:
        if not self.w0 >= 0 or not self.sigma > 0:
            raise UNetCellsError(
                f"The weight map needs w0 >= 0 and sigma > 0 pixels (paper: w0 = 10, sigma = "
                f"5), got w0={self.w0}, sigma={self.sigma}."
            )
        if int(self.border_width) != self.border_width or not 0 <= self.border_width <= 16:
            raise UNetCellsError(
                f"The weight map's border width must be a whole number of pixels from 0 to 16 "
                f"(default 1), got {self.border_width}."
            )
        if self.background_weight is not None and not 0 < self.background_weight <= 1:
            raise UNetCellsError(
                "The weight map's background_weight must be None (weights from class "
                f"frequencies) or in (0, 1] (Fiji: 0.1), got {self.background_weight}."
            )
        if not self.balance_sigma >= 0:
            raise UNetCellsError(
                f"The weight map's balance_sigma must be >= 0 pixels (Fiji: 10), got "
                f"{self.balance_sigma}."
            )
        if not 0 < self.tolerance < 1:
            raise UNetCellsError(
                f"The weight map's tolerance must be in (0, 1) (default 1e-7), got "
                f"{self.tolerance}."
            )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> WeightMapConfig:
        """The named preset ("paper" or "fiji"), with optional field overrides."""
        if name not in WEIGHT_MAP_PRESETS:
            raise UNetCellsError(
                f"Unknown weight map preset {name!r}; choose one of "
                f"{', '.join(WEIGHT_MAP_PRESETS)}."
            )
        return cls(**{**WEIGHT_MAP_PRESETS[name], **overrides})


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning settings (see core/train.py). Budgets: training ends at whichever of
    ``steps`` / ``minutes`` comes first (None = no limit; at least one must be set), at
    early stopping, or at a stop request.

    steps: optimiser steps. minutes: wall-time budget, minutes.
    batch_size: tiles per step. tile: network input size in px (snapped down to a valid
        size), or None for automatic (output about 2 x the context margin, capped by the
        image size).
    optimizer: "adam" (default: Adam, linear warm-up, cosine decay; converges fastest
        when fine-tuning, see docs/finetune.md) or "sgd" (the paper: SGD, momentum 0.99).
    learning_rate: peak learning rate, or None for the optimiser's default
        (adam 1e-3, sgd 1e-2).
    momentum: SGD momentum (paper: 0.99). weight_decay: L2 (AdamW-style for adam).
    warmup_steps: linear warm-up from 0 to the peak learning rate.
    final_lr_fraction: the cosine decay ends at this fraction of the peak.
    validate_every: steps between validations (AP at IoU 0.5, foreground IoU, loss).
    patience: stop after this many validations without improvement (None: never).
    val_fraction: share of each image held out for validation when no separate
        validation images are given (a strip at the end of the longer axis).
    cell_bias: share of tiles centred on pixels drawn in proportion to the loss weight
        (cells and, above all, borders between touching cells); the rest uniformly over
        annotated pixels.
    augment: the augmentation recipe; augment_strength scales it (0: only flips/turns).
        Default: the paper's, plus tiles zoomed 0.67-1.5x (``scale=0.5``) as the bundled
        model was trained: fine-tuning with it beat no zoom in 14 of 18 paired held-out
        runs and lost 2 (docs/finetune.md, 2026-12-03).
    weight_map: the loss weight map (paper eq. 2).
    seed: seeds initialisation, patch sampling, augmentation and dropout.
    tune_post_processing: choose the instance step's settings (threshold, seeds, minimum
        size and confidence) with the best AP50 on the validation data
        (``core.instances.tune_instances``): before training, to validate with them, and
        after (skipped after Stop), to store them in the model. Only with at least
        ``min_val_cells`` validation cells; with fewer the model's own settings are kept.
    average_from: the model returned is the average of the weights after every step
        from this share of the budget on (stochastic weight averaging over the cosine
        schedule's tail; default the last half); None: the weights of a single step.
    min_val_cells: the best validated step is chosen, and training stops early, only
        when the validation data holds at least this many cells. With fewer, one
        validation's AP50 is too noisy to choose by (a strip of ~10 cells picked models
        0.1 AP50 apart in identical runs, docs/finetune.md): the whole budget is trained
        and the final (averaged) weights are kept with the start model's
        post-processing; validation still draws the curve. 0 with ``average_from=None``:
        the behaviour before 2026-12-02 (always the best validated step, early stopping,
        the post-processing chosen on validation).
    """

    steps: int | None = 500
    minutes: float | None = None
    batch_size: int = 4
    tile: int | None = None
    optimizer: Literal["adam", "sgd"] = "adam"
    learning_rate: float | None = None
    momentum: float = 0.99
    weight_decay: float = 0.0
    warmup_steps: int = 20
    final_lr_fraction: float = 0.05
    validate_every: int = 25
    patience: int | None = 8
    val_fraction: float = 0.2
    cell_bias: float = 0.5
    augment: AugmentConfig = AugmentConfig(scale=0.5)
    augment_strength: float = 1.0
    weight_map: WeightMapConfig = WeightMapConfig()
    seed: int = 0
    tune_post_processing: bool = True
    average_from: float | None = 0.5
    min_val_cells: int = 100

    def __post_init__(self) -> None:
        if self.steps is None and self.minutes is None:
            raise UNetCellsError("Give a training budget: a number of steps, of minutes, or both.")
        if (self.steps is not None and self.steps < 1) or (
            self.minutes is not None and not self.minutes > 0
        ):
            raise UNetCellsError(
                f"The training budget must be positive, got steps={self.steps}, "
                f"minutes={self.minutes}: give at least 1 step or more than 0 minutes."
            )
        if self.batch_size < 1 or (self.tile is not None and self.tile < 1):
            raise UNetCellsError(
                f"The batch size must be at least 1 tile, got {self.batch_size}."
                if self.batch_size < 1
                else f"The tile size must be a positive number of pixels (or auto), got "
                f"{self.tile}."
            )
        if self.optimizer not in ("adam", "sgd"):
            raise UNetCellsError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}.")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise UNetCellsError(
                f"The learning rate must be positive, got {self.learning_rate} (defaults: "
                "0.001 for adam, 0.01 for sgd)."
            )
        if not 0 <= self.val_fraction < 0.9 or not 0 <= self.cell_bias <= 1:
            raise UNetCellsError(
                f"val_fraction must be in [0, 0.9) and cell_bias in [0, 1], got "
                f"{self.val_fraction}, {self.cell_bias}."
            )
        if self.validate_every < 1 or (self.patience is not None and self.patience < 1):
            raise UNetCellsError(
                f"validate_every and patience must be >= 1, got {self.validate_every}, "
                f"{self.patience}."
            )
        if self.warmup_steps < 0 or not 0 <= self.final_lr_fraction <= 1:
            raise UNetCellsError(
                f"warmup_steps must be >= 0 and final_lr_fraction in [0, 1], got "
                f"{self.warmup_steps}, {self.final_lr_fraction}."
            )
        if (self.average_from is not None and not 0 <= self.average_from < 1) or (
            self.min_val_cells < 0
        ):
            raise UNetCellsError(
                f"average_from must be in [0, 1) or None and min_val_cells >= 0, got "
                f"{self.average_from}, {self.min_val_cells}."
            )
        if self.augment_strength < 0:
            raise UNetCellsError(f"augment_strength must be >= 0, got {self.augment_strength}.")

    @property
    def peak_learning_rate(self) -> float:
        """learning_rate, or the optimiser's default (adam 1e-3, sgd 1e-2)."""
        if self.learning_rate is not None:
            return self.learning_rate
        return 1e-3 if self.optimizer == "adam" else 1e-2
