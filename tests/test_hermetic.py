"""The suite is hermetic: no network beyond loopback, and every cache in a folder of this session or test."""

from __future__ import annotations

import os
import socket
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import NetworkRefused

from loopnav_bench.fileio import loopnav_cache_dir


def test_connections_beyond_loopback_are_refused():
    with socket.socket() as sock, pytest.raises(NetworkRefused, match="192.0.2.1"):
        sock.connect(("192.0.2.1", 80))  # TEST-NET-1: never routed
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, pytest.raises(NetworkRefused):
        sock.sendto(b"x", ("8.8.8.8", 53))
    with pytest.raises(urllib.error.URLError) as caught:
        urllib.request.urlopen("http://192.0.2.1/weights.pt", timeout=1)
    assert isinstance(caught.value.reason, NetworkRefused)


def test_loopback_still_works():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5):
            connection, _ = server.accept()
            connection.close()


def test_caches_are_temporary_folders():
    temporary = Path(tempfile.gettempdir()).resolve()
    for folder in (Path(os.environ["HF_HOME"]), loopnav_cache_dir()):
        assert folder.resolve().is_relative_to(temporary), folder


@pytest.mark.parametrize("turn", [1, 2])
def test_each_test_starts_with_an_empty_loopnav_cache(turn):
    cache = loopnav_cache_dir()
    assert not cache.exists() or not any(cache.iterdir())  # the other turn's file is not here
    (cache / "latents").mkdir(parents=True, exist_ok=True)
    (cache / "latents" / "left-behind").write_text(str(turn))
