"""Peers behind home routers: a sentinel on a "public" network, two homes behind nftables NAT.

Each home is a host behind its own router (network namespaces made here, `hive_core.sim.netns`).
A node in home B serves the whole model; `cadencia ask` runs in home A. The sentinel answers
STUN and runs a TURN relay (coturn); both homes learn them when they join. Behind full-cone
routers the asker's data channel to home B is hole-punched (direct); behind symmetric routers,
which map every destination to another port, it goes through the relay. Either way the answer
is the one the same command gives on loopback, and the node behind NAT is ready promptly.
Where the kernel cannot do NAT, or coturn is missing, the test says so and skips.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hive_core.mesh.turn import turn_available
from hive_core.sim.netns import Internet, nat_available

pytestmark = [pytest.mark.net, pytest.mark.slow, pytest.mark.timeout(300)]
WHY = nat_available() or turn_available()
PROMPT = "The capital of France is"
TOKENS = 6
READY_S = 60.0


def cadencia(*args: str) -> list[str]:
    return [sys.executable, "-m", "cadencia", *args]


def start(prefix: list[str], argv: list[str], log: Path) -> tuple[subprocess.Popen[str], dict[str, object]]:
    """Start a `--json` command and wait for its ready line."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    with log.open("w") as err:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([*prefix, *argv], stdout=subprocess.PIPE, stderr=err, text=True,
                                env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("{"):
            return proc, json.loads(line)
    stop([proc])
    raise AssertionError(f"{argv[3]} was not ready: {log.read_text()[-2000:]}")


def stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def ask_json(prefix: list[str], hive: str, model: Path, log: Path) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    argv = ["ask", PROMPT, "--hive", hive, "--model", str(model), "--raw", "--max-new-tokens",
            str(TOKENS), "--replicas", "1", "--json"]
    done = subprocess.run([*prefix, *cadencia(*argv)], check=False, capture_output=True,
                          text=True, env=env, timeout=180)
    log.write_text(done.stderr)
    assert done.returncode == 0, done.stderr[-2000:]
    out: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def serve_span(model: Path) -> str:
    from hive_core.model.gguf_file import GGUFModelFile

    n = GGUFModelFile(model).config.n_layers
    return f"{model.name}:0-{n}/{n}"


@pytest.fixture(scope="module")
def loopback_answer(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> list[int]:
    """What the same ask returns from a hive of one node on loopback."""
    d = tmp_path_factory.mktemp("loopback")
    sentinel, ready = start([], cadencia("sentinel", "--listen", "127.0.0.1:0", "--json", "--tflops",
                                         "1", "--no-world", "--data-dir", str(d / "s")), d / "s.log")
    try:
        node, _ = start([], cadencia("node", "--join", str(ready["listen"]), "--serve",
                                     serve_span(tiny_gguf), "--model", str(tiny_gguf), "--tflops", "1",
                                     "--no-world", "--json", "--data-dir", str(d / "n")), d / "n.log")
        try:
            out = ask_json([], str(ready["listen"]), tiny_gguf, d / "ask.log")
        finally:
            stop([node])
    finally:
        stop([sentinel])
    ids = out["new_ids"]
    assert isinstance(ids, list) and ids
    return ids


@pytest.mark.skipif(WHY is not None, reason=str(WHY))
@pytest.mark.parametrize("nat,path", [("full-cone", "direct"), ("symmetric", "relay")])
def test_an_ask_from_one_home_is_served_by_the_other(nat: str, path: str, tiny_gguf: Path,
                                                   tmp_path: Path, loopback_answer: list[int]) -> None:
    with Internet() as net:
        pub = net.add_public_host("sentinel")
        home_a, home_b = net.add_home("a", nat), net.add_home("b", nat)
        address = net.public_hosts["sentinel"]
        hive = f"ws://{address}:7700"
        sentinel, _ = start(net.exec_args(pub), cadencia(
            "sentinel", "--listen", f"{address}:7700", "--turn", "--json", "--tflops", "1",
            "--no-world", "--data-dir", str(tmp_path / "s")), tmp_path / "sentinel.log")
        procs = [sentinel]
        try:
            t0 = time.monotonic()
            node, ready = start(net.exec_args(home_b.host_ns), cadencia(
                "node", "--join", hive, "--serve", serve_span(tiny_gguf), "--model", str(tiny_gguf),
                "--tflops", "1", "--no-world", "--json", "--data-dir", str(tmp_path / "b")),
                tmp_path / "node.log")
            ready_s = time.monotonic() - t0
            procs.append(node)
            out = ask_json(net.exec_args(home_a.host_ns), hive, tiny_gguf, tmp_path / "ask.log")
            assert out["new_ids"] == loopback_answer
            paths = out["paths"]
            assert isinstance(paths, dict) and paths.get(str(ready["id"])) == path, paths
            # Joining behind NAT costs no wait on peers that cannot answer.
            assert ready_s < 20, f"the node behind {nat} NAT took {ready_s:.1f} s to be ready"
        finally:
            stop(procs)
