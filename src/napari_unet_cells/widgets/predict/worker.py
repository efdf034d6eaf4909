"""The Predict dock's background work: the prediction and the re-labelling.

Everything a worker needs is read from the layer and the controls on the GUI thread
(:func:`read_job`) and handed over as plain values: a worker thread never touches a
napari layer or a widget.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...core.config import InstanceConfig, PredictConfig
from .._workers import detach, dock_worker


@dataclass(frozen=True)
class PredictJob:
    """One prediction, in plain values (no napari layer).

    data: the image's pixels (a read-only view of the layer's array, never modified);
    model: None (the bundled model), a model file Path or a CellModel; rgb: True for an
    RGB layer, else None (a short last axis may still be channels); channel_axis and
    channel: the user's channel choice (None: auto); diameter: as ``predict_iter`` takes it.
    """

    data: np.ndarray
    model: Any
    config: PredictConfig
    instances: InstanceConfig
    rgb: bool | None
    channel_axis: int | None
    channel: int | None
    diameter: float | str | None


def read_job(
    layer: Any,
    *,
    model: Any,
    config: PredictConfig,
    instances: InstanceConfig,
    diameter: float | str | None,
    channel_choice: tuple[int, int] | None,
    in_channels: int,
) -> PredictJob:
    """Read a PredictJob from an Image layer, on the GUI thread.

    Parameters
    ----------
    layer : napari.layers.Image
        The image (not multiscale); its data is not copied and never modified.
    model, config, instances, diameter
        As ``core.predict.predict_iter`` takes them.
    channel_choice : (int, int) or None
        (channel axis, channel) chosen by the user; None: auto.
    in_channels : int
        The model's input channels.

    Raises
    ------
    UNetCellsError
        Now, not from the worker, when the channels need a choice.
    """
    from ...core.predict import channel_layout

    channel_axis, channel = channel_choice or (None, None)
    rgb = True if layer.rgb else None  # None: a (Y, X, 2) layer is channels
    channel_layout(tuple(layer.data.shape), in_channels, rgb, channel_axis, channel)
    return PredictJob(
        data=np.asarray(layer.data),
        model=model,
        config=config,
        instances=instances,
        rgb=rgb,
        channel_axis=channel_axis,
        channel=channel,
        diameter=diameter,
    )


def read_settings(inputs: Any, post: Any, tta: bool) -> dict[str, Any]:
    """The dock's model, ``PredictConfig``, ``InstanceConfig`` and diameter as plain
    values (keywords of ``predict_iter`` and ``run_batch_iter``), read on the GUI thread
    from its Inputs and Post-processing panels. Raises UNetCellsError for a bad setting."""
    return {
        "model": inputs.model_choice(),
        "config": inputs.predict_config(tta),
        "instances": post.config(inputs.instance_defaults()),
        "diameter": inputs.diameter_value(),
    }


def run_job(job: PredictJob, stop: threading.Event) -> Generator[Any, None, Any]:
    """``core.predict.predict_iter`` on the job: progress events, then the result (or
    None when stopped)."""
    from ...core import predict as core_predict

    return (
        yield from core_predict.predict_iter(
            job.data,
            job.model,
            job.config,
            job.instances,
            stop=stop,
            rgb=job.rgb,
            channel_axis=job.channel_axis,
            channel=job.channel,
            diameter=job.diameter,
        )
    )


def prediction_worker(job: PredictJob, stop: threading.Event) -> Any:
    """A napari GeneratorWorker (not started) that runs :func:`run_job`."""
    return dock_worker(run_job, job, stop)


class Relabeller:
    """Re-labels kept probabilities in a background thread; the latest request wins.

    ``on_labels(probabilities, labels)`` receives each result on the GUI thread;
    ``on_error(err)`` any failure.
    """

    def __init__(
        self,
        on_labels: Callable[[np.ndarray, np.ndarray], None],
        on_error: Callable[[Exception], None],
    ) -> None:
        self.on_labels = on_labels
        self.on_error = on_error
        self.worker = None
        self.pending: tuple[np.ndarray, InstanceConfig, Any] | None = None

    def request(self, probabilities: np.ndarray, config: InstanceConfig, shape: Any) -> None:
        """Re-label ``probabilities`` with ``config`` onto ``shape`` (Y, X), soon."""
        self.pending = (probabilities, config, shape)
        if self.worker is None:
            self._start()

    def cancel(self) -> None:
        """Forget a request not yet started."""
        self.pending = None

    def close(self) -> None:
        """Forget the pending request and detach the running worker."""
        self.pending = None
        detach(self.worker)

    def _start(self) -> None:
        from ...core.instances import probabilities_to_labels

        (probabilities, config, shape), self.pending = self.pending, None
        worker = dock_worker(probabilities_to_labels, probabilities, config, shape=shape)
        worker.returned.connect(lambda labels: self.on_labels(probabilities, labels))
        worker.errored.connect(self.on_error)
        worker.finished.connect(self._finished)
        self.worker = worker
        worker.start()

    def _finished(self) -> None:
        self.worker = None
        if self.pending is not None:
            self._start()  # the controls moved meanwhile: the latest setting wins
