"""perlbal buffer_uploads: a large or slow upload is held by the proxy
(memory, then an unlinked file in buffer_uploads_path) and reaches the
backend only once the client has sent all of it; a small fast one streams
straight through. Proven with the backend's own clock: it records when it
read the request head, and the test records when it sent the last byte."""
import hashlib
import json
import os
import socket
import time

import pytest

from conftest import bin_path, free_port
from pb_helpers import Backend, start_perlbal
from test_perlbal import proxy_conf

pytestmark = pytest.mark.skipif(not os.path.exists(bin_path("perlbal")), reason="perlbal not built")


def slow_post(port, parts, pause):
    """POST the parts with a pause between them; return (response, time the last byte was sent)."""
    body = b"".join(parts)
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    s.sendall(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body))
    for i, p in enumerate(parts):
        if i:
            time.sleep(pause)
        s.sendall(p)
    t_last = time.time()
    out = b""
    while b"\r\n\r\n" not in out or len(out.split(b"\r\n\r\n", 1)[1]) < int(
            [l for l in out.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1]):
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    head, _, rbody = out.partition(b"\r\n\r\n")
    return head, json.loads(rbody), t_last, hashlib.sha1(body).hexdigest()


def conf(port, mport, be, tmp_path, extra):
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    return proxy_conf(port, mport, [be.port], "  SET buffer_uploads = on\n  SET buffer_uploads_path = %s\n%s"
                      % (spool, extra))


def test_upload_over_size_threshold_is_buffered_until_complete(daemon, tmp_path):
    be = Backend()
    try:
        port, mport = free_port(), free_port()
        start_perlbal(daemon, str(tmp_path), conf(port, mport, be, tmp_path,
                                                  "  SET buffer_upload_threshold_size = 100k\n"
                                                  "  SET buffer_backend_connect = 16k\n"), port)
        parts = [os.urandom(100000), os.urandom(100000), os.urandom(100000)]
        head, info, t_last, sha = slow_post(port, parts, 0.5)
        assert head.startswith(b"HTTP/1.1 200")
        assert info["body_len"] == 300000 and info["body_sha"] == sha
        assert info["t_head"] >= t_last - 0.05      # the backend saw nothing before the last byte
        # the spool file is removed once the request is answered (as Perlbal)
        deadline = time.monotonic() + 5
        while os.listdir(tmp_path / "spool") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.listdir(tmp_path / "spool") == []
    finally:
        be.stop()


def test_slow_upload_under_rate_threshold_is_buffered(daemon, tmp_path):
    be = Backend()
    try:
        port, mport = free_port(), free_port()
        start_perlbal(daemon, str(tmp_path), conf(port, mport, be, tmp_path,
                                                  "  SET buffer_upload_threshold_size = 0\n"
                                                  "  SET buffer_upload_threshold_time = 0\n"
                                                  "  SET buffer_upload_threshold_rate = 100000\n"
                                                  "  SET buffer_backend_connect = 8k\n"), port)
        parts = [os.urandom(4096) for _ in range(6)]   # ~8 KiB/s: far below 100000 B/s
        head, info, t_last, sha = slow_post(port, parts, 0.3)
        assert head.startswith(b"HTTP/1.1 200")
        assert info["body_len"] == 6 * 4096 and info["body_sha"] == sha
        assert info["t_head"] >= t_last - 0.05
    finally:
        be.stop()


def test_upload_under_thresholds_streams_to_backend(daemon, tmp_path):
    be = Backend()
    try:
        port, mport = free_port(), free_port()
        start_perlbal(daemon, str(tmp_path), conf(port, mport, be, tmp_path,
                                                  "  SET buffer_upload_threshold_size = 0\n"
                                                  "  SET buffer_upload_threshold_time = 0\n"
                                                  "  SET buffer_upload_threshold_rate = 0\n"
                                                  "  SET buffer_backend_connect = 8k\n"), port)
        parts = [os.urandom(16384), os.urandom(16384), os.urandom(16384)]
        head, info, t_last, sha = slow_post(port, parts, 0.5)
        assert info["body_len"] == 3 * 16384 and info["body_sha"] == sha
        assert info["t_head"] < t_last - 0.3            # the backend had the head while the body was coming
    finally:
        be.stop()
