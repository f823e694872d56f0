"""Test-wide guards: no test may reach the network.

Every socket connection to a non-loopback address, and every name lookup other than localhost, fails
with :class:`NetworkAccessError` before anything is sent.
"""
from __future__ import annotations

import ipaddress
import os
import socket

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


class NetworkAccessError(RuntimeError):
    pass


def _is_loopback(host) -> bool:
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


def _check(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
        raise NetworkAccessError(f"test tried to connect to {address!r}: tests must not use the network")


def _guarded_connect(self, address):
    _check(self, address)
    return _connect(self, address)


def _guarded_connect_ex(self, address):
    _check(self, address)
    return _connect_ex(self, address)


def _guarded_getaddrinfo(host, *args, **kwargs):
    if not _is_loopback(host if isinstance(host, str) else None if host is None else host.decode()):
        raise NetworkAccessError(f"test tried to resolve {host!r}: tests must not use the network")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex
socket.getaddrinfo = _guarded_getaddrinfo


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """An empty hrvlm cache folder for this test only."""
    path = tmp_path / "hrvlm-cache"
    monkeypatch.setenv("HRVLM_CACHE", str(path))
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run several times faster on one thread than on two when the cores are shared;
    modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def clip():
    """A random-init tiny CLIP (seeded) and its tokenizer."""
    import torch

    from hrvlm.models.clip import load_clip

    torch.manual_seed(0)
    model, _, tokenizer = load_clip("hrvlm-tiny")
    return model, tokenizer
