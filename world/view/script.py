"""Scripted input for the editor: clicks on plot cells and key presses, sent through the same
event path as a real mouse and keyboard (for offscreen runs, screenshots and tests)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from .frame import ViewError
from .modes import EDIT_KEYS
from .scene import building_centre


@dataclass(frozen=True)
class Step:
    """One input: a click on cell (i, j) of my plot or a neighbour's, or a key."""

    action: str  # "click" or "key"
    whose: str = "mine"  # click: "mine" or "theirs"
    i: int = 0
    j: int = 0
    key: str = ""


def parse_script(text: str) -> list[Step]:
    """'click 2 3; click theirs 0 0; key r' -> steps; ViewError names the bad step."""
    steps = []
    for raw in filter(None, (s.strip() for s in text.split(";"))):
        words = raw.split()
        try:
            if words[0] == "key" and len(words) == 2 and words[1] in EDIT_KEYS:
                steps.append(Step("key", key=words[1]))
                continue
            if words[0] == "click":
                whose = words[1] if words[1] in ("mine", "theirs") else "mine"
                nums = words[2:] if words[1] in ("mine", "theirs") else words[1:]
                if len(nums) == 2:
                    steps.append(Step("click", whose, int(nums[0]), int(nums[1])))
                    continue
        except (IndexError, ValueError):
            pass
        raise ViewError(f"bad script step {raw!r}: use 'click [mine|theirs] I J' or 'key NAME' "
                        f"(keys: {', '.join(EDIT_KEYS)})")
    return steps


async def play_script(app, steps: list[Step], frames_between: int = 3) -> None:  # app: WorldApp
    """Send each step as input events, letting a few frames render between steps."""
    editor = app.editor
    if editor is None:
        raise ViewError("scripted input needs edit mode")
    for step in steps:
        await asyncio.sleep(0)
        while app.frames < 2:  # the camera must be placed before clicks are projected
            await asyncio.sleep(0.01)
        if step.action == "key":
            app.base.messenger.send(step.key)
        else:
            plots = [p for p in editor.city.plots() if (p.owner == editor.player) == (step.whose == "mine")]
            if not plots:
                raise ViewError(f"no plot that is {step.whose}")
            x, y = building_centre(plots[0], step.i, step.j)
            pixel = app.project(x, y, 0.0)
            if pixel is None:
                raise ViewError(f"cell ({step.i}, {step.j}) is off screen")
            app.pointer = app.pixel_ndc(*pixel)
            app.base.messenger.send("mouse1")
        start = app.frames
        while app.frames - start < frames_between:
            await asyncio.sleep(0.005)
