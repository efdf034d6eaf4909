"""``python -m napari_unet_cells.cli``: the same as ``unet-cells``."""

import sys

from . import main

sys.exit(main())
