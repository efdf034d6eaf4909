"""Where models come from: the bundled file, model files, and the models of this session.

The models trained since napari (or Python) started are kept in memory by name, so the
Predict dock and ``predict(model=name)`` can use them without reading a file. The registry
is process-wide and thread-safe; ``events.changed`` (a psygnal signal, no Qt) fires after
every change so that docks can refresh their model lists.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from psygnal import Signal, SignalGroup

from .errors import UNetCellsError

if TYPE_CHECKING:  # pragma: no cover
    from .checkpoint import CellModel
    from .unet import UNet

logger = logging.getLogger(__name__)

MAX_SESSION_MODELS = 8  # models kept in memory; the oldest is forgotten first

_REGISTRY: dict[str, CellModel] = {}
_REGISTRY_LOCK = threading.Lock()


class _RegistryEvents(SignalGroup):
    changed = Signal()  # the set of session models changed


#: ``events.changed.connect(callback)`` to hear of registered / forgotten models
events = _RegistryEvents()


def register_model(name: str, model: CellModel) -> None:
    """Make ``model`` available by ``name`` to the Predict dock and ``predict(model=name)``.

    The Fine-tune dock registers the models it trains in this session (it also saves each
    to a file); re-registering a name replaces the model. At most ``MAX_SESSION_MODELS``
    are kept in memory: registering one more forgets the oldest (its file stays).
    Thread-safe; ``events.changed`` is emitted afterwards.

    Parameters
    ----------
    name : str
        The name it is listed under (passed through ``str``).
    model : CellModel
        The model, kept in memory as is (not copied).
    """
    with _REGISTRY_LOCK:
        _REGISTRY.pop(str(name), None)
        _REGISTRY[str(name)] = model
        while len(_REGISTRY) > MAX_SESSION_MODELS:
            oldest = next(iter(_REGISTRY))
            del _REGISTRY[oldest]
            logger.info(
                "forgot the session model %r (at most %d are kept)", oldest, MAX_SESSION_MODELS
            )
    events.changed.emit()


def unregister_model(name: str) -> None:
    """Forget a registered model (no error if unknown).

    ``events.changed`` is emitted only when a model was forgotten.

    Parameters
    ----------
    name : str
        The name it was registered under.
    """
    with _REGISTRY_LOCK:
        known = _REGISTRY.pop(str(name), None) is not None
    if known:
        events.changed.emit()


def registered_models() -> dict[str, CellModel]:
    """The models registered in this session, by name (a copy, oldest first)."""
    with _REGISTRY_LOCK:
        return dict(_REGISTRY)


def bundled_model_path() -> Path | None:
    """The model file shipped with the plugin (core/models/*.npz), or None if none yet."""
    folder = Path(__file__).parent / "models"
    files = sorted(folder.glob("*.npz")) if folder.is_dir() else []
    return files[0] if files else None


def resolve_model(model: CellModel | UNet | str | Path | None) -> CellModel:
    """A CellModel from a CellModel, a bare UNet, a registered name, a file path or None.

    None means the bundled model; while the plugin ships none, that is an error that says
    to pass a model file. A name registered in this session wins over a file of the same
    name.

    Parameters
    ----------
    model : CellModel, UNet, str, Path or None
        What to use; a file is loaded (``core.checkpoint.load_model``), the others are
        used as they are (a UNet is wrapped in a CellModel, not copied).

    Returns
    -------
    CellModel
        The model, ready to predict with or fine-tune.

    Raises
    ------
    UNetCellsError
        No bundled model, an unknown name, an unreadable model file, or another type.
    """
    from .checkpoint import CellModel, load_model
    from .unet import UNet

    if model is None:
        path = bundled_model_path()
        if path is None:
            raise UNetCellsError(
                "no bundled model yet: pass a model file (model=PATH, or --model FILE on the "
                "command line), e.g. one saved by the Fine-tune dock."
            )
        return load_model(path)
    if isinstance(model, CellModel):
        return model
    if isinstance(model, UNet):
        return CellModel(net=model)
    if isinstance(model, str | Path):
        registered = registered_models().get(str(model))
        if registered is not None:
            return registered
        if isinstance(model, str) and Path(model).suffix != ".npz" and not Path(model).exists():
            raise UNetCellsError(
                f"No model file or model of this session is called {model!r} (a session "
                f"keeps the {MAX_SESSION_MODELS} newest); choose its model file (.npz) instead, "
                "e.g. the one the Fine-tune dock saved."
            )
        return load_model(model)
    raise UNetCellsError(
        f"model must be a CellModel, a model file path or None, got {type(model).__name__}."
    )
