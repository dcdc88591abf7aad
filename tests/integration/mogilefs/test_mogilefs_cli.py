"""libmogile through the `mogile` CLI: the mogadm set-up steps, the mog* file
tools' operations, byte-equal round trips, and failover across trackers."""
import os
import subprocess
import tempfile

import pytest

from .mog_cluster import Storage, Tracker, bin_path, free_port, wait_until


def mogile(trackers, *args, check=True, stdin=None):
    r = subprocess.run([bin_path("mogile"), "--trackers=" + trackers] + list(args), capture_output=True,
                       timeout=60, input=stdin)
    if check and r.returncode != 0:
        raise AssertionError("mogile %s failed: %s" % (args, r.stderr.decode()))
    return r


@pytest.fixture(scope="module")
def setup_cli():
    tmp = tempfile.mkdtemp(prefix="mogcli-")
    stores, tracker = [], None
    try:
        stores = [Storage(tmp, "127.0.1.%d" % (i + 2), [i + 1]) for i in range(2)]
        tracker = Tracker(tmp)
        t = tracker.addr
        for i, s in enumerate(stores):
            mogile(t, "host", "add", "h%d" % i, "--ip=" + s.ip, "--port=%d" % s.http_port, "--status=alive")
            mogile(t, "device", "add", "h%d" % i, str(s.devids[0]))
        mogile(t, "domain", "add", "clidom")
        mogile(t, "class", "add", "clidom", "pair", "--mindevcount=2")
        yield tmp, tracker, stores
    finally:
        for p in ([tracker] if tracker else []) + stores:
            try:
                p.stop()
            finally:
                p.kill9()


def test_cli_admin_listing(setup_cli):
    tmp, tracker, stores = setup_cli
    out = mogile(tracker.addr, "class", "list").stdout.decode()
    assert "clidom" in out and "pair" in out and "default" in out
    out = mogile(tracker.addr, "check").stdout.decode()
    assert "h0" in out and "h1" in out
    wait_until(lambda: mogile(tracker.addr, "device", "list").stdout.decode().count("writeable") == 2,
               what="devices writeable")
    r = mogile(tracker.addr, "domain", "add", "clidom", check=False)
    assert r.returncode == 1 and b"domain_exists" in r.stderr


@pytest.mark.parametrize("size", [0, 1024, 1 << 20])
def test_cli_upload_fetch_byte_equal(setup_cli, size):
    tmp, tracker, stores = setup_cli
    src = os.path.join(tmp, "in-%d" % size)
    data = os.urandom(size)
    with open(src, "wb") as f:
        f.write(data)
    key = "cli key/%d" % size
    mogile(tracker.addr, "--domain=clidom", "--class=pair", "upload", key, src)
    dst = os.path.join(tmp, "out-%d" % size)
    mogile(tracker.addr, "--domain=clidom", "fetch", key, dst)
    assert open(dst, "rb").read() == data
    info = mogile(tracker.addr, "--domain=clidom", "info", key).stdout.decode()
    assert "length: %d" % size in info and "class: pair" in info


def test_cli_list_rename_delete(setup_cli):
    tmp, tracker, stores = setup_cli
    src = os.path.join(tmp, "small")
    with open(src, "wb") as f:
        f.write(b"small")
    for i in range(3):
        mogile(tracker.addr, "--domain=clidom", "upload", "ls/%d" % i, src)
    out = mogile(tracker.addr, "--domain=clidom", "list", "ls/").stdout.decode().split()
    assert out == ["ls/0", "ls/1", "ls/2"]
    mogile(tracker.addr, "--domain=clidom", "rename", "ls/0", "ls/9")
    mogile(tracker.addr, "--domain=clidom", "delete", "ls/1")
    out = mogile(tracker.addr, "--domain=clidom", "list", "ls/").stdout.decode().split()
    assert out == ["ls/2", "ls/9"]
    r = mogile(tracker.addr, "--domain=clidom", "fetch", "ls/1", check=False)
    assert r.returncode == 1 and b"unknown_key" in r.stderr


def test_cli_fails_over_to_a_live_tracker(setup_cli):
    tmp, tracker, stores = setup_cli
    src = os.path.join(tmp, "failover")
    with open(src, "wb") as f:
        f.write(b"failover")
    # a key of its own: with xdist this test may run without the others of this file
    mogile(tracker.addr, "--domain=clidom", "upload", "fo/1", src)
    dead = "127.0.0.1:%d" % free_port()
    for _ in range(5):
        out = mogile(dead + "," + tracker.addr, "--domain=clidom", "list", "fo/").stdout.decode()
        assert "fo/1" in out
    r = mogile(dead, "ping", check=False)
    assert r.returncode == 1 and b"connect" in r.stderr
