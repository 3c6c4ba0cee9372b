"""Answers to SSLRequest/GSSENCRequest before the startup (no server, no proxy)."""

from __future__ import annotations

import pytest

from tests.protocols.postgres.build import STARTUP, wire
from trproxy.protocols.base import NEED_DATA, Direction
from trproxy.protocols.postgres import DIALECT, PostgresCodec, decline_encryption, tls_upgrade
from trproxy.protocols.postgres import backend as be
from trproxy.protocols.postgres import frontend as fe
from trproxy.protocols.postgres.codec import Phase

SSL, GSS = wire(fe.SSLRequest()), wire(fe.GSSENCRequest())
NOT_REQUESTS = [
    b"", SSL[:7], SSL + b"\x16\x03\x01", wire(STARTUP),
    wire(fe.CancelRequest(1, b"\0\0\0\2")), b"\x16\x03\x01\x00\x05hello",
]


def test_ssl_request_is_accepted_with_s_and_gssenc_never():
    assert tls_upgrade(SSL) == b"S"
    assert tls_upgrade(GSS) is None  # GSSAPI encryption cannot be intercepted


def test_both_requests_are_declined_with_n():
    assert decline_encryption(SSL) == decline_encryption(GSS) == b"N"


@pytest.mark.parametrize("data", NOT_REQUESTS)
def test_anything_else_gets_no_answer(data):
    assert tls_upgrade(data) is None and decline_encryption(data) is None


@pytest.mark.parametrize(("answer", "phase"), [(b"S", Phase.ENCRYPTED), (b"N", Phase.STARTUP)])
def test_the_answers_mean_to_the_codec_what_they_mean_to_a_client(answer, phase):
    codec = PostgresCodec()
    codec.feed(Direction.CLIENT, SSL)
    codec.feed(Direction.SERVER, answer)
    assert codec.next_message() == fe.SSLRequest()
    assert codec.next_message() == be.SSLResponse(answer.decode())
    assert codec.next_message() is NEED_DATA and codec.phase is phase


def test_the_dialect_exposes_both_hooks():
    assert DIALECT.local_reply is decline_encryption
    assert DIALECT.tls_upgrade is tls_upgrade
