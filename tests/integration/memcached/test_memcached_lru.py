"""memcached: the segmented LRU as memcached 1.6.18 has it — HOT, WARM,
COLD and the TEMP LRU for short TTLs (-o temporary_ttl, `lru temp_ttl`),
the flat mode (`lru mode flat`, -o no_modern), and the per-LRU figures of
`stats items`, checked side by side with Debian's memcached."""
import subprocess
import time

import pytest

from conftest import bin_path
from mc_helpers import Raw, start

# Figures that depend on timing or on the item layout (memcached's header
# is 56 bytes + suffix, ours 52: README), not on LRU behaviour.
TIMING = ("age", "age_hot", "age_warm", "mem_requested", "evicted_time")
# stats settings names whose values differ by design (the test's own
# ports, our hash, our reply-memory bound: README).
OWN = ("tcpport", "inter", "hash_algorithm", "read_buf_mem_limit")


# In the script: wait until the LRU maintainer has moved every item out of
# HOT. When it does depends on its thread's timing in both daemons (memcached
# moves an item after a clock tick and its next wake-up, up to ~2 s): a read
# before that counts as hits_to_hot, after it as hits_to_cold.
HOT_MOVED = b"<wait until HOT is empty>"


def wait_hot_moved(r, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(v == "0" for k, v in r.stats("items").items() if k.endswith(":number_hot")):
            return
        time.sleep(0.05)


def transcript(d, lines, settle=0.0):
    r = Raw(d.port)
    out = []
    for ln in lines:
        if ln is HOT_MOVED:
            wait_hot_moved(r)
            continue
        if ln is None:  # let the LRU maintainers run
            wait_hot_moved(r)
            time.sleep(settle)
            continue
        if ln.startswith(b"stats"):
            st = r.stats(ln[6:].decode().strip())
            if ln == b"stats settings":
                st = {k: v for k, v in st.items() if "lru" in k or "temp" in k}
            out.append([(k, v) for k, v in st.items() if k.split(":")[-1] not in TIMING and k not in OWN])
        elif ln.startswith(b"get"):
            r.send(ln + b"\r\n")
            out.append(r.until())
        else:
            out.append(r.cmd(ln + b"\r\n"))
    r.close()
    return out


TEMP_SCRIPT = [
    b"set a 0 10 1\r\nx", b"set b 0 0 1\r\ny", b"set c 0 100 1\r\nz", b"set d 0 30 1\r\nz", HOT_MOVED,
    b"get a", b"get a", b"get b", b"get d", None, b"stats items",
    b"lru temp_ttl -1", b"lru temp_ttl x", b"set e 0 5 1\r\nx", None, b"stats items",
    b"lru temp_ttl 5", b"set f 0 5 1\r\nx", b"set g 0 6 1\r\nx", None, b"stats items",
    b"stats settings",
]


def test_temp_lru_counts_as_memcached(daemon):
    flags = ("-m", "64", "-o", "temporary_ttl=30")
    ours = transcript(start(daemon, *flags), TEMP_SCRIPT, 1.5)
    theirs = transcript(start(daemon, *flags, impl="memcached"), TEMP_SCRIPT, 1.5)
    for o, t in zip(ours[:-1], theirs[:-1]):
        assert o == t
    # the TEMP LRU holds a (ttl 10) and d (ttl 30 = temporary_ttl), not c (100)
    first = dict(ours[8])
    assert first["items:1:number_temp"] == "2" and first["items:1:hits_to_temp"] == "3"
    assert dict(ours[-1])["temp_lru"] == "yes" and dict(ours[-1])["temporary_ttl"] == "5"


FLAT_SCRIPT = [
    b"lru mode flat", b"set a 0 0 1\r\nx", b"set b 0 0 1\r\ny", b"get a", None, b"stats items",
    b"lru mode sideways", b"lru mode segmented", b"set c 0 0 1\r\nz", b"stats settings",
]


def test_flat_mode_as_memcached(daemon):
    ours = transcript(start(daemon, "-m", "64"), FLAT_SCRIPT, 1.5)
    theirs = transcript(start(daemon, "-m", "64", impl="memcached"), FLAT_SCRIPT, 1.5)
    assert ours == theirs
    items = dict(ours[4])
    assert items["items:1:number_cold"] == "2" and items["items:1:number_hot"] == "0"
    assert dict(ours[-1])["lru_segmented"] == "yes"


@pytest.mark.parametrize("opt", ["no_modern", "no_lru_maintainer"])
def test_without_the_maintainer_stats_items_as_memcached(daemon, opt):
    script = [b"set a 0 0 1\r\nx", b"get a", b"stats items", b"lru mode flat", b"lru temp_ttl 5",
              b"lru tune 10 10 0.1 2", b"stats settings"]
    ours = transcript(start(daemon, "-o", opt), script)
    theirs = transcript(start(daemon, "-o", opt, impl="memcached"), script)
    assert ours[:6] == theirs[:6]
    names = [k for k, _ in ours[2]]
    assert "items:1:number_hot" not in names and "items:1:hits_to_hot" not in names
    assert dict(ours[-1])["lru_segmented"] == "no"
    assert ours[3] == b"ERROR" and ours[4] == b"ERROR"


def test_temporary_ttl_requires_the_maintainer():
    p = subprocess.run([bin_path("memcached"), "-p", "0", "-l", "127.0.0.1", "-o",
                        "no_lru_maintainer,temporary_ttl=20"], capture_output=True, text=True, timeout=10)
    assert p.returncode != 0
    assert "temporary_ttl requires lru_maintainer to be enabled" in p.stderr + p.stdout


@pytest.mark.parametrize("impl", ["ours", "memcached"])
def test_temp_items_are_not_evicted(daemon, impl):
    d = start(daemon, "-m", "8", "-o", "temporary_ttl=120", impl=impl)
    r = Raw(d.port)
    v = b"t" * 200
    r.send(b"".join(b"set temp%d 0 100 %d noreply\r\n%s\r\n" % (i, len(v), v) for i in range(2000)) + b"mn\r\n")
    assert r.line() == b"MN"
    for rnd in range(6):  # many times the memory in long-lived items of the same size
        r.send(b"".join(b"set long%d_%d 0 0 %d noreply\r\n%s\r\n" % (rnd, i, len(v), v) for i in range(10000))
               + b"mn\r\n")
        assert r.line() == b"MN"
    assert int(r.stats()["evictions"]) > 0
    r.send(b"".join(b"mg temp%d\r\n" % i for i in range(2000)) + b"mn\r\n")
    got = r.until(b"MN")
    assert got.count(b"HD") == 2000


def test_flat_mode_evicts_the_least_recently_used(daemon):
    d = start(daemon, "-m", "8")
    r = Raw(d.port)
    assert r.cmd(b"lru mode flat\r\n") == b"OK"
    v = b"f" * 200
    r.send(b"".join(b"set keep%d 0 0 %d noreply\r\n%s\r\n" % (i, len(v), v) for i in range(500)) + b"mn\r\n")
    assert r.line() == b"MN"
    for rnd in range(6):
        # the keep* items are read all along: a second chance each time
        # they reach the tail, so only the unread ones go
        r.send(b"".join(b"mg keep%d\r\n" % i for i in range(500)) + b"mn\r\n")
        r.until(b"MN")
        r.send(b"".join(b"set x%d_%d 0 0 %d noreply\r\n%s\r\n" % (rnd, i, len(v), v) for i in range(5000))
               + b"mn\r\n")
        assert r.line() == b"MN"
    st = r.stats("items")
    assert sum(int(v) for k, v in st.items() if k.endswith(":evicted")) > 0
    r.send(b"".join(b"mg keep%d\r\n" % i for i in range(500)) + b"mn\r\n")
    assert r.until(b"MN").count(b"HD") >= 450
    assert all(int(v) == 0 for k, v in st.items() if k.endswith(":number_hot") or k.endswith(":number_warm"))


@pytest.mark.parametrize("impl", ["ours", "memcached"])
def test_the_maintainer_reclaims_expired_items_unread(daemon, impl):
    d = start(daemon, "-m", "6", impl=impl)
    r = Raw(d.port)
    for i in range(10):
        assert r.cmd(b"set ifoo%d 0 1 2\r\nok\r\n" % i) == b"STORED"
    deadline = time.time() + 10
    while time.time() < deadline and r.stats()["reclaimed"] != "10":
        time.sleep(0.2)
    st = r.stats()
    assert st["reclaimed"] == "10" and st["curr_items"] == "0"


@pytest.mark.parametrize("impl", ["ours", "memcached"])
def test_an_item_read_twice_in_cold_moves_to_warm(daemon, impl):
    d = start(daemon, "-m", "6", impl=impl)
    r = Raw(d.port)
    v = b"B" * 66560
    assert r.cmd(b"set canary 0 0 %d\r\n%s\r\n" % (len(v), v)) == b"STORED"
    for i in range(30):
        assert r.cmd(b"set key%d 0 0 %d\r\n%s\r\n" % (i, len(v), v)) == b"STORED"
    deadline = time.time() + 10
    while time.time() < deadline and r.stats("items").get("items:31:moves_to_cold", "0") == "0":
        time.sleep(0.2)
    for _ in range(2):
        r.send(b"get canary\r\n")
        assert len(r.until()) == 2
    while time.time() < deadline and r.stats("items")["items:31:moves_to_warm"] == "0":
        time.sleep(0.2)
    assert r.stats("items")["items:31:moves_to_warm"] != "0"
    for i in range(30, 100):  # many times the memory: the canary survives in WARM
        assert r.cmd(b"set key%d 0 0 %d\r\n%s\r\n" % (i, len(v), v)) == b"STORED"
    r.send(b"get canary\r\n")
    assert r.until() == [b"VALUE canary 0 66560", v]
