"""View fixtures: a real city pair (two players' replicas synced by signed edits) and a
factory for offscreen apps (Panda3D's EGL display on Mesa, no X server)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hive_core.mesh.identity import Identity

pytest.importorskip("panda3d")


@pytest.fixture
def cities():
    """Alice's replica with her 8x8 plot at (0, 0), and Bob's with his at (10, 0), in sync."""
    from world.model import City

    alice, bob = City(Identity.from_seed(b"a" * 32)), City(Identity.from_seed(b"b" * 32))
    alice.on_local_edit(bob.receive)
    bob.on_local_edit(alice.receive)
    alice.join("alice")
    bob.join("bob")
    alice.add_plot(alice.claim_district(), 0.0, 0.0, 8.0, 8.0)
    bob.add_plot(bob.claim_district(), 10.0, 0.0, 8.0, 8.0)
    return alice, bob


@pytest.fixture
def make_app() -> Iterator:
    """Open offscreen WorldApps at 320x240; each is destroyed after the test."""
    from world.view.app import WorldApp
    from world.view.config import ViewConfig

    apps = []

    def make(source, **kw):
        app = WorldApp(ViewConfig(320, 240, offscreen=True), source, **kw)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.destroy()
