"""perlbal's bundled plugins, loaded with LOAD and turned on per service with
SET plugins, as in Perl Perlbal: AccessControl (ACCESS commands, live),
MaxContentLength, Redirect (REDIRECT HOST), Stats (stats / recent console
commands), Queues (X-Queue-* headers to the backend), AutoRemoveLeadingDir,
Throttle (delays, bans, max concurrent, whitelist)."""
import http.client
import json
import os
import threading
import time

import pytest

from conftest import bin_path, free_port
from pb_helpers import Backend, console, get, start_perlbal

pytestmark = pytest.mark.skipif(not os.path.exists(bin_path("perlbal")), reason="perlbal not built")


def web(port, mport, root, plugins, extra=""):
    return """
LOAD AccessControl
LOAD MaxContentLength
LOAD Redirect
LOAD Stats
LOAD Queues
LOAD AutoRemoveLeadingDir
CREATE SERVICE web
  SET role = web_server
  SET listen = 127.0.0.1:%d
  SET docroot = %s
  SET persist_client = on
  SET plugins = %s
%s
ENABLE web
CREATE SERVICE mgmt
  SET role = management
  SET listen = 127.0.0.1:%d
ENABLE mgmt
""" % (port, root, plugins, extra, mport)


def proxy(port, mport, be_port, plugins, extra=""):
    return """
LOAD Stats
LOAD Queues
LOAD MaxContentLength
CREATE POOL p
  POOL p ADD 127.0.0.1:%d
CREATE SERVICE proxy
  SET role = reverse_proxy
  SET listen = 127.0.0.1:%d
  SET pool = p
  SET persist_client = on
  SET persist_backend = on
  SET plugins = %s
%s
ENABLE proxy
CREATE SERVICE mgmt
  SET role = management
  SET listen = 127.0.0.1:%d
ENABLE mgmt
""" % (be_port, port, plugins, extra, mport)


@pytest.fixture
def root(tmp_path):
    d = tmp_path / "static"
    d.mkdir()
    (d / "a.txt").write_text("A\n")
    return d


def test_access_control_rules_and_live_changes(daemon, tmp_path, root):
    port, mport = free_port(), free_port()
    start_perlbal(daemon, str(tmp_path), web(port, mport, root, "AccessControl",
                                             "  ACCESS policy deny\n  ACCESS allow ip 127.0.0.1\n"), port)
    r, body = get(port, "/a.txt")
    assert r.status == 200 and body == b"A\n"
    out = console(mport, "USE web", "ACCESS reset", "ACCESS deny netmask 127.0.0.0/8")
    assert "ERROR" not in out
    r, body = get(port, "/a.txt")
    assert r.status == 403 and b"Access denied" in body
    console(mport, "USE web", "ACCESS reset", "ACCESS policy deny", "ACCESS allow netmask 127.0.0.0/8")
    r, _ = get(port, "/a.txt")
    assert r.status == 200
    assert "ERROR" in console(mport, "USE web", "ACCESS allow host x")


def test_max_content_length_gives_413(daemon, tmp_path):
    be = Backend()
    try:
        port, mport = free_port(), free_port()
        start_perlbal(daemon, str(tmp_path), proxy(port, mport, be.port, "MaxContentLength",
                                                   "  SET max_content_length = 100\n"), port)
        r, body = get(port, "/small", method="POST", body=b"x" * 100)
        assert r.status == 200 and json.loads(body)["body_len"] == 100
        r, _ = get(port, "/big", method="POST", body=b"x" * 101)
        assert r.status == 413
        assert be.count("POST") == 1
    finally:
        be.stop()


def test_redirect_host(daemon, tmp_path, root):
    port, mport = free_port(), free_port()
    start_perlbal(daemon, str(tmp_path), web(port, mport, root, "Redirect",
                                             "  REDIRECT HOST example.com www.example.net\n"), port)
    r, _ = get(port, "/some/path?q=1", headers={"Host": "example.com:8080"})
    assert r.status == 301 and r.getheader("Location") == "http://www.example.net/some/path?q=1"
    r, body = get(port, "/a.txt", headers={"Host": "other.org"})
    assert r.status == 200 and body == b"A\n"


def test_stats_counts_and_recent(daemon, tmp_path, root):
    be = Backend()
    try:
        port, mport, wport = free_port(), free_port(), free_port()
        conf = proxy(port, mport, be.port, "Stats") + """
CREATE SERVICE web
  SET role = web_server
  SET listen = 127.0.0.1:%d
  SET docroot = %s
  SET plugins = stats
ENABLE web
""" % (wport, root)
        start_perlbal(daemon, str(tmp_path), conf, port)
        for _ in range(3):
            assert get(port, "/p")[0].status == 200
        for _ in range(2):
            assert get(wport, "/a.txt")[0].status == 200
        lines = console(mport, "stats").splitlines()
        row = {tuple(l.split()[:2]): int(l.split()[2]) for l in lines if len(l.split()) == 3}
        assert row[("proxy", "proxy_requests")] == 3
        assert row[("web", "web_requests")] == 2
        assert row[("web", "files_sent")] == 2
        assert row[("total", "proxy_requests")] == 3
        recent = [l for l in console(mport, "recent").splitlines() if l.startswith("proxy ")]
        assert len(recent) == 3 and recent[0].endswith(" /p")
    finally:
        be.stop()


def test_queues_headers_reach_backend(daemon, tmp_path):
    be = Backend()
    try:
        port, mport = free_port(), free_port()
        start_perlbal(daemon, str(tmp_path), proxy(port, mport, be.port, "Queues"), port)
        r, body = get(port, "/q")
        h = json.loads(body)["headers"]
        assert h["X-Queue-Count"] == "0" and h["X-HP-Queue-Count"] == "0"
        assert "X-Queue-Age" in h and "X-HP-Queue-Age" in h
    finally:
        be.stop()


def test_auto_remove_leading_dir(daemon, tmp_path, root):
    port, mport = free_port(), free_port()
    start_perlbal(daemon, str(tmp_path), web(port, mport, root, "AutoRemoveLeadingDir"), port)
    r, body = get(port, "/static/a.txt")
    assert r.status == 200 and body == b"A\n"
    r, body = get(port, "/a.txt")
    assert r.status == 200 and body == b"A\n"


def test_unknown_plugin_is_refused(daemon, tmp_path, root):
    port, mport = free_port(), free_port()
    start_perlbal(daemon, str(tmp_path), web(port, mport, root, "none"), port)
    assert "ERROR" in console(mport, "LOAD NoSuchPlugin")
    assert "OK" in console(mport, "LOAD stats")


def throttle_conf(port, mport, be_port, extra):
    return """
LOAD Throttle
CREATE POOL p
  POOL p ADD 127.0.0.1:%d
CREATE SERVICE proxy
  SET role = reverse_proxy
  SET listen = 127.0.0.1:%d
  SET pool = p
  SET persist_client = on
  SET persist_backend = on
  SET plugins = Throttle
%s
ENABLE proxy
CREATE SERVICE mgmt
  SET role = management
  SET listen = 127.0.0.1:%d
ENABLE mgmt
""" % (be_port, port, extra, mport)


def timed_get(port, path):
    t = time.time()
    r, _ = get(port, path)
    return r.status, time.time() - t


def test_throttle_delays_repeats_then_bans(daemon, tmp_path):
    be = Backend()
    try:
        port, mport = free_port(), free_port()
        start_perlbal(daemon, str(tmp_path), throttle_conf(port, mport, be.port, """
  SET throttle_threshold_seconds = 30
  SET initial_delay = 1
  SET max_delay = 5
  SET ban_threshold = 3
  SET ban_expiration = 60
  SET max_concurrent = 5
"""), port)
        # As Perlbal's in-memory store: a record lives throttle_threshold_seconds
        # after an allowed request and <delay> after a held one, so the delays
        # grow for a client that comes back before its last delay ran out.
        s1, t1 = timed_get(port, "/a")       # unseen: straight through
        res = {}

        def req(path):
            res[path] = timed_get(port, path)

        ts = []
        for path in ("/b", "/c"):
            ts.append(threading.Thread(target=req, args=(path,)))
            ts[-1].start()
            time.sleep(0.15)
        assert timed_get(port, "/d")[0] == 403   # 3rd violation while held: banned
        for t in ts:
            t.join(10)
        assert s1 == 200 and res["/b"][0] == 200 and res["/c"][0] == 200
        assert res["/b"][1] >= 0.95              # 1st violation: initial_delay
        assert res["/c"][1] >= 1.95              # 2nd: twice that
        assert timed_get(port, "/e")[0] == 403   # still banned
        assert [q["path"] for q in be.requests] == ["/a", "/b", "/c"]
    finally:
        be.stop()


def test_throttle_whitelist_and_max_concurrent(daemon, tmp_path):
    def slow(h, info):
        if info["path"] == "/slow":
            time.sleep(1.0)
        return None

    be = Backend(slow)
    wl = tmp_path / "white.txt"
    wl.write_text("# trusted\n10.0.0.0/8\n")
    try:
        port, mport = free_port(), free_port()
        start_perlbal(daemon, str(tmp_path), throttle_conf(port, mport, be.port, """
  SET whitelist_file = %s
  SET default_action = allow
  SET max_concurrent = 1
""" % wl), port)
        results = []
        t = threading.Thread(target=lambda: results.append(get(port, "/slow")[0].status))
        t.start()
        time.sleep(0.3)
        assert get(port, "/second")[0].status == 403     # two in flight from one IP
        t.join(10)
        assert results == [200]
        assert get(port, "/after")[0].status == 200      # the first one ended
        # whitelisting our address: never throttled or limited
        wl.write_text("127.0.0.0/8\n")
        assert "OK" in console(mport, "SET proxy.whitelist_file = %s" % wl, "SET proxy.default_action = throttle")
        start = time.time()
        for i in range(4):
            assert get(port, "/w%d" % i)[0].status == 200
        assert time.time() - start < 2.5                    # throttled, these would take 1+2+4 s
        assert "ERROR" in console(mport, "SET proxy.default_action = sometimes")
    finally:
        be.stop()


def test_access_queue_low_is_served_after_normal_requests(daemon, tmp_path):
    """ACCESS queue_low puts a client's requests in the low-priority queue:
    with one single-process backend busy, a low-priority request that came
    first is served after the normal ones queued behind it."""
    def slow(h, info):
        if info["method"] != "OPTIONS":
            time.sleep(1.0 if info["path"] == "/first" else 0.2)
        return None

    be = Backend(slow, threaded=False)
    try:
        port, mport = free_port(), free_port()
        conf = """
LOAD AccessControl
CREATE POOL p
  POOL p ADD 127.0.0.1:%d
CREATE SERVICE proxy
  SET role = reverse_proxy
  SET listen = 127.0.0.1:%d
  SET pool = p
  SET persist_client = on
  SET verify_backend = on
  SET plugins = AccessControl
  ACCESS queue_low ip 127.0.0.2
ENABLE proxy
CREATE SERVICE mgmt
  SET role = management
  SET listen = 127.0.0.1:%d
ENABLE mgmt
""" % (be.port, port, mport)
        start_perlbal(daemon, str(tmp_path), conf, port)
        results = {}

        def req(path, source):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=20, source_address=(source, 0))
            c.request("GET", path)
            results[path] = c.getresponse().status
            c.close()

        ts = []
        for path, source in [("/first", "127.0.0.1"), ("/low", "127.0.0.2"), ("/n1", "127.0.0.1"),
                             ("/n2", "127.0.0.1")]:
            ts.append(threading.Thread(target=req, args=(path, source)))
            ts[-1].start()
            time.sleep(0.1)
        deadline = time.time() + 1.0
        while "proxy-lowpri.count 1" not in console(mport, "queues"):
            assert time.time() < deadline
            time.sleep(0.02)
        for t in ts:
            t.join(20)
        assert results == {"/first": 200, "/low": 200, "/n1": 200, "/n2": 200}
        assert [r["path"] for r in be.requests if r["method"] == "GET"] == ["/first", "/n1", "/n2", "/low"]
    finally:
        be.stop()
