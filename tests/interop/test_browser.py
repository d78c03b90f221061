"""A real browser through `samizdat client`: headless Chromium (Debian's
package) with its SOCKS5 proxy set to the client's port loads a page from a
local web server, through `samizdat serve`.

The page is fetched by name (`localhost`), so Chromium hands the
name to the SOCKS5 proxy and the server resolves it, as it would for any site
behind a censor's DNS.
"""
from __future__ import annotations

import http.server
import shutil
import subprocess
import threading

import pytest

from conftest import LOCALHOST, Proc, _started, binary, free_port, wait_listening, STARTUP_TIMEOUT

MARKER = "samizdat-browser-interop-7f3a"


@pytest.fixture
def web_server():
    body = (f"<!doctype html><html><head><title>{MARKER}</title></head>"
            f"<body><p id='m'>{MARKER}</p><script>document.getElementById('m')"
            f".dataset.js = 'ran';</script></body></html>").encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (stdlib name)
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((LOCALHOST, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture
def tunnel(request, log_dir, tmp_path, fake_dc, fake_cover):
    """Starts `samizdat serve` (with `egress` flags) and `samizdat client`;
    returns the client's SOCKS5 port."""
    def start(name: str, egress: list[str]) -> int:
        port = free_port()
        state = tmp_path / f"{name}-state"
        state.mkdir()
        serve = _started(request, Proc(f"{name}-serve", [
            binary("samizdat"), "serve", "--listen", f"{LOCALHOST}:{port}",
            "--domain", "cover.localhost", "--cover", f"{LOCALHOST}:{fake_cover}",
            "--dc-override", fake_dc.addr, "--state-dir", state, *egress,
        ], log_dir))
        link = serve.wait_for(r"samizdat://\S+", STARTUP_TIMEOUT).group(0)
        socks = free_port()
        client = _started(request, Proc(f"{name}-client", [
            binary("samizdat"), "client", link, "--socks", f"{LOCALHOST}:{socks}",
            "--http", "off", "--telegram", "off", "--state-dir", tmp_path / f"{name}-client",
        ], log_dir))
        wait_listening(socks, client)
        return socks
    return start


def load(tmp_path, socks: int, url: str, profile: str) -> subprocess.CompletedProcess:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is needed (scripts/test installs it: apt-get install chromium)")
    return subprocess.run([
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp_path / profile}",
        f"--proxy-server=socks5://{LOCALHOST}:{socks}",
        # Chromium never proxies loopback unless told to.
        "--proxy-bypass-list=<-loopback>",
        "--virtual-time-budget=5000", "--dump-dom", url,
    ], capture_output=True, text=True, timeout=90)


def test_chromium_loads_a_page_through_samizdat_client(tmp_path, web_server, tunnel):
    url = f"http://localhost:{web_server}/"
    out = load(tmp_path, tunnel("allowed", ["--egress-allow", "127.0.0.0/8"]), url, "p1")
    assert f'<p id="m" data-js="ran">{MARKER}</p>' in out.stdout, (
        f"page not loaded through the tunnel\nstdout: {out.stdout[-2000:]}\n"
        f"stderr: {out.stderr[-3000:]}")
    # The control: the same page through a server whose egress policy
    # refuses loopback (the default) does not load, so the page above came
    # through the tunnel and not straight from the browser.
    out = load(tmp_path, tunnel("refused", []), url, "p2")
    assert MARKER not in out.stdout, "the page loaded although the server refuses loopback"
