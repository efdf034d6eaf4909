"""The panels of the Predict dock (:mod:`napari_unet_cells.widgets.predict_widget`).

inputs: image, channel, model, device, tile, cell diameter; postprocess: probabilities ->
cells controls; run_panel: Run / Stop, progress, status; worker: the prediction and
re-labelling in background threads (plain values only); output: the labels and
probability layers the dock owns; grid: the tile grid overlay; measure_panel (with
measure_job): the Cells section, per-cell measurements as the labels layer's features.
"""
