"""memcached: -e FILE, the restartable cache, each behaviour run against
ours and Debian's memcached 1.6.18: after a graceful stop (SIGUSR1, or
"shutdown graceful") the next start with the same -e serves the same
items (small and chunked values, flags; ours also their CAS) and the same hash
table size, items whose TTL ran out while stopped are gone, deleted ones
stay deleted; a stop by SIGTERM or a crash keeps nothing; different
memory settings start with a clean cache; an empty metadata file refuses
to start; "stats settings" shows memory_file."""
import os
import signal
import time

import pytest

from conftest import bin_path
from mc_helpers import PEER, Raw

IMPLS = ["ours", "memcached"]


def start_e(daemon, impl, path, *extra):
    args = ["-p", "{port}", "-l", "127.0.0.1", "-U", "0", "-t", "2", "-e", path] + list(extra)
    if impl == "memcached" and os.geteuid() == 0:
        args += ["-u", "root"]
    return daemon("memcached", args, binary=None if impl == "ours" else PEER)


def graceful_stop(d, how="usr1"):
    """Stop d the way that keeps the items; wait for it to exit."""
    if how == "usr1":
        d.proc.send_signal(signal.SIGUSR1)
    else:
        c = Raw(d.port)
        c.send(b"shutdown graceful\r\n")
    assert d.proc.wait(timeout=30) == 0, d.output()


def get(c, key):
    """(flags, value, cas) or None."""
    c.send(b"gets %s\r\n" % key)
    ln = c.line()
    if ln == b"END":
        return None
    _, k, flags, n, cas = ln.split(b" ")
    value = c.exact(int(n) + 2)[:-2]
    assert c.line() == b"END"
    return int(flags), value, int(cas)


def fill(c):
    """What the restart must keep, and what it must not."""
    keep = {}
    size = 2
    i = 0
    while size <= 1 << 20:  # 2 B .. 1 MB: small classes and chunked items
        v = bytes([97 + i % 26]) * size
        assert c.cmd(b"set foo%d %d 0 %d\r\n%s\r\n" % (i, i, size, v)) == b"STORED"
        keep[b"foo%d" % i] = v
        size *= 2
        i += 1
    for j, size in enumerate(range(768000, 768000 + 1024, 100)):
        v = bytes([65 + j % 26]) * size
        assert c.cmd(b"set chunk%d 7 0 %d\r\n%s\r\n" % (j, size, v)) == b"STORED"
        keep[b"chunk%d" % j] = v
    assert c.cmd(b"delete chunk3\r\n") == b"DELETED"
    del keep[b"chunk3"]
    assert c.cmd(b"set short 0 2 2\r\nbo\r\n") == b"STORED"
    assert c.cmd(b"set long 0 100 2\r\nmo\r\n") == b"STORED"
    keep[b"long"] = b"mo"
    return keep


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("how", ["usr1", "shutdown"])
def test_items_survive_a_graceful_restart(daemon, tmp_path, impl, how):
    path = str(tmp_path / "mem")
    d = start_e(daemon, impl, path, "-m", "64", "-I", "2m", "-A")
    c = Raw(d.port)
    assert c.stats("settings")["memory_file"] == path
    keep = fill(c)
    before = {k: get(c, k) for k in keep}
    grown = how == "usr1"  # once is enough: the hash table's size comes back
    if grown:
        # enough keys to grow the hash table to 2^17, then deleted again
        for start in range(0, 1 << 17, 4096):
            c.send(b"".join(b"set z%d 0 0 0 noreply\r\n\r\n" % i for i in range(start, start + 4096)))
        assert c.cmd(b"mn\r\n") == b"MN"
        deadline = time.time() + 30
        while c.stats()["hash_power_level"] != "17":
            assert time.time() < deadline
            time.sleep(0.2)
        for start in range(0, 1 << 17, 4096):
            c.send(b"".join(b"delete z%d noreply\r\n" % i for i in range(start, start + 4096)))
        assert c.cmd(b"mn\r\n") == b"MN"
    w = Raw(d.port)  # stopping with a watcher attached is fine
    assert w.cmd(b"watch fetchers mutations\r\n") == b"OK"
    c.close()
    graceful_stop(d, how)
    time.sleep(2.5)  # "short" (2 s) runs out while stopped
    d.start()
    c = Raw(d.port)
    assert c.stats()["hash_power_level"] == ("17" if grown else "16")
    for k, v in keep.items():
        got = get(c, k)
        assert got is not None, k
        assert got[:2] == (before[k][0], v), k  # value and flags
        if impl == "ours":
            assert got[2] == before[k][2], k  # ours keeps the CAS too (memcached gives new ones: README)
    assert get(c, b"short") is None
    assert get(c, b"chunk3") is None
    assert get(c, b"z5") is None
    # the cache works on: new items, overwrites, the CAS goes on rising
    assert c.cmd(b"set foo0 0 0 3\r\nnew\r\n") == b"STORED"
    assert get(c, b"foo0")[1] == b"new"
    assert get(c, b"foo0")[2] > max(v[2] for v in before.values())


@pytest.mark.parametrize("impl", IMPLS)
def test_sigterm_keeps_nothing(daemon, tmp_path, impl):
    path = str(tmp_path / "mem")
    d = start_e(daemon, impl, path)
    c = Raw(d.port)
    assert c.cmd(b"set k 0 0 1\r\nx\r\n") == b"STORED"
    c.close()
    d.stop()
    assert not os.path.exists(path + ".meta")
    d.start()
    assert get(Raw(d.port), b"k") is None


@pytest.mark.parametrize("impl", IMPLS)
def test_metadata_is_used_once(daemon, tmp_path, impl):
    """The metadata file is removed when read: a crash after a restart
    starts clean instead of trusting memory that has changed since."""
    path = str(tmp_path / "mem")
    d = start_e(daemon, impl, path)
    c = Raw(d.port)
    assert c.cmd(b"set k 0 0 1\r\nx\r\n") == b"STORED"
    c.close()
    graceful_stop(d)
    time.sleep(1.1)  # memcached trusts no restart within the second it stopped
    d.start()
    assert not os.path.exists(path + ".meta")
    assert get(Raw(d.port), b"k")[1] == b"x"
    d.kill9()
    d.start()
    assert get(Raw(d.port), b"k") is None


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("change", [["-m", "48"], ["-I", "2m"], ["-n", "64"], ["-f", "1.5"], ["-C"]])
def test_other_memory_settings_start_clean(daemon, tmp_path, impl, change):
    path = str(tmp_path / "mem")
    d = start_e(daemon, impl, path, "-m", "64")
    c = Raw(d.port)
    assert c.cmd(b"set k 0 0 1\r\nx\r\n") == b"STORED"
    c.close()
    graceful_stop(d)
    time.sleep(1.1)
    d2 = start_e(daemon, impl, path, *(["-m", "64"] + change if change[0] != "-m" else change))
    c = Raw(d2.port)
    assert get(c, b"k") is None
    assert c.cmd(b"set k 0 0 1\r\ny\r\n") == b"STORED"
    if impl == "ours":
        assert "restart incompatible due to setting for" in d2.output()


@pytest.mark.parametrize("impl", IMPLS)
def test_an_empty_metadata_file_refuses_to_start(daemon, tmp_path, impl):
    path = str(tmp_path / "mem")
    open(path + ".meta", "w").close()
    with pytest.raises(RuntimeError):
        start_e(daemon, impl, path)


def test_memory_file_setting_is_null_without_dash_e(daemon):
    args = ["-p", "{port}", "-l", "127.0.0.1", "-U", "0"]
    ours = Raw(daemon("memcached", args).port).stats("settings")["memory_file"]
    peer = Raw(daemon("memcached", args + (["-u", "root"] if os.geteuid() == 0 else []), binary=PEER).port)
    assert ours == peer.stats("settings")["memory_file"] == "(null)"


def test_unwritable_memory_file_refuses_to_start(daemon, tmp_path):
    """Ours: a memory file that cannot be opened is an error at start
    (memcached aborts)."""
    with pytest.raises(RuntimeError):
        daemon("memcached", ["-p", "{port}", "-l", "127.0.0.1", "-e", str(tmp_path / "no" / "such" / "dir")])
    assert bin_path("memcached")
