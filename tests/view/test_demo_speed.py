"""The embedded hive the demo and play run: one torch thread per process by default, and
`--no-verify` reaching the client (a liar's answers are then taken unchecked)."""

from __future__ import annotations

import asyncio

import torch


async def test_no_verify_reaches_the_client_and_nobody_is_judged(tiny_gguf) -> None:
    """Noisy liar (replica 1 adds noise): with verification off, nothing compares it, so it
    is neither slashed nor is the answer called verified."""
    from cadencia.game.session import HiveSession, game_source

    threads = torch.get_num_threads()
    source = game_source()
    session = HiveSession(source, model=str(tiny_gguf), faulty=True, host=False, verify=False)
    session.hive.compute_process = False
    try:
        result = await asyncio.wait_for(session.ask("hi", max_new_tokens=3), 60)
        hive = session.hive._hive()
        assert hive.client.config.verify is False
        assert torch.get_num_threads() == 1  # the embedded hive's default
        assert not result.slashed and not result.verified
        sharding = source.hud.view().sharding  # the plan's spans, the asker's own layers left out
        assert all(f"L{ps.stage.start}-{ps.stage.end - 1}: " in sharding for ps in hive.client.plan.stages)
        assert result.new_ids
        assert source.hud.view().tokens_per_s == result.tokens_per_s  # the HUD shows decode, as ask does
    finally:
        await session.close()
        torch.set_num_threads(threads)


def test_demo_and_play_parse_no_verify() -> None:
    import argparse

    from cadencia.commands import demo, play

    for command in (demo, play):
        parser = argparse.ArgumentParser()
        command.add_arguments(parser)
        assert parser.parse_args([]).no_verify is False
        assert parser.parse_args(["--no-verify"]).no_verify is True


def test_demo_command_runs_unverified_with_forked_workers(tiny_gguf, tmp_path, capsys) -> None:
    """`cadencia demo --no-verify` end to end on the tiny model: the hive starts (its workers
    forked from the server the command started first), answers, and, with nothing compared,
    the noisy liar is not slashed; its JSON says verification was off."""
    import json

    from cadencia.cli import main

    threads = torch.get_num_threads()
    png = tmp_path / "demo.png"
    try:
        code = main(["demo", "hi", "--model", str(tiny_gguf), "--offscreen", "--json", "--no-verify",
                     "--max-new-tokens", "3", "--size", "320x240", "--links", "memory",
                     "--screenshot", str(png)])
    finally:
        torch.set_num_threads(threads)
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code in (0, None) and out["verify"] is False and out["verified"] is False
    assert out["slashed"] == [] and out["answer"] is not None and png.exists()
