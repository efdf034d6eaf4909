"""The panels of the Annotate dock (:mod:`napari_unet_cells.widgets.annotate_widget`).

- :mod:`.layers_panel`: Image / Annotation / Prediction choices, new annotation layers
  and ignore masks;
- :mod:`.edit_panel`: the label edits, each one step of napari's undo;
- :mod:`.check_panel`: the pre-training check and its list of findings;
- :mod:`.training_panel`: "Add to training set" and its counts (the workspace's set);
- :mod:`.project_panel` and :mod:`.autosave`: the project folder, Open, and the autosave
  (snapshots on the GUI thread, writing in a worker).

Each panel gets the dock and reads the viewer's workspace through it; no panel imports
another dock.
"""
