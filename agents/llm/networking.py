"""Network addresses: whether a host is this machine (the OpenAI-compatible backend gives a
local server a dummy key; the web app asks a token of anyone but a loopback client)."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """Whether a host name or address is this machine's loopback (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
