"""The HUD: the status panel (sharding, routing, KV cache, consensus), tokens/s, credits,
the streaming answer, the editor's message, and the prompt box."""

from __future__ import annotations

import textwrap
from collections.abc import Callable

from direct.gui.DirectGui import DGG, DirectEntry, DirectFrame
from direct.gui.OnscreenText import OnscreenText
from panda3d.core import NodePath, TextNode

from .frame import HudView

WHITE, DIM, CYAN, RED, GOLD = (0.95, 0.97, 1, 1), (0.6, 0.7, 0.8, 1), (0.4, 0.95, 1, 1), (1, 0.3, 0.25, 1), (1, 0.85, 0.3, 1)


def status_lines(hud: HudView) -> list[str]:
    """The panel's text, one line per fact."""
    return [
        f"SHARDING   {hud.sharding}",
        f"ROUTING    {hud.routing}",
        f"KV CACHE   {hud.kv_cache}",
        f"CONSENSUS  {hud.consensus}",
    ]


class Hud:
    """2D overlay on `aspect2d`-style anchors of the window."""

    def __init__(self, anchors: dict[str, NodePath], on_prompt: Callable[[str], None] | None = None) -> None:
        self._on_prompt = on_prompt
        top_left, top_right, bottom_left = anchors["top_left"], anchors["top_right"], anchors["bottom_left"]
        self.panel = DirectFrame(parent=top_left, frameColor=(0.02, 0.05, 0.1, 0.72),
                                 frameSize=(0.02, 1.5, -0.28, -0.02))
        self.status = self._text(top_left, (0.05, -0.08), WHITE, 0.045, TextNode.A_left)
        self.mode = self._text(top_right, (-0.05, -0.08), GOLD, 0.06, TextNode.A_right)
        self.rate = self._text(top_right, (-0.05, -0.16), CYAN, 0.05, TextNode.A_right)
        self.credits = self._text(top_right, (-0.05, -0.23), GOLD, 0.05, TextNode.A_right)
        self.answer = self._text(bottom_left, (0.05, 0.42), WHITE, 0.045, TextNode.A_left)
        self.message = self._text(bottom_left, (0.05, 0.30), WHITE, 0.05, TextNode.A_left)
        self.prompt = DirectEntry(parent=bottom_left, pos=(0.05, 0, 0.12), scale=0.05, width=40,
                                  numLines=1, initialText="", focus=0, command=self._submit,
                                  frameColor=(0.05, 0.08, 0.14, 0.9), text_fg=WHITE,
                                  relief=DGG.FLAT, focusInCommand=self._clear)
        self.prompt_hint = self._text(bottom_left, (0.05, 0.2), DIM, 0.04, TextNode.A_left)
        self.prompt_hint.setText("ask the hive: type a prompt and press Enter")

    @staticmethod
    def _text(parent: NodePath, pos: tuple[float, float], fg, scale: float, align) -> OnscreenText:
        return OnscreenText(parent=parent, pos=pos, fg=fg, scale=scale, align=align, mayChange=True,
                            shadow=(0, 0, 0, 0.8))

    def _clear(self) -> None:
        self.prompt.enterText("")

    def _submit(self, text: str) -> None:
        self.prompt.enterText("")
        if text.strip() and self._on_prompt is not None:
            self._on_prompt(text.strip())

    def show(self, hud: HudView, mode: str, message: str = "", refused: bool = False) -> None:
        """Draw `hud` (only texts that changed are re-laid out by Panda)."""
        _set(self.status, "\n".join(status_lines(hud)))
        _set(self.mode, mode.upper() + (f"  {hud.player}" if hud.player else ""))
        _set(self.rate, f"{hud.tokens_per_s:.1f} tokens/s")
        _set(self.credits, f"{hud.credits_mc / 1000:.3f} credits")
        tail = hud.answer[-400:]
        _set(self.answer, "\n".join(textwrap.wrap(tail, 70)[-5:]))
        _set(self.message, message)
        self.message["fg"] = RED if refused else CYAN

    def set_prompt_visible(self, visible: bool) -> None:
        for item in (self.prompt, self.prompt_hint):
            item.show() if visible else item.hide()


def _set(node: OnscreenText, text: str) -> None:
    if node.getText() != text:
        node.setText(text)
