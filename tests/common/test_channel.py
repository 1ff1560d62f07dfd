"""The control → worker channel: messages keep their boundaries, sockets travel."""

from __future__ import annotations

import os
import socket

import pytest

from common import channel


def test_sockets_travel_with_their_names_and_arrive_listening():
    ours, theirs = channel.pair()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        channel.send_sockets(ours, [("127.0.0.1:1", 7, listener.fileno())])
        ours.send(channel.TABLE)
        theirs.setblocking(False)
        data, fds = channel.receive(theirs)
        entries, done = channel.parse_sockets(data, fds)
        assert done and [(n, i) for n, i, _ in entries] == [("127.0.0.1:1", 7)]
        got = socket.socket(fileno=entries[0][2])
        # The same listening socket: a connection to it is accepted through the copy.
        client = socket.create_connection(listener.getsockname())
        conn, _ = got.accept()
        conn.close(), client.close(), got.close()
        assert channel.receive(theirs) == (channel.TABLE, [])  # one message per datagram
        assert channel.receive(theirs) is None
    finally:
        listener.close(), ours.close(), theirs.close()


def test_a_large_set_is_split_and_only_the_last_message_ends_it():
    ours, theirs = channel.pair()
    theirs.setblocking(False)
    socks = [socket.socket() for _ in range(channel.MAX_FDS + 3)]
    try:
        channel.send_sockets(ours, [(f"l{i}", i, s.fileno()) for i, s in enumerate(socks)])
        first = channel.parse_sockets(*channel.receive(theirs))
        second = channel.parse_sockets(*channel.receive(theirs))
        assert (len(first[0]), first[1]) == (channel.MAX_FDS, False)
        assert (len(second[0]), second[1]) == (3, True)
        for _, _, fd in first[0] + second[0]:
            os.close(fd)
    finally:
        for s in socks:
            s.close()
        ours.close(), theirs.close()


def test_an_empty_set_is_a_message_and_eof_is_an_empty_read():
    ours, theirs = channel.pair()
    theirs.setblocking(False)
    channel.send_sockets(ours, [])
    assert channel.parse_sockets(*channel.receive(theirs)) == ([], True)
    ours.close()
    assert channel.receive(theirs) == (b"", [])
    theirs.close()


def test_a_message_whose_names_and_sockets_disagree_is_refused():
    with pytest.raises(ValueError):
        channel.parse_sockets(b'L{"listeners": [["a", 1]], "done": true}', [])
