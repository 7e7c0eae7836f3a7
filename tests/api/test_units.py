"""The API's pure parts: request checks, stop sequences across tokens, the bounded line."""

from __future__ import annotations

import asyncio

import pytest

from hive_core.api.admission import Admission
from hive_core.api.errors import BadRequest, Busy, Unavailable
from hive_core.api.schema import chat_request, completion_request, parse_json
from hive_core.api.text import StopText


class Pieces:
    """A tokenizer whose token k decodes to `pieces[k]`; token 99 ends the turn."""

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces
        self.stop_ids = frozenset({99})

    def stream(self) -> Pieces:
        return self

    def push(self, token: int) -> str:
        return self.pieces[token]

    def finish(self) -> str:
        return ""


def test_stop_sequence_split_across_tokens_is_never_sent() -> None:
    tok = Pieces(["Hel", "lo ", "wo", "rld", "! more"])
    text = StopText(tok, ["world!"])
    sent = [text.push(k) for k in range(5)]
    assert sent == ["Hel", "lo ", "", "", ""]  # "wo", "rld" held back, then cut
    assert text.stopped and text.text == "Hello "
    plain = StopText(tok, ["xyz"])
    assert "".join(plain.push(k) for k in (0, 1, 2, 99)) + plain.finish() == "Hello wo"


def test_held_text_is_released_at_the_end() -> None:
    text = StopText(Pieces(["ab", "c"]), ["cd"])
    assert text.push(0) == "ab" and text.push(1) == "" and text.finish() == "c"
    assert not text.stopped and text.text == "abc"


def test_request_checks() -> None:
    doc = parse_json(b'{"model": "m", "messages": [{"role": "developer", "content": '
                     b'[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}')
    req = chat_request(doc)
    assert req.messages == ({"role": "system", "content": "ab"},)
    assert req.sampling.temperature == 1.0 and req.sampling.max_tokens is None
    assert completion_request({"model": "m", "prompt": ["x"]}).sampling.max_tokens == 16
    with pytest.raises(BadRequest, match="'top_p' must be in \\(0, 1\\]"):
        chat_request({"model": "m", "messages": [{"role": "user"}], "top_p": 0})
    with pytest.raises(BadRequest, match="'model' is required"):
        chat_request({"messages": [{"role": "user", "content": "x"}]})
    with pytest.raises(BadRequest, match="nested too deeply"):
        parse_json(b"[" * 100_000)


async def test_the_line_admits_queues_refuses_and_times_out() -> None:
    line = Admission(slots=1, queue=1, wait_s=0.2)
    await line.acquire()
    waiter = asyncio.ensure_future(line.acquire())
    await asyncio.sleep(0)
    assert line.waiting == 1
    with pytest.raises(Busy, match="1 answers in progress and 1 waiting"):
        await line.acquire()
    line.release()
    await waiter
    assert line.active == 1 and line.waiting == 0
    with pytest.raises(Unavailable, match="no free slot within 0.2 s"):
        await line.acquire()
    assert (line.stats.admitted, line.stats.refused, line.stats.timed_out) == (2, 1, 1)


class Route:
    """An engine as the live view sees it: a mode and a route."""

    mode = "hive"

    def describe(self) -> dict:
        return {"mode": "hive", "asker": "ee" * 20,
                "stages": [{"layers": [1, 2], "nodes": ["aa" * 20], "weights": "fp32"},
                           {"layers": [2, 4], "nodes": ["bb" * 20], "weights": "fp32"}]}


def test_live_view_merges_status_and_route() -> None:
    from hive_core.api.live import LiveHub

    seen: list = []
    hub = LiveHub(Route(), model="m", layout=lambda ids, rtt: seen.append(list(ids)) or
                  {i: (float(k), 0.0) for k, i in enumerate(ids)})
    view = {"nodes": [{"id": "aa" * 20, "role": "auto", "layers": [[0, 2]], "weights": "fp32"},
                      {"id": "cc" * 20, "role": "sentinel", "layers": []}],
            "rtt_ms": {"aa" * 20: {"cc" * 20: 2.0, "ee" * 20: 1.0}, "cc" * 20: {"aa" * 20: 4.0}}}
    hub.refresh(view)
    nodes = {n.id[:2]: n for n in hub.nodes.values()}
    assert nodes["aa"].layers == [[0, 2]]  # its own record, not the route's [1, 2]
    assert nodes["bb"].layers == [[2, 4]] and nodes["bb"].weights == "fp32"  # from the route
    assert nodes["ee"].me and nodes["ee"].role == "asker"
    assert sorted(hub.links) == [("aa" * 20, "cc" * 20, 3.0), ("aa" * 20, "ee" * 20, 1.0)]
    assert seen == [sorted(hub.nodes)]  # measured RTTs: placed by the injected map
    hub.refresh(None)  # no status: a ring, never the map on nothing measured
    assert len(seen) == 1 and len(hub.nodes) == 3
