"""Pytest fixtures for the local fake Hugging Face Hub (see ``tests/hub_server``).

Import them from ``tests/conftest.py`` (``from conftest_hub import *``). Fixtures:

* ``hub_server_session`` (session): the running :class:`HubServer`, shared by all tests; repos persist between tests,
  so use ``hub_server.new_repo_id()`` for fresh names.
* ``hub_server`` (function): the same server, made ready for one test: started (a previous test may have stopped it),
  faults disarmed, request log cleared, and this process's ``huggingface_hub`` pointed at it with the server's token
  and a per-test cache in ``tmp_path / "hf_cache"``. Everything is undone after the test.
* ``hub_repo_id`` (function): a fresh, not yet created repo id in the test user's namespace.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

try:
    from hub_server import HubServer
except ImportError:  # tests/ is a package and not on sys.path
    from tests.hub_server import HubServer

__all__ = ["hub_repo_id", "hub_server", "hub_server_session"]


@pytest.fixture(scope="session")
def hub_server_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    """One fake Hub for the whole session: starting it is cheap, but sharing it keeps the URL and port stable."""
    server = HubServer(tmp_path_factory.mktemp("hub_server")).start()
    yield server
    server.stop()


@pytest.fixture
def hub_server(
    hub_server_session: HubServer, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HubServer]:
    """The session's fake Hub, reset, running, and configured as this process's Hugging Face endpoint."""
    server = hub_server_session
    server.start()
    server.reset()
    server.configure(monkeypatch, tmp_path_factory.mktemp("hf_cache"))
    yield server
    # Armed-but-unconsumed faults or a stopped server must not leak into the next test.
    server.reset()
    server.start()


@pytest.fixture
def hub_repo_id(hub_server: HubServer) -> str:
    """A repo id (``test-user/repo-N``) that no other test uses; the repo is not created."""
    return hub_server.new_repo_id()
