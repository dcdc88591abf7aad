"""Perlbal 1.80's Highpri, Vpaths, FlvStreaming, LazyCDN and Palimg plugins,
Throttle's lists, X-REPROXY-SERVICE to selectors and upload progress, driven as their
documentation says; where the test can, the same config runs under
Debian's Perl Perlbal (/usr/bin/perlbal) too and the answers are compared."""
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import bin_path, free_port, wait_port
from pb_helpers import Backend, console, get, mgmt_conf, start_perlbal

pytestmark = pytest.mark.skipif(not os.path.exists(bin_path("perlbal")), reason="perlbal not built")

PERL_PERLBAL = shutil.which("perlbal", path="/usr/bin:/usr/sbin")


@pytest.fixture
def perl_perlbal(tmp_path):
    """Start Debian's Perl Perlbal on a config (it dies of SIGTERM, which the
    daemon fixture would call a failure: stopped here instead)."""
    procs = []

    def start(conf_text, port):
        path = os.path.join(str(tmp_path), "perl-%d.conf" % port)
        with open(path, "w") as f:
            f.write(conf_text)
        log = open(os.path.join(str(tmp_path), "perl-%d.log" % port), "wb")
        p = subprocess.Popen([PERL_PERLBAL, "--config=" + path], stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
        procs.append((p, log))
        wait_port(port, proc=p)
        return p

    yield start
    for p, log in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        log.close()


def start_both(daemon, perl_perlbal, tmp_path, make_conf):
    """Ours and (when installed) Perl Perlbal with the same config; returns
    a list of (name, port, mport)."""
    out = []
    port, mport = free_port(), free_port()
    start_perlbal(daemon, str(tmp_path), make_conf(port, mport), port, name="ours.conf")
    out.append(("ours", port, mport))
    if PERL_PERLBAL:
        pport, pmport = free_port(), free_port()
        perl_perlbal(make_conf(pport, pmport), pport)
        out.append(("perl", pport, pmport))
    for _, _, mport in out:
        # Perl Perlbal binds the listeners one by one as its config runs:
        # the management port may come up after the service's
        wait_port(mport)
    return out


def raw_response(port, request, timeout=10):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while True:
            try:
                c = s.recv(65536)
            except socket.timeout:
                break
            if not c:
                break
            data += c
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                cl = [l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
                if cl and len(body) >= int(cl[0].split(b":")[1]):
                    break
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(b":")
        headers[k.strip().lower().decode()] = v.strip().decode()
    return lines[0].decode(), headers, body


# ------------------------------------------------------------------ Highpri

def test_perlbal_highpri_default_uri_and_host_pattern_jump_the_queue(daemon, tmp_path):
    """One single-process backend, verify_backend on: requests queue while it
    is busy; the one matching Highpri's default URI pattern (/login.bml) and
    the one whose Host matches host_pattern (a Perl regex with \\d) came last
    but are served right after the first."""
    def slow(h, info):
        if info["method"] != "OPTIONS":
            time.sleep(1.0 if info["path"] == "/first" else 0.1)
        return None

    be = Backend(slow, threaded=False)
    try:
        port, mport = free_port(), free_port()
        start_perlbal(daemon, str(tmp_path), """
LOAD Highpri
CREATE POOL p
  POOL p ADD 127.0.0.1:%d
CREATE SERVICE proxy
  SET role = reverse_proxy
  SET listen = 127.0.0.1:%d
  SET pool = p
  SET verify_backend = on
  SET persist_backend = off
  SET plugins = Highpri
  SET proxy.highpri.host_pattern = ^vip\\d+\\.
ENABLE proxy
""" % (be.port, port) + mgmt_conf(mport), port)
        results = {}

        def req(path, host):
            r, _ = get(port, path, headers={"Host": host})
            results[path] = r.status

        ts = []
        for path, host in [("/first", "a"), ("/n1", "a"), ("/n2", "vip.example.com"), ("/login.bml", "a"),
                           ("/h", "vip7.example.com")]:
            t = threading.Thread(target=req, args=(path, host))
            t.start()
            ts.append(t)
            time.sleep(0.08)
        deadline = time.time() + 2.0
        while "proxy-highpri.count 2" not in console(mport, "queues"):
            assert time.time() < deadline, console(mport, "queues")
            time.sleep(0.02)
        for t in ts:
            t.join(20)
        assert all(v == 200 for v in results.values()) and len(results) == 5
        order = [r["path"] for r in be.requests if r["method"] == "GET"]
        assert order == ["/first", "/login.bml", "/h", "/n1", "/n2"]
        pat = console(mport, "patterns")
        assert "High priority pattern buffer:" in pat
        assert "SET proxy.highpri.uri_pattern = ^(?:/interface/(?:xmlrpc|flat)|/login\\.bml)$" in pat
        assert "SET proxy.highpri.host_pattern = ^vip\\d+\\." in pat
        # undef turns the URI check off; a bad regex is refused
        assert "ERROR" not in console(mport, "SET proxy.highpri.uri_pattern = undef")
        assert "SET proxy.highpri.uri_pattern = undef" in console(mport, "patterns")
        assert "ERROR: Invalid regular expression" in console(mport, "SET proxy.highpri.uri_pattern = (x")
        assert "ERROR: Plugin understands: uri_pattern, host_pattern" in \
            console(mport, "SET proxy.highpri.other = x")
    finally:
        be.stop()


def test_perlbal_highpri_patterns_listing_as_perl_perlbal(daemon, perl_perlbal, tmp_path):
    def conf(port, mport):
        return """
LOAD Highpri
CREATE POOL p
CREATE SERVICE proxy
  SET role = reverse_proxy
  SET listen = 127.0.0.1:%d
  SET pool = p
  SET plugins = Highpri
  SET proxy.highpri.host_pattern = ^api\\.
ENABLE proxy
""" % (port,) + mgmt_conf(mport)
    outs = {name: console(mport, "patterns") for name, port, mport in start_both(daemon, perl_perlbal, tmp_path, conf)}
    assert outs["ours"].startswith("High priority pattern buffer:\r\n")
    if "perl" in outs:
        assert outs["ours"] == outs["perl"]


# ------------------------------------------------------------------- Vpaths

def vpaths_conf(root_a, root_b):
    def conf(port, mport):
        return """
LOAD vpaths
CREATE SERVICE a
  SET role = web_server
  SET docroot = %s
CREATE SERVICE b
  SET role = web_server
  SET docroot = %s
CREATE SERVICE sel
  SET role = selector
  SET listen = 127.0.0.1:%d
  SET plugins = vpaths
  VPATH sel ^/static/\\d+/ = a
  VPATH ^/Img/(?!private) = b
  VPATH ^/ghost = nosuch
ENABLE sel
""" % (root_a, root_b, port) + mgmt_conf(mport)
    return conf


def test_perlbal_vpaths_selects_by_uri_regex(daemon, perl_perlbal, tmp_path):
    ra, rb = tmp_path / "a", tmp_path / "b"
    for r in (ra, rb):
        (r / "static" / "12").mkdir(parents=True)
        for d in ("Img", "img"):
            (r / d).mkdir()
            (r / d / "x.txt").write_text("%s of %s\n" % (d, r.name))
            (r / d / "privatex.txt").write_text("private of %s\n" % r.name)
        (r / "static" / "12" / "f.txt").write_text("from %s\n" % r.name)
    servers = start_both(daemon, perl_perlbal, tmp_path, vpaths_conf(ra, rb))
    results = {}
    for name, port, mport in servers:
        res = []
        for path in ("/static/12/f.txt", "/img/x.txt", "/img/privatex.txt", "/Img/x.txt", "/ghost"):
            try:
                r, body = get(port, path, timeout=3)
                res.append((r.status, body if r.status == 200 else b""))
            except (socket.timeout, TimeoutError, ConnectionError):
                res.append(("no answer", b""))
        results[name] = res
    ours = results["ours"]
    assert ours[0] == (200, b"from a\n")                 # \d+ matched
    # as Perlbal, the console lower-cases a command up to its '=': the
    # regex ^/Img/(?!private) reads ^/img/(?!private)
    assert ours[1] == (200, b"img of b\n")
    assert ours[2][0] == 404                            # the lookahead refused it: no vpath
    assert ours[3][0] == 404                            # case matters in the URI
    assert ours[4][0] == 404                            # a service that does not exist
    if "perl" in results:
        perl = results["perl"]
        assert perl[0] == ours[0] and perl[1] == ours[1] and perl[4] == ours[4]
        # where no VPATH matches and no default_service is set, Perl
        # Perlbal never answers (the client waits); we answer 404
        assert perl[2][0] in (404, "no answer") and perl[3][0] in (404, "no answer")


def test_perlbal_vpaths_default_service_and_errors(daemon, tmp_path):
    ra = tmp_path / "a"
    ra.mkdir()
    (ra / "index.html").write_text("default site\n")
    port, mport = free_port(), free_port()
    start_perlbal(daemon, str(tmp_path), """
LOAD vpaths
CREATE SERVICE a
  SET role = web_server
  SET docroot = %s
CREATE SERVICE sel
  SET role = selector
  SET listen = 127.0.0.1:%d
  SET plugins = vpaths
  SET default_service = a
ENABLE sel
""" % (ra, port) + mgmt_conf(mport), port)
    r, body = get(port, "/")
    assert r.status == 200 and body == b"default site\n"
    assert "Service 'a' is not a selector service" in console(mport, "VPATH a ^/x = a")
    assert "invalid regular expression" in console(mport, "VPATH sel ^/(x = a")
    assert "usage: VPATH" in console(mport, "VPATH sel ^/x")
    out = console(mport, "SET a.plugins = vpaths")
    assert "You can't load the vpath plugin on a service not of role selector." in out
    # added live: used at once
    assert "ERROR" not in console(mport, "VPATH sel ^/live = a")
    r, body = get(port, "/live/../index.html")
    assert r.status == 200


# ------------------------------------------------------------- FlvStreaming

def flv_conf(be_port):
    def conf(port, mport):
        return """
LOAD FlvStreaming
CREATE POOL p
  POOL p ADD 127.0.0.1:%d
CREATE SERVICE flv_proxy
  SET role = reverse_proxy
  SET listen = 127.0.0.1:%d
  SET pool = p
  SET plugins = FlvStreaming
ENABLE flv_proxy
""" % (be_port, port) + mgmt_conf(mport)
    return conf


FLV_HEADER = b"FLV\x01\x01\x00\x00\x00\x09\x00\x00\x00\x09"


def test_perlbal_flvstreaming_seek_as_perl_perlbal(daemon, perl_perlbal, tmp_path):
    video = bytes(range(256)) * 40            # 10240 bytes
    seen = []

    def ranged(h, info):
        rng = info["headers"].get("Range")
        seen.append((info["path"], rng))
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].rstrip("-"))
            part = video[start:]
            return 206, {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes",
                         "Content-Range": "bytes %d-%d/%d" % (start, len(video) - 1, len(video))}, part
        return 200, {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}, video

    be = Backend(ranged)
    try:
        servers = start_both(daemon, perl_perlbal, tmp_path, flv_conf(be.port))
        answers = {}
        for name, port, mport in servers:
            del seen[:]
            req = b"GET /v/movie.flv?start=1000&x=1 HTTP/1.0\r\nHost: a\r\nRange: bytes=5-9\r\n\r\n"
            answers[name] = (raw_response(port, req), list(seen))
            # not .flv, or no start: passed through untouched
            st, hd, body = raw_response(port, b"GET /v/movie.mp4?start=1000 HTTP/1.0\r\nHost: a\r\n\r\n")
            assert st.split()[1] == "200" and body == video, name
            st, hd, body = raw_response(port, b"GET /v/movie.flv HTTP/1.0\r\nHost: a\r\n\r\n")
            assert st.split()[1] == "200" and body == video, name
        (st, hd, body), backend_saw = answers["ours"]
        assert backend_saw == [("/v/movie.flv?start=1000&x=1", "bytes=1000-")]
        assert st == "HTTP/1.0 200 OK"
        assert hd["content-type"] == "video/x-flv"
        assert "content-range" not in hd and "accept-ranges" not in hd
        assert int(hd["content-length"]) == len(video) - 1000 + 13
        assert body == FLV_HEADER + video[1000:]
        if "perl" in answers:
            (pst, phd, pbody), pseen = answers["perl"]
            assert pseen == backend_saw
            assert (pst, phd["content-type"], phd["content-length"], pbody) == \
                (st, hd["content-type"], hd["content-length"], body)
            assert ("content-range" in phd) == ("content-range" in hd)
    finally:
        be.stop()


def test_perlbal_flvstreaming_only_on_a_reverse_proxy(daemon, tmp_path):
    port, mport = free_port(), free_port()
    start_perlbal(daemon, str(tmp_path), """
LOAD FlvStreaming
CREATE SERVICE web
  SET role = web_server
  SET listen = 127.0.0.1:%d
  SET docroot = %s
ENABLE web
""" % (port, tmp_path) + mgmt_conf(mport), port)
    out = console(mport, "SET web.plugins = FlvStreaming")
    assert "You can't load the flvstreaming plugin on a service not of role reverse_proxy." in out


# ----------------------------------------------------------------- Throttle

def test_perlbal_throttle_ipv6_lists_and_reload(daemon, tmp_path):
    """Throttle's white/blacklist files take IPv6 networks too (Perlbal reads
    them with Net::CIDR::Lite), and `throttle reload blacklist|whitelist`
    re-reads them for the service in context, keeping the old list when the
    file no longer loads."""
    be = Backend()
    bl = tmp_path / "black.txt"
    bl.write_text("# nobody\n192.0.2.0/24\n")
    try:
        port, mport = free_port(), free_port()
        start_perlbal(daemon, str(tmp_path), """
LOAD Throttle
CREATE POOL p
  POOL p ADD 127.0.0.1:%d
CREATE SERVICE proxy
  SET role = reverse_proxy
  SET listen = [::]:%d
  SET pool = p
  SET plugins = Throttle
  SET default_action = allow
  SET blacklist_action = deny
  SET blacklist_file = %s
ENABLE proxy
""" % (be.port, port, bl) + mgmt_conf(mport), port)
        assert get(port, "/a", host="::1")[0].status == 200
        assert get(port, "/a")[0].status == 200
        # ::1 and 127.0.0.1 blacklisted: denied after the reload only
        bl.write_text("::1/128\n127.0.0.0/8 # loopback\n")
        assert get(port, "/b", host="::1")[0].status == 200
        out = console(mport, "USE proxy", "throttle reload blacklist")
        assert "ERROR" not in out, out
        assert get(port, "/c", host="::1")[0].status == 403
        assert get(port, "/c")[0].status == 403
        # a file without a network: refused, the old list stays
        bl.write_text("# empty\n")
        out = console(mport, "USE proxy", "throttle reload blacklist")
        assert "ERROR: Couldn't load %s" % bl in out and "contains no recognizable CIDRs" in out
        assert get(port, "/d", host="::1")[0].status == 403
        # an IPv6 network in a whitelist lets ::1 through the blacklist
        wl = tmp_path / "white.txt"
        wl.write_text("::1/128\n")
        assert "ERROR" not in console(mport, "SET proxy.whitelist_file = %s" % wl)
        assert get(port, "/e", host="::1")[0].status == 200
        assert get(port, "/e")[0].status == 403                # 127.0.0.1 is not ::1
        assert "ERROR: no whitelist file configured" not in console(mport, "USE proxy", "throttle reload whitelist")
        assert "usage: throttle reload <config|whitelist|blacklist>" in console(mport, "USE proxy", "throttle x")
        assert "No service name set" in console(mport, "throttle reload config")
        assert "ERROR" not in console(mport, "USE proxy", "throttle reload config")
    finally:
        be.stop()


# ------------------------------------------------------- X-REPROXY-SERVICE

def reproxy_service_conf(be1, be2, www):
    def conf(port, mport):
        return """
LOAD vhosts
CREATE POOL p1
  POOL p1 ADD 127.0.0.1:%d
CREATE POOL p2
  POOL p2 ADD 127.0.0.1:%d
CREATE SERVICE app2
  SET role = reverse_proxy
  SET pool = p2
ENABLE app2
CREATE SERVICE files
  SET role = web_server
  SET docroot = %s
ENABLE files
CREATE SERVICE sel
  SET role = selector
  SET plugins = vhosts
  VHOST sel app.example.com = app2
  VHOST sel files.example.com = files
ENABLE sel
CREATE SERVICE front
  SET role = reverse_proxy
  SET listen = 127.0.0.1:%d
  SET pool = p1
  SET enable_reproxy = on
  SET buffer_uploads = on
  SET buffer_upload_threshold_size = 1
ENABLE front
""" % (be1, be2, www, port) + mgmt_conf(mport)
    return conf


def test_perlbal_x_reproxy_service_to_a_selector_and_with_a_body(daemon, perl_perlbal, tmp_path):
    """X-REPROXY-SERVICE naming a selector: the selector chooses by the
    request's own Host, as Perlbal's adopt_base_client; a POST whose body was
    spooled (buffer_uploads) reaches the second service's backend whole."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "f.txt").write_text("file body\n")
    be1 = Backend(lambda h, info: (200, {"X-REPROXY-SERVICE": "sel"}, b"ignored"))
    be2 = Backend(lambda h, info: (200, {"Content-Type": "text/plain"},
                                   ("app2 %s %s %d %s" % (info["method"], info["path"], info["body_len"],
                                                          info["body_sha"])).encode()))
    try:
        servers = start_both(daemon, perl_perlbal, tmp_path, reproxy_service_conf(be1.port, be2.port, www))
        res = {}
        for name, port, mport in servers:
            out = []
            r, body = get(port, "/x?y=1", headers={"Host": "app.example.com"})
            out.append((r.status, body))
            r, body = get(port, "/f.txt", headers={"Host": "files.example.com"})
            out.append((r.status, body))
            r, body = get(port, "/x", headers={"Host": "nobody.example.com"})
            out.append((r.status, b""))
            if name == "ours":
                # Perl Perlbal 1.80 never answers this one (measured: the
                # client waits); we send the spooled body on
                data = b"z" * 5000
                r, body = get(port, "/up", headers={"Host": "app.example.com"}, method="POST", body=data)
                out.append((r.status, body))
            res[name] = out
        ours = res["ours"]
        import hashlib
        assert ours[0] == (200, b"app2 GET /x?y=1 0 " + hashlib.sha1(b"").hexdigest().encode())
        assert ours[1] == (200, b"file body\n")
        assert ours[2] == (404, b"")
        assert ours[3] == (200, b"app2 POST /up 5000 " + hashlib.sha1(b"z" * 5000).hexdigest().encode())
        if "perl" in res:
            # the error pages differ in wording only
            assert res["perl"][:2] == ours[:2] and res["perl"][2][0] == ours[2][0], res["perl"]
    finally:
        be1.stop()
        be2.stop()


def streamed_reproxy_conf(be1, be2, www):
    def conf(port, mport):
        return """
CREATE POOL p1
  POOL p1 ADD 127.0.0.1:%d
CREATE POOL p2
  POOL p2 ADD 127.0.0.1:%d
CREATE SERVICE app2
  SET role = reverse_proxy
  SET pool = p2
ENABLE app2
CREATE SERVICE files
  SET role = web_server
  SET docroot = %s
ENABLE files
CREATE SERVICE front
  SET role = reverse_proxy
  SET listen = 127.0.0.1:%d
  SET pool = p1
  SET persist_client = on
  SET enable_reproxy = on
ENABLE front
""" % (be1, be2, www, port) + mgmt_conf(mport)
    return conf


def _status_and_headers(port, request, timeout):
    """The status line and header names of the answer, or None when none
    comes within timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                c = s.recv(65536)
                if not c:
                    break
                data += c
        except socket.timeout:
            return None
    if not data:
        return None  # closed without a word: no answer either
    head = data.partition(b"\r\n\r\n")[0].split(b"\r\n")
    return head[0].split(b" ")[1].decode(), {l.split(b":")[0].lower().decode() for l in head[1:]}


def test_perlbal_x_reproxy_service_headers_and_a_streamed_body(daemon, perl_perlbal, tmp_path):
    """Side by side with Perl Perlbal 1.80: after X-REPROXY-SERVICE the
    client gets the second service's answer with its own headers (none of
    the first backend's: Perlbal's start_reproxy_service keeps them only
    until the second answer replaces them); a web_server target answers a
    POST whose body streamed to the first backend as a web_server does
    (400); a reverse_proxy target cannot be given that body again: Perl
    Perlbal sends the head on and the client waits (measured), ours
    refuses at once with a 500 and no backend is asked."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "f.txt").write_text("file body\n")
    target = {"svc": "app2"}
    be1 = Backend(lambda h, info: (200, {"X-REPROXY-SERVICE": target["svc"], "X-First": "one",
                                         "Set-Cookie": "a=b", "Content-Type": "text/x-first"}, b"ignored"))
    be2 = Backend(lambda h, info: (200, {"Content-Type": "text/plain", "X-Second": "two"},
                                   ("app2 %s %s %d" % (info["method"], info["path"], info["body_len"])).encode()))
    try:
        servers = start_both(daemon, perl_perlbal, tmp_path, streamed_reproxy_conf(be1.port, be2.port, www))
        res = {}
        for name, port, mport in servers:
            out = {}
            target["svc"] = "app2"
            st, hdrs, body = raw_response(port, b"GET /g HTTP/1.0\r\n\r\n")
            out["get_app2"] = (st.split(" ")[1], "x-second" in hdrs, "x-first" in hdrs or "set-cookie" in hdrs,
                               hdrs.get("content-type"), body)
            target["svc"] = "files"
            st, hdrs, body = raw_response(port, b"GET /f.txt HTTP/1.0\r\n\r\n")
            out["get_files"] = (st.split(" ")[1], "x-first" in hdrs or "set-cookie" in hdrs,
                                hdrs.get("content-type"), body)
            post = b"POST /f.txt HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello"
            st, hdrs, body = raw_response(port, post)
            # Under load Perl Perlbal now and then closes a reproxied POST
            # without an answer (seen for the reverse_proxy one below in 1
            # of 15 loaded runs; one loaded CI run got no answer here, from
            # which server was not recorded). Perl's answer is what ours is
            # compared with, so it gets two more tries; ours gets one.
            for _ in range(2 if name == "perl" and not st else 0):
                st, hdrs, body = raw_response(port, post)
            assert st, "%s: no answer to a POST reproxied to a web_server" % name
            out["post_files"] = st.split(" ")[1]
            target["svc"] = "app2"
            before = len(be2.requests)
            t0 = time.monotonic()
            out["post_app2"] = _status_and_headers(
                port, b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", timeout=2)
            out["post_app2_fast"] = time.monotonic() - t0 < 1.5
            out["post_app2_backend_saw"] = [r["path"] for r in be2.requests[before:]]
            res[name] = out
        ours = res["ours"]
        assert ours["get_app2"] == ("200", True, False, "text/plain", b"app2 GET /g 0")
        assert ours["get_files"] == ("200", False, "text/plain", b"file body\n")
        assert ours["post_files"] == "400"
        assert ours["post_app2"][0] == "500" and ours["post_app2_fast"]
        assert ours["post_app2_backend_saw"] == []
        if "perl" in res:
            perl = res["perl"]
            for k in ("get_app2", "get_files", "post_files"):
                assert perl[k] == ours[k], (k, perl[k], ours[k])
            assert perl["post_app2"] is None    # Perl Perlbal never answers it
    finally:
        be1.stop()
        be2.stop()


# ------------------------------------------------------------ upload status

def upload_conf(be_port, udp_tracker, udp_extra):
    def conf(port, mport):
        return """
CREATE SERVICE tracker
  SET role = upload_tracker
  SET listen = 127.0.0.1:%d
ENABLE tracker
CREATE POOL p
  POOL p ADD 127.0.0.1:%d
CREATE SERVICE proxy
  SET role = reverse_proxy
  SET listen = 127.0.0.1:%d
  SET pool = p
  SET persist_client = on
  SET upload_status_listeners = 127.0.0.1:%d, 127.0.0.1:%d
ENABLE proxy
""" % (udp_tracker, be_port, port, udp_tracker, udp_extra) + mgmt_conf(mport)
    return conf


def free_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def test_perlbal_upload_status_listeners_and_tracker(daemon, tmp_path):
    """An upload tagged ?client_up_sess=... reports its progress in UDP
    datagrams (at most one a second) to every upload_status_listeners
    address; an upload_tracker service collects them and the proxy answers
    /__upload_status?client_up_sess=... from them."""
    import re
    be = Backend()
    try:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(0.1)
        tracker = free_udp_port()
        conf = upload_conf(be.port, tracker, udp.getsockname()[1])
        port, mport = free_port(), free_port()
        start_perlbal(daemon, str(tmp_path), conf(port, mport), port, name="up.conf")
        total = 300000
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"POST /upload?x=1&client_up_sess=abc123def HTTP/1.1\r\nHost: a\r\n"
                  b"Content-Length: %d\r\n\r\n" % total)
        statuses, grams = [], []
        t0 = int(time.time())
        for i in range(3):
            s.sendall(b"u" * 80000)
            time.sleep(1.1)
            r, body = get(port, "/__upload_status?client_up_sess=abc123def")
            statuses.append((r.status, r.getheader("Content-Type"), body.decode()))
        s.sendall(b"u" * (total - 240000))
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        s.close()
        while True:
            try:
                grams.append(udp.recv(512).decode())
            except socket.timeout:
                break
        assert data.split(b"\r\n")[0].endswith(b" 200 OK")
        assert be.requests[0]["body_len"] == total
        assert 2 <= len(grams) <= 4, grams                  # once a second at most
        dones = []
        for g in grams:
            m = re.match(r"^UPLOAD:abc123def:(\d+):300000:(\d+):(\d+)$", g)
            assert m, g
            assert 0 < int(m.group(1)) < total and abs(int(m.group(2)) - t0) <= 2
            dones.append(int(m.group(1)))
        assert dones == sorted(dones)
        for i, (st, ctype, body) in enumerate(statuses):
            assert st == 200 and ctype == "text/plain"
            m = re.match(r"^\{done:(\d+),total:300000,starttime:(\d+),nowtime:(\d+)\}$", body)
            assert m and 0 < int(m.group(1)) <= 80000 * (i + 1), (i, body)
        r, body = get(port, "/__upload_status?client_up_sess=nosuchsession")
        assert (r.status, body) == (200, b"{}")
        # not ours to answer without a session: goes to the backend
        assert get(port, "/__upload_status?x=1")[0].status == 200 and be.requests[-1]["path"] == "/__upload_status?x=1"
        assert "ERROR" in console(mport, "SET proxy.upload_status_listeners = nohost")
    finally:
        be.stop()


def test_perlbal_upload_tracker_answers_as_perl_perlbal(daemon, perl_perlbal, tmp_path):
    """Perlbal's datagram, sent by hand to our tracker and to Perl Perlbal's:
    both answer /__upload_status alike (nowtime aside); garbage is ignored."""
    import re
    be = Backend()
    try:
        answers = {}
        for name in (["ours", "perl"] if PERL_PERLBAL else ["ours"]):
            tracker = free_udp_port()
            conf = upload_conf(be.port, tracker, free_udp_port())
            port, mport = free_port(), free_port()
            if name == "ours":
                start_perlbal(daemon, str(tmp_path), conf(port, mport), port, name="up2.conf")
            else:
                perl_perlbal(conf(port, mport), port)
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.sendto(b"UPLOAD:sess_42x:1234:99999:1700000000:1700000003", ("127.0.0.1", tracker))
            u.sendto(b"UPLOAD:bad:1:2:3:4", ("127.0.0.1", tracker))          # session too short
            u.sendto(b"garbage", ("127.0.0.1", tracker))
            u.close()
            deadline = time.time() + 5
            while True:
                r, body = get(port, "/__upload_status?client_up_sess=sess_42x")
                if body != b"{}" or time.time() > deadline:
                    break
                time.sleep(0.05)
            # "bad" is no session name (5..50 word characters): the backend answers
            bad = get(port, "/__upload_status?client_up_sess=bad")[1]
            bad = b"backend" if bad.startswith(b'{"method"') else bad
            answers[name] = (r.status, r.getheader("Content-Type"), re.sub(rb"nowtime:\d+", b"nowtime:N", body), bad)
        assert answers["ours"] == (200, "text/plain", b"{done:1234,total:99999,starttime:1700000000,nowtime:N}",
                                   b"backend")
        if "perl" in answers:
            assert answers["perl"] == answers["ours"]
    finally:
        be.stop()


# ------------------------------------------------------------------ LazyCDN

LAZYCDN_CONF = """
LOAD LazyCDN
CREATE POOL o
  POOL o ADD 127.0.0.1:%d
CREATE SERVICE origin
  SET role = reverse_proxy
  SET pool = o
ENABLE origin
CREATE SERVICE cdn
  SET role = web_server
  SET listen = 127.0.0.1:%d
  SET docroot = %s
  SET %s = on
  SET plugins = LazyCDN
  SET fallback_service = origin
  SET fallback_udp_ping_addr = 127.0.0.1:%d
ENABLE cdn
"""


def lazycdn_side_by_side(daemon, perl_perlbal, tmp_path, be, root, setting, requests, bodies_of_200_only=False):
    """A LazyCDN web_server (with `SET setting = on`) over root, falling back
    to backend be, run against ours and (when present) Perl Perlbal: for each
    server, the (status, body) of each request and the URIs pinged over UDP."""
    results = {}
    for name in (["ours", "perl"] if PERL_PERLBAL else ["ours"]):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(2)
        port, mport = free_port(), free_port()
        conf = LAZYCDN_CONF % (be.port, port, root, setting, udp.getsockname()[1]) + mgmt_conf(mport)
        if name == "ours":
            start_perlbal(daemon, str(tmp_path), conf, port, name="cdn.conf")
        else:
            perl_perlbal(conf, port)
        out = []
        for path, hdrs in requests:
            r, body = get(port, path, headers=hdrs)
            out.append((r.status, body if r.status == 200 or not bodies_of_200_only else b""))
        pings = []
        while True:
            try:
                pings.append(udp.recv(512))
            except socket.timeout:
                break
            udp.settimeout(0.3)
        udp.close()
        results[name] = (out, pings)
    return results


def test_perlbal_lazycdn_falls_back_for_missing_and_newer_files(daemon, perl_perlbal, tmp_path):
    """LazyCDN: a web_server serves what its docroot has; a missing file, or
    one whose URI asks for a newer version (v=N above the file's mtime) when
    the answer would be a plain 200, goes to fallback_service, and the URI is
    sent to fallback_udp_ping_addr. Same script against Perl Perlbal."""
    root = tmp_path / "cdn"
    root.mkdir()
    (root / "have.txt").write_text("cached copy\n")
    mtime = 1700000000
    os.utime(root / "have.txt", (mtime, mtime))
    be = Backend(lambda h, info: (200, {"Content-Type": "text/plain"}, b"origin:" + info["path"].encode()))
    lm = "Tue, 14 Nov 2023 22:13:20 GMT"         # the file's mtime as an HTTP date
    try:
        results = lazycdn_side_by_side(daemon, perl_perlbal, tmp_path, be, root, "persist_client", [
            ("/have.txt", {}),
            ("/missing.txt?x=1", {}),
            ("/have.txt?v=%d" % (mtime + 100), {}),
            ("/have.txt?v=%d" % (mtime - 100), {}),
            ("/have.txt?v=%d" % (mtime + 100), {"If-Modified-Since": lm}),
            ("/have.txt?nov=%d" % (mtime + 100), {})])
        out, pings = results["ours"]
        assert out[0] == (200, b"cached copy\n")
        assert out[1] == (200, b"origin:/missing.txt?x=1")
        assert out[2] == (200, b"origin:/have.txt?v=%d" % (mtime + 100))
        assert out[3] == (200, b"cached copy\n")
        assert out[4] == (304, b"")
        assert out[5] == (200, b"cached copy\n")              # "nov=" is not "v="
        assert pings == [b"/missing.txt?x=1", b"/have.txt?v=%d" % (mtime + 100)]
        if "perl" in results:
            assert results["perl"] == results["ours"]
    finally:
        be.stop()


def test_perlbal_lazycdn_concatenated_gets(daemon, perl_perlbal, tmp_path):
    """LazyCDN on concatenated GETs (enable_concatenate_get), as Perlbal's
    concat hooks: one of the files missing goes to fallback_service; all
    there, a v=N newer than the newest of them goes too, unless the answer
    is a 304; what the web_server refuses anyway (no slash before "??",
    the base not a directory) it answers itself. Same script against Perl
    Perlbal, answers and UDP pings compared."""
    root = tmp_path / "cdn"
    (root / "d").mkdir(parents=True)
    (root / "d" / "a.txt").write_text("A")
    (root / "d" / "b.txt").write_text("B")
    mtime = 1700000000
    os.utime(root / "d" / "a.txt", (mtime, mtime))
    os.utime(root / "d" / "b.txt", (mtime + 50, mtime + 50))
    newest = "Tue, 14 Nov 2023 22:14:10 GMT"           # mtime + 50 as an HTTP date
    be = Backend(lambda h, info: (200, {"Content-Type": "text/plain"}, b"origin:" + info["path"].encode()))
    try:
        # the missing file and directory last: after a failed stat, Perl
        # Perlbal 1.80 answers later concatenated GETs from a stale errno
        # ("Base directory not a directory", or a fallback; measured), ours
        # does not
        results = lazycdn_side_by_side(daemon, perl_perlbal, tmp_path, be, root, "enable_concatenate_get", [
            ("/d/??a.txt,b.txt", {}),
            ("/d/??a.txt,b.txt?v=%d" % (mtime + 100), {}),
            ("/d/??a.txt,b.txt?v=%d" % (mtime + 20), {}),
            ("/d/??a.txt,b.txt?v=%d" % (mtime + 100), {"If-Modified-Since": newest}),
            ("/d??a.txt", {}),
            ("/d/??a.txt,zz.txt", {}),
            ("/nodir/??a.txt", {})], bodies_of_200_only=True)
        out, pings = results["ours"]
        assert out[0] == (200, b"AB")
        assert out[1] == (200, b"origin:/d/??a.txt,b.txt?v=%d" % (mtime + 100))
        assert out[2] == (200, b"AB")
        assert out[3] == (304, b"")
        assert out[4] == (500, b"")
        assert out[5] == (200, b"origin:/d/??a.txt,zz.txt")
        assert out[6] == (404, b"")
        assert pings == [b"/d/??a.txt,b.txt?v=%d" % (mtime + 100), b"/d/??a.txt,zz.txt"]
        if "perl" in results:
            # Perl Perlbal 1.80 answers the If-Modified-Since request (index 3)
            # by chance: its 304 test is `$ims eq $lastmod && -f _`, and `_`
            # is whichever of its parallel aio_stats finished last — a file
            # (304, as ours) or the base directory (not a file: the request
            # goes on to LazyCDN, which sends it to the fallback and pings).
            # (fallback in 5 of 6 runs one hour, 2 of 6 another). Everything
            # else must match exactly.
            perl_out, perl_pings = results["perl"]
            fallback = (200, b"origin:/d/??a.txt,b.txt?v=%d" % (mtime + 100))
            assert perl_out[3] in ((304, b""), fallback)
            extra_ping = [b"/d/??a.txt,b.txt?v=%d" % (mtime + 100)] if perl_out[3] == fallback else []
            assert perl_out[:3] + perl_out[4:] == out[:3] + out[4:]
            assert perl_pings == pings[:1] + extra_ping + pings[1:]
    finally:
        be.stop()


def test_perlbal_lazycdn_settings(daemon, tmp_path):
    port, mport = free_port(), free_port()
    start_perlbal(daemon, str(tmp_path), """
LOAD LazyCDN
CREATE SERVICE cdn
  SET role = web_server
  SET listen = 127.0.0.1:%d
  SET docroot = %s
  SET plugins = LazyCDN
ENABLE cdn
CREATE POOL p
CREATE SERVICE proxy
  SET role = reverse_proxy
  SET pool = p
""" % (port, tmp_path) + mgmt_conf(mport), port)
    wait_port(mport)   # ready_port is the first listener's; the console's comes up after it
    assert "Expecting IP:port of form a.b.c.d:port." in console(mport, "SET cdn.fallback_udp_ping_addr = nohost")
    assert "ERROR" in console(mport, "SET proxy.fallback_service = cdn")        # web_server only
    # no fallback_service: a missing file is the usual 404
    assert get(port, "/nothing")[0].status == 404


# ------------------------------------------------------------------- Palimg

def make_gif(tail=3000):
    pal = bytes([10, 20, 30, 40, 50, 60, 70, 80, 90, 200, 210, 220])   # 4 entries
    return b"GIF89a" + bytes([2, 0, 2, 0, 0x81, 0, 0]) + pal + bytes(range(256)) * (tail // 256) + b";"


def make_png(tail=3000):
    import struct
    import zlib

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    ihdr = struct.pack(">IIBBBBB", 2, 2, 8, 3, 0, 0, 0)
    pal = bytes([10, 20, 30, 40, 50, 60, 70, 80, 90, 200, 210, 220])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"PLTE", pal) +
            chunk(b"IDAT", bytes(range(256)) * (tail // 256)) + chunk(b"IEND", b""))


def test_perlbal_palimg_palettes_as_perl_perlbal(daemon, perl_perlbal, tmp_path):
    """Palimg: /palimg/x.gif/p<spec> serves the image with its palette
    replaced (entries, gradient, tint), a PNG's PLTE CRC recomputed; a bad
    spec or an unpaletted image is a 404. Byte for byte as Perl Perlbal."""
    import struct
    import zlib
    root = tmp_path / "www"
    (root / "palimg").mkdir(parents=True)
    gif, png = make_gif(), make_png()
    (root / "palimg" / "a.gif").write_bytes(gif)
    (root / "palimg" / "b.png").write_bytes(png)
    (root / "palimg" / "c.txt").write_text("plain\n")
    (root / "palimg" / "rgb.png").write_bytes(png.replace(struct.pack(">IIBBBBB", 2, 2, 8, 3, 0, 0, 0),
                                                          struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)))

    def conf(port, mport):
        return """
LOAD palimg
CREATE SERVICE palex
  SET role = web_server
  SET listen = 127.0.0.1:%d
  SET docroot = %s
  SET plugins = palimg
  SET persist_client = on
ENABLE palex
""" % (port, root) + mgmt_conf(mport)
    paths = ["/palimg/a.gif/p1ffeedd", "/palimg/a.gif/pg00000000030000ff", "/palimg/a.gif/pt808080",
             "/palimg/a.gif/pt808080102030", "/palimg/b.png/p0010203", "/palimg/b.png/pg0300000000ffffff",
             "/palimg/c.txt/p0010203", "/palimg/a.gif/pXYZ", "/palimg/a.gif/pg0011111100222222",
             "/palimg/rgb.png/p0010203", "/palimg/missing.gif/p0010203", "/palimg/a.gif"]
    results = {}
    for name, port, mport in start_both(daemon, perl_perlbal, tmp_path, conf):
        out = []
        for p in paths:
            try:
                r, body = get(port, p, timeout=5 if name == "ours" else 1.5)
                out.append((r.status, r.getheader("Content-Type"), body if r.status == 200 else b""))
            except (socket.timeout, TimeoutError, ConnectionError):
                out.append(("no answer", None, b""))
        results[name] = out
    ours = results["ours"]
    # entry 1 replaced
    assert ours[0][0] == 200 and ours[0][2][13 + 3:13 + 6] == bytes([0xff, 0xee, 0xdd])
    assert ours[0][2][:13 + 3] == gif[:13 + 3] and ours[0][2][13 + 6:] == gif[13 + 6:]
    # gradient 0..3 from 000000 to 0000ff
    assert ours[1][2][13:25] == bytes([0, 0, 0, 0, 0, 85, 0, 0, 170, 0, 0, 255])
    # tint towards 808080 from black: int(0x80 * c / 255)
    assert ours[2][2][13:16] == bytes([int(0x80 * c / 255) for c in (10, 20, 30)])
    png0 = ours[4][2]
    assert ours[4][0] == 200 and ours[4][1] == "image/png" and len(png0) == len(png)
    plte = png0.index(b"PLTE")
    data = png0[plte + 4:plte + 16]
    assert data[:3] == bytes([0x01, 0x02, 0x03])
    assert png0[plte + 16:plte + 20] == struct.pack(">I", zlib.crc32(b"PLTE" + data) & 0xffffffff)
    assert ours[6] == (200, "text/plain", b"plain\n")          # not an image: as it is
    assert ours[7][0] == 404 and ours[8][0] == 404               # bad spec; gradient from == to
    assert ours[9][0] == 404                                      # PNG without a palette
    assert ours[10][0] == 404
    assert ours[11] == (200, "image/gif", gif)                   # no spec: the usual file
    if "perl" in results:
        for i, (a, b) in enumerate(zip(results["perl"], ours)):
            if i in (7, 8, 9):
                # Perl Perlbal 1.80 never answers these (measured: the
                # client waits); we answer 404
                assert a[0] == "no answer", (paths[i], a[:2])
                continue
            assert a[0] == b[0] and a[2] == b[2], (paths[i], a[:2], b[:2])


def test_perlbal_palimg_if_modified_since_range_and_head(daemon, perl_perlbal, tmp_path):
    """Palimg URLs are served as the web_server serves the image file
    (Perlbal cuts the spec off and serves the file): an If-Modified-Since
    equal to its Last-Modified is a 304, HEAD is the file's 200 with its
    length, an unsatisfiable Range a 416 — as Perl Perlbal answers. A Range
    is cut from the changed image (206, Content-Range); Perl Perlbal 1.80
    also answers 206 but sends the changed first 2048 bytes whatever the
    range (measured: more bytes than its Content-Length), so only the
    status is compared there."""
    root = tmp_path / "www"
    (root / "palimg").mkdir(parents=True)
    gif = make_gif()
    (root / "palimg" / "a.gif").write_bytes(gif)

    def conf(port, mport):
        return """
LOAD palimg
CREATE SERVICE palex
  SET role = web_server
  SET listen = 127.0.0.1:%d
  SET docroot = %s
  SET plugins = palimg
ENABLE palex
""" % (port, root) + mgmt_conf(mport)
    url = "/palimg/a.gif/p1ffeedd"
    results = {}
    for name, port, mport in start_both(daemon, perl_perlbal, tmp_path, conf):
        out = {}
        r, full = get(port, url)
        out["full"] = (r.status, full)
        lm = r.getheader("Last-Modified")
        out["lm"] = lm is not None
        r, body = get(port, url, headers={"If-Modified-Since": lm})
        out["ims"] = (r.status, body)
        r, body = get(port, url, method="HEAD")
        out["head"] = (r.status, r.getheader("Content-Length"), r.getheader("Content-Type"))
        st, hdrs, body = raw_response(port, ("GET %s HTTP/1.0\r\nRange: bytes=14-17\r\n\r\n" % url).encode(),
                                      timeout=3)
        out["range"] = (st.split(" ")[1], hdrs.get("content-range"), body)
        st, hdrs, body = raw_response(port, ("GET %s HTTP/1.0\r\nRange: bytes=9999-\r\n\r\n" % url).encode(),
                                      timeout=3)
        out["416"] = st.split(" ")[1]
        results[name] = out
    ours = results["ours"]
    changed = ours["full"][1]
    assert ours["full"][0] == 200 and changed[13 + 3:13 + 6] == bytes([0xff, 0xee, 0xdd]) and ours["lm"]
    assert ours["ims"] == (304, b"")
    assert ours["head"] == (200, str(len(gif)), "image/gif")
    assert ours["range"] == ("206", "bytes 14-17/%d" % len(gif), changed[14:18])
    assert ours["416"] == "416"
    if "perl" in results:
        perl = results["perl"]
        for k in ("full", "lm", "ims", "head", "416"):
            assert perl[k] == ours[k], (k, perl[k], ours[k])
        assert perl["range"][:2] == ours["range"][:2]


# -------------------------------------------------------- PUT's 201 wording

def test_perlbal_put_in_place_as_perl_perlbal(daemon, perl_perlbal, tmp_path):
    """Side by side: a PUT without Content-MD5 is written in place by both
    (the target holds what has arrived while the upload is open, a
    replaced file is truncated at its start) and both answer 200 at the
    end; with enable_atomic_put (ours only, Perl Perlbal has no such
    setting) the old file stays whole until the upload completes."""
    results = {}
    for name in (["ours", "perl"] if PERL_PERLBAL else ["ours"]):
        root = tmp_path / ("www-" + name)
        root.mkdir()
        (root / "f.txt").write_bytes(b"old contents")
        port, mport = free_port(), free_port()
        conf = """
CREATE SERVICE w
  SET role = web_server
  SET listen = 127.0.0.1:%d
  SET docroot = %s
  SET enable_put = on
ENABLE w
""" % (port, root) + mgmt_conf(mport)
        if name == "ours":
            start_perlbal(daemon, str(tmp_path), conf, port, name="put-ours.conf")
        else:
            perl_perlbal(conf, port)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"PUT /f.txt HTTP/1.0\r\nContent-Length: 10\r\n\r\nhello")
            deadline = time.monotonic() + 5
            while (root / "f.txt").read_bytes() != b"hello" and time.monotonic() < deadline:
                time.sleep(0.05)
            during = (root / "f.txt").read_bytes()
            s.sendall(b"world")
            answer = s.recv(4096).split(b"\r\n")[0]
        results[name] = (during, answer.split(b" ")[1], (root / "f.txt").read_bytes())
    assert results["ours"] == (b"hello", b"200", b"helloworld")
    if "perl" in results:
        assert results["perl"] == results["ours"]
    # ours, opt-in: the old file whole until the upload completes
    root = tmp_path / "www-atomic"
    root.mkdir()
    (root / "f.txt").write_bytes(b"old contents")
    port, mport = free_port(), free_port()
    start_perlbal(daemon, str(tmp_path), """
CREATE SERVICE w
  SET role = web_server
  SET listen = 127.0.0.1:%d
  SET docroot = %s
  SET enable_put = on
  SET enable_atomic_put = on
ENABLE w
""" % (port, root), port, name="put-atomic.conf")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"PUT /f.txt HTTP/1.0\r\nContent-Length: 10\r\n\r\nhello")
        deadline = time.monotonic() + 5
        while len(os.listdir(root)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(os.listdir(root)) == 2 and (root / "f.txt").read_bytes() == b"old contents"
        s.sendall(b"world")
        assert s.recv(4096).split(b" ")[1] == b"200"
    assert (root / "f.txt").read_bytes() == b"helloworld" and os.listdir(root) == ["f.txt"]


def test_perlbal_put_201_worded_as_perl_perlbal(daemon, perl_perlbal, tmp_path):
    """A PUT whose Content-MD5 was verified: Perlbal answers "201 " with no
    reason phrase and the page "<h1>201</h1>"; ours the same bytes."""
    answers = {}
    for name in (["ours", "perl"] if PERL_PERLBAL else ["ours"]):
        root = tmp_path / ("www-" + name)
        root.mkdir()

        def conf(port, mport):
            return """
CREATE SERVICE web
  SET role = web_server
  SET listen = 127.0.0.1:%d
  SET docroot = %s
  SET enable_put = 1
  SET server_tokens = off
ENABLE web
""" % (port, root) + mgmt_conf(mport)
        port, mport = free_port(), free_port()
        if name == "ours":
            start_perlbal(daemon, str(tmp_path), conf(port, mport), port, name="put.conf")
        else:
            perl_perlbal(conf(port, mport), port)
        st, hd, body = raw_response(port, b"PUT /f.txt HTTP/1.0\r\nContent-Length: 3\r\n"
                                          b"Content-MD5: kAFQmDzST7DWlj99KOF/cg==\r\n\r\nabc")
        answers[name] = (st, hd.get("content-type"), hd.get("content-length"), body)
        assert (root / "f.txt").read_bytes() == b"abc"
    assert answers["ours"] == ("HTTP/1.0 201 ", "text/html", "13", b"<h1>201</h1>\n")
    if "perl" in answers:
        assert answers["perl"] == answers["ours"]
