"""A full disk: the SQLite job database on a small tmpfs (mounted by the
test; needs root, as `make test` runs). Inserts that do not fit get a clear
error and are not acknowledged, the daemon stays up, every acknowledged job
is still there, and once there is room again inserts succeed."""
import os
import sqlite3
import subprocess
import time

import pytest

from sw_helpers import SW, client, schwartzd  # noqa: F401 (fixtures)


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.fail("mounting a tmpfs needs root: %s" % r.stderr.decode())
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_refuses_inserts_and_loses_nothing(schwartzd, client, small_fs):
    db = str(small_fs / "jobs.db")
    d = schwartzd(["dbi:SQLite:dbname=%s" % db], extra=["--retry-seconds", "1"])
    c = client(d)
    acked, refused = [], None
    arg = os.urandom(32 * 1024)
    for i in range(200):
        c.send(b"insert Fill %d\r\n" % len(arg) + arg + b"\r\n")
        r = c.line()
        if r.startswith("OK "):
            acked.append(r[3:])
        else:
            refused = r
            break
    assert refused and refused.startswith("ERR "), refused
    assert acked, "nothing fitted at all"
    assert c.cmd("version").startswith("VERSION")
    # room again: inserts are accepted once the database is retried
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_fs)], check=True)
    deadline = time.time() + 15
    while True:
        c.send(b"insert Fill 1\r\nx\r\n")
        r = c.line()
        if r.startswith("OK "):
            acked.append(r[3:])
            break
        assert time.time() < deadline, r
        time.sleep(0.2)
    con = sqlite3.connect(db)
    ids = {str(i) for (i,) in con.execute("SELECT jobid FROM job")}
    con.close()
    assert {h.split("-")[1] for h in acked} <= ids
