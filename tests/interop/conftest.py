"""Fixtures for the interop suite: real Telegram client libraries (TDLib via
`tdjson`, Telethon) talk to `samizdat serve`, which relays to a fake DC
(`samizdat-testkit fake-dc`) on 127.0.0.1.

Every process is started here, waited for, and always killed (its whole
process group) at teardown. Run the suite through `tests/interop/run.sh`,
which puts it in a fresh network namespace with only loopback: TDLib tries to
reach real Telegram DCs by itself once initialised, and must not get out.
"""
from __future__ import annotations

import base64
import os
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_bin_dir = Path(os.environ.get("SAMIZDAT_BIN_DIR", "target/debug"))
BIN_DIR = _bin_dir if _bin_dir.is_absolute() else REPO / _bin_dir

COVER_DOMAIN = "cover.localhost"
LOCALHOST = "127.0.0.1"
STARTUP_TIMEOUT = 15.0  # seconds for a process to say it is ready

# Fake DC log line for each request it answered with resPQ.
ANSWERED_RE = re.compile(r"^answered (?P<request>\S+) dc=(?P<dc>-?\d+) tag=(?P<tag>ef|ee|dd)\b")


# --------------------------------------------------------------------------
# Network safety: refuse to run outside an isolated network namespace.
# --------------------------------------------------------------------------

def network_is_isolated() -> bool:
    """True when the only network interface of this namespace is loopback.

    (socket.if_nameindex asks the kernel about *this* namespace; /sys/class/net
    would still show the host's interfaces after a bare `unshare -n`.)
    """
    return {name for _, name in socket.if_nameindex()} <= {"lo"}


def pytest_sessionstart(session):
    if os.environ.get("SAMIZDAT_INTEROP_ALLOW_HOST_NETWORK") == "1":
        return
    if not network_is_isolated():
        names = ", ".join(name for _, name in socket.if_nameindex())
        pytest.exit(
            "interop tests must run in a network namespace with only loopback "
            f"(found interfaces: {names}); use tests/interop/run.sh",
            returncode=3,
        )


# Make each test's outcome visible to fixtures, so they can dump process logs
# only for failures.
@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _test_failed(request) -> bool:
    rep = getattr(request.node, "rep_call", None)
    return rep is None or rep.failed


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (bind to port 0, then release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: "Proc", timeout: float = STARTUP_TIMEOUT) -> None:
    """Poll until 127.0.0.1:port accepts TCP connections (the probe sends nothing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.check_alive()
        try:
            with socket.create_connection((LOCALHOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{proc.name} did not listen on {port} within {timeout}s\n{proc.describe()}")


def binary(name: str) -> Path:
    path = BIN_DIR / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{path} not found or not executable: build with `cargo build` "
                    "or set SAMIZDAT_BIN_DIR", pytrace=False)
    return path


class Proc:
    """A child process whose stdout lines are collected by a reader thread."""

    def __init__(self, name: str, argv: list, log_dir: Path):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.stderr_path = log_dir / f"{name}.stderr"
        self.lines: list[str] = []
        self._cv = threading.Condition()
        with open(self.stderr_path, "wb") as stderr:
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                text=True, bufsize=1, start_new_session=True,  # own process group
            )
        self._reader = threading.Thread(target=self._read, name=f"{name}-stdout", daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.popen.stdout:
            with self._cv:
                self.lines.append(line.rstrip("\n"))
                self._cv.notify_all()
        with self._cv:
            self._cv.notify_all()

    def check_alive(self):
        if self.popen.poll() is not None:
            raise AssertionError(f"{self.name} exited early\n{self.describe()}")

    def wait_for(self, pattern: str | re.Pattern, timeout: float) -> re.Match:
        """First stdout line matching `pattern` (re.search), waiting up to `timeout`."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cv:
            while True:
                for line in self.lines[seen:]:
                    if m := rx.search(line):
                        return m
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.popen.poll() is not None and not self._reader.is_alive()):
                    break
                self._cv.wait(min(left, 0.2))
        raise AssertionError(f"{self.name}: no line matching {rx.pattern!r} within {timeout}s\n"
                             f"{self.describe()}")

    def snapshot(self) -> list[str]:
        with self._cv:
            return list(self.lines)

    def stop(self):
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=3)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(timeout=5)
        self._reader.join(timeout=2)

    def describe(self) -> str:
        try:
            err = self.stderr_path.read_text(errors="replace")[-4000:]
        except OSError:
            err = "(no stderr file)"
        out = "\n".join(self.snapshot()[-60:])
        return (f"--- {self.name}: {' '.join(self.argv)} (exit {self.popen.poll()})\n"
                f"--- stdout (last lines):\n{out}\n--- stderr (tail):\n{err}\n")


# --------------------------------------------------------------------------
# Process fixtures (one fresh set per test, so logs are per test)
# --------------------------------------------------------------------------

@dataclass
class FakeDc:
    proc: Proc
    port: int

    @property
    def addr(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    def answered(self) -> list[dict]:
        """Every `answered <request> dc=<id> tag=<tag>` line so far, parsed."""
        out = []
        for line in self.proc.snapshot():
            if m := ANSWERED_RE.search(line):
                out.append({"request": m["request"], "dc": int(m["dc"]), "tag": m["tag"]})
        return out

    def wait_answered(self, count: int = 1, timeout: float = 3.0) -> list[dict]:
        """`answered()` once it has at least `count` entries (the fake DC may
        print its line just after writing the answer), or whatever is there
        when `timeout` runs out."""
        deadline = time.monotonic() + timeout
        while len(found := self.answered()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return found


@dataclass
class ProxyServer:
    proc: Proc
    port: int
    key: str  # 32 hex digits
    domain: str = COVER_DOMAIN
    links: list = field(default_factory=list)
    host: str = LOCALHOST

    def secret(self, kind: str, key: str | None = None) -> str:
        """Secret text (hex) of the given form for this proxy's key (or another key)."""
        key = key or self.key
        if kind == "plain":
            return key
        if kind == "dd":
            return "dd" + key
        if kind == "ee":
            return "ee" + key + self.domain.encode().hex()
        raise ValueError(kind)

    def link_secret(self, kind: str) -> str:
        """The secret text exactly as printed in one of the proxy's tg:// links."""
        for link in self.links:
            text = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query).get("secret", [""])[0]
            raw = decode_secret(text)
            if raw is None:
                continue
            form = ("plain" if len(raw) == 16 else "dd" if len(raw) == 17 and raw[0] == 0xDD
                    else "ee" if len(raw) >= 18 and raw[0] == 0xEE else None)
            if form == kind:
                return text
        raise AssertionError(f"no {kind} link among {self.links}")


def decode_secret(text: str) -> bytes | None:
    """Decode a secret the way TDLib does: hex first, then base64url, then base64."""
    try:
        return bytes.fromhex(text)
    except ValueError:
        pass
    for decoder in (base64.urlsafe_b64decode, base64.b64decode):
        try:
            return decoder(text + "=" * (-len(text) % 4))
        except ValueError:
            pass
    return None


@pytest.fixture
def log_dir(tmp_path) -> Path:
    d = tmp_path / "logs"
    d.mkdir()
    return d


def _started(request, proc: Proc):
    """Register teardown: dump logs on failure, always stop."""
    def fin():
        try:
            if _test_failed(request):
                print(proc.describe())
        finally:
            proc.stop()
    request.addfinalizer(fin)
    return proc


@pytest.fixture
def fake_dc(request, log_dir) -> FakeDc:
    port = free_port()
    proc = _started(request, Proc("fake-dc", [binary("samizdat-testkit"), "fake-dc", "--listen",
                                              f"{LOCALHOST}:{port}"], log_dir))
    proc.wait_for(rf"^listening {re.escape(LOCALHOST)}:{port}\b", STARTUP_TIMEOUT)
    return FakeDc(proc, port)


@pytest.fixture
def fake_cover(request, log_dir) -> int:
    port = free_port()
    proc = _started(request, Proc("fake-cover", [binary("samizdat-testkit"), "fake-cover", "--listen",
                                                 f"{LOCALHOST}:{port}"], log_dir))
    wait_listening(port, proc)
    return port


@pytest.fixture
def proxy(request, log_dir, tmp_path, fake_dc, fake_cover) -> ProxyServer:
    port = free_port()
    key = new_key()
    state = tmp_path / "state"
    state.mkdir()
    proc = _started(request, Proc("samizdat", [
        binary("samizdat"), "serve",
        "--listen", f"{LOCALHOST}:{port}",
        "--secret", key,
        "--modes", "plain,dd,ee",
        "--domain", COVER_DOMAIN,
        "--cover", f"{LOCALHOST}:{fake_cover}",
        "--dc-override", fake_dc.addr,
        "--state-dir", state,
    ], log_dir))
    proc.wait_for(r"tg://proxy\?", STARTUP_TIMEOUT)
    wait_listening(port, proc)  # the probe connects and closes without sending a byte
    time.sleep(0.2)  # let the rest of the link lines arrive
    links = [m.group(0) for line in proc.snapshot()
             for m in re.finditer(r"tg://proxy\?\S+", line)]
    return ProxyServer(proc=proc, port=port, key=key, links=links)


@dataclass
class SamizdatClient:
    """`samizdat client` with only its local Telegram endpoint on."""
    proc: Proc
    port: int
    secret: str  # the dd secret from the tg:// link it printed


@pytest.fixture
def samizdat_client(request, log_dir, tmp_path, proxy) -> SamizdatClient:
    links = [m.group(0) for line in proxy.proc.snapshot()
             for m in re.finditer(r"samizdat://\S+", line)]
    assert links, f"serve printed no samizdat:// link\n{proxy.proc.describe()}"
    port = free_port()
    state = tmp_path / "client-state"
    proc = _started(request, Proc("samizdat-client", [
        binary("samizdat"), "client", links[0],
        "--socks", "off", "--http", "off",
        "--telegram", f"{LOCALHOST}:{port}",
        "--state-dir", state,
    ], log_dir))
    m = proc.wait_for(r"tg://proxy\?\S*secret=(?P<secret>[0-9a-fA-F]+)", STARTUP_TIMEOUT)
    wait_listening(port, proc)
    return SamizdatClient(proc=proc, port=port, secret=m["secret"])


def new_key() -> str:
    """A random 16-byte key in hex whose first byte is not 0xdd or 0xee.

    Telethon strips a leading "dd"/"ee" from *any* secret text
    (TcpMTProxy.normalize_secret), so a plain key starting with those bytes
    fails there with "MTProxy secret must be a hex-string representing 16
    bytes" (1 key in 128).
    """
    while (k := secrets.token_hex(16))[:2] in ("dd", "ee"):
        pass
    return k


def other_key(key: str) -> str:
    """A random key different from `key` (for wrong-secret tests)."""
    while (k := new_key()) == key:
        pass
    return k
