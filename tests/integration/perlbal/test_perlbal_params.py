"""perlbal service parameters, each shown to change behaviour: connect_ahead,
max_backend_uses, verify_backend_path, server_tokens, blind_proxy,
always_trusted, index_files, min_put_directory, persist_client off."""
import json
import os
import socket
import time

import pytest

from conftest import bin_path, free_port
from pb_helpers import Backend, console, get, start_perlbal
from test_perlbal import proxy_conf, web_conf

pytestmark = pytest.mark.skipif(not os.path.exists(bin_path("perlbal")), reason="perlbal not built")


def node_stat(mport, port, what):
    out = console(mport, "nodes 127.0.0.1:%d" % port)
    return int(out.split("127.0.0.1:%d %s " % (port, what))[1].split()[0])


def test_connect_ahead_keeps_spare_backend_connections(daemon, tmp_path):
    be = Backend()
    try:
        port, mport = free_port(), free_port()
        start_perlbal(daemon, str(tmp_path), proxy_conf(port, mport, [be.port], "  SET connect_ahead = 3\n"), port)
        assert get(port, "/x")[0].status == 200
        deadline = time.time() + 5
        while True:                             # "connect-ahead: <bored>/<connect_ahead>"
            bored = int(console(mport, "show service proxy").split("connect-ahead: ")[1].split("/")[0])
            if bored >= 3:
                break
            assert time.time() < deadline
            time.sleep(0.1)
        assert node_stat(mport, be.port, "connects") >= 3
    finally:
        be.stop()


def test_max_backend_uses_recycles_connections(daemon, tmp_path):
    be = Backend()
    try:
        port, mport = free_port(), free_port()
        start_perlbal(daemon, str(tmp_path), proxy_conf(port, mport, [be.port], "  SET max_backend_uses = 2\n"), port)
        for i in range(6):
            assert get(port, "/u%d" % i)[0].status == 200
        assert node_stat(mport, be.port, "connects") == 3          # 6 requests, 2 per connection
        assert node_stat(mport, be.port, "requests") == 6
    finally:
        be.stop()


def test_verify_backend_path(daemon, tmp_path):
    be = Backend()
    try:
        port, mport = free_port(), free_port()
        start_perlbal(daemon, str(tmp_path), proxy_conf(port, mport, [be.port], "  SET verify_backend = on\n"
                                                        "  SET verify_backend_path = /health\n"), port)
        assert get(port, "/v")[0].status == 200
        assert [q["path"] for q in be.requests if q["method"] == "OPTIONS"] == ["/health"]
    finally:
        be.stop()


def test_server_tokens_blind_proxy_always_trusted(daemon, tmp_path):
    be = Backend()
    try:
        port, mport = free_port(), free_port()
        start_perlbal(daemon, str(tmp_path), proxy_conf(port, mport, [be.port], "  SET always_trusted = on\n"
                                                        "  SET blind_proxy = on\n"), port)
        r, body = get(port, "/t", headers={"X-Forwarded-For": "1.2.3.4", "X-Host": "orig.example"})
        h = json.loads(body)["headers"]
        assert h["X-Forwarded-For"] == "1.2.3.4"       # trusted + blind: passed on untouched
        assert h["X-Host"] == "orig.example"
        console(mport, "SET proxy.blind_proxy = off")
        h = json.loads(get(port, "/t", headers={"X-Forwarded-For": "1.2.3.4"})[1])["headers"]
        assert h["X-Forwarded-For"] == "1.2.3.4, 127.0.0.1"
    finally:
        be.stop()


def test_index_files_server_tokens_min_put_directory(daemon, tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "home.htm").write_text("home")
    (root / "d").mkdir()
    port, mport = free_port(), free_port()
    start_perlbal(daemon, str(tmp_path), web_conf(port, mport, root, "  SET index_files = index.html, home.htm\n"
                                                  "  SET server_tokens = off\n  SET enable_put = on\n"
                                                  "  SET min_put_directory = 1\n"), port)
    r, body = get(port, "/")
    assert r.status == 200 and body == b"home" and r.getheader("Server") is None
    assert get(port, "/d/new/f.txt", method="PUT", body=b"1")[0].status == 200   # /d exists: /d/new is made
    r, body = get(port, "/x/y/f.txt", method="PUT", body=b"1")                   # /x is level 1: not made
    assert r.status == 404 and b"Base directory does not exist" in body
    r, body = get(port, "/top.txt", method="PUT", body=b"1")                      # no directory at all
    assert r.status == 400 and b"Does not meet minimum directory requirement" in body
    assert (root / "d" / "new" / "f.txt").read_text() == "1" and not (root / "x").exists()
    assert not (root / "top.txt").exists()


def test_persist_client_off_closes_after_each_response(daemon, tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "a").write_text("a")
    port, mport = free_port(), free_port()
    start_perlbal(daemon, str(tmp_path), web_conf(port, mport, root, "  SET persist_client = off\n"), port)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    assert out.count(b"HTTP/1.1 200") == 1 and b"Connection: close" in out


def test_ipv6_pool_node(daemon, tmp_path):
    be = Backend(host="::1")
    try:
        port, mport = free_port(), free_port()
        conf = proxy_conf(port, mport, []) + "POOL backends ADD [::1]:%d\n" % be.port
        start_perlbal(daemon, str(tmp_path), conf, port)
        r, body = get(port, "/six")
        assert r.status == 200 and json.loads(body)["path"] == "/six"
        assert "[::1]:%d requests 1" % be.port in console(mport, "nodes [::1]:%d" % be.port)
        assert console(mport, "POOL backends ADD [::1", "POOL backends ADD bad_name:80").count("ERROR") == 2
    finally:
        be.stop()


def test_io_uring_by_default_and_off(daemon, tmp_path, monkeypatch):
    """perlbal asks for the core's io_uring batching unless STACK_IO_URING
    says otherwise: with the variable unset the log names the ring (or says
    why the kernel refused it: epoll then); with STACK_IO_URING=0 it is
    never tried. The answers are the same either way."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "a").write_bytes(b"x" * 3000)
    monkeypatch.delenv("STACK_IO_URING", raising=False)
    logs = {}
    for mode, env in (("default", None), ("off", {"STACK_IO_URING": "0"})):
        port, mport = free_port(), free_port()
        conf = tmp_path / ("%s.conf" % mode)
        conf.write_text(web_conf(port, mport, root))
        d = daemon("perlbal", ["-v", "-c", str(conf)], ready_port=str(port), env=env)
        for _ in range(3):
            r, body = get(port, "/a")
            assert r.status == 200 and body == b"x" * 3000
        time.sleep(0.2)
        with open(d.log_path, "rb") as f:
            logs[mode] = f.read().decode(errors="replace")
    assert ("socket I/O batched through io_uring" in logs["default"]
            or "io_uring unavailable" in logs["default"]), logs["default"]
    assert "io_uring" not in logs["off"], logs["off"]
