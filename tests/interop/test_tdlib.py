"""TDLib (the official client library, prebuilt by the `tdjson` package)
connects through samizdat with all three secret forms and gets the fake DC's
answer back.

Request used: `pingProxy` (TDLib `ConnectionCreator::ping_proxy`). It opens a
connection through the given MTProto proxy to the main DC (DC 1 for a fresh
client, so init-packet DC id 1), sends an unencrypted
`req_pq_multi` twice (`PingConnectionReqPQ`, ping_count 2) and returns
`seconds` only after two unencrypted answers came back; otherwise an error
("Pong timeout expired" after 10 s, or a connection error). It needs
`setTdlibParameters` first (it is a pre-authentication request and waits for
`NetQueryDispatcher`). `pingProxy` does not parse the answer, so the fake DC's
`answered ... tag=..` log line is what proves the resPQ came from it.

`testProxy` (pre-initialisation) runs the real auth-key handshake, which a fake
DC cannot complete (it would need Telegram's RSA private key), so it can never
return `ok` here; it is used to show that TDLib's full resPQ checks (nonce,
fingerprint of its built-in key, pq factorisation) pass on our answer.
"""
from __future__ import annotations

import json
import os
import time

import pytest

from conftest import other_key

tdjson = pytest.importorskip("tdjson")

PING_TIMEOUT = 15.0  # pingProxy gives up by itself after 10 s

# Framing tag TDLib puts in the init packet (td/mtproto/TcpTransport.cpp:
# padded intermediate `dd` for secrets of >= 17 bytes, else intermediate `ee`;
# TDLib never uses abridged `ef` through a proxy).
EXPECTED_TAG = {"plain": "ee", "dd": "dd", "ee": "dd"}
# DC id in the init packet: the main DC of a fresh TDLib (NetQueryDispatcher's
# main_dc_id_ defaults to 1, nothing in the binlog yet), no +10000 since
# use_test_dc is false.
MAIN_DC = 1


class Td:
    """Minimal synchronous driver for one TDLib instance over the JSON interface."""

    def __init__(self):
        self.client_id = tdjson.td_create_client_id()
        self._n = 0

    def send(self, request: dict) -> str:
        self._n += 1
        extra = f"interop-{self._n}"
        tdjson.td_send(self.client_id, json.dumps({**request, "@extra": extra}).encode())
        return extra

    def receive_until(self, predicate, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            raw = tdjson.td_receive(min(left, 0.5))
            if not raw:
                continue
            obj = json.loads(raw)
            if obj.get("@client_id", self.client_id) == self.client_id and predicate(obj):
                return obj
        raise TimeoutError(f"no TDLib answer within {timeout}s")

    def call(self, request: dict, timeout: float) -> dict:
        extra = self.send(request)
        return self.receive_until(lambda o: o.get("@extra") == extra, timeout)


@pytest.fixture(scope="module")
def td(tmp_path_factory):
    verbosity = int(os.environ.get("SAMIZDAT_TDLIB_VERBOSITY", "1"))
    tdjson.td_execute(json.dumps({"@type": "setLogVerbosityLevel",
                                  "new_verbosity_level": verbosity}).encode())
    client = Td()
    db = tmp_path_factory.mktemp("tdlib-db")
    # Offline as far as TDLib goes: no databases, dummy api_id/api_hash (never
    # checked before a real DC answers), throwaway directory. TDLib starts
    # connecting to the real DCs after this; the network namespace stops it.
    answer = client.call({
        "@type": "setTdlibParameters",
        "use_test_dc": False,
        "database_directory": str(db),
        "files_directory": str(db),
        "database_encryption_key": "",
        "use_file_database": False,
        "use_chat_info_database": False,
        "use_message_database": False,
        "use_secret_chats": False,
        "api_id": 1,
        "api_hash": "0123456789abcdef0123456789abcdef",
        "system_language_code": "en",
        "device_model": "samizdat-interop",
        "system_version": "",
        "application_version": "1.0",
    }, timeout=30)
    assert answer["@type"] == "ok", answer
    yield client
    try:
        client.send({"@type": "close"})
        client.receive_until(lambda o: o.get("@type") == "updateAuthorizationState"
                             and o["authorization_state"]["@type"] == "authorizationStateClosed", 15)
    except TimeoutError:
        pass


def proxy_object(port: int, secret: str) -> dict:
    return {"@type": "proxy", "server": "127.0.0.1", "port": port,
            "type": {"@type": "proxyTypeMtproto", "secret": secret}}


def ping(td: Td, port: int, secret: str) -> tuple[dict, float]:
    t0 = time.monotonic()
    result = td.call({"@type": "pingProxy", "proxy": proxy_object(port, secret)}, PING_TIMEOUT)
    return result, time.monotonic() - t0


@pytest.mark.parametrize("kind", ["plain", "dd", "ee"])
def test_ping_proxy_reaches_fake_dc(td, proxy, fake_dc, kind):
    result, _ = ping(td, proxy.port, proxy.secret(kind))
    assert result["@type"] == "seconds", result
    answered = fake_dc.wait_answered(2)
    assert answered, "TDLib reported success but the fake DC answered nothing"
    assert {a["tag"] for a in answered} == {EXPECTED_TAG[kind]}, answered
    assert {a["dc"] for a in answered} == {MAIN_DC}, answered
    assert {a["request"] for a in answered} == {"req_pq_multi"}, answered
    assert len(answered) >= 2, "pingProxy sends req_pq_multi twice"


@pytest.mark.parametrize("kind", ["plain", "dd", "ee"])
def test_ping_proxy_with_secret_from_printed_link(td, proxy, fake_dc, kind):
    """The tg://proxy link text the proxy prints is accepted by TDLib as is."""
    result, _ = ping(td, proxy.port, proxy.link_secret(kind))
    assert result["@type"] == "seconds", result
    assert {a["tag"] for a in fake_dc.wait_answered(2)} == {EXPECTED_TAG[kind]}


def test_ee_secret_base64url_spelling(td, proxy, fake_dc):
    """TDLib decodes hex first, then base64url (td/mtproto/ProxySecret.cpp)."""
    import base64
    raw = bytes.fromhex(proxy.secret("ee"))
    text = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    result, _ = ping(td, proxy.port, text)
    assert result["@type"] == "seconds", result
    assert {a["tag"] for a in fake_dc.wait_answered(2)} == {"dd"}


@pytest.mark.parametrize("kind", ["plain", "ee"])
def test_test_proxy_accepts_res_pq(td, proxy, fake_dc, kind):
    """testProxy runs TDLib's real handshake: it must get past resPQ.

    A rejected resPQ fails with "Unknown Main fingerprints", "Failed to
    factorize" or "Nonce mismatch" (AuthKeyHandshake::on_res_pq). After
    accepting it TDLib sends req_DH_params; the fake DC echoes that back, and
    TDLib, now waiting for Server_DH_Params (server_DH_params_ok#d0e8075c =
    -790100132), fails with "Wrong constructor -686627650 found instead of
    -790100132" (req_DH_params#d712e4be = -686627650).
    """
    result = td.call({"@type": "testProxy", "proxy": proxy_object(proxy.port, proxy.secret(kind)),
                      "dc_id": 4, "timeout": 4.0}, timeout=10)
    assert result["@type"] == "error", result
    for rejected in ("fingerprint", "factorize", "Nonce mismatch", "Result is too small"):
        assert rejected not in result["message"], result
    answered = fake_dc.wait_answered(1)
    assert "instead of -790100132" in result["message"], (
        "TDLib did not get to the Server_DH_Params step (does the fake DC echo req_DH_params?)",
        result)
    assert answered, result
    assert {a["dc"] for a in answered} == {4}, answered
    assert {a["tag"] for a in answered} == {EXPECTED_TAG[kind]}, answered


@pytest.mark.parametrize("kind", ["dd", "ee"])
def test_wrong_secret_never_reaches_dc(td, proxy, fake_dc, kind):
    wrong = proxy.secret(kind, key=other_key(proxy.key))
    result, elapsed = ping(td, proxy.port, wrong)
    assert result["@type"] == "error", result
    assert elapsed < 12, elapsed
    time.sleep(0.5)
    assert fake_dc.answered() == [], fake_dc.answered()


@pytest.mark.parametrize("kind", ["dd", "plain"])
def test_ping_proxy_through_samizdat_client(td, samizdat_client, fake_dc, kind):
    """The Telegram app points at `samizdat client`'s local endpoint, which
    ends obfuscated2 locally and carries the MTProto stream through the
    samizdat transport to `serve`, which reaches the DC."""
    secret = samizdat_client.secret if kind == "dd" else samizdat_client.secret[2:]
    result, _ = ping(td, samizdat_client.port, secret)
    assert result["@type"] == "seconds", result
    answered = fake_dc.wait_answered(2)
    assert answered, "TDLib reported success but the fake DC answered nothing"
    assert {a["request"] for a in answered} == {"req_pq_multi"}, answered
    assert {a["dc"] for a in answered} == {MAIN_DC}, answered
    assert {a["tag"] for a in answered} == {EXPECTED_TAG[kind]}, answered


def test_test_proxy_through_samizdat_client(td, samizdat_client, fake_dc):
    """TDLib's real handshake gets past resPQ through the samizdat tunnel."""
    result = td.call({"@type": "testProxy",
                      "proxy": proxy_object(samizdat_client.port, samizdat_client.secret),
                      "dc_id": 4, "timeout": 4.0}, timeout=10)
    assert result["@type"] == "error", result
    assert "instead of -790100132" in result["message"], result
    assert {a["dc"] for a in fake_dc.wait_answered(1)} == {4}
