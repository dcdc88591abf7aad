"""What an operator sees of perlbal: the access log (Combined Log Format by
default, a LogFormat template, off, reopened on SIGHUP), per-service and
per-status request counters in the Prometheus metrics (parsed with
prometheus_client), a dead backend's 503 logged once per outage, a debug
line per request and console command at -vv, and Perl regexes (PCRE2)
wherever the config takes a regex."""
import os
import re
import signal
import socket
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import bin_path, free_port, wait_port
from pb_helpers import Backend, console, get, mgmt_conf, start_perlbal, wait_for

pytestmark = pytest.mark.skipif(not os.path.exists(bin_path("perlbal")), reason="perlbal not built")

# %h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"
COMBINED = re.compile(r'^(\S+) - - \[(\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] "((?:[^"\\]|\\.)*)" (\d{3}) (\d+|-) '
                      r'"((?:[^"\\]|\\.)*)" "((?:[^"\\]|\\.)*)"$')


def read_lines(path):
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def conf(port, mport, root, be_port, extra=""):
    return """
%s
CREATE POOL p
  POOL p ADD 127.0.0.1:%d
CREATE SERVICE proxy
  SET role = reverse_proxy
  SET pool = p
  SET persist_client = on
CREATE SERVICE web
  SET role = web_server
  SET docroot = %s
CREATE SERVICE sel
  SET role = selector
  SET listen = 127.0.0.1:%d
  VHOST sel app.example.com = proxy
  VHOST sel * = web
ENABLE sel
""" % (extra, be_port, root, port) + mgmt_conf(mport)


def metrics(mport):
    with socket.create_connection(("127.0.0.1", mport), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        out = b""
        while True:
            c = s.recv(65536)
            if not c:
                break
            out += c
    return out.split(b"\r\n\r\n", 1)[1].decode()


def samples(text, family):
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == family:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "hello.txt").write_bytes(b"x" * 1234)
    return root


def test_perlbal_access_log_combined_format_and_reopen(daemon, tmp_path, site):
    be = Backend(lambda h, info: (201, {"Content-Type": "text/plain"}, b"made it"))
    try:
        port, mport = free_port(), free_port()
        log = tmp_path / "access.log"
        d = start_perlbal(daemon, str(tmp_path), conf(port, mport, site, be.port, "SERVER access_log = %s" % log),
                          port)
        r, body = get(port, "/hello.txt?a=1", headers={"Referer": "http://ref.example/x", "User-Agent": 'ua "quoted"'})
        assert r.status == 200 and len(body) == 1234
        r, _ = get(port, "/missing")
        assert r.status == 404
        r, body = get(port, "/made", headers={"Host": "app.example.com"}, method="POST",
                      body=b"abc")
        assert r.status == 201 and body == b"made it"
        r, _ = get(port, "/hello.txt", method="HEAD")
        assert r.status == 200
        lines = wait_for(lambda: len(read_lines(log)) >= 4 and read_lines(log))
        assert len(lines) == 4, lines
        parsed = [COMBINED.match(l) for l in lines]
        assert all(parsed), lines
        # one line per request, in order, as Apache's combined format has them
        g = [p.groups() for p in parsed]
        assert g[0][0] == "127.0.0.1"
        assert g[0][2] == "GET /hello.txt?a=1 HTTP/1.1" and g[0][3] == "200" and g[0][4] == "1234"
        assert g[0][5] == "http://ref.example/x" and g[0][6] == 'ua \\"quoted\\"'
        assert g[1][2] == "GET /missing HTTP/1.1" and g[1][3] == "404" and g[1][5] == "-"
        assert g[2][2] == "POST /made HTTP/1.1" and g[2][3] == "201" and g[2][4] == "7"
        assert g[3][2] == "HEAD /hello.txt HTTP/1.1" and g[3][3] == "200" and g[3][4] == "-"
        # logrotate: the file is moved away, SIGHUP opens a new one
        os.rename(log, str(log) + ".1")
        os.kill(d.pid, signal.SIGHUP)
        assert wait_for(lambda: os.path.exists(log))
        get(port, "/hello.txt")
        assert wait_for(lambda: len(read_lines(log)) == 1)
        assert " 200 1234 " in read_lines(log)[0]
        assert len(read_lines(str(log) + ".1")) == 4
    finally:
        be.stop()


def test_perlbal_access_log_template_set_live_and_off(daemon, tmp_path, site):
    port, mport = free_port(), free_port()
    log = tmp_path / "a.log"
    start_perlbal(daemon, str(tmp_path), conf(port, mport, site, free_port()), port)
    assert not os.path.exists(log)
    out = console(mport, "SERVER access_log_format = %v %m %U %q %>s %B %D %{X-Id}i %%",
                  "SERVER access_log = %s" % log)
    assert "ERROR" not in out, out
    get(port, "/hello.txt?x=%22y", headers={"X-Id": "abc"})
    line = wait_for(lambda: read_lines(log))
    assert len(line) == 1
    m = re.match(r'^web GET /hello.txt \?x=%22y 200 1234 (\d+) abc %$', line[0])
    assert m, line
    assert "ERROR" in console(mport, "SERVER access_log = relative.log")
    assert "ERROR" not in console(mport, "SERVER access_log = off")
    get(port, "/hello.txt")
    get(port, "/hello.txt")
    time.sleep(0.3)
    assert len(read_lines(log)) == 1
    # on again: the same file, appended
    assert "ERROR" not in console(mport, "SERVER access_log = %s" % log)
    get(port, "/missing")
    assert wait_for(lambda: len(read_lines(log)) == 2)
    assert " 404 " in read_lines(log)[1]


def test_perlbal_metrics_requests_by_service_and_code(daemon, tmp_path, site):
    be = Backend(lambda h, info: (202, {}, b"ok") if info["path"] == "/accept" else None)
    try:
        port, mport, met = free_port(), free_port(), free_port()
        start_perlbal(daemon, str(tmp_path), conf(port, mport, site, be.port), port,
                      extra_args=["--metrics", "127.0.0.1:%d" % met])
        wait_port(met)
        for _ in range(3):
            assert get(port, "/hello.txt")[0].status == 200
        assert get(port, "/nope")[0].status == 404
        for _ in range(2):
            assert get(port, "/accept", headers={"Host": "app.example.com"})[0].status == 202
        assert get(port, "/x", headers={"Host": "app.example.com"})[0].status == 200
        text = metrics(met)
        assert "# TYPE perlbal_requests_total counter" in text
        assert "# HELP perlbal_requests_total HTTP requests answered, by service and status code" in text
        req = samples(text, "perlbal_requests_total")
        assert req[(("code", "200"), ("service", "web"))] == 3
        assert req[(("code", "404"), ("service", "web"))] == 1
        assert req[(("code", "202"), ("service", "proxy"))] == 2
        assert req[(("code", "200"), ("service", "proxy"))] == 1
        body = samples(text, "perlbal_response_body_bytes_total")
        # three files and one short 404 page
        assert 3 * 1234 < body[(("service", "web"),)] < 3 * 1234 + 300
        assert samples(text, "perlbal_access_log_dropped_total")[()] == 0
    finally:
        be.stop()


def test_perlbal_dead_backend_503_logged_once(daemon, tmp_path, site):
    dead = free_port()
    port, mport = free_port(), free_port()
    d = start_perlbal(daemon, str(tmp_path), conf(port, mport, site, dead), port)
    for _ in range(6):
        r, body = get(port, "/", headers={"Host": "app.example.com"})
        assert r.status == 503
    out = wait_for(lambda: "no backend available" in d.output() and d.output())
    assert out.count("no backend available") == 1, out
    # the backend comes up: said once, and a new outage is logged again
    be = Backend(port=dead)
    try:
        assert wait_for(lambda: get(port, "/", headers={"Host": "app.example.com"})[0].status == 200, 15)
        assert wait_for(lambda: "backends answer again" in d.output())
    finally:
        be.stop()
    assert wait_for(lambda: get(port, "/", headers={"Host": "app.example.com"})[0].status == 503, 15)
    get(port, "/", headers={"Host": "app.example.com"})
    assert wait_for(lambda: d.output().count("no backend available") == 2)


def test_perlbal_vv_debug_line_per_request_and_command(daemon, tmp_path, site):
    port, mport = free_port(), free_port()
    d = start_perlbal(daemon, str(tmp_path), conf(port, mport, site, free_port()), port, extra_args=["-vv"])
    get(port, "/hello.txt")
    console(mport, "show service web")
    out = wait_for(lambda: "console" in d.output() and "request:" in d.output() and d.output())
    assert re.search(r'request: client \d+ service web: 127\.0\.0\.1 .*"GET /hello\.txt HTTP/1\.1" 200 1234', out), out
    assert re.search(r"console \d+: show service web -> OK", out), out


def test_perlbal_regexes_are_perl_regexes(daemon, tmp_path, site):
    """NotModified's host_pattern with \\d, a lookahead and a non-greedy
    quantifier, none of which POSIX regcomp reads as Perl does."""
    port, mport = free_port(), free_port()
    start_perlbal(daemon, str(tmp_path), """
LOAD NotModified
CREATE SERVICE web
  SET role = web_server
  SET listen = 127.0.0.1:%d
  SET docroot = %s
  SET plugins = NotModified
  SET web.notmodified.host_pattern = ^(?!static)\\w+?\\d+\\.example\\.com$
ENABLE web
""" % (port, site) + mgmt_conf(mport), port)
    ims = {"If-Modified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"}
    assert get(port, "/hello.txt", headers=dict(ims, Host="img12.example.com"))[0].status == 304
    # the lookahead refuses "static...", \d wants a digit
    assert get(port, "/hello.txt", headers=dict(ims, Host="static7.example.com"))[0].status == 200
    assert get(port, "/hello.txt", headers=dict(ims, Host="img.example.com"))[0].status == 200
    out = console(mport, "SET web.notmodified.host_pattern = (unclosed")
    assert "ERROR" in out and "regular expression" in out, out
    # the old pattern stays after a refused one
    assert get(port, "/hello.txt", headers=dict(ims, Host="img12.example.com"))[0].status == 304
