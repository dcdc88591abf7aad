"""Deliver 0 of the perlbal issue: request bodies cannot desynchronise a
backend, and the management console is bounded and safe.

Chunked request bodies are decoded by perlbal and re-encoded canonically
(hex size CRLF, data CRLF, "0" CRLF CRLF: no chunk extensions, no trailers)
before they reach a backend, so a backend that frames chunked coding
differently from us cannot be made to see a second, smuggled request.
Framing we cannot read unambiguously is refused before any backend is
asked. Tested against nginx as the backend (its access log is the ground
truth of what requests it saw) and against a recording socket."""
import os
import socket
import threading
import time

import pytest

from conftest import free_port
from pb_helpers import Nginx, console, raw, start_perlbal


def proxy_conf(port, mport, backend_port, extra=""):
    return """
CREATE POOL p
  POOL p ADD 127.0.0.1:%d
CREATE SERVICE web
  SET listen = 127.0.0.1:%d
  SET role = reverse_proxy
  SET pool = p
  SET persist_backend = on
  SET persist_client = on
%s
ENABLE web
CREATE SERVICE mgmt
  SET listen = 127.0.0.1:%d
  SET role = management
ENABLE mgmt
""" % (backend_port, port, extra, mport)


def status_of(resp):
    try:
        return int(resp.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


def nginx_requests(ng, want=1):
    """nginx's access log lines, once it holds at least want of them (or
    after a short wait)."""
    deadline = time.monotonic() + 3
    lines = []
    while time.monotonic() < deadline:
        if os.path.exists(ng.access_log):
            with open(ng.access_log) as f:
                lines = [l for l in f.read().splitlines() if l]
            if len(lines) >= want:
                break
        time.sleep(0.05)
    return lines


@pytest.fixture
def nginx_proxy(daemon, tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "a.txt").write_text("a")
    (root / "secret").write_text("secret")
    ng = Nginx(str(tmp_path), str(root), access_log=True)
    port, mport = free_port(), free_port()
    start_perlbal(daemon, str(tmp_path), proxy_conf(port, mport, ng.port), port)
    yield port, ng
    ng.stop()


SMUGGLES = [
    # chunk extension carrying a request, then a trailer carrying another
    b"POST /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3;x=y\r\nabc\r\n0\r\nX-T: GET /secret HTTP/1.1\r\n\r\n"
    b"GET /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    # bare-LF chunk lines with a request hidden after a short chunk
    b"POST /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"1\nz\n0\n\nGET /secret HTTP/1.1\r\nHost: x\r\n\r\n",
    # a size with leading zeros and an oversized digit run
    b"POST /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"00000000000000000000003\r\nabc\r\n0\r\n\r\nGET /secret HTTP/1.1\r\nHost: x\r\n\r\n",
    # Content-Length and Transfer-Encoding together (TE.CL / CL.TE)
    b"POST /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\nGET /secret HTTP/1.1\r\nHost: x\r\n\r\n",
    # an obfuscated coding
    b"POST /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\nContent-Length: 3\r\n\r\n"
    b"abcGET /secret HTTP/1.1\r\nHost: x\r\n\r\n",
    # two different Content-Lengths
    b"POST /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\n"
    b"abcGET /secret HTTP/1.1\r\nHost: x\r\n\r\n",
]


REFUSED = {3, 4, 5}   # ambiguous framing: answered 400/501 by perlbal, no backend asked
CUT = {2}             # a chunk size we will not read: 400, the backend connection is closed mid-request


@pytest.mark.parametrize("attack", range(len(SMUGGLES)))
def test_smuggling_attempts_cannot_desynchronise_nginx(nginx_proxy, attack):
    """Whatever perlbal accepted it framed one way only: every request nginx
    saw is one perlbal parsed and answered to the client (one nginx answer
    per logged request, none left over on the backend connection); what it
    could not frame unambiguously is refused before nginx sees anything."""
    port, ng = nginx_proxy
    out = raw(port, SMUGGLES[attack], timeout=3)
    assert status_of(out) is not None
    if attack in REFUSED:
        assert status_of(out) in (400, 501), out
        time.sleep(0.2)
        assert not os.path.exists(ng.access_log) or nginx_requests(ng) == []
        return
    if attack in CUT:
        assert status_of(out) == 400, out
        seen = nginx_requests(ng)
        assert not any("/secret" in l for l in seen), seen
        return
    answers = out.count(b"Server: nginx")
    seen = nginx_requests(ng, answers)
    assert len(seen) == answers, (seen, out)
    # a request hidden inside a chunk extension or trailer is never a request
    assert not any("/secret" in l for l in seen[:1]), seen


def test_chunked_body_through_nginx_is_framed_once(nginx_proxy):
    """A chunked request with extensions and trailers reaches nginx as one
    request; nginx reads its body, answers it, and the request pipelined
    behind it on the same client connection is served next: two requests
    in nginx's log, neither of them /secret."""
    port, ng = nginx_proxy
    req = (b"GET /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"3;x=y\r\nabc\r\n0\r\nX-T: GET /secret HTTP/1.1\r\n\r\n"
           b"GET /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    out = raw(port, req, timeout=5)
    assert out.count(b"HTTP/1.1 200 ") == 2, out
    seen = nginx_requests(ng, 2)
    assert [l.split(" ")[:2] for l in seen] == [["GET", "/a.txt"], ["GET", "/a.txt"]], seen


class Recorder:
    """A backend that records the raw bytes of one request and answers 200."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.got = b""
        self.done = threading.Event()
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        c, _ = self.sock.accept()
        c.settimeout(5)
        data = b""
        try:
            while b"0\r\n\r\n" not in data.split(b"\r\n\r\n", 1)[-1] or b"\r\n\r\n" not in data:
                chunk = c.recv(65536)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            pass
        self.got = data
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        c.close()
        self.done.set()


def test_chunked_body_is_reencoded_canonically(daemon, tmp_path):
    rec = Recorder()
    port, mport = free_port(), free_port()
    start_perlbal(daemon, str(tmp_path), proxy_conf(port, mport, rec.port), port)
    out = raw(port, b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\nConnection: close\r\n\r\n"
                    b"3;name=value\r\nabc\r\n00000A\r\n0123456789\r\n0;last\r\nX-T: 1\r\n\r\n")
    assert status_of(out) == 200
    assert rec.done.wait(5)
    head, body = rec.got.split(b"\r\n\r\n", 1)
    lower = head.lower()
    assert lower.count(b"transfer-encoding: chunked") == 1
    assert b"trailer:" not in lower and b"content-length" not in lower
    # canonical: lower-case hex sizes without leading zeros or extensions,
    # CRLF everywhere, the last chunk "0" and no trailer section
    payload, rest = b"", body
    while True:
        size, rest = rest.split(b"\r\n", 1)
        assert size == b"%x" % int(size, 16), size
        n = int(size, 16)
        if n == 0:
            assert rest == b"\r\n"
            break
        payload += rest[:n]
        assert rest[n:n + 2] == b"\r\n"
        rest = rest[n + 2:]
    assert payload == b"abc0123456789"


def test_console_exact_commands_env_and_bounds(daemon, tmp_path):
    root = tmp_path / "s3cr3t"
    root.mkdir()
    (root / "f.txt").write_text("f")
    os.environ["PB_TEST_SECRET"] = str(root)
    try:
        port, mport = free_port(), free_port()
        conf = """
CREATE SERVICE web
  SET listen = 127.0.0.1:%d
  SET role = web_server
  SET docroot = $PB_TEST_SECRET
ENABLE web
CREATE SERVICE mgmt
  SET listen = 127.0.0.1:%d
  SET role = management
ENABLE mgmt
""" % (port, mport)
        d = start_perlbal(daemon, str(tmp_path), conf, port, extra_args=())
        # $VAR is expanded in the config file (as Perlbal does) ...
        assert "docroot = %s" % root in console(mport, "dumpconfig")
        assert raw(port, b"GET /f.txt HTTP/1.0\r\n\r\n").endswith(b"\r\n\r\nf")
        # ... but never on the console: a console user cannot read the environment
        # (taken literally, "$PB_TEST_SECRET" names no directory and is refused
        # as Perlbal refuses a missing docroot; expanded, it would be taken)
        out = console(mport, "SET web.docroot = $PB_TEST_SECRET", "dumpconfig")
        assert out.startswith("ERROR: Directory not found for service web"), out
        assert "docroot = %s" % root in out
        # only the whole word quits
        with socket.create_connection(("127.0.0.1", mport), timeout=5) as s:
            s.sendall(b"quitx\r\nversion\r\n")
            got = b""
            while b"1.80" not in got:             # the version answer follows the error
                chunk = s.recv(65536)
                assert chunk, got
                got += chunk
            assert b"ERROR" in got
            s.sendall(b"  QUIT  \r\n")
            rest = b""
            while True:
                c = s.recv(65536)
                if not c:
                    break
                rest += c
        # a console client that never reads: our output is bounded, the
        # daemon stays responsive and the client is not given more than
        # the bound plus what the kernel buffers hold
        with socket.create_connection(("127.0.0.1", mport), timeout=5) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.setblocking(False)
            sent = 0
            try:
                for _ in range(20000):
                    sent += s.send(b"dumpconfig\r\n" * 50)
            except (BlockingIOError, socket.error):
                pass
            assert "1.80" in console(mport, "version", timeout=20)
        rss = int([l for l in open("/proc/%d/status" % d.proc.pid).read().splitlines() if l.startswith("VmRSS")][0].split()[1])
        assert rss < 200 * 1024, rss
    finally:
        del os.environ["PB_TEST_SECRET"]


def test_non_loopback_management_listener_warns(daemon, tmp_path):
    port, mport = free_port(), free_port()
    conf = """
CREATE SERVICE mgmt
  SET listen = 0.0.0.0:%d
  SET role = management
ENABLE mgmt
""" % mport
    d = start_perlbal(daemon, str(tmp_path), conf, mport)
    out = d.output()
    assert "WARNING" in out and "no authentication" in out
    conf_lo = conf.replace("0.0.0.0", "127.0.0.1")
    d2 = start_perlbal(daemon, str(tmp_path), conf_lo.replace(str(mport), str(port)), port, name="lo.conf")
    assert "WARNING" not in d2.output()
