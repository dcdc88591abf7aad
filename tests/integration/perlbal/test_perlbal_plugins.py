"""perlbal's bundled plugins, loaded with LOAD and turned on per service with
SET plugins, as in Perl Perlbal: AccessControl (ACCESS commands, live),
MaxContentLength, Redirect (REDIRECT HOST), Stats (stats / recent console
commands), Queues (X-Queue-* headers to the backend), AutoRemoveLeadingDir,
Throttle (delays, bans, max concurrent, whitelist), EchoService (the `echo`
role and its echo_delay tunable)."""
import http.client
import json
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import bin_path, free_port
from pb_helpers import Backend, console, get, mgmt_conf, recv_all, start_perlbal

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
""" % (port, root, plugins, extra) + mgmt_conf(mport)


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
""" % (be_port, port, plugins, extra) + mgmt_conf(mport)


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
""" % (be_port, port, extra) + mgmt_conf(mport)


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
""" % (be.port, port) + mgmt_conf(mport)
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


# ---- EchoService: the `echo` role ----

def echo_conf(port, dport, mport, load=True):
    return ("LOAD EchoService\n" if load else "") + """
CREATE SERVICE echo
  SET role = echo
  SET listen = 127.0.0.1:%d
ENABLE echo
CREATE SERVICE echo_delayed
  SET role = echo
  SET listen = 127.0.0.1:%d
  SET echo_delay = 1
ENABLE echo_delayed
""" % (port, dport) + mgmt_conf(mport)


def recv_exactly(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(min(n - len(data), 65536))
        assert chunk, "closed after %d bytes" % len(data)
        data += chunk
    return data


def start_echo(daemon, tmp_path):
    port, dport, mport = free_port(), free_port(), free_port()
    d = start_perlbal(daemon, str(tmp_path), echo_conf(port, dport, mport), port)
    return d, port, dport, mport


def test_echo_delay_does_not_block_later_lines(daemon, tmp_path):
    _, port, dport, _ = start_echo(daemon, tmp_path)
    with socket.create_connection(("127.0.0.1", dport), timeout=10) as s:
        t0 = time.monotonic()
        s.sendall(b"one\ntwo\r\n")
        time.sleep(0.5)
        s.sendall(b"three\n")                  # read while the first two wait
        assert recv_exactly(s, 10) == b"one\r\ntwo\r\n"
        t1 = time.monotonic() - t0
        assert recv_exactly(s, 7) == b"three\r\n"
        t2 = time.monotonic() - t0
        assert t1 >= 1.0 and t2 >= 1.5 and t2 < t1 + 1.0   # its own 1 s, not queued behind another
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"\n\r\nx\n")                 # empty lines come back empty
        assert recv_exactly(s, 7) == b"\r\n\r\nx\r\n"


def test_echo_half_close_gets_pending_echoes_then_eof(daemon, tmp_path):
    _, port, dport, _ = start_echo(daemon, tmp_path)
    with socket.create_connection(("127.0.0.1", dport), timeout=10) as s:
        s.sendall(b"a\n")
        time.sleep(0.3)
        s.sendall(b"b\nunterminated")
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b"a\r\nb\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"x\ny\n")
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b"x\r\ny\r\n"


def test_echo_line_limit_closes_and_daemon_keeps_serving(daemon, tmp_path):
    _, port, dport, _ = start_echo(daemon, tmp_path)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        line = b"L" * (16 * 1024)               # the longest line allowed
        s.sendall(line + b"\n")
        assert recv_exactly(s, len(line) + 2) == line + b"\r\n"
    for p, head in ((port, b""), (dport, b"pending\n")):
        with socket.create_connection(("127.0.0.1", p), timeout=5) as s:
            s.sendall(head + b"x" * (16 * 1024 + 100))
            try:
                out = recv_all(s)
            except ConnectionResetError:
                out = b""
            assert out == b""                   # closed at once (a pending delayed echo is dropped)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"still here\n")
        assert recv_exactly(s, 12) == b"still here\r\n"


def test_echo_many_delayed_lines_come_back_in_order(daemon, tmp_path):
    """More delayed bytes than perlbal holds (256 KiB): reading pauses until
    echoes go out; nothing is lost or reordered."""
    _, _, dport, _ = start_echo(daemon, tmp_path)
    lines = [b"%06d " % i + b"y" * 1000 for i in range(400)]
    with socket.create_connection(("127.0.0.1", dport), timeout=10) as s:
        s.sendall(b"".join(l + b"\n" for l in lines))
        expect = b"".join(l + b"\r\n" for l in lines)
        assert recv_exactly(s, len(expect)) == expect


def test_echo_graceful_stop_sends_pending_echo(daemon, tmp_path):
    d, port, dport, _ = start_echo(daemon, tmp_path)
    with socket.create_connection(("127.0.0.1", dport), timeout=10) as s, \
            socket.create_connection(("127.0.0.1", port), timeout=10) as idle:
        s.sendall(b"bye\n")
        time.sleep(0.2)
        d.proc.send_signal(signal.SIGTERM)
        assert recv_all(s) == b"bye\r\n"          # then closed
        assert recv_all(idle) == b""              # an idle echo client is closed at once
    d.proc.wait(10)
    assert d.proc.returncode == 0


def test_echo_role_and_tunable_need_load(daemon, tmp_path):
    def start_err(conf):
        path = tmp_path / "bad.conf"
        path.write_text(conf)
        out = subprocess.run([bin_path("perlbal"), "-c", str(path)], capture_output=True, text=True, timeout=10)
        assert out.returncode != 0
        return out.stderr

    port, dport, mport = free_port(), free_port(), free_port()
    unloaded = start_err(echo_conf(port, dport, mport, load=False))
    bogus = start_err(echo_conf(port, dport, mport, load=False).replace("role = echo", "role = bogus"))
    assert "Unknown service role 'echo'" in unloaded
    strip_pid = lambda text: re.sub(r"perlbal\[\d+\]", "", text)
    assert strip_pid(unloaded).replace("'echo'", "'bogus'") == strip_pid(bogus)   # the same error
    err = start_err("LOAD EchoService\nCREATE SERVICE w\n  SET role = web_server\n  SET echo_delay = 2\n")
    assert "The 'echo_delay' option can only be set on a 'echo' service" in err
    err = start_err("LOAD EchoService\nCREATE SERVICE e\n  SET role = echo\n  SET echo_delay = soon\n")
    assert "Expecting integer value for parameter 'echo_delay'" in err
    err = start_err("CREATE SERVICE e\n  SET role = web_server\n  SET echo_delay = 2\n")
    assert "Unknown parameter 'echo_delay'" in err
    # live: a new echo service from the console
    _, port, dport, mport = start_echo(daemon, tmp_path)
    p3 = free_port()
    out = console(mport, "CREATE SERVICE e3", "SET role = echo", "SET listen = 127.0.0.1:%d" % p3,
                  "SET echo_delay = -1", "ENABLE e3")
    assert out.count("OK") == 4 and "Expecting integer value" in out
    with socket.create_connection(("127.0.0.1", p3), timeout=5) as s:
        s.sendall(b"live\n")
        assert recv_exactly(s, 6) == b"live\r\n"


def mc_get(port, key):
    """The raw value of key on a memcached (text protocol), or None."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"get %s\r\n" % key.encode())
        out = b""
        while not out.endswith(b"END\r\n"):
            chunk = s.recv(65536)
            assert chunk
            out += chunk
    if not out.startswith(b"VALUE "):
        return None
    head, rest = out.split(b"\r\n", 1)
    n = int(head.split()[3])
    return rest[:n]


def test_throttle_state_shared_between_perlbals_through_memcached(daemon, tmp_path):
    """As Perlbal's memcached store: two perlbals pointing at one memcached
    see each other's clients; the record is Perl's pack('FS', start, count)
    under instance_name . ip."""
    mc = daemon("memcached", ["-p", "{port}", "-l", "127.0.0.1", "-t", "1", "-U", "0"])
    be = Backend()
    try:
        ports = []
        for i in range(2):
            port, mport = free_port(), free_port()
            (tmp_path / str(i)).mkdir()
            start_perlbal(daemon, str(tmp_path / str(i)), throttle_conf(port, mport, be.port, """
  SET throttle_threshold_seconds = 30
  SET initial_delay = 2
  SET max_delay = 5
  SET max_concurrent = 5
  SET memcached_servers = 127.0.0.1:%d
  SET memcached_async_clients = 2
  SET instance_name = shared-
""" % mc.port), port)
            ports.append(port)
        s1, t1 = timed_get(ports[0], "/a")            # unseen anywhere: straight through
        assert s1 == 200 and t1 < 0.9
        rec = mc_get(mc.port, "shared-127.0.0.1")
        assert rec is not None and len(rec) == 10
        start, count = struct.unpack("<dH", rec)
        assert abs(start - time.time()) < 5 and count == 0
        res = []
        t = threading.Thread(target=lambda: res.append(timed_get(ports[1], "/b")))
        t.start()                                     # the other perlbal knows this client: held
        # The record's expiry is the delay; memcached counts whole seconds, so a
        # 1 s record can vanish at once: the delay here is 2 s.
        deadline = time.time() + 1.8                  # while held, the record says 1 violation
        while True:                                   # (it lives as long as the delay, as Perlbal's)
            rec = mc_get(mc.port, "shared-127.0.0.1")
            if rec and struct.unpack("<dH", rec)[1] == 1:
                break
            assert time.time() < deadline, rec
            time.sleep(0.05)
        assert struct.unpack("<dH", rec)[0] >= start
        t.join(10)
        assert res[0][0] == 200 and res[0][1] >= 0.95
        assert [q["path"] for q in be.requests] == ["/a", "/b"]
    finally:
        be.stop()


def test_throttle_with_memcached_down_lets_requests_through(daemon, tmp_path):
    """A memcached that cannot be reached counts as "unseen" (Perlbal's
    callback without a value): nothing is held, nothing hangs."""
    be = Backend()
    try:
        port, mport = free_port(), free_port()
        start_perlbal(daemon, str(tmp_path), throttle_conf(port, mport, be.port, """
  SET throttle_threshold_seconds = 30
  SET initial_delay = 1
  SET max_concurrent = 5
  SET memcached_servers = 127.0.0.1:%d
""" % free_port()), port)
        for p in ("/a", "/b", "/c"):
            s, t = timed_get(port, p)
            assert s == 200 and t < 0.9
        assert "ERROR" in console(mport, "SET proxy.memcached_servers = 127.0.0.1:notaport")
    finally:
        be.stop()


def test_throttle_counts_ipv6_clients(daemon, tmp_path):
    """An IPv6 client has its own record: its repeat request is held, and an
    IPv4 client's record is not its own."""
    be = Backend()
    try:
        port, mport = free_port(), free_port()
        conf = throttle_conf(port, mport, be.port, """
  SET throttle_threshold_seconds = 30
  SET initial_delay = 1
  SET max_delay = 5
  SET max_concurrent = 5
""").replace("SET listen = 127.0.0.1:%d" % port, "SET listen = [::]:%d" % port)
        start_perlbal(daemon, str(tmp_path), conf, port)

        def timed6(path):
            t = time.time()
            r, _ = get(port, path, host="::1")
            return r.status, time.time() - t

        s1, t1 = timed6("/a")                 # unseen: straight through
        assert s1 == 200 and t1 < 0.9
        s2, t2 = timed6("/b")                 # again within the threshold: held initial_delay
        assert s2 == 200 and t2 >= 0.95
        s3, t3 = timed_get(port, "/c")        # 127.0.0.1 is another client: unseen
        assert s3 == 200 and t3 < 0.9
    finally:
        be.stop()


def test_throttle_client_leaving_during_memcached_lookup(daemon, tmp_path):
    """Clients that hang up while their memcached lookup is in flight (here a
    memcached that never answers: the lookup runs into initial_delay). As in
    Perlbal, reading is paused while held, so the hang-up is seen only when
    the answer is written; the daemon stays up and the next client is served
    (unseen, as for a failing memcached). Run under `make asan` too."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)                          # connects succeed, nothing is ever read or answered
    be = Backend()
    try:
        port, mport = free_port(), free_port()
        start_perlbal(daemon, str(tmp_path), throttle_conf(port, mport, be.port, """
  SET throttle_threshold_seconds = 30
  SET initial_delay = 1
  SET max_concurrent = 5
  SET memcached_servers = 127.0.0.1:%d
""" % silent.getsockname()[1]), port)
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET /gone HTTP/1.1\r\nHost: x\r\n\r\n")
                time.sleep(0.2)                # held, waiting on memcached: leave
        time.sleep(1.5)                        # the lookups end (timeout) after their clients left
        t = time.time()
        r, _ = get(port, "/after")
        assert r.status == 200 and time.time() - t < 3   # the lookup timed out: allowed
    finally:
        be.stop()
        silent.close()
