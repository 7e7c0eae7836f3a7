"""Makes the project's image assets in `assets/` (run `python -m world.view.assets_gen`).

Everything in `assets/` is drawn here by code, so it is the project's own work under the
project's licence; nothing is downloaded.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from .config import ASSET_DIR


def panel(path: Path, w: int = 256, h: int = 64, radius: int = 10) -> Path:
    """The HUD panel: a dark rounded rectangle with a thin cyan rim, alpha outside the corners."""
    from panda3d.core import Filename, PNMImage

    img = PNMImage(w, h, 4)
    for y in range(h):
        for x in range(w):
            dx = max(radius - x, 0, x - (w - 1 - radius))
            dy = max(radius - y, 0, y - (h - 1 - radius))
            d = math.hypot(dx, dy)  # distance into a corner's rounding
            inside = radius - d
            edge = min(x, y, w - 1 - x, h - 1 - y) if d == 0 else inside
            if inside < 0:
                img.set_xel_a(x, y, 0, 0, 0, 0)
                continue
            shade = 0.05 + 0.04 * (1 - y / h)
            rim = 1.0 if edge < 1.5 else 0.0
            img.set_xel_a(x, y, shade + 0.3 * rim, shade + 0.8 * rim, shade * 1.8 + 0.9 * rim,
                          min(1.0, inside) * (0.85 if rim else 0.72))
    path.parent.mkdir(parents=True, exist_ok=True)
    if not img.write(Filename.from_os_specific(str(path))):
        raise OSError(f"could not write {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    out = Path(argv[0]) if argv else ASSET_DIR
    print(panel(out / "panel.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
