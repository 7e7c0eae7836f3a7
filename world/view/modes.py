"""Game modes as an FSM: play (ask the hive, orbit freely), spectate (follow the tensor flow),
edit (build on your plot). Each state binds its own input and undoes it on exit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from direct.fsm.FSM import FSM

if TYPE_CHECKING:
    from .app import WorldApp

MODES = ("play", "spectate", "edit")
EDIT_KEYS = ("arrow_left", "arrow_right", "arrow_up", "arrow_down", "r", "delete", "backspace", "x",
             "z", "y", "control-z", "control-y", "escape")


class Modes(FSM):
    """States are named like the CLI commands, capitalised: Play, Spectate, Edit."""

    def __init__(self, app: WorldApp) -> None:
        super().__init__("modes")
        self.app = app

    def switch(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        self.request(mode.capitalize())

    @property
    def name(self) -> str:
        return (self.state or "Off").lower()

    def enterPlay(self) -> None:
        self.app.hud.set_prompt_visible(True)
        self.app.follow = False

    def exitPlay(self) -> None:
        self.app.hud.set_prompt_visible(False)

    def enterSpectate(self) -> None:
        self.app.hud.set_prompt_visible(False)
        self.app.follow = True

    def exitSpectate(self) -> None:
        self.app.follow = False

    def enterEdit(self) -> None:
        app = self.app
        if app.editor is None:
            raise ValueError("edit mode needs a city to edit")
        app.hud.set_prompt_visible(False)
        for overlay in (app.legend.np, app.minimap.root):  # the hive's key: not the builder's
            overlay.hide()
        app.base.accept("mouse1", app.click)
        for key in EDIT_KEYS:
            app.base.accept(key, app.edit_key, [key])
        app.focus_own_plot()

    def exitEdit(self) -> None:
        for overlay in (self.app.legend.np, self.app.minimap.root):
            overlay.show()
        self.app.base.ignore("mouse1")
        for key in EDIT_KEYS:
            self.app.base.ignore(key)
        self.app.scene.show_cursor(None)
