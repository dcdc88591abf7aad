"""memcached: extstore, item values moved from memory to pages of a file.

With `-o ext_path=FILE:SIZE`, values of cold items (idle for ext_item_age,
or any cold item once memory runs short) are written to pages of FILE and
the item in memory shrinks to a header naming the page. A get of such an
item waits for the read (later replies of the connection stay in order)
and answers as if the value had been in memory. These tests check that
values come back byte for byte through all three protocols, that the
ext_* settings and stats carry memcached 1.6.18's names in its order
(Debian's memcached run with the same options beside ours), that
compaction frees pages while keeping live values, that a value deleted
or overwritten while on disk is never served, and that lost pages, a
truncated file and a full disk give misses (or keep the value in memory),
never a wrong value or a crash."""
import os
import random
import shutil
import struct
import subprocess
import time

import pytest

from conftest import bin_path
from mc_helpers import PEER, Raw, bin_request, bin_response, start
from test_memcached_udp import Udp

# Small pages so a few MB of values cross pages; item_age 1 s so values go
# out quickly; the write thread sleeps at most 50 ms when idle.
EXT = "ext_page_size=8,ext_wbuf_size=2,ext_threads=2,ext_item_size=512,ext_item_age=1,ext_max_sleep=50000"


def ext_opts(path, size="64m", extra=""):
    return EXT + (("," + extra) if extra else "") + ",ext_path=%s:%s" % (path, size)


def wait_until(fn, timeout=30, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def value_for(i, n):
    rnd = random.Random(i)
    return bytes(rnd.getrandbits(8) for _ in range(64)) * (n // 64) + b"k%07d" % i


def store(r, key, value, flags=0):
    assert r.cmd(b"set %s %d 0 %d\r\n%s\r\n" % (key, flags, len(value), value)) == b"STORED"


def get_many(r, keys, verb=b"get"):
    """{key: (flags, value, cas or None)} of one multi-get."""
    r.send(verb + b" " + b" ".join(keys) + b"\r\n")
    out = {}
    while True:
        ln = r.line()
        if ln == b"END":
            return out
        parts = ln.split()
        assert parts[0] == b"VALUE", ln
        n = int(parts[3])
        data = r.exact(n + 2)
        assert data[-2:] == b"\r\n"
        out[parts[1]] = (int(parts[2]), data[:-2], int(parts[4]) if len(parts) > 4 else None)


def on_disk(r, n):
    """Wait until at least n objects live in the file."""
    wait_until(lambda: int(r.stats()["extstore_objects_used"]) >= n, what="%d objects on disk" % n)


def test_values_spill_to_disk_and_come_back_byte_equal(daemon, tmp_path):
    d = start(daemon, "-m", "64", "-o", ext_opts(tmp_path / "ext"))
    r = Raw(d.port)
    # 5 MB of values from 600 B to 600 KB (the largest is a chunked item).
    sizes = [600, 4000, 20000, 100000, 300000, 600000] * 8
    vals = {b"key%d" % i: value_for(i, n) for i, n in enumerate(sizes)}
    for i, (k, v) in enumerate(vals.items()):
        store(r, k, v, flags=i)
    store(r, b"small", b"tiny")  # under ext_item_size: stays in memory
    on_disk(r, len(vals))
    st = r.stats()
    assert int(st["extstore_objects_written"]) >= len(vals)
    assert int(st["extstore_bytes_written"]) >= sum(map(len, vals.values()))
    # text: one multi-get of everything, a memory key and a missing key in between
    keys = list(vals)
    got = get_many(r, keys[:10] + [b"small", b"nope"] + keys[10:], b"gets")
    assert got.pop(b"small")[1] == b"tiny"
    assert set(got) == set(vals)
    for i, k in enumerate(keys):
        assert got[k][0] == i and got[k][1] == vals[k], k
    st = r.stats()
    assert int(st["get_extstore"]) >= len(vals)
    assert int(st["extstore_objects_read"]) >= len(vals)
    assert int(st["get_hits"]) == len(vals) + 1 and int(st["get_misses"]) == 1  # counted once, not per pass
    assert st["badcrc_from_extstore"] == "0" and st["miss_from_extstore"] == "0"
    # the CAS did not change when the value moved: cas with it succeeds
    k = keys[3]
    cas = got[k][2]
    assert r.cmd(b"cas %s 7 0 3 %d\r\nnew\r\n" % (k, cas)) == b"STORED"
    assert get_many(r, [k])[k][1] == b"new"
    # meta: value, size, flags, key
    k = keys[5]
    r.send(b"mg %s v s f k\r\n" % k)
    hdr = r.line().split()
    assert hdr[:2] == [b"VA", b"%d" % len(vals[k])] and b"s%d" % len(vals[k]) in hdr and b"f5" in hdr, hdr
    assert r.exact(len(vals[k]) + 2)[:-2] == vals[k]
    k = keys[11]  # mg without v: the size of the value on disk, no read
    before = int(r.stats()["get_extstore"])
    assert r.cmd(b"mg %s s\r\n" % k) == b"HD s%d" % len(vals[k])
    assert int(r.stats()["get_extstore"]) == before
    # binary (a connection of its own: the first byte picks the protocol)
    b = Raw(d.port)
    for op, key in ((0x00, keys[7]), (0x0C, keys[8])):
        b.send(bin_request(op, key=key))
        _op, status, _o, _cas, extras, rkey, value = bin_response(b)
        assert status == 0 and value == vals[key]
        assert rkey == (key if op == 0x0C else b"")
        assert int.from_bytes(extras, "big") == keys.index(key)


def test_pipelined_requests_keep_their_order_around_disk_reads(daemon, tmp_path):
    d = start(daemon, "-m", "64", "-o", ext_opts(tmp_path / "ext"))
    r = Raw(d.port)
    vals = {b"p%d" % i: value_for(i, 30000) for i in range(20)}
    for k, v in vals.items():
        store(r, k, v)
    on_disk(r, len(vals))
    # get (from disk), set of the same key, get again, in one packet: the
    # set must not run before the first get's value was read.
    r.send(b"get p1\r\nset p1 0 0 5\r\nfresh\r\nget p1\r\nget p2 p3\r\nmn\r\n")
    n = len(vals[b"p1"])
    assert r.line() == b"VALUE p1 0 %d" % n and r.exact(n + 2)[:-2] == vals[b"p1"]
    assert r.line() == b"END"
    assert r.line() == b"STORED"
    assert r.line() == b"VALUE p1 0 5" and r.line() == b"fresh" and r.line() == b"END"
    got = {}
    for _ in range(2):
        ln = r.line().split()
        got[ln[1]] = r.exact(int(ln[3]) + 2)[:-2]
    assert got == {b"p2": vals[b"p2"], b"p3": vals[b"p3"]} and r.line() == b"END"
    assert r.line() == b"MN"
    # a client that leaves while its read is in flight does not crash us
    for i in range(10):
        c = Raw(d.port)
        c.send(b"get " + b" ".join(list(vals)[:10]) + b"\r\n")
        c.close()
    assert get_many(r, [b"p4"])[b"p4"][1] == vals[b"p4"]


def test_deleted_or_overwritten_values_on_disk_are_never_served(daemon, tmp_path):
    d = start(daemon, "-m", "64", "-o", ext_opts(tmp_path / "ext"))
    r = Raw(d.port)
    vals = {b"d%d" % i: value_for(i, 20000) for i in range(40)}
    for k, v in vals.items():
        store(r, k, v)
    on_disk(r, len(vals))
    used = int(r.stats()["extstore_bytes_used"])
    for i in range(0, 40, 2):
        assert r.cmd(b"delete d%d\r\n" % i) == b"DELETED"
    store(r, b"d1", b"overwritten")
    assert r.cmd(b"append d3 0 0 1\r\nx\r\n") == b"NOT_STORED"  # as memcached: not on a value on disk
    assert r.cmd(b"incr d5 1\r\n") == b"CLIENT_ERROR cannot increment or decrement non-numeric value"
    got = get_many(r, list(vals))
    assert set(got) == {b"d%d" % i for i in range(1, 40, 2)}
    assert got[b"d1"][1] == b"overwritten"
    for i in range(3, 40, 2):
        assert got[b"d%d" % i][1] == vals[b"d%d" % i]
    st = r.stats()
    assert int(st["extstore_bytes_used"]) < used
    assert int(st["extstore_objects_used"]) == 19


def test_compaction_frees_pages_and_keeps_live_values(daemon, tmp_path):
    d = start(daemon, "-m", "64", "-o", ext_opts(tmp_path / "ext"))
    r = Raw(d.port)
    assert r.cmd(b"extstore compact_under 0\r\n") == b"OK"  # not yet
    vals = {b"c%d" % i: value_for(i, 20000) for i in range(1700)}  # 34 MB: 4+ pages
    for k, v in vals.items():
        store(r, k, v)
    on_disk(r, len(vals))
    st = r.stats()
    pages_used = int(st["extstore_pages_used"])
    assert pages_used >= 4
    keep = {b"c%d" % i for i in range(0, 1700, 5)}
    for k in vals:
        if k not in keep:
            r.send(b"delete %s noreply\r\n" % k)
    assert r.cmd(b"mn\r\n") == b"MN"
    # read the survivors once, so drop_unread would keep them
    assert len(get_many(r, sorted(keep))) == len(keep)
    assert r.cmd(b"extstore compact_under 8\r\n") == b"OK"
    assert r.cmd(b"extstore max_frag 0.9\r\n") == b"OK"
    wait_until(lambda: int(r.stats()["extstore_compact_rescues"]) > 0, what="compaction")
    wait_until(lambda: int(r.stats()["extstore_pages_used"]) < pages_used, what="pages freed")
    assert r.cmd(b"extstore compact_under 0\r\n") == b"OK"
    got = get_many(r, sorted(keep))
    assert {k: v[1] for k, v in got.items()} == {k: vals[k] for k in keep}
    st = r.stats()
    assert int(st["extstore_page_reclaims"]) > 0 and st["badcrc_from_extstore"] == "0"


def test_evicted_pages_give_misses_never_wrong_values(daemon, tmp_path):
    # 3 pages of 8 MB, one always kept free: ~16 MB of the 40 MB written stay.
    d = start(daemon, "-m", "64", "-o", ext_opts(tmp_path / "ext", size="24m"))
    r = Raw(d.port)
    vals = {b"e%d" % i: value_for(i, 20000) for i in range(2000)}
    for i, (k, v) in enumerate(vals.items()):
        store(r, k, v)
        if i % 400 == 399:
            wait_until(lambda: int(r.stats()["extstore_objects_written"]) > i - 200, what="writes")
    wait_until(lambda: int(r.stats()["extstore_page_evictions"]) > 0, what="a page eviction")
    got = {}
    keys = list(vals)
    for i in range(0, len(keys), 100):
        got.update(get_many(r, keys[i:i + 100]))
    assert 0 < len(got) < len(vals)
    for k, v in got.items():
        assert v[1] == vals[k], k
    st = r.stats()
    assert int(st["extstore_objects_evicted"]) > 0 and int(st["miss_from_extstore"]) > 0
    assert st["badcrc_from_extstore"] == "0"


def test_a_truncated_file_gives_misses_not_a_crash(daemon, tmp_path):
    path = tmp_path / "ext"
    d = start(daemon, "-m", "64", "-o", ext_opts(path))
    r = Raw(d.port)
    vals = {b"t%d" % i: value_for(i, 20000) for i in range(30)}
    for k, v in vals.items():
        store(r, k, v)
    on_disk(r, len(vals))
    os.truncate(path, 0)  # the disk lost what we wrote
    assert get_many(r, list(vals)) == {}
    st = r.stats()
    assert int(st["miss_from_extstore"]) == len(vals)
    assert int(st["curr_items"]) == 0  # the headers went with their values
    store(r, b"t1", b"again")
    assert get_many(r, [b"t1"])[b"t1"][1] == b"again"


def test_a_full_disk_keeps_values_in_memory(daemon, tmp_path):
    """The file on a 3 MB tmpfs (its own mount namespace): writes past that
    fail with ENOSPC; the values that did not make it stay in memory."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.fail("needs root and unshare (util-linux) to mount a private tmpfs")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = ("mount -t tmpfs -o size=3m tmpfs %s && exec %s -p {port} -l 127.0.0.1 -t 2 -U 0 -m 64 -o %s"
              % (mnt, bin_path("memcached"), ext_opts(mnt / "ext", size="16m")))
    d = daemon("memcached", ["-m", "sh", "-c", script], binary=shutil.which("unshare"))
    r = Raw(d.port)
    vals = {b"f%d" % i: value_for(i, 20000) for i in range(200)}  # 4 MB
    for k, v in vals.items():
        store(r, k, v)
    wait_until(lambda: int(r.stats()["extstore_objects_used"]) > 0, what="some values on disk")
    time.sleep(1.5)  # the write thread has tried (and failed) to write the rest
    on_file = int(r.stats()["extstore_objects_used"])
    assert 0 < on_file < len(vals)
    got = get_many(r, list(vals))
    assert {k: v[1] for k, v in got.items()} == vals
    assert r.stats()["miss_from_extstore"] == "0"


def test_a_second_daemon_cannot_use_the_same_file(daemon, tmp_path):
    path = tmp_path / "ext"
    start(daemon, "-o", ext_opts(path))
    p = subprocess.run([bin_path("memcached"), "-p", "0", "-U", "0", "-o", ext_opts(path)],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode != 0 and "in use" in p.stderr + p.stdout


@pytest.mark.parametrize("opts,word", [
    ("ext_path=%s:64m,ext_page_size=8", "ext_page_size before any ext_path"),
    ("ext_page_size=8,ext_wbuf_size=3,ext_path=%s:64m", "divisible by wbuf_size"),
    ("ext_page_size=6,ext_wbuf_size=3,ext_path=%s:64m", "divisible by 1024*1024*2"),
    ("ext_path=%s", "must supply size to ext_path"),
    ("ext_item_age=x,ext_path=%s:64m", "ext_item_age"),
])
def test_bad_ext_options_are_refused(daemon, tmp_path, opts, word):
    p = subprocess.run([bin_path("memcached"), "-p", "0", "-U", "0", "-o", opts % (tmp_path / "ext")],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode != 0 and word in p.stderr + p.stdout


def ext_lines(r, group=""):
    """The (name, value) pairs of stats `group` that belong to extstore."""
    out = []
    for k, v in r.stats(group).items():
        if "ext" in k or k == "slab_automove_freeratio":
            out.append((k, v))
    return out


@pytest.mark.parametrize("extra", ["", "ext_compact_under=3,ext_drop_unread,ext_max_frag=0.5,ext_recache_rate=7",
                                   "ext_drop_under=5,ext_low_ttl=9,ext_wbuf_size=4,ext_item_size=100"])
def test_ext_settings_and_stats_names_as_memcached(daemon, tmp_path, extra):
    if not PEER:
        pytest.fail("Debian's memcached is not installed")
    seen = {}
    for impl in ("ours", "memcached"):
        d = start(daemon, "-m", "64", "-o", ext_opts(tmp_path / ("ext-" + impl), extra=extra), impl=impl)
        r = Raw(d.port)
        seen[impl] = (ext_lines(r, "settings"), [k for k, _ in ext_lines(r)], r.stats())
        seen[impl] += ([r.cmd(b"extstore item_age 5\r\n"), r.cmd(b"extstore bogus 1\r\n"),
                        r.cmd(b"extstore item_size\r\n")], ext_lines(r, "settings"))
    ours, theirs = seen["ours"], seen["memcached"]
    assert ours[0] == theirs[0]  # stats settings: names, order, values
    assert ours[1] == theirs[1]  # stats: the ext names in memcached's order
    for name in ("extstore_pages_free", "extstore_pages_used", "extstore_limit_maxbytes",
                 "extstore_bytes_fragmented", "extstore_objects_written", "get_extstore"):
        assert ours[2][name] == theirs[2][name], name
    assert ours[3] == theirs[3] == [b"OK", b"ERROR", b"ERROR"]
    assert ours[4] == theirs[4]


@pytest.mark.parametrize("impl", ["ours", "memcached"])
def test_without_ext_path_only_the_settings_show(daemon, impl):
    d = start(daemon, "-m", "64", impl=impl)
    r = Raw(d.port)
    assert [k for k, _ in ext_lines(r)] == []
    assert [k for k, _ in ext_lines(r, "settings")] == [
        "ext_item_size", "ext_item_age", "ext_low_ttl", "ext_recache_rate", "ext_wbuf_size", "ext_compact_under",
        "ext_drop_under", "ext_max_sleep", "ext_max_frag", "slab_automove_freeratio", "ext_drop_unread"]
    assert r.cmd(b"extstore recache_rate 10\r\n") == b"OK"


def test_low_ttl_values_share_pages_that_empty_together(daemon, tmp_path):
    """ext_low_ttl: values with a short TTL go to pages of their own, so
    once they expire (and the crawler reclaims their headers) those pages
    are free again, while long-lived values elsewhere stay readable."""
    d = start(daemon, "-m", "64", "-o", ext_opts(tmp_path / "ext", extra="ext_low_ttl=60"))
    r = Raw(d.port)
    long_lived = {b"n%d" % i: value_for(i, 20000) for i in range(500)}
    for i, (k, v) in enumerate(long_lived.items()):
        store(r, k, v)
        assert r.cmd(b"set l%d 0 3 %d\r\n%s\r\n" % (i, len(v), v)) == b"STORED"
    on_disk(r, 1000)
    time.sleep(3.5)  # the short ones expire
    assert r.cmd(b"lru_crawler crawl all\r\n") == b"OK"
    wait_until(lambda: int(r.stats()["extstore_page_reclaims"]) >= 1, what="low-TTL pages reclaimed")
    assert get_many(r, [b"l1", b"l2"]) == {}
    got = get_many(r, list(long_lived)[:50])
    assert {k: v[1] for k, v in got.items()} == {k: long_lived[k] for k in list(long_lived)[:50]}
    buckets = {v for k, v in r.stats("extstore").items() if k.endswith(":bucket")}
    assert buckets <= {"0", "1"}


@pytest.mark.parametrize("impl", ["ours", "memcached"])
def test_slabs_reassign_from_an_empty_global_pool_is_nospare(daemon, impl):
    """`slabs reassign 0 N` takes from the global pool (error-extstore.t
    starves memory this way, looping until NOSPARE)."""
    d = start(daemon, "-m", "64", "-o", "slab_automove=0", impl=impl)
    r = Raw(d.port)
    assert r.cmd(b"slabs reassign 0 1\r\n") == b"NOSPARE source class has no spare pages"


def test_slabs_reassign_takes_a_page_back_from_the_global_pool(daemon):
    """Ours moves the page at once (memcached's page mover runs in the
    background, so its answer depends on timing: not compared)."""
    d = start(daemon, "-m", "64", "-o", "slab_automove=0")
    r = Raw(d.port)
    for i in range(20):  # one class grows to a few pages
        store(r, b"x%d" % i, b"v" * 200000)
    src = max((int(v), int(k.split(":")[0])) for k, v in r.stats("slabs").items() if k.endswith(":total_pages"))[1]
    assert r.cmd(b"slabs reassign %d 0\r\n" % src) == b"OK"
    assert int(r.stats()["slab_global_page_pool"]) == 1
    assert r.cmd(b"slabs reassign 0 1\r\n") == b"OK"
    assert int(r.stats()["slab_global_page_pool"]) == 0
    assert r.cmd(b"slabs reassign 0 1\r\n") == b"NOSPARE source class has no spare pages"


def class_hits(r):
    return sum(int(v) for k, v in r.stats("slabs").items() if k.endswith(":get_hits"))


def test_multiget_of_disk_and_memory_keys_counts_each_hit_once(daemon, tmp_path):
    """A get naming on-disk keys runs again once their values are read:
    the in-memory keys before the first on-disk one are counted per class
    once (stats slabs get_hits add up to stats get_hits, as memcached's)."""
    d = start(daemon, "-m", "64", "-o", ext_opts(tmp_path / "ext"))
    r = Raw(d.port)
    disk = {b"c%d" % i: value_for(i, 3000) for i in range(6)}
    for k, v in disk.items():
        store(r, k, v)
    on_disk(r, len(disk))
    mem = {b"m%d" % i: b"v%d" % i for i in range(4)}
    for k, v in mem.items():
        store(r, k, v)
    before, hits0 = class_hits(r), int(r.stats()["get_hits"])
    keys = [b"m0", b"m1", b"c0", b"m2", b"c1", b"nope", b"c2", b"m3", b"m0"]
    got = get_many(r, keys)
    assert {k: v[1] for k, v in got.items()} == {**{k: mem[k] for k in mem}, **{k: disk[k] for k in (b"c0", b"c1", b"c2")}}
    st = r.stats()
    assert int(st["get_hits"]) - hits0 == 8
    assert class_hits(r) - before == 8
    assert int(st["get_misses"]) >= 1


def udp_get(u, payload, rid):
    u.send(payload, rid=rid)
    dgs = u.collect(quiet=0.5, first=10)
    parts = {}
    for dg in dgs:
        got_rid, seq, _total, _res = struct.unpack(">HHHH", dg[:8])
        assert got_rid == rid
        parts.setdefault(seq, []).append(dg[8:])
    return b"".join(b"".join(p) for _s, p in sorted(parts.items()))


def test_udp_get_of_on_disk_values_is_answered_while_tcp_is_served(daemon, tmp_path):
    """A UDP request naming on-disk values waits for their reads on the IO
    pool, its datagram held, and answers as a TCP get would; the loop (one
    here, shared with TCP) keeps serving TCP meanwhile."""
    d = daemon("memcached", ["-p", "{port}", "-l", "127.0.0.1", "-U", "{port2}", "-t", "1", "-m", "64",
                             "-o", ext_opts(tmp_path / "ext")])
    r = Raw(d.port)
    vals = {b"u%d" % i: value_for(i, 600 + 50 * i) for i in range(12)}
    for k, v in vals.items():
        store(r, k, v)
    on_disk(r, len(vals))
    store(r, b"mem", b"inmemory")
    read0 = int(r.stats()["extstore_objects_read"]) if "extstore_objects_read" in r.stats() else None
    hits0, class0 = int(r.stats()["get_hits"]), class_hits(r)
    u = Udp(d.port2)
    # one key from disk
    assert udp_get(u, b"get u1\r\n", 1) == b"VALUE u1 0 %d\r\n%s\r\nEND\r\n" % (len(vals[b"u1"]), vals[b"u1"])
    # a multi-get mixing memory and disk, then more requests in the same datagram
    reply = udp_get(u, b"get mem u2 u3\r\nmg u4 v\r\nversion\r\n", 2)
    want = (b"VALUE mem 0 8\r\ninmemory\r\n" +
            b"".join(b"VALUE %s 0 %d\r\n%s\r\n" % (k, len(vals[k]), vals[k]) for k in (b"u2", b"u3")) +
            b"END\r\n" + b"VA %d\r\n%s\r\n" % (len(vals[b"u4"]), vals[b"u4"]))
    assert reply.startswith(want) and reply[len(want):].startswith(b"VERSION ")
    st = r.stats()
    assert int(st["get_hits"]) - hits0 == 5 and class_hits(r) - class0 == 5
    if read0 is not None:
        assert int(st["extstore_objects_read"]) > read0
    # many UDP gets of on-disk values in flight; TCP on the same loop answers throughout
    for i in range(40):
        u.send(b"get " + b" ".join(list(vals)[i % 12:]) + b"\r\n", rid=100 + i)
        assert r.cmd(b"version\r\n").startswith(b"VERSION ")
    dgs = u.collect(quiet=0.5, first=10)
    assert {struct.unpack(">H", dg[:2])[0] for dg in dgs} == set(range(100, 140))
    u.close()
