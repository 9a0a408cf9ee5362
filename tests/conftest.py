"""Shared fixtures: the real app launched once per session in a subprocess, on a free port."""
from __future__ import annotations

import os

import pytest
from app_launcher import checkpoints_with_tiny_sd, launch_app, stop_app

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"


@pytest.fixture(scope="session")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url, proc = launch_app(tmp_path_factory.mktemp("app") / "app.log")
    yield url
    stop_app(proc)


@pytest.fixture(scope="module")
def tiny_sd_app_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The app serving the shipped checkpoints plus a random tiny_sd pipeline while the real one is absent."""
    root = checkpoints_with_tiny_sd(tmp_path_factory.mktemp("ckpt"))
    url, proc = launch_app(tmp_path_factory.mktemp("app") / "app.log", root)
    yield url
    stop_app(proc)


@pytest.fixture(scope="session")
def client(app_url: str):
    from gradio_client import Client

    return Client(app_url, verbose=False)
