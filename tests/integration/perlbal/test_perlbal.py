"""perlbal: every role driven by curl and Python's http.client — web_server
(files, HEAD, Range, If-Modified-Since, index, listing, PUT/DELETE, no docroot
escape), reverse_proxy (nginx as a real backend, keep-alive both sides,
X-Forwarded-For, HEADER insert/remove, verify_backend, reproxy URL/file,
chunked uploads, retry when a backend dies), selector vhosts, and the
management console changing things live."""
import http.client
import json
import os
import socket
import subprocess
import threading
import time

import pytest

from conftest import bin_path, free_port
from pb_helpers import Backend, Nginx, console, get, raw, start_perlbal

pytestmark = pytest.mark.skipif(not os.path.exists(bin_path("perlbal")), reason="perlbal not built")


def web_conf(port, mport, docroot, extra=""):
    return """
CREATE SERVICE web
  SET role = web_server
  SET listen = 127.0.0.1:%d
  SET docroot = %s
  SET dirindexing = 1
  SET persist_client = on
%s
ENABLE web
CREATE SERVICE mgmt
  SET role = management
  SET listen = 127.0.0.1:%d
ENABLE mgmt
""" % (port, docroot, extra, mport)


def proxy_conf(port, mport, nodes, extra="", pool="backends"):
    adds = "".join("  POOL %s ADD 127.0.0.1:%d\n" % (pool, n) for n in nodes)
    return """
CREATE POOL %s
%s
CREATE SERVICE proxy
  SET role = reverse_proxy
  SET listen = 127.0.0.1:%d
  SET pool = %s
  SET persist_client = on
  SET persist_backend = on
%s
ENABLE proxy
CREATE SERVICE mgmt
  SET role = management
  SET listen = 127.0.0.1:%d
ENABLE mgmt
""" % (pool, adds, port, pool, extra, mport)


@pytest.fixture
def docroot(tmp_path):
    d = tmp_path / "www"
    d.mkdir()
    (d / "index.html").write_text("<h1>home</h1>\n")
    (d / "1k.txt").write_bytes(b"x" * 1024)
    (d / "sub").mkdir()
    (d / "sub" / "a.css").write_text("body{}\n")
    (d / "sub" / "b.png").write_bytes(b"\x89PNG....")
    return d


# ---------------------------------------------------------------- web_server

def test_web_server_serves_files_head_range_and_types(daemon, tmp_path, docroot):
    port, mport = free_port(), free_port()
    start_perlbal(daemon, str(tmp_path), web_conf(port, mport, docroot), port)
    r, body = get(port, "/1k.txt")
    assert r.status == 200 and body == b"x" * 1024
    assert r.getheader("Content-Type") == "text/plain"
    assert r.getheader("Last-Modified")
    r, body = get(port, "/sub/a.css")
    assert r.getheader("Content-Type") == "text/css"
    r, body = get(port, "/sub/b.png")
    assert r.getheader("Content-Type") == "image/png"
    r, body = get(port, "/1k.txt", method="HEAD")
    assert r.status == 200 and body == b"" and r.getheader("Content-Length") == "1024"
    r, body = get(port, "/1k.txt", headers={"Range": "bytes=10-19"})
    assert r.status == 206 and body == b"x" * 10
    assert r.getheader("Content-Range") == "bytes 10-19/1024"
    r, body = get(port, "/1k.txt", headers={"Range": "bytes=-100"})
    assert r.status == 206 and len(body) == 100
    r, body = get(port, "/1k.txt", headers={"Range": "bytes=5000-"})
    assert r.status == 416
    r, body = get(port, "/nope.txt")
    assert r.status == 404
    # curl agrees
    out = subprocess.run(["curl", "-s", "-o", "-", "-w", "%{http_code}", "http://127.0.0.1:%d/1k.txt" % port],
                         capture_output=True, timeout=10)
    assert out.stdout.endswith(b"200") and out.stdout[:1024] == b"x" * 1024


def test_web_server_if_modified_since_gives_304(daemon, tmp_path, docroot):
    port, mport = free_port(), free_port()
    start_perlbal(daemon, str(tmp_path), web_conf(port, mport, docroot), port)
    r, _ = get(port, "/1k.txt")
    lm = r.getheader("Last-Modified")
    r, body = get(port, "/1k.txt", headers={"If-Modified-Since": lm})
    assert r.status == 304 and body == b""
    r, body = get(port, "/1k.txt", headers={"If-Modified-Since": "Sun, 06 Nov 1994 08:49:37 GMT"})
    assert r.status == 200 and len(body) == 1024


def test_web_server_index_redirect_and_listing(daemon, tmp_path, docroot):
    port, mport = free_port(), free_port()
    start_perlbal(daemon, str(tmp_path), web_conf(port, mport, docroot), port)
    r, body = get(port, "/")
    assert r.status == 200 and b"home" in body
    r, body = get(port, "/sub")
    assert r.status == 301 and r.getheader("Location") == "/sub/"
    r, body = get(port, "/sub/")
    assert r.status == 200 and b'href="a.css"' in body and b'href="b.png"' in body


def test_web_server_keepalive_and_pipelining(daemon, tmp_path, docroot):
    port, mport = free_port(), free_port()
    start_perlbal(daemon, str(tmp_path), web_conf(port, mport, docroot), port)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    for _ in range(5):
        c.request("GET", "/sub/a.css")
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"body{}\n"
    c.close()
    # three pipelined requests in one write get three answers in order
    req = b"GET /sub/a.css HTTP/1.1\r\nHost: x\r\n\r\n" * 2 + b"GET /1k.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out = raw(port, req)
    assert out.count(b"HTTP/1.1 200 OK") == 3
    assert out.endswith(b"x" * 1024)


def test_web_server_refuses_paths_outside_docroot(daemon, tmp_path, docroot):
    port, mport = free_port(), free_port()
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(str(tmp_path / "secret.txt"), str(docroot / "link.txt"))
    start_perlbal(daemon, str(tmp_path), web_conf(port, mport, docroot), port)
    for path in (b"/../secret.txt", b"/sub/../../secret.txt", b"/%2e%2e/secret.txt", b"/..%2fsecret.txt",
                 b"/link.txt", b"/a%00b"):
        out = raw(port, b"GET " + path + b" HTTP/1.0\r\n\r\n")
        assert b"secret" not in out.split(b"\r\n\r\n", 1)[-1], path
        assert out.startswith(b"HTTP/1.0 4"), (path, out[:60])
    r, _ = get(port, "/1k.txt")
    assert r.status == 200


def test_web_server_put_and_delete(daemon, tmp_path, docroot):
    port, mport = free_port(), free_port()
    extra = "  SET enable_put = on\n  SET enable_delete = on\n  SET min_put_directory = 0\n  SET max_put_size = 100k\n"
    start_perlbal(daemon, str(tmp_path), web_conf(port, mport, docroot, extra), port)
    r, body = get(port, "/up/new.txt", method="PUT", body=b"uploaded!")
    assert r.status == 200 and body == b"<h1>200 - OK</h1>\n"      # Perlbal 1.80's answer, byte for byte
    assert r.getheader("Content-Type") == "text/html"
    assert (docroot / "up" / "new.txt").read_bytes() == b"uploaded!"
    r, body = get(port, "/up/new.txt")
    assert body == b"uploaded!"
    r, _ = get(port, "/up/new.txt", method="PUT", body=b"again")
    assert r.status == 200                                    # replacing: 200 too
    assert get(port, "/up/new.txt")[1] == b"again"          # no stale open-file cache after PUT
    (docroot / "up" / "new.txt").write_bytes(b"changed in place, longer")
    assert get(port, "/up/new.txt")[1] == b"changed in place, longer"
    # a verified Content-MD5 (md5 of "abc") makes it 201, a wrong one a 400 and nothing stored
    r, body = get(port, "/up/md5.txt", method="PUT", body=b"abc", headers={"Content-MD5": "kAFQmDzST7DWlj99KOF/cg=="})
    assert r.status == 201 and body == b"<h1>201</h1>\n"     # as Perlbal: no reason phrase
    assert r.reason == "" and r.getheader("Content-Length") == "13"
    assert (docroot / "up" / "md5.txt").read_bytes() == b"abc"
    r, body = get(port, "/up/bad.txt", method="PUT", body=b"abc", headers={"Content-MD5": "AAAAAAAAAAAAAAAAAAAAAA=="})
    assert r.status == 400 and b"Content-MD5 mismatch" in body
    assert not (docroot / "up" / "bad.txt").exists()
    r, _ = get(port, "/big.bin", method="PUT", body=b"z" * 200000)
    assert r.status == 413
    r, _ = get(port, "/up/new.txt", method="DELETE")
    assert r.status == 204
    assert not (docroot / "up" / "new.txt").exists()
    r, _ = get(port, "/up/new.txt", method="DELETE")
    assert r.status == 404


def test_web_server_put_and_delete_cannot_escape_through_symlinks(daemon, tmp_path, docroot):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("keep me")
    os.symlink(str(outside), str(docroot / "escape"))              # absolute symlink to a directory outside
    os.symlink("../outside", str(docroot / "rel"))                 # relative symlink climbing out
    port, mport = free_port(), free_port()
    extra = "  SET enable_put = on\n  SET enable_delete = on\n"
    start_perlbal(daemon, str(tmp_path), web_conf(port, mport, docroot, extra), port)
    for d in ("escape", "rel"):
        r, _ = get(port, "/%s/victim.txt" % d, method="DELETE")
        assert r.status in (403, 404)
        r, _ = get(port, "/%s/new.txt" % d, method="PUT", body=b"x")
        assert r.status == 403
        r, body = get(port, "/%s/victim.txt" % d)
        assert r.status in (403, 404) and b"keep me" not in body
    assert (outside / "victim.txt").read_text() == "keep me"
    assert sorted(os.listdir(outside)) == ["victim.txt"]
    r, _ = get(port, "/1k.txt")
    assert r.status == 200


def test_web_server_put_disabled_by_default(daemon, tmp_path, docroot):
    port, mport = free_port(), free_port()
    start_perlbal(daemon, str(tmp_path), web_conf(port, mport, docroot), port)
    r, _ = get(port, "/x.txt", method="PUT", body=b"no")
    assert r.status == 403
    assert not (docroot / "x.txt").exists()


# ------------------------------------------------------------- reverse_proxy

def test_reverse_proxy_to_nginx_keepalive(daemon, tmp_path, docroot):
    ng = Nginx(str(tmp_path), str(docroot))
    try:
        port, mport = free_port(), free_port()
        start_perlbal(daemon, str(tmp_path), proxy_conf(port, mport, [ng.port], "  SET verify_backend = on\n"), port)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        for _ in range(20):
            c.request("GET", "/1k.txt")
            r = c.getresponse()
            assert r.status == 200 and r.read() == b"x" * 1024
            assert "nginx" in r.getheader("Server")
        c.request("HEAD", "/1k.txt")
        r = c.getresponse()
        assert r.status == 200 and r.read() == b""
        c.request("GET", "/missing")
        r = c.getresponse()
        assert r.status == 404
        r.read()
        c.close()
        out = subprocess.run(["curl", "-s", "http://127.0.0.1:%d/sub/a.css" % port], capture_output=True, timeout=10)
        assert out.stdout == b"body{}\n"
        # backend connections were reused: far fewer connects than requests
        text = console(mport, "nodes")
        connects = int([l for l in text.splitlines() if " connects " in l][0].split()[-1])
        requests = int([l for l in text.splitlines() if " requests " in l][0].split()[-1])
        assert requests >= 22 and connects <= 4, text
    finally:
        ng.stop()


def test_reverse_proxy_pipelined_requests_answered_in_order(daemon, tmp_path):
    be = Backend()
    try:
        port, mport = free_port(), free_port()
        start_perlbal(daemon, str(tmp_path), proxy_conf(port, mport, [be.port]), port)
        reqs = b"".join(b"GET /p%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(5))
        reqs += b"POST /p5 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabcGET /p6 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        out = raw(port, reqs, timeout=10)
        bodies = [json.loads(part.split(b"\r\n\r\n", 1)[1].split(b"HTTP/1.1")[0]) for part in out.split(b"HTTP/1.1 200 OK")[1:]]
        assert [b["path"] for b in bodies] == ["/p%d" % i for i in range(7)]
        assert bodies[5]["body_len"] == 3
    finally:
        be.stop()


def test_reverse_proxy_forwarding_headers(daemon, tmp_path):
    be = Backend()
    try:
        port, mport = free_port(), free_port()
        conf = proxy_conf(port, mport, [be.port]) + "HEADER proxy insert X-Inserted: yes\nHEADER proxy remove X-Drop\n"
        start_perlbal(daemon, str(tmp_path), conf, port)
        r, body = get(port, "/p?q=1", headers={"X-Forwarded-For": "6.6.6.6", "X-Drop": "1", "X-Host": "evil"})
        info = json.loads(body)
        h = {k.lower(): v for k, v in info["headers"].items()}
        assert info["path"] == "/p?q=1"
        assert h["x-forwarded-for"] == "127.0.0.1"      # untrusted: spoofed value dropped
        assert "x-host" not in h and "x-drop" not in h
        assert h["x-inserted"] == "yes"
        # trusted upstream: the chain is kept and extended
        console(mport, "SET proxy.trusted_upstream_proxies = 127.0.0.0/8")
        r, body = get(port, "/p", headers={"X-Forwarded-For": "6.6.6.6"})
        h = {k.lower(): v for k, v in json.loads(body)["headers"].items()}
        assert h["x-forwarded-for"] == "6.6.6.6, 127.0.0.1"
    finally:
        be.stop()


def test_reverse_proxy_post_and_chunked_upload(daemon, tmp_path):
    be = Backend()
    try:
        port, mport = free_port(), free_port()
        start_perlbal(daemon, str(tmp_path), proxy_conf(port, mport, [be.port]), port)
        r, body = get(port, "/post", method="POST", body=b"a" * 300000)
        assert json.loads(body)["body_len"] == 300000
        out = subprocess.run(["curl", "-s", "-H", "Transfer-Encoding: chunked", "--data-binary", "@-",
                              "http://127.0.0.1:%d/chunked" % port], input=b"b" * 70000, capture_output=True,
                             timeout=10)
        assert json.loads(out.stdout)["body_len"] == 70000
        # Expect: 100-continue is answered by the proxy
        out = subprocess.run(["curl", "-s", "-H", "Expect: 100-continue", "--data-binary", "@-",
                              "http://127.0.0.1:%d/cont" % port], input=b"c" * 5000, capture_output=True, timeout=10)
        assert json.loads(out.stdout)["body_len"] == 5000
    finally:
        be.stop()


def test_verify_backend_sends_options_once(daemon, tmp_path):
    be = Backend()
    try:
        port, mport = free_port(), free_port()
        start_perlbal(daemon, str(tmp_path), proxy_conf(port, mport, [be.port], "  SET verify_backend = on\n"), port)
        for _ in range(3):
            r, _ = get(port, "/v")
            assert r.status == 200
        assert be.count("OPTIONS") >= 1
        assert be.count("GET") == 3
    finally:
        be.stop()


def test_reproxy_url_with_failover_and_reproxy_file(daemon, tmp_path, docroot):
    ng = Nginx(str(tmp_path), str(docroot))
    dead = free_port()
    target = tmp_path / "reproxied.bin"
    target.write_bytes(b"F" * 5000)

    def behaviour(h, info):
        if info["path"] == "/url":
            return 200, {"X-REPROXY-URL": "http://127.0.0.1:%d/gone http://127.0.0.1:%d/nope.txt "
                                          "http://127.0.0.1:%d/1k.txt" % (dead, ng.port, ng.port)}, b""
        if info["path"] == "/file":
            return 200, {"X-REPROXY-FILE": str(target), "Content-Type": "application/x-test",
                         "Cache-Control": "max-age=60"}, b""
        if info["path"] == "/badsize":
            return 200, {"X-REPROXY-FILE": str(target), "X-REPROXY-EXPECTED-SIZE": "10"}, b""
        return None

    be = Backend(behaviour)
    try:
        port, mport = free_port(), free_port()
        start_perlbal(daemon, str(tmp_path), proxy_conf(port, mport, [be.port], "  SET enable_reproxy = on\n"), port)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/url")
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"x" * 1024
        assert r.getheader("X-REPROXY-URL") is None
        c.request("GET", "/file")        # same connection: keep-alive survives a reproxy
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"F" * 5000
        assert r.getheader("Content-Type") == "application/x-test"
        assert r.getheader("Cache-Control") == "max-age=60"     # the backend's own headers reach the client
        assert r.getheader("X-REPROXY-FILE") is None
        c.request("GET", "/file", headers={"Range": "bytes=10-19"})
        r = c.getresponse()
        assert r.status == 206 and r.read() == b"F" * 10
        assert r.getheader("Content-Range") == "bytes 10-19/5000"
        c.request("GET", "/url", headers={"Range": "bytes=-100"})      # Range goes on to the reproxied URL
        r = c.getresponse()
        assert r.status == 206 and r.read() == b"x" * 100
        assert r.getheader("Content-Range") == "bytes 924-1023/1024"
        c.request("GET", "/badsize")
        r = c.getresponse()
        assert r.status == 404
        r.read()
        c.close()
        # the backend asked us for reproxy capability
        assert any(q["headers"].get("X-Proxy-Capabilities") == "reproxy-file" for q in be.requests)
    finally:
        be.stop()
        ng.stop()


def test_reproxy_cache_for_skips_the_backend(daemon, tmp_path, docroot):
    ng = Nginx(str(tmp_path), str(docroot))

    def behaviour(h, info):
        hdrs = {"X-REPROXY-URL": "http://127.0.0.1:%d/1k.txt" % ng.port}
        if info["path"] == "/cached":
            hdrs["X-REPROXY-CACHE-FOR"] = "30"
        return 200, hdrs, b""

    be = Backend(behaviour)
    try:
        port, mport = free_port(), free_port()
        start_perlbal(daemon, str(tmp_path), proxy_conf(port, mport, [be.port],
                                                        "  SET enable_reproxy = on\n  SET reproxy_cache_maxsize = 100\n"),
                      port)
        for path in ("/cached", "/cached", "/cached", "/plain", "/plain"):
            r, body = get(port, path)
            assert r.status == 200 and body == b"x" * 1024
        r, _ = get(port, "/cached", headers={"Host": "other.host"})   # the key is Host + URI
        assert r.status == 200
        paths = [q["path"] for q in be.requests if q["method"] == "GET"]
        assert paths.count("/cached") == 2 and paths.count("/plain") == 2
        assert "reproxy cache: max 100, hits 2" in console(mport, "show service proxy")
    finally:
        be.stop()
        ng.stop()


def test_backend_killed_under_load_gets_still_succeed(daemon, tmp_path, docroot):
    ng1, ng2 = Nginx(str(tmp_path), str(docroot)), Nginx(str(tmp_path), str(docroot))
    try:
        port, mport = free_port(), free_port()
        start_perlbal(daemon, str(tmp_path), proxy_conf(port, mport, [ng1.port, ng2.port]), port)
        failures, done = [], [0]
        lock = threading.Lock()

        def worker():
            c = None
            for _ in range(150):
                try:
                    if c is None:
                        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    c.request("GET", "/1k.txt")
                    r = c.getresponse()
                    body = r.read()
                    if r.status != 200 or body != b"x" * 1024:
                        failures.append(r.status)
                    if r.getheader("Connection", "").lower() == "close":
                        c.close()
                        c = None
                except Exception as e:  # a failed request is what we test for
                    failures.append(repr(e))
                    c = None
                with lock:
                    done[0] += 1

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        while done[0] < 300:
            time.sleep(0.01)
        ng1.stop()                      # kill one backend mid-load
        for t in threads:
            t.join(60)
        assert done[0] == 1200
        assert failures == []
        # the dead node is known to the console; the live one took the load
        nodes = console(mport, "nodes")
        assert "127.0.0.1:%d requests" % ng1.port in nodes
        assert int(nodes.split("127.0.0.1:%d requests " % ng2.port)[1].split()[0]) > 0
    finally:
        ng1.stop()
        ng2.stop()


def test_dead_node_is_skipped_with_retry_and_returns_when_back(daemon, tmp_path):
    live = Backend()
    dead_port = free_port()
    revived = None
    try:
        port, mport = free_port(), free_port()
        # no backend keep-alive: every request opens a backend connection, so
        # node choice (and the dead mark) is exercised on each one
        start_perlbal(daemon, str(tmp_path), proxy_conf(port, mport, [dead_port, live.port],
                                                        "  SET persist_backend = off\n"), port)
        for i in range(20):                      # fresh connections: each may pick the dead node first
            r, body = get(port, "/r%d" % i, headers={"Connection": "close"})
            assert r.status == 200 and json.loads(body)["port"] == live.port
        nodes = console(mport, "nodes 127.0.0.1:%d" % dead_port)
        assert "127.0.0.1:%d failures" % dead_port in nodes
        assert int(nodes.split("failures ")[1].split()[0]) >= 1
        revived = Backend(port=dead_port)        # the node comes back
        deadline = time.time() + 15
        while revived.count() == 0:
            assert time.time() < deadline, "revived node never used again"
            r, _ = get(port, "/again", headers={"Connection": "close"})
            assert r.status == 200
            time.sleep(0.1)
        assert "127.0.0.1:%d dead 0" % dead_port in console(mport, "nodes 127.0.0.1:%d" % dead_port)
    finally:
        live.stop()
        if revived:
            revived.stop()


def test_enable_error_retries_retries_gets_after_500(daemon, tmp_path):
    hits = {}

    def behaviour(h, info):
        n = hits[info["path"]] = hits.get(info["path"], 0) + 1
        if info["path"].startswith("/flaky") and n <= 2:
            return 500, {}, b"oops"
        return None

    be = Backend(behaviour)
    try:
        port, mport = free_port(), free_port()
        start_perlbal(daemon, str(tmp_path), proxy_conf(port, mport, [be.port],
                                                        "  SET enable_error_retries = on\n"
                                                        "  SET error_retry_schedule = 0,.1,.1\n"), port)
        r, body = get(port, "/flaky1")
        assert r.status == 200 and json.loads(body)["path"] == "/flaky1"
        assert hits["/flaky1"] == 3
        r, _ = get(port, "/flaky2", method="POST", body=b"x")   # not idempotent: the 500 goes to the client
        assert r.status == 500 and hits["/flaky2"] == 1
        console(mport, "SET proxy.error_retry_schedule = 0")        # one retry only
        r, _ = get(port, "/flaky3")
        assert r.status == 500 and hits["/flaky3"] == 2
    finally:
        be.stop()


def test_no_live_backend_gives_503_and_daemon_keeps_serving(daemon, tmp_path):
    port, mport = free_port(), free_port()
    start_perlbal(daemon, str(tmp_path), proxy_conf(port, mport, [free_port()]), port)
    r, _ = get(port, "/x")
    assert r.status in (502, 503)
    assert "ENABLED" in console(mport, "show service")


def test_high_priority_cookie_jumps_the_queue(daemon, tmp_path):
    """One single-process backend, verify_backend on (as Perlbal: a backend
    connection is used only once the application answered OPTIONS on it).
    Requests queue while it is busy; the high-priority one (cookie) arrived
    last but is served first."""
    def slow(h, info):
        if info["method"] != "OPTIONS":
            time.sleep(1.0 if info["path"] == "/first" else 0.2)
        return None

    be = Backend(slow, threaded=False)
    try:
        port, mport = free_port(), free_port()
        extra = ("  SET verify_backend = on\n  SET persist_backend = off\n"
                 "  SET high_priority_cookie = vip\n  SET high_priority_cookie_contents = gold\n")
        start_perlbal(daemon, str(tmp_path), proxy_conf(port, mport, [be.port], extra), port)
        results = {}

        def req(path, cookie=None):
            r, _ = get(port, path, headers={"Cookie": cookie} if cookie else {})
            results[path] = r.status

        ts = []
        for path, cookie in [("/first", None), ("/n1", None), ("/n2", None), ("/n3", None),
                             ("/vip", "a=b; vip=goldmember")]:
            t = threading.Thread(target=req, args=(path, cookie))
            t.start()
            ts.append(t)
            time.sleep(0.08)
        deadline = time.time() + 1.0            # the queues, seen from the console
        while "proxy-highpri.count 1" not in console(mport, "queues"):
            assert time.time() < deadline
            time.sleep(0.02)
        assert "proxy-normal.count 3" in console(mport, "queues")
        for t in ts:
            t.join(20)
        assert all(v == 200 for v in results.values()) and len(results) == 5
        order = [r["path"] for r in be.requests if r["method"] == "GET"]
        assert order == ["/first", "/vip", "/n1", "/n2", "/n3"]
    finally:
        be.stop()


# --------------------------------------------------------------- selector

def test_selector_vhosts(daemon, tmp_path, docroot):
    other = tmp_path / "other"
    other.mkdir()
    (other / "index.html").write_text("other site\n")
    port, mport = free_port(), free_port()
    conf = """
LOAD vhosts
CREATE SERVICE site
  SET role = web_server
  SET docroot = %s
ENABLE site
CREATE SERVICE example
  SET role = web_server
  SET docroot = %s
ENABLE example
CREATE SERVICE vdemo
  SET listen = 127.0.0.1:%d
  SET role = selector
  SET plugins = vhosts
  SET persist_client = on
  VHOST *.site.com = site
  VHOST www.example.com = example
ENABLE vdemo
CREATE SERVICE mgmt
  SET role = management
  SET listen = 127.0.0.1:%d
ENABLE mgmt
""" % (docroot, other, port, mport)
    start_perlbal(daemon, str(tmp_path), conf, port)
    r, body = get(port, "/", headers={"Host": "a.b.site.com"})
    assert b"home" in body
    r, body = get(port, "/", headers={"Host": "www.example.com:8080"})
    assert b"other site" in body
    r, body = get(port, "/", headers={"Host": "unknown.org"})
    assert r.status == 404
    # add a mapping live
    assert "OK" in console(mport, "VHOST vdemo unknown.org = example")
    r, body = get(port, "/", headers={"Host": "unknown.org"})
    assert b"other site" in body


# ------------------------------------------------------- management console

def test_management_console_changes_take_effect_live(daemon, tmp_path):
    be1, be2 = Backend(), Backend()
    try:
        port, mport = free_port(), free_port()
        start_perlbal(daemon, str(tmp_path), proxy_conf(port, mport, [be1.port]), port)
        r, body = get(port, "/")
        assert json.loads(body)["port"] == be1.port
        out = console(mport, "POOL backends ADD 127.0.0.1:%d" % be2.port, "POOL backends REMOVE 127.0.0.1:%d" % be1.port)
        assert out.count("OK") == 2
        # new connections go to be2 only (old idle backend conns may still exist: use fresh clients)
        seen = set()
        for _ in range(10):
            r, body = get(port, "/", headers={"Connection": "close"})
            seen.add(json.loads(body)["port"])
        assert be2.port in seen
        out = console(mport, "show pool backends")
        assert "127.0.0.1:%d" % be2.port in out and "127.0.0.1:%d" % be1.port not in out
        # a parameter changes live
        out = console(mport, "SET proxy.persist_client = off")
        assert "OK" in out
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/")
        r = c.getresponse()
        r.read()
        assert r.getheader("Connection") == "close"
        # disable / enable the service
        assert "OK" in console(mport, "DISABLE proxy")

        def refused():
            # the listening socket closes on its loop right after the
            # command's answer: wait for it, then connects are refused
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                return False
            except OSError:
                return True
        deadline = time.time() + 5
        while not refused():
            assert time.time() < deadline, "still accepting 5 s after DISABLE"
            time.sleep(0.05)
        assert "proxy 127.0.0.1:%d DISABLED" % port in console(mport, "show service")
        assert "OK" in console(mport, "ENABLE proxy")
        time.sleep(0.1)
        r, _ = get(port, "/")
        assert r.status == 200
        # a new service created live
        wport = free_port()
        out = console(mport, "CREATE SERVICE live", "SET role = web_server", "SET listen = 127.0.0.1:%d" % wport,
                      "SET docroot = %s" % tmp_path, "ENABLE live")
        assert out.count("OK") == 5, out
        time.sleep(0.1)
        r, _ = get(wport, "/perlbal.conf")
        assert r.status == 200
    finally:
        be1.stop()
        be2.stop()


def test_management_inspection_commands(daemon, tmp_path):
    be = Backend()
    try:
        port, mport = free_port(), free_port()
        start_perlbal(daemon, str(tmp_path), proxy_conf(port, mport, [be.port]), port)
        get(port, "/")
        out = console(mport, "show service proxy")
        assert "SERVICE proxy" in out and "role: reverse_proxy" in out and "pool: backends" in out
        out = console(mport, "show pool")
        assert "backends nodes 1" in out and "backends services 1" in out
        out = console(mport, "uptime")
        assert "starttime " in out and "version " in out and out.rstrip().endswith(".")
        assert "version 1.80" in console(mport, "version")
        out = console(mport, "nodes")
        assert "127.0.0.1:%d requests 1" % be.port in out and "127.0.0.1:%d dead 0" % be.port in out
        out = console(mport, "proc")
        assert "pid: " in out and "reqs: " in out
        out = console(mport, "states", "queues", "socks", "fd", "plugins", "help")
        assert "proxy-normal.count 0" in out and "max " in out
        out = console(mport, "frobnicate", "SET nosuch.param = 1", "CREATE POOL backends")
        assert out.count("ERROR:") == 3
    finally:
        be.stop()


def test_several_loop_threads_serve_and_see_live_changes(daemon, tmp_path, docroot):
    be1, be2 = Backend(), Backend()
    try:
        port, mport, wport = free_port(), free_port(), free_port()
        conf = proxy_conf(port, mport, [be1.port]) + web_conf(wport, free_port(), docroot).split("CREATE SERVICE mgmt")[0]
        start_perlbal(daemon, str(tmp_path), conf, port, extra_args=["--threads", "2"])
        errors, seen = [], set()
        lock = threading.Lock()

        def worker(n):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            w = http.client.HTTPConnection("127.0.0.1", wport, timeout=10)
            try:
                for i in range(n):
                    c.request("GET", "/t%d" % i)
                    r = c.getresponse()
                    info = json.loads(r.read())
                    w.request("GET", "/1k.txt")
                    r2 = w.getresponse()
                    body = r2.read()
                    with lock:
                        seen.add(info["port"])
                        if r.status != 200 or r2.status != 200 or body != b"x" * 1024:
                            errors.append((r.status, r2.status))
            except Exception as e:
                errors.append(repr(e))
            finally:
                c.close()
                w.close()

        ts = [threading.Thread(target=worker, args=(25,)) for _ in range(16)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        assert errors == [] and seen == {be1.port}
        # live pool change from the console reaches every loop
        out = console(mport, "POOL backends ADD 127.0.0.1:%d" % be2.port, "POOL backends REMOVE 127.0.0.1:%d" % be1.port)
        assert out.count("OK") == 2
        seen.clear()
        ts = [threading.Thread(target=worker, args=(5,)) for _ in range(16)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        assert errors == [] and seen == {be2.port}
    finally:
        be1.stop()
        be2.stop()


def test_shutdown_graceful_from_console(daemon, tmp_path, docroot):
    port, mport = free_port(), free_port()
    d = start_perlbal(daemon, str(tmp_path), web_conf(port, mport, docroot), port)
    assert "OK" in console(mport, "shutdown graceful")
    d.proc.wait(15)
    assert d.proc.returncode == 0


def test_large_response_to_a_slow_reader_is_bounded_by_back_pressure(daemon, tmp_path, docroot):
    big = os.urandom(1 << 20) * 32                      # 32 MiB from nginx
    (docroot / "big.bin").write_bytes(big)
    ng = Nginx(str(tmp_path), str(docroot))
    try:
        port, mport = free_port(), free_port()
        d = start_perlbal(daemon, str(tmp_path), proxy_conf(port, mport, [ng.port]), port)

        def rss_kb():
            with open("/proc/%d/status" % d.pid) as f:
                return int([l for l in f if l.startswith("VmRSS:")][0].split()[1])

        before = rss_kb()
        s = socket.create_connection(("127.0.0.1", port), timeout=20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(1.5)                                  # not reading: perlbal must stop reading nginx
        grown = rss_kb() - before
        got = bytearray()
        head_end = -1
        while head_end < 0 or len(got) - head_end < len(big):
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += chunk
            if head_end < 0 and b"\r\n\r\n" in got:
                head_end = got.index(b"\r\n\r\n") + 4
        s.close()
        assert bytes(got[head_end:]) == big
        # without back-pressure all 32 MiB would sit in perlbal; ASan builds add allocator overhead
        assert grown < 16 * 1024, "perlbal buffered %d KiB for a client that does not read" % grown
    finally:
        ng.stop()
