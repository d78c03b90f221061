"""Telethon connects through samizdat with plain and `dd` secrets using its
own MTProxy connection classes and gets the fake DC's `ResPQ` back.

Path: `ConnectionTcpMTProxy*` (telethon/network/connection/tcpmtproxy.py)
+ `MTProtoPlainSender` (telethon/network/mtprotoplainsender.py), the same
objects `TelegramClient` uses for the first step of the auth-key exchange,
without a `TelegramClient`, session or login. Then Telethon's real
`authenticator.do_authentication` is run on the same connection: it checks the
ResPQ (nonce, pq factorisation, RSA fingerprint among its built-in keys) and
only then sends `req_DH_params`, which the fake DC cannot answer.

Telethon has no fake-TLS (`ee`) support: it strips the `ee`/`dd` prefix and
the domain (`TcpMTProxy.normalize_secret`), so `dd` only differs from plain in
the connection class (RandomizedIntermediate is the `dd` framing).
"""
from __future__ import annotations

import asyncio
import logging
import os

import pytest

from conftest import other_key

telethon = pytest.importorskip("telethon")
from telethon.network import MTProtoPlainSender, authenticator  # noqa: E402
from telethon.network.connection import (  # noqa: E402
    ConnectionTcpMTProxyAbridged,
    ConnectionTcpMTProxyIntermediate,
    ConnectionTcpMTProxyRandomizedIntermediate,
)
from telethon.tl.functions import ReqDHParamsRequest, ReqPqMultiRequest  # noqa: E402
from telethon.tl.types import ResPQ  # noqa: E402

DC_ID = 4  # written into the init packet by Telethon; the proxy should pass it on
CONNECT_TIMEOUT = 10.0  # TcpMTProxy waits 2 s after connecting by design
REQUEST_TIMEOUT = 5.0


class Loggers(dict):
    """What TelegramClient passes as `loggers` (a dict of named loggers)."""

    def __missing__(self, key):
        return logging.getLogger(key)


class RecordingPlainSender(MTProtoPlainSender):
    """MTProtoPlainSender that remembers which requests it sent."""

    def __init__(self, connection, *, loggers):
        super().__init__(connection, loggers=loggers)
        self.sent = []

    async def send(self, request):
        self.sent.append(type(request))
        return await super().send(request)


async def req_pq_through_proxy(connection_cls, proxy_port: int, secret: str):
    loggers = Loggers()
    conn = connection_cls("127.0.0.1", proxy_port, DC_ID, loggers=loggers,
                          proxy=("127.0.0.1", proxy_port, secret))
    await asyncio.wait_for(conn.connect(timeout=CONNECT_TIMEOUT), CONNECT_TIMEOUT + 2)
    try:
        sender = RecordingPlainSender(conn, loggers=loggers)
        nonce = int.from_bytes(os.urandom(16), "big", signed=True)
        res_pq = await asyncio.wait_for(sender.send(ReqPqMultiRequest(nonce=nonce)), REQUEST_TIMEOUT)

        # Telethon's own key-exchange code on the same connection: passes the
        # resPQ checks iff it goes on to send req_DH_params.
        auth_error = None
        try:
            await asyncio.wait_for(authenticator.do_authentication(sender), REQUEST_TIMEOUT)
        except (Exception, asyncio.TimeoutError) as e:  # expected: the fake DC can't do DH
            auth_error = e
        return nonce, res_pq, sender.sent, auth_error
    finally:
        await conn.disconnect()


CASES = [
    # secret form, connection class, framing tag expected at the fake DC
    ("plain", ConnectionTcpMTProxyAbridged, "ef"),
    ("plain", ConnectionTcpMTProxyIntermediate, "ee"),
    ("plain", ConnectionTcpMTProxyRandomizedIntermediate, "dd"),
    ("dd", ConnectionTcpMTProxyRandomizedIntermediate, "dd"),
]


@pytest.mark.parametrize("kind,connection_cls,tag", CASES,
                         ids=[f"{k}-{c.__name__.removeprefix('ConnectionTcpMTProxy')}"
                              for k, c, _ in CASES])
def test_res_pq_through_proxy(proxy, fake_dc, kind, connection_cls, tag):
    nonce, res_pq, sent, auth_error = asyncio.run(
        req_pq_through_proxy(connection_cls, proxy.port, proxy.secret(kind)))

    assert isinstance(res_pq, ResPQ), res_pq
    assert res_pq.nonce == nonce
    assert ReqDHParamsRequest in sent, (
        f"Telethon rejected the resPQ before req_DH_params: {auth_error!r}")

    answered = fake_dc.wait_answered(2)
    # ours + the one do_authentication sends
    assert [a["request"] for a in answered] == ["req_pq_multi", "req_pq_multi"], answered
    assert {a["tag"] for a in answered} == {tag}, answered
    assert {a["dc"] for a in answered} == {DC_ID}, answered


@pytest.mark.parametrize("kind,connection_cls", [
    ("plain", ConnectionTcpMTProxyIntermediate),
    ("dd", ConnectionTcpMTProxyRandomizedIntermediate),
], ids=["plain", "dd"])
def test_wrong_secret_never_reaches_dc(proxy, fake_dc, kind, connection_cls):
    wrong = proxy.secret(kind, key=other_key(proxy.key))

    async def attempt():
        conn = connection_cls("127.0.0.1", proxy.port, DC_ID, loggers=Loggers(),
                              proxy=("127.0.0.1", proxy.port, wrong))
        try:
            await asyncio.wait_for(conn.connect(timeout=CONNECT_TIMEOUT), CONNECT_TIMEOUT + 2)
            sender = MTProtoPlainSender(conn, loggers=Loggers())
            return await asyncio.wait_for(sender.send(ReqPqMultiRequest(nonce=1)), REQUEST_TIMEOUT)
        finally:
            await conn.disconnect()

    # pytest.fail raises a BaseException, so pytest.raises(Exception) lets it through.
    with pytest.raises(Exception):  # noqa: B017 - any failure (error or timeout) is fine
        result = asyncio.run(attempt())
        pytest.fail(f"got an answer with a wrong secret: {result!r}")
    assert fake_dc.answered() == [], fake_dc.answered()
