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
