"""Operations: the !watch live view, the console, Prometheus metrics, a
config file with MogileFS's keys, and a storage node on a full disk."""
import os
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

from . import mogclient
from .mog_cluster import Storage, Tracker, bin_path, free_port, wait_until


def read_until(sock, marker, timeout=5):
    sock.settimeout(timeout)
    buf = b""
    while marker not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf.decode()


def test_watch_streams_finished_commands(cluster):
    host, port = cluster.tracker.addr.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as w:
        w.sendall(b"!watch\r\n")
        assert "Added you to watcher list" in read_until(w, b".\r\n")
        c = cluster.client("testdom")
        c.backend.raw("noop")
        try:
            c.get_paths("watch-missing")
        except mogclient.MogError:
            pass
        out = read_until(w, b"unknown_key")
        assert " noop OK" in out
        assert " get_paths ERR unknown_key" in out
        assert "watch-missing" not in out  # arguments are not shown
        w.sendall(b"!watch\r\n")
        assert "Removed you" in read_until(w, b"Removed")


def test_console_and_metrics(cluster_factory):
    mport, aport = free_port(), free_port()
    cl = cluster_factory(nhosts=1, tracker_extra=["--metrics=127.0.0.1:%d" % mport, "--admin=127.0.0.1:%d" % aport])
    cl.admin.create_domain("m")
    c = cl.client("m")
    c.store_content("k", None, b"v")
    c.get_paths("k")
    body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=5).read().decode()
    assert "mogilefsd_uploads 1" in body
    assert "mogilefsd_get_paths 1" in body
    with socket.create_connection(("127.0.0.1", aport)) as s:
        s.sendall(b"stats\r\nmogstats\r\nshow settings\r\nquit\r\n")
        out = read_until(s, b"db_dsn")
    assert "STAT uploads 1" in out and "pending_queries 0" in out and "db_dsn" in out
    assert "db_pass" in out


def test_mogilefs_config_file_keys_and_unknown_warning(tmp_path):
    port = free_port()
    conf = tmp_path / "mogilefsd.conf"
    conf.write_text("# MogileFS config\ndb_dsn = DBI:SQLite:%s/x.sqlite\nlisten = 127.0.0.1:%d\nquery_jobs = 3\n"
                    "some_future_key = 1\ndaemonize = 0\n" % (tmp_path, port))
    p = subprocess.Popen([bin_path("mogilefsd"), "--config=%s" % conf], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _connectable(port), what="tracker up")
        assert mogclient.Backend(["127.0.0.1:%d" % port]).raw("noop") == "OK "
    finally:
        p.terminate()
        out = p.communicate(timeout=15)[0].decode()
    assert p.returncode == 0
    assert "unknown setting 'some_future_key' ignored" in out


def _connectable(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_full_disk_put_fails_cleanly(tmp_path):
    root = tmp_path / "small"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(root)], check=True)
    try:
        node = Storage(str(tmp_path), "127.0.0.1", [1], docroot=str(root))
        try:
            status = mogclient.http_put("http://127.0.0.1:%d/dev1/big.fid" % node.http_port, os.urandom(3 << 20))
            assert status == 500  # common/httpd: "Write failed"
            # Nothing left behind: common/httpd removes the temporary file on
            # its disk pool, just after the answer.
            wait_until(lambda: os.listdir(root / "dev1") in ([], ["usage"]), timeout=10,
                       what="the partial upload removed")
            # Still serving.
            assert mogclient.http_put("http://127.0.0.1:%d/dev1/small.fid" % node.http_port, b"ok") == 200
        finally:
            node.stop()
    finally:
        subprocess.run(["umount", str(root)], check=False)


def test_sighup_rereads_live_settings_from_the_mogilefs_config(tmp_path):
    import signal
    port, aport = free_port(), free_port()
    conf = tmp_path / "mogilefsd.conf"
    body = "db_dsn = DBI:SQLite:%s/y.sqlite\nlisten = 127.0.0.1:%d\nadmin = 127.0.0.1:%d\nunknown_key = 1\n" % (
        tmp_path, port, aport)
    conf.write_text(body + "log-level = warn\nmin_free_space = 100\ndb_pass = s3cret-pw\n")
    p = subprocess.Popen([bin_path("mogilefsd"), "-c", str(conf)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _connectable(aport), what="console up")

        def settings():
            with socket.create_connection(("127.0.0.1", aport)) as s:
                s.sendall(b"show settings\r\nquit\r\n")
                return read_until(s, b"min_free_space")
        assert "log-level = warn" in settings()
        assert "s3cret-pw" not in settings()  # no secret is ever printed
        conf.write_text(body + "log-level = debug\nmin_free_space = 5\nquery_jobs = 99\ndb_pass = s3cret-pw\n")
        p.send_signal(signal.SIGHUP)
        wait_until(lambda: "log-level = debug" in settings() and "min_free_space = 5" in settings(),
                   what="reload")
        assert "query_jobs = 20" in settings()  # not live: keeps its start-up value
    finally:
        p.terminate()
        p.wait(timeout=15)
    assert p.returncode == 0


def test_tracker_follows_each_nodes_utilization_stream(cluster_factory):
    """The tracker keeps each node's side-channel `watch` stream open (the
    original's IOStatWatcher): its lines become the devices' utilization."""
    aport = free_port()
    cl = cluster_factory(nhosts=2, tracker_extra=["--admin=127.0.0.1:%d" % aport])

    def updates():
        with socket.create_connection(("127.0.0.1", aport)) as s:
            s.sendall(b"stats\r\nquit\r\n")
            out = read_until(s, b"END")
        m = [l for l in out.splitlines() if l.startswith("STAT iostat_updates ")]
        return int(m[0].split()[2]) if m else 0
    # two nodes, one device each, a line per device per second
    wait_until(lambda: updates() >= 4, timeout=15, what="utilization lines")
    for d in cl.admin.get_devices():
        assert 0.0 <= float(d["utilization"]) <= 100.0
