"""perlbal under hostile or broken input: header bombs, smuggling attempts,
garbage, slow clients (slowloris), oversized bodies, slow and failing
backends, and a graceful stop with a request in flight. Every case gets a
4xx/5xx (or a close) and the daemon keeps serving."""
import os
import signal
import socket
import threading
import time

import pytest

from conftest import bin_path, free_port
from pb_helpers import Backend, console, get, raw, start_perlbal
from test_perlbal import proxy_conf, web_conf

pytestmark = pytest.mark.skipif(not os.path.exists(bin_path("perlbal")), reason="perlbal not built")


@pytest.fixture
def proxied(daemon, tmp_path):
    """A reverse proxy in front of an echo backend; yields (port, mport, backend)."""
    be = Backend()
    port, mport = free_port(), free_port()
    start_perlbal(daemon, str(tmp_path), proxy_conf(port, mport, [be.port],
                                                    "  SET idle_timeout = 2\n  SET max_chunked_request_size = 1000\n"),
                  port)
    yield port, mport, be
    be.stop()


def status_of(out):
    return int(out.split(b" ", 2)[1]) if out.startswith(b"HTTP/") else None


def test_header_bomb_gets_431(proxied):
    port, _, be = proxied
    out = raw(port, b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n")
    assert status_of(out) == 431
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(300))
    out = raw(port, b"GET / HTTP/1.1\r\nHost: a\r\n" + many + b"\r\n")
    assert status_of(out) == 431
    assert be.count() == 0
    r, _ = get(port, "/ok")
    assert r.status == 200


@pytest.mark.parametrize("req,code", [
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n folded\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage", 400),
    (b"GET / HTTP/9.9\r\nHost: a\r\n\r\n", 505),
])
def test_smuggling_and_malformed_requests_are_refused(proxied, req, code):
    port, _, be = proxied
    out = raw(port, req)
    assert status_of(out) == code, out[:80]
    assert be.count() == 0                  # nothing reached the backend
    r, _ = get(port, "/after")
    assert r.status == 200


def test_oversized_chunked_body_refused(proxied):
    port, _, be = proxied
    body = b"".join(b"100\r\n" + b"z" * 256 + b"\r\n" for _ in range(10)) + b"0\r\n\r\n"
    out = raw(port, b"POST /big HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    assert status_of(out) == 400
    r, _ = get(port, "/after")
    assert r.status == 200


def test_slowloris_is_cut_off_and_others_are_served(proxied):
    port, _, _ = proxied
    # many idle half-requests do not block a normal client
    idle = []
    for _ in range(100):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n")
        idle.append(s)
    r, _ = get(port, "/still")
    assert r.status == 200
    # a client dribbling one byte at a time is cut off after idle_timeout (2s)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET / HTTP/1.1\r\n")
    start = time.time()
    out = b""
    try:
        while time.time() - start < 8:
            s.sendall(b"X")
            time.sleep(0.3)
            s.setblocking(False)
            try:
                chunk = s.recv(4096)
                if not chunk:
                    break
                out += chunk
            except BlockingIOError:
                pass
            finally:
                s.setblocking(True)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert time.time() - start < 6
    assert out == b"" or status_of(out) == 408
    s.close()
    # the silent ones were closed by the idle timeout
    time.sleep(2.5)
    closed = 0
    for s in idle:
        s.settimeout(0.5)
        try:
            if s.recv(10) == b"":
                closed += 1
        except (socket.timeout, ConnectionResetError):
            pass
        s.close()
    assert closed >= 90


def test_client_vanishing_mid_body_and_mid_response(proxied):
    port, _, _ = proxied
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n" + b"a" * 1000)
        s.close()
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        s.close()
    time.sleep(0.2)
    r, _ = get(port, "/fine")
    assert r.status == 200


def test_failing_and_garbage_backends(daemon, tmp_path):
    def behaviour(h, info):
        if info["path"] == "/500":
            return 500, {}, b"oops"
        if info["path"] == "/garbage":
            h.wfile.write(b"NOT HTTP AT ALL\r\n\r\n")
            h.wfile.flush()
            h.close_connection = True
            raise ConnectionAbortedError()
        if info["path"] == "/slow":
            time.sleep(0.5)
        return None

    be = Backend(behaviour)
    try:
        port, mport = free_port(), free_port()
        start_perlbal(daemon, str(tmp_path), proxy_conf(port, mport, [be.port]), port)
        r, body = get(port, "/500")
        assert r.status == 500 and body == b"oops"
        r, _ = get(port, "/garbage")
        assert r.status == 502
        results = []

        def slow():
            r, _ = get(port, "/slow")
            results.append(r.status)

        ts = [threading.Thread(target=slow) for _ in range(10)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(20)
        assert results == [200] * 10
    finally:
        be.stop()


def test_graceful_stop_finishes_inflight_request(daemon, tmp_path):
    def behaviour(h, info):
        time.sleep(1.0)
        return None

    be = Backend(behaviour)
    try:
        port, mport = free_port(), free_port()
        d = start_perlbal(daemon, str(tmp_path), proxy_conf(port, mport, [be.port]), port)
        result = {}

        def req():
            r, body = get(port, "/inflight")
            result["status"] = r.status
            result["body"] = body

        t = threading.Thread(target=req)
        t.start()
        time.sleep(0.3)
        d.proc.send_signal(signal.SIGTERM)
        t.join(10)
        assert result.get("status") == 200 and b"/inflight" in result["body"]
        d.proc.wait(10)
        assert d.proc.returncode == 0
    finally:
        be.stop()


def test_web_server_abuse(daemon, tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "f.txt").write_text("f")
    port, mport = free_port(), free_port()
    start_perlbal(daemon, str(tmp_path), web_conf(port, mport, root, "  SET enable_put = on\n  SET max_put_size = 1k\n"),
                  port)
    assert status_of(raw(port, b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 99999\r\n\r\n")) == 413
    # a chunked PUT is stored (as Perlbal does); one growing past max_put_size is refused with 413
    assert status_of(raw(port, b"PUT /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                               b"3\r\nabc\r\n0\r\n\r\n")) in (200, 201)
    assert (root / "x").read_bytes() == b"abc"
    big = b"400\r\n" + b"z" * 1024 + b"\r\n"
    assert status_of(raw(port, b"PUT /y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + big * 2 +
                               b"0\r\n\r\n")) == 413
    assert not (root / "y").exists()
    assert status_of(raw(port, b"BREW /pot HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")) == 400  # as Perlbal
    assert status_of(raw(port, b"GET /f.txt HTTP/1.1\r\nHost: a\r\nRange: bytes=99-\r\nConnection: close\r\n\r\n")) == 416
    r, body = get(port, "/f.txt")
    assert r.status == 200 and body == b"f"
    assert "ENABLED" in console(mport, "show service")


def test_server_max_connections_refuses_with_503_and_recovers(daemon, tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "f.txt").write_text("f")
    port, mport = free_port(), free_port()
    start_perlbal(daemon, str(tmp_path), "SERVER max_connections = 3\n" + web_conf(port, mport, root), port)
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    try:
        time.sleep(0.2)
        out = raw(port, b"GET /f.txt HTTP/1.0\r\n\r\n")
        assert out.startswith(b"HTTP/1.0 503")
        assert "ENABLED" in console(mport, "show service")      # the console is not counted against it
    finally:
        for s in held:
            s.close()
    time.sleep(0.2)
    r, body = get(port, "/f.txt")
    assert r.status == 200 and body == b"f"


def test_slow_request_body_is_cut_off_after_idle_timeout(proxied):
    port, mport, be = proxied                    # idle_timeout = 2
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"a" * 10)
    start = time.time()
    try:
        data = s.recv(65536)                     # nothing more is sent: perlbal gives up on us
    except ConnectionResetError:
        data = b""
    assert data == b"" or data.startswith(b"HTTP/1.1 408")
    assert 1.5 <= time.time() - start < 8
    s.close()
    r, _ = get(port, "/still-serving")
    assert r.status == 200
