"""Perlbal 1.80's command line and the behaviours its own test suite
(perlbal/Perlbal t/) checks, each written here in our own words and run
against our binary."""
import os
import signal
import socket
import subprocess
import time

from conftest import bin_path, free_port, wait_port
from pb_helpers import console, get, raw, start_perlbal


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
    pid = int(pidfile.read_text().split()[0])
    try:
        assert os.getsid(pid) == pid              # its own session, detached from ours
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
    start_perlbal(daemon, str(tmp_path), web_conf(port, root) + """
CREATE SERVICE mgmt
  SET role = management
  SET listen = 127.0.0.1:%d
ENABLE mgmt
""" % mport, port)
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


def wait_for(cond, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_buffered_upload_file_is_created_named_and_cleaned(daemon, tmp_path):
    """As Perlbal's t/45: a body over buffer_upload_threshold_size is spooled
    to a file in buffer_uploads_path while it arrives (named
    <service>-<listen>-client-<fd>-<n>), the backend gets it whole with the
    reason (PERLBAL_DEBUG_BUFFERED_UPLOADS), the file is gone once answered;
    a client that gives up mid-upload leaves no file behind either."""
    from pb_helpers import Backend
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
        resp = b""
        while True:
            c = s.recv(65536)
            if not c:
                break
            resp += c
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


def test_chunked_upload_is_spooled_and_sent_with_content_length(daemon, tmp_path):
    """As Perlbal's t/52: with buffer_uploads a chunked upload (HTTP/1.0 or
    1.1, Expect: 100-continue answered) is spooled, and the backend gets it
    with a Content-Length, no Transfer-Encoding and no Expect."""
    from pb_helpers import Backend
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
        resp = b""
        while True:
            c = s.recv(65536)
            if not c:
                break
            resp += c
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
