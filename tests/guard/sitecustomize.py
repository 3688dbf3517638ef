"""Network guard for every Python process the tests start: only loopback may be reached.

Put on PYTHONPATH by the test harness. A connect() to any other address fails and writes
``NETWORK GUARD`` to stderr, which the harness turns into a test failure: a misconfigured
test fails loudly instead of reaching a real metadata service or cloud endpoint.
"""

import ipaddress
import socket
import sys

_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex
MARK = "NETWORK GUARD"


def _check(sock, address):
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    host = address[0] if isinstance(address, tuple) else address
    try:
        allowed = ipaddress.ip_address(host).is_loopback
    except ValueError:
        allowed = host == "localhost"
    if not allowed:
        sys.stderr.write(f"{MARK}: blocked a connection to {address!r}\n")
        sys.stderr.flush()
        raise PermissionError(f"{MARK}: {address!r} is not a loopback address")


def _guarded_connect(self, address):
    _check(self, address)
    return _connect(self, address)


def _guarded_connect_ex(self, address):
    _check(self, address)
    return _connect_ex(self, address)


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex
