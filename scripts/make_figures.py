"""Make every figure and screenshot in ``docs/images`` from our own code and a real viewer.

Concept figures (``figures_concepts.py``) are drawn with matplotlib from what the library
computes (tile arithmetic, overlap-tile, weight maps, elastic deformation, separation).
Screenshots (``figures_napari.py``) dock the real widgets in a real napari viewer, run
them on the sample data and grab the window. Re-running refreshes every picture:

    xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python scripts/make_figures.py
    .venv/bin/python scripts/make_figures.py --list
    .venv/bin/python scripts/make_figures.py --only concept_weight_map --out preview

Needs the ``docs`` extra (matplotlib): ``pip install -e ".[docs]"``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import figures_concepts
import figures_napari

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def figure_registry() -> dict:
    """Figure name -> function(out_dir: Path, quick: bool) -> list of written PNG paths."""
    return {**figures_concepts.FIGURES, **figures_napari.FIGURES}


def main(argv: list[str] | None = None) -> int:
    figures = figure_registry()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--only", nargs="+", choices=sorted(figures), help="these figures")
    parser.add_argument("--list", action="store_true", help="list the figures and stop")
    parser.add_argument(
        "--quick", action="store_true", help="less training and smaller images (for tests)"
    )
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(figures))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for name in args.only or figures:
        began = time.perf_counter()
        paths = figures[name](args.out, quick=args.quick)
        written = ", ".join(Path(p).name for p in paths)
        print(f"{name}: {written} ({time.perf_counter() - began:.1f} s)", flush=True)
    print(f"all figures in {time.perf_counter() - start:.1f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
