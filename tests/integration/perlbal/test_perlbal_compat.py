"""Perlbal 1.80's command line and the behaviours its own test suite
(perlbal/Perlbal t/) checks, each written here in our own words and run
against our binary."""
import os
import signal
import socket
import subprocess
import time

from conftest import bin_path, free_port, wait_port
from pb_helpers import Backend, Nginx, console, get, mgmt_conf, raw, recv_all, start_perlbal, wait_for


def web_conf(port, root, extra=""):
    return """
CREATE SERVICE test
  SET role = web_server
  SET listen = 127.0.0.1:%d
  SET docroot = %s
  SET persist_client = on
%s
ENABLE test
""" % (port, root, extra)


def test_config_flag_reads_perlbal_language(daemon, tmp_path):
    """`perlbal --config=FILE` (what Perlbal's init scripts type) runs the
    file as Perlbal's language, and `--help` names the flags."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "f.txt").write_text("hello")
    port = free_port()
    conf = tmp_path / "perlbal.conf"
    conf.write_text("SERVER aio_mode = none\n" + web_conf(port, root))
    daemon("perlbal", ["--config=%s" % conf], ready_port=str(port))
    r, body = get(port, "/f.txt")
    assert r.status == 200 and body == b"hello"
    out = subprocess.run([bin_path("perlbal"), "--help"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and "--config" in out.stdout and "--daemon" in out.stdout


def test_daemon_flag_detaches_and_keeps_serving(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "f.txt").write_text("bg")
    port = free_port()
    conf = tmp_path / "perlbal.conf"
    conf.write_text(web_conf(port, root))
    pidfile = tmp_path / "perlbal.pid"
    p = subprocess.run([bin_path("perlbal"), "--config=%s" % conf, "--daemon", "--pidfile=%s" % pidfile],
                       capture_output=True, timeout=10)
    assert p.returncode == 0                      # the foreground process returns at once
    wait_port(port)

    def detached_pid():
        # the pidfile is rewritten by the detached child (its own session)
        try:
            pid = int(pidfile.read_text().split()[0])
            return pid if os.getsid(pid) == pid else None
        except (ValueError, IndexError, OSError):
            return None

    assert wait_for(lambda: detached_pid() is not None)
    pid = detached_pid()
    try:
        assert os.getsid(pid) != os.getsid(0)     # detached from our session
        r, body = get(port, "/f.txt")
        assert r.status == 200 and body == b"bg"
    finally:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)


def test_directory_without_index_says_listing_disabled(daemon, tmp_path):
    """As Perlbal: a directory with no index file and dirindexing off gets a
    200 page saying "Directory listing disabled"; with dirindexing on, the
    listing; with an index file named in index_files, that file."""
    root = tmp_path / "www"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "bar.txt").write_text("foo bar baz")
    port, mport = free_port(), free_port()
    start_perlbal(daemon, str(tmp_path), web_conf(port, root) + mgmt_conf(mport), port)
    r, body = get(port, "/sub/")
    assert r.status == 200 and b"Directory listing disabled" in body
    console(mport, "SET test.dirindexing = 1")
    r, body = get(port, "/sub/")
    assert r.status == 200 and b"bar.txt" in body
    console(mport, "SET test.dirindexing = 0", "SET test.index_files = not_here.txt, bar.txt")
    r, body = get(port, "/sub/")
    assert body == b"foo bar baz"


def upload_conf(port, backend_port, spool, extra=""):
    return """
CREATE POOL a
  POOL a ADD 127.0.0.1:%d
CREATE SERVICE test
  SET role = reverse_proxy
  SET pool = a
  SET connect_ahead = 0
  SET listen = 127.0.0.1:%d
  SET persist_client = 1
  SET buffer_uploads_path = %s
  SET buffer_uploads = 1
%s
ENABLE test
""" % (backend_port, port, spool, extra)


def spool_files(spool):
    return [f for f in os.listdir(spool) if not f.startswith(".")]


def test_buffered_upload_file_is_created_named_and_cleaned(daemon, tmp_path):
    """As Perlbal's t/45: a body over buffer_upload_threshold_size is spooled
    to a file in buffer_uploads_path while it arrives (named
    <service>-<listen>-client-<fd>-<n>), the backend gets it whole with the
    reason (PERLBAL_DEBUG_BUFFERED_UPLOADS), the file is gone once answered;
    a client that gives up mid-upload leaves no file behind either."""
    be = Backend()
    spool = tmp_path / "spool"
    spool.mkdir()
    port = free_port()
    conf = tmp_path / "perlbal.conf"
    conf.write_text(upload_conf(port, be.port, spool, "SET buffer_upload_threshold_size = 100k"))
    daemon("perlbal", ["--config=%s" % conf], ready_port=str(port), env={"PERLBAL_DEBUG_BUFFERED_UPLOADS": "1"})
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"POST /up HTTP/1.0\r\nContent-Length: 300000\r\n\r\n" + b"x" * 150000)
        assert wait_for(lambda: len(spool_files(spool)) == 1)
        name = spool_files(spool)[0]
        assert name.startswith("test-127.0.0.1:%d-client-" % port)
        assert be.requests == []                        # the backend waits for the whole body
        s.sendall(b"x" * 150000)
        resp = recv_all(s)
        s.close()
        assert b" 200 " in resp.split(b"\r\n", 1)[0]
        info = be.requests[-1]
        assert info["body_len"] == 300000
        assert info["headers"].get("X-PERLBAL-BUFFERED-UPLOAD-REASON") == "size"
        assert wait_for(lambda: spool_files(spool) == [])
        # abandoned mid-upload: the file goes with the client
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"POST /up HTTP/1.0\r\nContent-Length: 300000\r\n\r\n" + b"x" * 150000)
        assert wait_for(lambda: len(spool_files(spool)) == 1)
        s.close()
        assert wait_for(lambda: spool_files(spool) == [])
    finally:
        be.stop()


def test_buffered_upload_file_goes_once_the_backend_has_the_body(daemon, tmp_path):
    """As Perlbal (it purges the spool file as soon as the buffered body has
    gone to the backend): while a slow backend, holding the whole body, has
    not answered yet, the spool folder is already empty."""
    import threading
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    got_body = threading.Event()
    answer = threading.Event()

    def slow_backend():
        c, _ = lsock.accept()
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += c.recv(65536)
        head, body = buf.split(b"\r\n\r\n", 1)
        length = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0]
        while len(body) < length:
            body += c.recv(65536)
        got_body.set()
        answer.wait(20)
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        c.close()

    t = threading.Thread(target=slow_backend, daemon=True)
    t.start()
    spool = tmp_path / "spool"
    spool.mkdir()
    port = free_port()
    conf = tmp_path / "perlbal.conf"
    conf.write_text(upload_conf(port, lsock.getsockname()[1], spool, "SET buffer_upload_threshold_size = 100k"))
    daemon("perlbal", ["--config=%s" % conf], ready_port=str(port))
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=20)
        s.sendall(b"POST /up HTTP/1.0\r\nContent-Length: 500000\r\n\r\n" + b"x" * 500000)
        assert got_body.wait(20)                       # the backend holds the whole body...
        assert wait_for(lambda: spool_files(spool) == [])  # ...and the spool file is gone already
        answer.set()
        resp = recv_all(s)
        s.close()
        assert resp.startswith(b"HTTP/1.0 200") and resp.endswith(b"ok")
    finally:
        answer.set()
        lsock.close()


def test_chunked_upload_is_spooled_and_sent_with_content_length(daemon, tmp_path):
    """As Perlbal's t/52: with buffer_uploads a chunked upload (HTTP/1.0 or
    1.1, Expect: 100-continue answered) is spooled, and the backend gets it
    with a Content-Length, no Transfer-Encoding and no Expect."""
    be = Backend()
    spool = tmp_path / "spool"
    spool.mkdir()
    port = free_port()
    start_perlbal(daemon, str(tmp_path), upload_conf(port, be.port, spool), port)
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"PUT /c HTTP/1.0\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
        assert s.recv(1024).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(b"5\r\nhello\r\n")
        assert wait_for(lambda: len(spool_files(spool)) == 1)
        s.sendall(b"6;x=y\r\n world\r\n0\r\n\r\n")
        resp = recv_all(s)
        s.close()
        assert b" 200 " in resp.split(b"\r\n", 1)[0]
        info = be.requests[-1]
        assert info["body_len"] == 11 and info["headers"].get("Content-Length") == "11"
        assert "Transfer-Encoding" not in info["headers"] and "Expect" not in info["headers"]
        assert wait_for(lambda: spool_files(spool) == [])
    finally:
        be.stop()


def test_http10_chunked_put_with_continue(daemon, tmp_path):
    """As Perlbal's t/22: an HTTP/1.0 PUT with Transfer-Encoding: chunked and
    Expect: 100-continue gets 100 Continue and is stored (then the
    connection closes, as RFC 9112 asks for chunked HTTP/1.0)."""
    root = tmp_path / "www"
    root.mkdir()
    port = free_port()
    start_perlbal(daemon, str(tmp_path), web_conf(port, root, "SET enable_put = 1"), port)
    out = raw(port, b"PUT /foo.txt HTTP/1.0\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
                    b"3\r\nabc\r\n0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 20")
    assert (root / "foo.txt").read_bytes() == b"abc"


def _put_partial(port, path, first, total, md5=None):
    """Open a PUT of `total` bytes and send only `first`; the socket stays open."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = "PUT %s HTTP/1.0\r\nContent-Length: %d\r\n" % (path, total)
    if md5:
        head += "Content-MD5: %s\r\n" % md5
    s.sendall(head.encode() + b"\r\n" + first)
    return s


def test_put_writes_in_place_by_default_as_perlbal(daemon, tmp_path):
    """As Perlbal's t/22 ("buffer file exists"): a PUT without Content-MD5
    writes the target itself, so it exists and grows while the upload is
    still arriving; a replaced file is truncated when the upload starts; a
    client that leaves keeps what arrived. With Content-MD5 the body goes
    to a temporary name and the target appears only once verified."""
    root = tmp_path / "www"
    root.mkdir()
    port = free_port()
    start_perlbal(daemon, str(tmp_path), web_conf(port, root, "SET enable_put = 1"), port)
    target = root / "up.txt"
    s = _put_partial(port, "/up.txt", b"hello", 10)
    assert wait_for(lambda: target.exists() and target.read_bytes() == b"hello")
    s.sendall(b"world")
    assert recv_all(s).startswith(b"HTTP/1.0 200 OK\r\n")
    s.close()
    assert target.read_bytes() == b"helloworld"
    s = _put_partial(port, "/up.txt", b"ab", 10)
    assert wait_for(lambda: target.read_bytes() == b"ab")
    s.close()
    time.sleep(0.2)
    assert target.read_bytes() == b"ab"
    # md5("abcde") = q1a02StAcTrMWviZhdS3hg==
    s = _put_partial(port, "/m.txt", b"ab", 5, md5="q1a02StAcTrMWviZhdS3hg==")
    time.sleep(0.3)
    assert not (root / "m.txt").exists()
    s.sendall(b"cde")
    assert recv_all(s).startswith(b"HTTP/1.0 201 \r\n")
    s.close()
    assert (root / "m.txt").read_bytes() == b"abcde"


def test_enable_atomic_put_never_shows_half_a_file(daemon, tmp_path):
    """Ours, opt-in (`SET enable_atomic_put = 1`): every PUT goes to a
    temporary name beside the target and is renamed over it when complete,
    so a reader sees the old file or the whole new one, never a part; an
    abandoned upload leaves nothing behind and the old file intact."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "up.txt").write_bytes(b"old")
    port = free_port()
    start_perlbal(daemon, str(tmp_path), web_conf(port, root, "SET enable_put = 1\n  SET enable_atomic_put = 1"),
                  port)
    target = root / "up.txt"
    s = _put_partial(port, "/up.txt", b"hello", 10)
    assert wait_for(lambda: len(os.listdir(root)) == 2)   # the temporary file
    assert target.read_bytes() == b"old"
    s.sendall(b"world")
    assert recv_all(s).startswith(b"HTTP/1.0 200 OK\r\n")
    s.close()
    assert target.read_bytes() == b"helloworld"
    assert os.listdir(root) == ["up.txt"]
    s = _put_partial(port, "/up.txt", b"ab", 10)
    assert wait_for(lambda: len(os.listdir(root)) == 2)
    s.close()
    assert wait_for(lambda: os.listdir(root) == ["up.txt"])
    assert target.read_bytes() == b"helloworld"


def selector_conf(port, mport, backend_port, root, ss_persist="on", pr_persist="on"):
    return """
LOAD Vhosts
CREATE POOL a
  POOL a ADD 127.0.0.1:%d
CREATE SERVICE pr
  SET role = reverse_proxy
  SET pool = a
  SET persist_client = %s
  SET persist_backend = on
  SET connect_ahead = 0
ENABLE pr
CREATE SERVICE ws
  SET role = web_server
  SET docroot = %s
  SET persist_client = on
ENABLE ws
CREATE SERVICE ss
  SET role = selector
  SET plugins = vhosts
  SET persist_client = %s
  VHOST ss proxy = pr
  VHOST ss webserver = ws
  VHOST ss manage = mgmt
ENABLE ss
CREATE SERVICE ss2
  SET role = selector
  SET listen = 127.0.0.1:%d
  SET plugins = vhosts
  SET persist_client = on
  VHOST ss2 * = ss
ENABLE ss2
""" % (backend_port, pr_persist, root, ss_persist, port) + mgmt_conf(mport)


def keepalive_requests(port, host, n, body=None):
    """n requests on one HTTP/1.0 keep-alive connection; how many were answered on it."""
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    done = 0
    try:
        for _ in range(n):
            hdrs = {"Host": host, "Connection": "keep-alive"}
            c._http_vsn, c._http_vsn_str = 10, "HTTP/1.0"
            c.request("POST" if body else "GET", "/status", body=body, headers=hdrs)
            r = c.getresponse()
            r.read()
            done += 1
            if r.getheader("Connection", "").lower() != "keep-alive":
                break
    finally:
        c.close()
    return done


def test_selectors_chain_and_selector_persist_client_decides(daemon, tmp_path):
    """As Perlbal's t/31 and t/32-selector: a selector may point at another
    selector; POSTs through both are proxied and the client connection
    persists; behind a selector its persist_client decides, not the
    target's; a vhost mapped to a management service is a 5xx."""
    be = Backend()
    root = tmp_path / "www"
    root.mkdir()
    (root / "f.txt").write_text("file")
    port, mport = free_port(), free_port()
    start_perlbal(daemon, str(tmp_path), selector_conf(port, mport, be.port, root, pr_persist="off"), port)
    try:
        assert keepalive_requests(port, "proxy", 3, body=b"foo=bar") == 3
        assert [q["method"] for q in be.requests][-3:] == ["POST"] * 3
        assert keepalive_requests(port, "proxy", 3) == 3       # pr says off, the selector says on
        r, body = get(port, "/f.txt", headers={"Host": "webserver"})
        assert r.status == 200 and body == b"file"
        r, _ = get(port, "/x", headers={"Host": "manage"})
        assert 500 <= r.status < 600
        console(mport, "SET ss2.persist_client = off")     # the selector the client connected to
        assert keepalive_requests(port, "proxy", 3) == 1
    finally:
        be.stop()


def test_request_pipelined_behind_a_non_persistent_one_is_refused(daemon, tmp_path):
    """As Perlbal's t/32-pipelining: a request sent behind one whose client
    does not keep the connection gets 400 (a stray CRLF after a POST body is
    tolerated), and nothing of it reaches a backend; a negative
    Content-Length is a 400 that says so."""
    be = Backend()
    port = free_port()
    start_perlbal(daemon, str(tmp_path), """
CREATE POOL a
  POOL a ADD 127.0.0.1:%d
CREATE SERVICE test
  SET role = reverse_proxy
  SET listen = 127.0.0.1:%d
  SET pool = a
  SET persist_client = on
  SET persist_backend = on
ENABLE test
""" % (be.port, port), port)
    try:
        out = raw(port, b"GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.0\r\n\r\n")
        assert out.startswith(b"HTTP/1.0 400") and b"Can't pipeline to HTTP/1.0" in out
        out = raw(port, b"POST /c HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc\r\n")
        assert out.startswith(b"HTTP/1.0 200")
        assert [q["path"] for q in be.requests] == ["/c"]
        out = raw(port, b"GET /d HTTP/1.0\r\nContent-Length: -20\r\n\r\n")
        assert out.startswith(b"HTTP/1.0 400") and b"Content-Length < 0" in out
    finally:
        be.stop()


def test_inverted_range_is_416_for_files_and_reproxied_files(daemon, tmp_path):
    """As Perlbal's t/40-ranges: "bytes=5-1" cannot be satisfied (416) from
    the web_server and from X-REPROXY-FILE alike."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "f.txt").write_text("0123456789")

    def behaviour(h, info):
        return 200, {"X-REPROXY-FILE": str(root / "f.txt")}, b""

    be = Backend(behaviour)
    wport, pport = free_port(), free_port()
    start_perlbal(daemon, str(tmp_path), web_conf(wport, root) + """
CREATE POOL a
  POOL a ADD 127.0.0.1:%d
CREATE SERVICE rp
  SET role = reverse_proxy
  SET listen = 127.0.0.1:%d
  SET pool = a
  SET enable_reproxy = on
ENABLE rp
""" % (be.port, pport), wport)
    try:
        for port in (wport, pport):
            r, _ = get(port, "/f.txt", headers={"Range": "bytes=5-1"})
            assert r.status == 416, port
            r, body = get(port, "/f.txt", headers={"Range": "bytes=2-4"})
            assert r.status == 206 and body == b"234"
            r, _ = get(port, "/f.txt", headers={"Range": "bytes=10-"})
            assert r.status == 416
    finally:
        be.stop()


def test_reproxy_cache_answers_if_modified_since_with_304(daemon, tmp_path):
    """As Perlbal's t/35-reproxy: a URL served from the X-REPROXY-CACHE-FOR
    cache answers 304 to If-Modified-Since equal to the cached
    Last-Modified, on a kept-alive connection, without the backend."""
    import http.client
    root = tmp_path / "www"
    root.mkdir()
    (root / "f.txt").write_text("cached body")
    ng = Nginx(str(tmp_path), str(root))
    lm = "Sat, 05 Dec 2026 10:00:00 GMT"

    def behaviour(h, info):
        return 200, {"X-REPROXY-URL": "http://127.0.0.1:%d/f.txt" % ng.port, "X-REPROXY-CACHE-FOR": "30",
                     "Last-Modified": lm}, b""

    be = Backend(behaviour)
    port = free_port()
    start_perlbal(daemon, str(tmp_path), """
CREATE POOL a
  POOL a ADD 127.0.0.1:%d
CREATE SERVICE rp
  SET role = reverse_proxy
  SET listen = 127.0.0.1:%d
  SET pool = a
  SET persist_client = on
  SET enable_reproxy = on
  SET reproxy_cache_maxsize = 10
ENABLE rp
""" % (be.port, port), port)
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/u")
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"cached body" and r.getheader("Last-Modified") == lm
        c.request("GET", "/u", headers={"If-Modified-Since": lm + "; length=11"})
        r = c.getresponse()
        assert r.status == 304 and r.read() == b""
        c.request("GET", "/u", headers={"If-Modified-Since": "Fri, 04 Dec 2026 10:00:00 GMT"})
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"cached body"
        c.close()
        assert len([q for q in be.requests if q["path"] == "/u"]) == 1
    finally:
        be.stop()
        ng.stop()


def test_include_plugin_runs_config_files_by_glob(daemon, tmp_path):
    """As Perlbal's t/75: after LOAD Include, `INCLUDE = glob [glob]` runs
    the matching files (several patterns, several files each); a pattern
    matching nothing is an error."""
    mport = free_port()
    inc = tmp_path / "inc"
    inc.mkdir()
    ports = {}
    for n in ("a", "b1", "b2", "c"):
        ports[n] = free_port()
        (inc / ("%s.conf" % n)).write_text(web_conf(ports[n], tmp_path).replace(" test\n", " t_%s\n" % n))
    start_perlbal(daemon, str(tmp_path), mgmt_conf(mport), mport)
    assert "ERROR" in console(mport, "INCLUDE = %s/a.conf" % inc)          # not loaded yet
    assert "OK" in console(mport, "LOAD Include")
    assert "ERROR" not in console(mport, "INCLUDE = %s/a.conf" % inc)
    assert "ERROR" not in console(mport, "INCLUDE = %s/b* %s/c*" % (inc, inc))
    assert "ERROR" in console(mport, "INCLUDE = %s/nothing*.conf" % inc)
    out = console(mport, "show service")
    for n in ("a", "b1", "b2", "c"):
        assert "t_%s 127.0.0.1:%d ENABLED" % (n, ports[n]) in out


def test_accesscontrol_observed_ip_behind_trusted_proxies(daemon, tmp_path):
    """As Perlbal's t/90: with AccessControl.use_observed_ip, a request from
    a trusted upstream (always_trusted, or trusted_upstream_proxies) is
    judged by the first X-Forwarded-For address; from anyone else, or
    without the setting, by the peer address."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "f.txt").write_text("ok")
    port, mport = free_port(), free_port()
    start_perlbal(daemon, str(tmp_path), """
LOAD AccessControl
CREATE SERVICE test
  SET role = web_server
  SET plugins = AccessControl
  SET listen = 127.0.0.1:%d
  SET docroot = %s
  SET test.AccessControl.use_observed_ip = 1
ENABLE test
""" % (port, root) + mgmt_conf(mport), port)

    def status(xff=None):
        r, _ = get(port, "/f.txt", headers={"X-Forwarded-For": xff} if xff else {})
        return r.status

    console(mport, "USE test", "ACCESS deny ip 127.0.0.1")
    assert status() == 403 and status("1.1.1.1") == 403           # not trusted: the peer counts
    console(mport, "SET test.always_trusted = 1")
    assert status() == 403 and status("1.1.1.1, 127.0.0.1") == 200
    console(mport, "SET test.always_trusted = 0", "SET test.trusted_upstream_proxies = 10.0.0.0/24, 127.0.0.1")
    assert status() == 403 and status("1.1.1.1") == 200
    console(mport, "SET test.AccessControl.use_observed_ip = 0")
    assert status("1.1.1.1") == 403


def test_concatenated_get(daemon, tmp_path):
    """As Perlbal's t/17: with enable_concatenate_get, GET /dir/??a,b serves
    the files one after the other (subdirectories and repeats allowed); no
    slash before ?? is 500, a missing directory or file 404; Last-Modified
    is the newest file's, and an equal If-Modified-Since gets a keep-alive
    304 without a body; turned off, 403."""
    import http.client
    root = tmp_path / "www"
    (root / "foo" / "bar").mkdir(parents=True)
    c1, c2 = "a" * 50 + "\n", "b" * 50 + "\n"
    (root / "foo" / "a.txt").write_text(c1)
    (root / "foo" / "b.txt").write_text(c2)
    (root / "foo" / "bar" / "b.txt").write_text(c2)
    port, mport = free_port(), free_port()
    start_perlbal(daemon, str(tmp_path), web_conf(port, root, "SET enable_concatenate_get = 1") + mgmt_conf(mport), port)
    assert get(port, "/foo??a.txt,b.txt")[0].status == 500
    assert get(port, "/bogus/??a.txt,b.txt")[0].status == 404
    assert get(port, "/foo/??a.txt,bogus.txt")[0].status == 404
    assert get(port, "/foo/??a.txt,b.txt")[1] == (c1 + c2).encode()
    assert get(port, "/foo/??a.txt,bar/b.txt")[1] == (c1 + c2).encode()
    r, body = get(port, "/foo/??a.txt,a.txt")
    assert body == (c1 + c1).encode()
    lm = r.getheader("Last-Modified")
    assert lm.endswith("GMT")
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/foo/??a.txt,bar/b.txt", headers={"If-Modified-Since": lm})
    r = c.getresponse()
    assert r.status == 304 and r.read() == b"" and r.getheader("Content-Length") is None
    assert "keep-alive" in r.getheader("Connection", "").lower() and r.getheader("Last-Modified").endswith("GMT")
    c.close()
    console(mport, "SET test.enable_concatenate_get = 0")
    assert get(port, "/foo/??a.txt,a.txt")[0].status == 403


def test_xffextras_sends_port_and_proto(daemon, tmp_path):
    """As Perlbal's t/78: XFFExtras' send_backend_port / send_backend_proto
    tell the backend the port the client connected to and the protocol;
    an untrusted client's own X-Forwarded-Proto does not pass."""
    be = Backend()
    port = free_port()
    start_perlbal(daemon, str(tmp_path), """
LOAD XFFExtras
CREATE POOL a
  POOL a ADD 127.0.0.1:%d
CREATE SERVICE proxy
  SET role = reverse_proxy
  SET listen = 127.0.0.1:%d
  SET pool = a
  SET plugins = XFFExtras
  SET send_backend_port = yes
  SET send_backend_proto = yes
ENABLE proxy
""" % (be.port, port), port)
    try:
        r, _ = get(port, "/x", headers={"X-Forwarded-Proto": "https"})
        assert r.status == 200
        h = be.requests[-1]["headers"]
        assert h.get("X-Forwarded-Port") == str(port)
        assert h.get("X-Forwarded-Proto") == "http"
    finally:
        be.stop()


def test_server_process_backend_is_started_and_answers(daemon, tmp_path):
    """As Perlbal's (alpha) server_process and its t/60: each backend
    connection is a new child running the program with the connection as
    its stdin and stdout; it answers HTTP there."""
    prog = tmp_path / "child-httpd"
    prog.write_text("""#!/usr/bin/python3
import os, sys
line = sys.stdin.readline()
while sys.stdin.readline().strip():
    pass
body = "You wanted [%s] and I am pid=%d\\n" % (line.split()[1], os.getpid())
sys.stdout.write("HTTP/1.0 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n%s" % (len(body), body))
sys.stdout.flush()
""")
    prog.chmod(0o755)
    port = free_port()
    start_perlbal(daemon, str(tmp_path), """
CREATE SERVICE test
  SET role = reverse_proxy
  SET listen = 127.0.0.1:%d
  SET persist_client = 1
  SET persist_backend = 1
  SET connect_ahead = 0
  SET server_process = %s
ENABLE test
""" % (port, prog), port)
    pids = set()
    for _ in range(2):
        r, body = get(port, "/status")
        assert r.status == 200 and body.startswith(b"You wanted [/status] and I am pid=")
        pids.add(body.split(b"pid=")[1].strip())
    assert len(pids) == 2                         # a child per backend connection (each answers once)


def test_trusted_upstream_proxies_take_ipv6_networks(daemon, tmp_path):
    """trusted_upstream_proxies accepts IPv6 networks next to IPv4 ones: a
    client on ::1 inside them has its X-Forwarded-For kept (ours appended);
    outside them, it is replaced by the peer address."""
    be = Backend()
    port, mport = free_port(), free_port()
    start_perlbal(daemon, str(tmp_path), """
CREATE POOL a
  POOL a ADD 127.0.0.1:%d
CREATE SERVICE proxy
  SET role = reverse_proxy
  SET listen = [::1]:%d
  SET pool = a
  SET trusted_upstream_proxies = 10.0.0.0/8, ::1/128
ENABLE proxy
""" % (be.port, port) + mgmt_conf(mport), mport)
    try:
        r, _ = get(port, "/x", host="::1", headers={"X-Forwarded-For": "1.2.3.4"})
        assert r.status == 200
        assert be.requests[-1]["headers"]["X-Forwarded-For"] == "1.2.3.4, ::1"
        assert "OK" in console(mport, "SET proxy.trusted_upstream_proxies = 10.0.0.0/8, 2001:db8::/32")
        r, _ = get(port, "/y", host="::1", headers={"X-Forwarded-For": "1.2.3.4"})
        assert be.requests[-1]["headers"]["X-Forwarded-For"] == "::1"
        assert "ERROR" in console(mport, "SET proxy.trusted_upstream_proxies = ::1/129")
    finally:
        be.stop()


def test_accesscontrol_rules_take_ipv6(daemon, tmp_path):
    """ACCESS rules take IPv6 addresses and networks next to IPv4 ones."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "f.txt").write_text("ok")
    port, mport = free_port(), free_port()
    start_perlbal(daemon, str(tmp_path), """
LOAD AccessControl
CREATE SERVICE test
  SET role = web_server
  SET plugins = AccessControl
  SET listen = [::1]:%d
  SET docroot = %s
ENABLE test
""" % (port, root) + mgmt_conf(mport), mport)
    assert get(port, "/f.txt", host="::1")[0].status == 200
    assert "OK" in console(mport, "USE test", "ACCESS deny netmask ::/8")
    assert get(port, "/f.txt", host="::1")[0].status == 403
    assert "OK" in console(mport, "USE test", "ACCESS reset", "ACCESS deny netmask 10.0.0.0/8",
                           "ACCESS allow ip ::1", "ACCESS policy deny")
    assert get(port, "/f.txt", host="::1")[0].status == 200
    assert "ERROR" in console(mport, "USE test", "ACCESS deny ip ::1/64")   # "ip" takes no prefix


def test_x_reproxy_service_hands_the_request_to_another_service(daemon, tmp_path):
    """X-REPROXY-SERVICE (as Perlbal): a backend names another service and
    the same request is answered by that service's backends; an unknown
    service is a 404 "Vhost twiddling not configured for requested pair."."""

    def first(h, info):
        if info["path"] == "/other":
            return 200, {"X-REPROXY-SERVICE": "second"}, b"ignored"
        if info["path"] == "/nowhere":
            return 200, {"X-REPROXY-SERVICE": "nosuch"}, b""
        return 200, {}, b"first"

    be1, be2 = Backend(first), Backend(lambda h, info: (200, {}, b"second:" + info["path"].encode()))
    port = free_port()
    start_perlbal(daemon, str(tmp_path), """
CREATE POOL p1
  POOL p1 ADD 127.0.0.1:%d
CREATE POOL p2
  POOL p2 ADD 127.0.0.1:%d
CREATE SERVICE second
  SET role = reverse_proxy
  SET pool = p2
ENABLE second
CREATE SERVICE front
  SET role = reverse_proxy
  SET listen = 127.0.0.1:%d
  SET pool = p1
  SET enable_reproxy = on
ENABLE front
""" % (be1.port, be2.port, port), port)
    try:
        assert get(port, "/plain")[1] == b"first"
        r, body = get(port, "/other")
        assert r.status == 200 and body == b"second:/other"
        r, body = get(port, "/nowhere")
        assert r.status == 404 and b"Vhost twiddling not configured" in body
    finally:
        be1.stop()
        be2.stop()


def test_x_reproxy_service_to_a_web_server_and_to_management(daemon, tmp_path):
    """X-REPROXY-SERVICE naming a web_server: that service serves the same
    request from its docroot (Range included); naming a management service:
    Perlbal's 500 "Can't map to service type management"."""

    www = tmp_path / "www"
    www.mkdir()
    (www / "f.txt").write_text("0123456789")

    def first(h, info):
        return 200, {"X-REPROXY-SERVICE": "mgmt" if info["path"] == "/m" else "files"}, b"ignored"

    be = Backend(first)
    port, mport = free_port(), free_port()
    start_perlbal(daemon, str(tmp_path), """
CREATE SERVICE files
  SET role = web_server
  SET docroot = %s
ENABLE files
CREATE POOL p1
  POOL p1 ADD 127.0.0.1:%d
CREATE SERVICE front
  SET role = reverse_proxy
  SET listen = 127.0.0.1:%d
  SET pool = p1
  SET persist_client = on
  SET enable_reproxy = on
ENABLE front
""" % (www, be.port, port) + mgmt_conf(mport), port)
    try:
        r, body = get(port, "/f.txt")
        assert r.status == 200 and body == b"0123456789"
        r, body = get(port, "/f.txt", headers={"Range": "bytes=2-4"})
        assert r.status == 206 and body == b"234"
        r, body = get(port, "/missing.txt")
        assert r.status == 404
        r, body = get(port, "/m")
        assert r.status == 500 and b"Can't map to service type management" in body
        # one keep-alive connection: a reproxied request, then a plain one
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(2):
            c.request("GET", "/f.txt")
            r = c.getresponse()
            assert r.status == 200 and r.read() == b"0123456789"
        c.close()
    finally:
        be.stop()
