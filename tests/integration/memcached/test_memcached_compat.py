"""memcached: behaviours memcached 1.6.18's own t/ suite checks, in our
own words, each run against ours and Debian's memcached: the slab class
sizes, the faked starting allocation (T_MEMD_INITIAL_MALLOC) with -M,
stats reset zeroing per-class counters, an expired item's memory reused
(reclaimed), flush_all under -C, incr/decr in place, and the listening
sockets in stats conns."""
import os
import re
import subprocess
import time

import pytest

from conftest import bin_path
from mc_helpers import PEER, Raw, start

IMPLS = ["ours", "memcached"]


def class_lines(binary, *flags):
    args = [binary, "-p", "0", "-U", "0", "-vv"] + list(flags)
    if binary == PEER and os.geteuid() == 0:
        args += ["-u", "nobody"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # the class list is printed at start, before the listeners open
    time.sleep(1.0)
    p.terminate()
    out, _ = p.communicate(timeout=10)
    return [ln for ln in out.splitlines() if ln.startswith("slab class")]


@pytest.mark.parametrize("flags", [[], ["-f", "1.5", "-n", "64"], ["-f", "1.01"], ["-I", "4m"],
                                   ["-o", "slab_chunk_max=16384"], ["-I", "2m", "-n", "1000000"]])
def test_slab_classes_are_memcacheds(flags):
    ours = class_lines(bin_path("memcached"), *flags)
    assert ours and ours == class_lines(PEER, *flags)


@pytest.mark.parametrize("impl", IMPLS)
def test_initial_malloc_from_the_environment_and_dash_m_limit(daemon, impl):
    args = ["-p", "{port}", "-l", "127.0.0.1", "-U", "0", "-m", "4098", "-M"]
    if impl == "memcached" and os.geteuid() == 0:
        args += ["-u", "root"]
    d = daemon("memcached", args, env={"T_MEMD_INITIAL_MALLOC": "4294967328"},
               binary=None if impl == "ours" else PEER)
    r = Raw(d.port)
    assert r.stats()["limit_maxbytes"] == "4297064448"
    slabs = r.stats("slabs")
    assert slabs["total_malloced"] == "4294967328" and slabs["active_slabs"] == "0"
    v = b"a" * (400 * 1024)
    got = [r.cmd(b"set big%d 0 0 %d\r\n%s\r\n" % (i, len(v), v)) for i in range(5)]
    # the class's first page is granted, the next would pass -m: -M refuses
    assert got[:2] == [b"STORED", b"STORED"]
    assert b"SERVER_ERROR out of memory storing object" in got
    assert r.stats("slabs")["active_slabs"] == "1"


@pytest.mark.parametrize("impl", IMPLS)
def test_stats_reset_zeroes_the_per_class_counters(daemon, impl):
    d = start(daemon, "-m", "3", impl=impl)
    r = Raw(d.port)
    v = b"B" * 66560
    for i in range(40):
        assert r.cmd(b"set key%d 0 0 %d\r\n%s\r\n" % (i, len(v), v)) == b"STORED"
    assert r.stats("items")["items:31:evicted"] != "0"
    assert r.cmd(b"stats reset\r\n") == b"RESET"
    assert r.stats("items")["items:31:evicted"] == "0"
    assert r.stats()["evictions"] == "0"
    for i in range(40, 80):
        assert r.cmd(b"set key%d 0 0 %d\r\n%s\r\n" % (i, len(v), v)) == b"STORED"
    assert r.stats("items")["items:31:evicted"] == "40"


@pytest.mark.parametrize("impl", IMPLS)
def test_an_expired_items_memory_is_reclaimed(daemon, impl):
    d = start(daemon, impl=impl)
    r = Raw(d.port)
    assert r.cmd(b"set key 0 1 66560\r\n%s\r\n" % (b"A" * 66560)) == b"STORED"
    requested = r.stats("items")["items:31:mem_requested"]
    assert requested != "0"
    time.sleep(2.5)
    assert r.cmd(b"set key 0 0 66570\r\n%s\r\n" % (b"B" * 66570)) == b"STORED"
    assert r.stats("items")["items:31:reclaimed"] == "1"
    assert r.cmd(b"delete key\r\n") == b"DELETED"
    assert r.cmd(b"set key 0 0 66560\r\n%s\r\n" % (b"A" * 66560)) == b"STORED"
    assert r.stats("items")["items:31:mem_requested"] == requested


@pytest.mark.parametrize("impl", IMPLS)
def test_flush_all_without_cas_flushes_the_same_second(daemon, impl):
    d = start(daemon, "-C", impl=impl)
    r = Raw(d.port)
    assert r.cmd(b"flush_all 0\r\n") == b"OK"
    assert r.cmd(b"set foo 0 0 3\r\nnew\r\n") == b"STORED"
    r.send(b"get foo\r\n")
    # set in the second of the flush: flushed too (memcached has no CAS
    # cliff under -C); a second later it sticks
    assert r.until() == []
    time.sleep(1.1)
    assert r.cmd(b"set foo 0 0 3\r\nnew\r\n") == b"STORED"
    r.send(b"get foo\r\n")
    assert r.until() == [b"VALUE foo 0 3", b"new"]


@pytest.mark.parametrize("impl", IMPLS)
def test_incr_decr_in_place_pads_with_spaces(daemon, impl):
    d = start(daemon, impl=impl)
    r = Raw(d.port)
    assert r.cmd(b"set n 0 0 2\r\n10\r\n") == b"STORED"
    assert r.cmd(b"decr n 1\r\n") == b"9"
    r.send(b"get n\r\n")
    assert r.until() == [b"VALUE n 0 2", b"9 "]
    total = r.stats()["total_items"]
    assert r.cmd(b"incr n 991\r\n") == b"1000"   # longer: a new item
    r.send(b"get n\r\n")
    assert r.until() == [b"VALUE n 0 4", b"1000"]
    assert int(r.stats()["total_items"]) == int(total) + 1


@pytest.mark.parametrize("impl", IMPLS)
def test_stats_conns_lists_the_listening_socket(daemon, impl):
    d = start(daemon, impl=impl)
    r = Raw(d.port)
    r.send(b"stats conns\r\n")
    lines = [ln.decode() for ln in r.until()]
    listening = [ln for ln in lines if ln.endswith(":state conn_listening")]
    assert listening
    fd = listening[0].split(":")[0].split()[1]
    assert "STAT %s:addr tcp:127.0.0.1:%d" % (fd, d.port) in lines
    fds = [int(re.match(r"STAT (\d+):", ln).group(1)) for ln in lines]
    assert fds == sorted(fds)   # in descriptor order


@pytest.mark.parametrize("impl", IMPLS)
def test_the_automover_gives_free_pages_back_to_the_global_pool(daemon, impl):
    d = start(daemon, "-m", "60", "-o", "slab_reassign,slab_automove,lru_crawler,lru_maintainer,slab_automove_window=3",
              impl=impl)
    r = Raw(d.port)
    v = b"B" * 11000
    r.send(b"".join(b"set nfoo%d 0 0 %d noreply\r\n%s\r\n" % (i, len(v), v) for i in range(5000)) + b"mn\r\n")
    assert r.line() == b"MN"
    r.send(b"".join(b"delete nfoo%d noreply\r\n" % i for i in range(0, 5000, 2)) + b"mn\r\n")
    assert r.line() == b"MN"
    deadline = time.time() + 20
    while time.time() < deadline and int(r.stats()["slab_global_page_pool"]) <= 10:
        time.sleep(0.5)
    st = r.stats()
    assert int(st["slab_global_page_pool"]) > 10
    # the live half is still there (rescued off the pooled pages)
    r.send(b"".join(b"mg nfoo%d\r\n" % i for i in range(1, 5000, 2)) + b"mn\r\n")
    hits = r.until(b"MN").count(b"HD")
    assert hits >= int(st["curr_items"]) - 5 and hits > 1500


@pytest.mark.parametrize("impl", ["ours", "memcached"])
def test_reserved_fds_counts_the_descriptors_kept_back(daemon, impl):
    """memcached counts 5 descriptors per worker thread (its event base and
    notify pipe): 20 with -t 4. Ours counts per loop its epoll descriptor,
    libevent's pipe pair and the wake-up eventfd (4), plus the spare held
    per listening socket for accept's EMFILE: also 20 for -t 4 on one
    address, and it grows with the listening sockets."""
    d = start(daemon, threads="4", impl=impl)
    assert Raw(d.port).stats()["reserved_fds"] == "20"
    if impl == "ours":
        d2 = daemon("memcached", ["-p", "{port}", "-l", "127.0.0.1,127.0.0.2", "-t", "2", "-U", "0"])
        assert Raw(d2.port).stats()["reserved_fds"] == str(4 * 2 + 2 * 2)
