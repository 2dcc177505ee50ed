"""Shared pytest fixtures. The local Hub-compatible server's fixtures live in conftest_hub.py."""

pytest_plugins = ["conftest_hub"]
