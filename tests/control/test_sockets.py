"""The control process's listening sockets: one per listener per worker slot."""

from __future__ import annotations

import logging
import socket

from control.sockets import Sockets


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_slot_gets_its_own_socket_of_one_reuseport_group():
    port = _free_port()
    socks = Sockets(3, "127.0.0.1")
    try:
        assert socks.sync([(f"127.0.0.1:{port}", "", port)])
        fds = [socks.for_slot(i)[0][2] for i in range(3)]
        assert len(set(fds)) == 3
        names = {socket.socket(fileno=socket.dup(fd)).getsockname() for fd in fds}
        assert names == {("127.0.0.1", port)}
        assert not socks.sync([(f"127.0.0.1:{port}", "", port)])  # nothing changed
    finally:
        socks.close()


def test_a_listener_removed_and_added_again_is_a_new_incarnation_and_closed_when_gone():
    port = _free_port()
    name = f"127.0.0.1:{port}"
    socks = Sockets(1, "127.0.0.1")
    try:
        socks.sync([(name, "", port)])
        first = socks.for_slot(0)[0][1]
        assert socks.sync([])
        assert socks.for_slot(0) == []
        try:  # closed: nothing listens there now
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            raise AssertionError("still listening")
        except ConnectionRefusedError:
            pass
        socks.sync([(name, "", port)])
        assert socks.for_slot(0)[0][1] > first
    finally:
        socks.close()


def test_a_port_that_cannot_be_bound_is_logged_once_and_retried(caplog):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()  # no SO_REUSEPORT: the port is not ours to share
    port = taken.getsockname()[1]
    name = f"127.0.0.1:{port}"
    socks = Sockets(2, "127.0.0.1")
    try:
        with caplog.at_level(logging.ERROR, logger="fluxgate.sockets"):
            assert not socks.sync([(name, "", port)])
            socks.sync([(name, "", port)])
        assert name in socks.failed
        assert sum("cannot bind listener" in r.getMessage() for r in caplog.records) == 1
        taken.close()
        assert socks.sync([(name, "", port)])  # free now: bound on the next sync
        assert name not in socks.failed and len(socks.for_slot(1)) == 1
    finally:
        taken.close()
        socks.close()
