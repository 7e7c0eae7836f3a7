"""Labels over the districts: who each is, what it serves, how it is doing.

`label_text` and `pick_labelled` are pure (tested without a renderer); `Labels` keeps one
Panda `TextNode` per shown label on the pixel overlay and moves it over its district each
frame (re-laying out text only when it changed).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable

from .frame import DistrictView

MAX_LABELS = 14  # beyond this many districts, only the ones worth reading are labelled
CROWD = 50  # a hive this big labels no more than `CROWDED_LABELS` of them
CROWDED_LABELS = 8
WRAP = 46  # characters of a label's state line
MAX_LIFT = 3.0  # a label pushed further up than this many of its heights is not shown
ROLE_TEXT = {"asker": "ASKER", "you": "YOU", "referee": "REFEREE"}
# Colour runs in label text (TextPropertiesManager names, registered by `Labels`).
COLORS = {"liar": (1.0, 0.3, 0.25, 1), "slow": (1.0, 0.6, 0.2, 1), "hot": (1.0, 0.55, 0.15, 1),
          "role": (0.45, 0.95, 1.0, 1), "dim": (0.78, 0.82, 0.88, 1), "ok": (0.55, 1.0, 0.55, 1)}


def _run(style: str, text: str) -> str:
    return f"\1{style}\1{text}\2"


def status_of(d: DistrictView, median_ms: float = 0.0) -> list[tuple[str, str]]:
    """(colour style, text) facts about how the district is doing, worst first."""
    out: list[tuple[str, str]] = []
    if d.fall > 0:
        out.append(("liar", "LIAR: " + (d.evidence or "slashed")))
    if not d.online:
        out.append(("dim", "offline"))
    if d.slowest and d.step_ms:
        ratio = f", {d.step_ms / median_ms:.1f}x the median" if median_ms > 0 else ""
        out.append(("slow", f"SLOWEST{ratio}"))
    if d.queued:
        out.append(("slow", f"{d.queued} request{'s' if d.queued != 1 else ''} waiting"))
    if d.hot and d.temperature_c is not None:
        out.append(("hot", f"HOT {d.temperature_c:.0f} C"))
    if d.low_battery:
        out.append(("hot", f"BATTERY {100 * d.battery:.0f} %"))
    return out


def label_text(d: DistrictView, median_ms: float = 0.0) -> str:
    """Three short lines: name (and role), what it serves and its speed, its state."""
    title = d.name or d.node_id[:8]
    if d.role in ROLE_TEXT:
        title += "  " + _run("role", ROLE_TEXT[d.role])
    work = []
    if d.layers:
        work.append(("layers " if d.part == "full" else f"{d.part} ") + d.layer_text())
    elif d.role == "asker":
        work.append("embeds the prompt, samples tokens")
    if d.step_ms:
        work.append(f"{d.step_ms:.0f} ms/step")
    lines = [title]
    if work:
        lines.append(_run("dim", "  ".join(work)))
    facts = status_of(d, median_ms)
    if facts:
        line = "  ".join(_run(style, text) for style, text in facts[:2])
        if len(plain(line)) > WRAP:  # a long reason (a liar's evidence) on lines of its own
            style, text = facts[0]
            lines += [_run(style, part) for part in textwrap.wrap(text, WRAP)[:3]]
        else:
            lines.append(line)
    return "\n".join(lines)


def plain(text: str) -> str:
    """A label's text without its colour runs (for tests and logs)."""
    out, skip = [], False
    for ch in text:
        if ch == "\1":
            skip = not skip
        elif ch != "\2" and not skip:
            out.append(ch)
    return "".join(out)


def pick_labelled(districts: tuple[DistrictView, ...], limit: int = MAX_LABELS) -> list[DistrictView]:
    """All districts when few; else the ones a viewer must find first: liars, the slowest,
    the asker and the player, hot or draining ones, then the busiest."""
    def rank(d: DistrictView) -> tuple[int, float]:
        urgent = (d.fall > 0, d.slowest, d.role in ROLE_TEXT, d.hot or d.low_battery, d.queued > 0,
                  d.active)
        return (-sum(2 ** (5 - k) for k, flag in enumerate(urgent) if flag), -d.tokens)

    return sorted(districts, key=rank)[:limit]  # placed in this order: the first stay put


def median_step(districts: tuple[DistrictView, ...]) -> float:
    steps = sorted(d.step_ms for d in districts if d.step_ms)
    return steps[len(steps) // 2] if steps else 0.0


class Labels:
    """Text over districts on `overlay` (a pixel-unit 2D node: x right, y up from the top)."""

    def __init__(self, overlay, size_px: float = 13.0) -> None:  # overlay: NodePath
        from panda3d.core import TextProperties, TextPropertiesManager

        manager = TextPropertiesManager.get_global_ptr()
        for name, rgba in COLORS.items():
            props = TextProperties()
            props.set_text_color(*rgba)
            manager.set_properties(name, props)
        self.overlay = overlay
        self.size = size_px
        self._nodes: dict[str, object] = {}  # node id -> NodePath of its TextNode
        self._texts: dict[str, str] = {}
        self._chosen: tuple[object, list[DistrictView], float] | None = None
        self._pos: dict[str, tuple[float, float, float]] = {}

    def update(self, districts: tuple[DistrictView, ...],
               anchor: Callable[[str], tuple[float, float] | None]) -> list[str]:
        """Show labels for the chosen districts at `anchor(node_id)` (pixel column, row from
        the top; None: off screen). Returns the node ids labelled on screen."""
        from panda3d.core import TextNode, TransparencyAttrib

        if self._chosen is None or self._chosen[0] is not districts:  # sources reuse tuples
            limit = CROWDED_LABELS if len(districts) > CROWD else MAX_LABELS
            self._chosen = (districts, pick_labelled(districts, limit), median_step(districts))
        _, chosen, median = self._chosen
        keep = {d.node_id for d in chosen}
        for nid in [n for n in self._nodes if n not in keep]:
            self._nodes.pop(nid).remove_node()  # type: ignore[attr-defined]
            self._texts.pop(nid, None)
            self._pos.pop(nid, None)
        shown = []
        taken: list[tuple[float, float, float, float]] = []  # placed labels: left, right, top, bottom
        for d in chosen:
            node = self._nodes.get(d.node_id)
            if node is None:
                tn = TextNode(f"label-{d.node_id[:8]}")
                tn.set_align(TextNode.A_center)
                tn.set_text_color(1, 1, 1, 1)
                tn.set_card_color(0.06, 0.08, 0.12, 1)  # opaque: no blending to pay for
                tn.set_card_as_margin(0.4, 0.4, 0.15, 0.1)
                node = self.overlay.attach_new_node(tn)
                node.set_bin("fixed", 10)  # under the legend and the minimap
                # glyph edges cut at half alpha, not blended: no framebuffer reads to pay for
                node.set_transparency(TransparencyAttrib.M_binary)
                node.set_scale(self.size)
                self._nodes[d.node_id] = node
            text = label_text(d, median)
            if self._texts.get(d.node_id) != text:
                node.node().set_text(text)  # type: ignore[attr-defined]
                self._texts[d.node_id] = text
            where = anchor(d.node_id)
            if where is None:
                node.hide()  # type: ignore[attr-defined]
                continue
            lines = text.count("\n") + 1
            half = node.node().get_width() * self.size / 2 + 0.4 * self.size  # type: ignore[attr-defined]
            bottom = where[1]
            top = bottom - self.size * (lines + 0.25)
            height = bottom - top
            for _ in range(len(taken)):  # lift it clear of the labels placed before it
                hit = next((t for t in taken if where[0] - half < t[1] and t[0] < where[0] + half
                            and top < t[3] and t[2] < bottom), None)
                if hit is None:
                    break
                shift = bottom - hit[2] + 2
                top, bottom = top - shift, bottom - shift
            if where[1] - bottom > MAX_LIFT * height or top < 0:
                node.hide()  # type: ignore[attr-defined]  # too crowded here: the minimap shows it
                continue
            taken.append((where[0] - half, where[0] + half, top, bottom))
            if node.is_hidden():  # type: ignore[attr-defined]
                node.show()  # type: ignore[attr-defined]
            # the first line's baseline: the card reaches 0.9 size above it, 0.35 below the last
            pos = (round(where[0]), 0, round(-bottom + self.size * (lines - 0.65)))
            if self._pos.get(d.node_id) != pos:  # a still camera moves nothing
                self._pos[d.node_id] = pos
                node.set_pos(*pos)  # type: ignore[attr-defined]
            shown.append(d.node_id)
        return shown

    def destroy(self) -> None:
        for node in self._nodes.values():
            node.remove_node()  # type: ignore[attr-defined]
        self._nodes.clear()
