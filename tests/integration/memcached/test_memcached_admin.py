"""memcached: the operator commands (cache_memlimit, slabs reassign /
automove, lru tune / mode, stats conns) answering as memcached 1.6.18 does,
run side by side against Debian's memcached where the reply is the same,
and doing what they say on our store."""
import time

import pytest

from mc_helpers import Raw, start


def replies(d, lines):
    r = Raw(d.port)
    out = []
    for ln in lines:
        r.send(ln)
        if ln.rstrip().endswith(b"noreply"):
            r.send(b"mn\r\n")
            got = r.line()
            out.append(b"" if got == b"MN" else got)
            if got != b"MN":
                r.line()
        else:
            out.append(r.line())
    r.close()
    return out


ADMIN_LINES = [
    b"cache_memlimit 100\r\n",
    b"cache_memlimit 4\r\n",
    b"cache_memlimit 2000000000\r\n",
    b"cache_memlimit abc\r\n",
    b"cache_memlimit -5\r\n",
    b"cache_memlimit 90 noreply\r\n",
    b"cache_memlimit\r\n",
    b"slabs automove 0\r\n",
    b"slabs automove 2\r\n",
    b"slabs automove 1\r\n",
    b"slabs automove 3\r\n",
    b"slabs automove x\r\n",
    b"slabs automove ratio 0.5\r\n",
    b"slabs reassign 1 1\r\n",
    b"slabs reassign 1 250\r\n",
    b"slabs reassign x 1\r\n",
    b"slabs reassign 5 1\r\n",
    b"slabs bogus\r\n",
    b"lru tune 10 30 0.1 2.0\r\n",
    b"lru tune 50 40 0.1 2.0\r\n",
    b"lru tune 10 10 0 1\r\n",
    b"lru tune a b c d\r\n",
    b"lru mode segmented\r\n",
    b"lru mode sideways\r\n",
    b"lru bogus\r\n",
]


def test_admin_replies_match_memcached(daemon):
    ours = replies(start(daemon, "-m", "64"), ADMIN_LINES)
    theirs = replies(start(daemon, "-m", "64", impl="memcached"), ADMIN_LINES)
    diff = [(ln, o, t) for ln, o, t in zip(ADMIN_LINES, ours, theirs) if o != t]
    assert diff == []


def test_cache_memlimit_too_big_is_refused_not_wrapped(daemon):
    d = start(daemon, "-m", "64")
    r = Raw(d.port)
    # 2^44 MB: memcached 1.6.18 wraps it to 0 ("MEMLIMIT_TOO_SMALL"); we
    # refuse it as megabytes-not-bytes and keep the limit.
    assert r.cmd(b"cache_memlimit 17592186044416\r\n") == b"MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes"
    assert r.cmd(b"cache_memlimit 18446744073709551617\r\n") == b"ERROR"
    assert int(r.stats()["limit_maxbytes"]) == 64 << 20


def fill(r, n, size, prefix=b"k"):
    v = b"v" * size
    r.send(b"".join(b"set %s%d 0 0 %d noreply\r\n%s\r\n" % (prefix, i, size, v) for i in range(n)) + b"mn\r\n")
    assert r.line() == b"MN"


def wait_for(pred, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


def test_cache_memlimit_shrinks_and_grows_the_page_pool(daemon):
    d = start(daemon, "-m", "64")
    r = Raw(d.port)
    fill(r, 50000, 1000)
    assert int(r.stats("slabs")["total_malloced"]) > 40 << 20
    assert r.cmd(b"cache_memlimit 16\r\n") == b"OK"
    assert wait_for(lambda: int(r.stats("slabs")["total_malloced"]) <= 16 << 20)
    st = r.stats()
    assert int(st["limit_maxbytes"]) == 16 << 20
    assert int(r.stats("slabs")["total_malloced"]) <= 16 << 20
    assert int(st["curr_items"]) < 16000   # the freed pages' items went with them
    assert r.cmd(b"cache_memlimit 64\r\n") == b"OK"
    fill(r, 50000, 1000, prefix=b"again")
    assert int(r.stats("slabs")["total_malloced"]) > 40 << 20


def class_pages(r):
    return {int(k.split(":")[0]): int(v) for k, v in r.stats("slabs").items() if k.endswith(":total_pages")}


def test_slabs_reassign_moves_a_page(daemon):
    d = start(daemon, "-m", "64", "-o", "slab_automove=0")
    r = Raw(d.port)
    fill(r, 4000, 1000, prefix=b"big")   # several pages of one class
    fill(r, 10, 10, prefix=b"small")     # one page of another
    pages = class_pages(r)
    src = max(pages, key=pages.get)
    dst = min(pages, key=pages.get)
    assert pages[src] >= 3 and src != dst
    assert r.cmd(b"slabs reassign %d %d\r\n" % (src, dst)) == b"OK"
    after = class_pages(r)
    assert after[src] == pages[src] - 1
    assert after[dst] == pages[dst] + 1
    st = r.stats()
    assert int(st["slabs_moved"]) >= 1
    assert int(st["slab_reassign_evictions_nomem"]) > 0   # the page's items were evicted
    # to the global pool (0): still allocated, owned by no class ...
    before = int(r.stats("slabs")["total_malloced"])
    assert r.cmd(b"slabs reassign %d 0\r\n" % src) == b"OK"
    st = r.stats()
    assert int(r.stats("slabs")["total_malloced"]) == before
    assert st["slab_global_page_pool"] == "1"
    # ... until a class needs a page: it takes the pooled one, no malloc.
    assert r.cmd(b"set pooled 0 0 100000\r\n%s\r\n" % (b"p" * 100000)) == b"STORED"
    st = r.stats()
    assert st["slab_global_page_pool"] == "0" and int(r.stats("slabs")["total_malloced"]) == before
    # -1: from whichever class has a page to spare
    assert r.cmd(b"slabs reassign -1 %d\r\n" % dst) == b"OK"



def test_slabs_reassign_rescues_live_items_into_free_chunks(daemon):
    """As memcached's page mover: the moved page's live items are copied
    into free chunks of their class on other pages, not evicted."""
    d = start(daemon, "-m", "64", "-o", "slab_automove=0")
    r = Raw(d.port)
    def val(i):
        return ((b"%d-" % i) * 1000)[:1000]
    r.send(b"".join(b"set k%d 0 0 1000 noreply\r\n%s\r\n" % (i, val(i)) for i in range(4000)) + b"mn\r\n")
    assert r.line() == b"MN"
    fill(r, 10, 10, prefix=b"small")
    pages = class_pages(r)
    src = max(pages, key=pages.get)
    dst = min(pages, key=pages.get)
    # Free room on the last pages (filled last): the mover takes the
    # oldest page, as memcached's, and its items go there.
    r.send(b"".join(b"delete k%d noreply\r\n" % i for i in range(2500, 4000)) + b"mn\r\n")
    assert r.line() == b"MN"
    before = r.stats()
    assert r.cmd(b"slabs reassign %d %d\r\n" % (src, dst)) == b"OK"
    assert class_pages(r)[src] == pages[src] - 1
    st = r.stats()
    assert int(st["slab_reassign_rescues"]) > 0
    assert st["slab_reassign_evictions_nomem"] == before["slab_reassign_evictions_nomem"]
    assert st["evictions"] == before["evictions"] and st["curr_items"] == before["curr_items"]
    # Every item is still there with its own value, the moved ones too.
    for i in range(2500):
        r.send(b"get k%d\r\n" % i)
        assert r.line() == b"VALUE k%d 0 1000" % i
        assert r.line() == val(i)
        assert r.line() == b"END"


STATS_SCRIPT = [b"set a 0 0 1\r\nx\r\n", b"set big 0 0 700000\r\n" + b"b" * 700000 + b"\r\n",
                b"set n 0 0 2\r\n10\r\n", b"incr n 5\r\n", b"decr n 1\r\n", b"get a\r\n", b"gat 0 a\r\n",
                b"touch a 0\r\n", b"delete zz\r\n", b"gets n\r\n"]


def stats_groups(d, flags=()):
    r = Raw(d.port)
    for ln in STATS_SCRIPT:
        r.send(ln)
        if ln.startswith((b"get", b"gat")):
            r.until()
        else:
            r.line()
    out = {g: r.stats(g) for g in ("", "settings", "items", "slabs", "conns")}
    r.close()
    return out


@pytest.mark.parametrize("flags", [[], ["-o", "idle_timeout=30,temporary_ttl=20"], ["-o", "no_modern"]])
def test_stats_names_and_order_as_memcached(daemon, flags):
    """`stats`, `stats settings`, `stats items`, `stats slabs` and `stats
    conns` carry memcached 1.6.18's names in its order (Debian's
    memcached, same flags, same commands)."""
    ours = stats_groups(start(daemon, "-m", "64", *flags))
    ref = stats_groups(start(daemon, "-m", "64", *flags, impl="memcached"))
    assert list(ours[""]) == list(ref[""])
    # stats items: the same names for each class that has items, in the
    # same order (class ids differ: our classes have other sizes)
    def by_rank(st):
        ids = []
        for k in st:
            cid = k.split(":")[1]
            if cid not in ids:
                ids.append(cid)
        return [(ids.index(k.split(":")[1]), k.split(":")[2]) for k in st]
    assert by_rank(ours["items"]) == by_rank(ref["items"])
    # stats slabs: the same names per class and in total (our classes
    # have other sizes, README: Memory).
    def per_class(st):
        return sorted({k.split(":", 1)[1] if ":" in k else k for k in st})
    assert per_class(ours["slabs"]) == per_class(ref["slabs"])
    order = [k.split(":", 1)[-1] for k in ours["slabs"]]
    assert order[:15] == [k.split(":", 1)[-1] for k in ref["slabs"]][:15]
    # stats settings: memcached's names in its order (ours lacks only what
    # is not built: test_memcached_settings.py)
    common = [k for k in ref["settings"] if k in ours["settings"]]
    assert [k for k in ours["settings"] if k in ref["settings"]] == common
    # stats conns: one block per connection, the same fields
    assert per_class(ours["conns"]) == per_class(ref["conns"])
    # and the per-class hit counters count the same hits
    def hits(st):
        return sorted((k.split(":")[1], v) for k, v in st.items() if ":" in k and
                      k.split(":")[1] in ("get_hits", "cmd_set", "delete_hits", "incr_hits", "decr_hits",
                                          "cas_hits", "cas_badval", "touch_hits") and v != "0")
    assert hits(ours["slabs"]) == hits(ref["slabs"])
    for k in ("cmd_get", "get_hits", "get_misses", "cmd_touch", "touch_hits", "incr_hits", "decr_hits",
              "delete_misses", "cmd_set", "curr_items", "total_items", "cmd_meta"):
        assert ours[""][k] == ref[""][k], k


def test_lru_tune_changes_the_settings(daemon):
    d = start(daemon)
    r = Raw(d.port)
    assert r.cmd(b"lru tune 10 30 0.1 2.5\r\n") == b"OK"
    st = r.stats("settings")
    assert (st["hot_lru_pct"], st["warm_lru_pct"], st["hot_max_factor"], st["warm_max_factor"]) == \
        ("10", "30", "0.10", "2.50")


@pytest.mark.parametrize("impl", ["ours", "memcached"])
def test_stats_conns_lists_addr_and_listen_addr(daemon, impl):
    d = start(daemon, impl=impl)
    r = Raw(d.port)
    local = r.s.getsockname()
    lines = {}
    for k, v in r.stats("conns").items():
        fd, name = k.split(":", 1)
        lines.setdefault(fd, {})[name] = v
    mine = [v for v in lines.values() if v.get("addr") == "tcp:%s:%d" % local]
    assert len(mine) == 1
    assert mine[0]["listen_addr"] == "tcp:127.0.0.1:%d" % d.port
    assert mine[0]["state"] == "conn_parse_cmd"
    assert mine[0]["secs_since_last_cmd"] == "0"


@pytest.mark.parametrize("impl", ["ours", "memcached"])
@pytest.mark.parametrize("mode", [b"", b" graceful"])
def test_shutdown_modes(daemon, impl, mode):
    d = start(daemon, "-A", impl=impl)
    r = Raw(d.port)
    assert r.cmd(b"shutdown bogus\r\n") == b"CLIENT_ERROR invalid shutdown mode"
    assert r.cmd(b"shutdown graceful now\r\n") == b"CLIENT_ERROR invalid shutdown mode"
    r.send(b"shutdown%s\r\n" % mode)
    assert r.closed()
    assert r.buf == b""
    d.proc.wait(timeout=15)
    if impl == "ours":
        assert d.proc.returncode == 0


@pytest.mark.parametrize("impl", ["ours", "memcached"])
def test_shutdown_needs_dash_a(daemon, impl):
    d = start(daemon, impl=impl)
    r = Raw(d.port)
    assert r.cmd(b"shutdown\r\n") == b"ERROR: shutdown not enabled"
    assert r.cmd(b"shutdown graceful\r\n") == b"ERROR: shutdown not enabled"


DETAIL_LINES = [
    b"stats detail dump\r\n", b"stats detail on\r\n", b"set foo:1 0 0 1\r\nx\r\n", b"get foo:1 foo:2 nodelim\r\n",
    b"delete foo:3\r\n", b"set bar:1 0 0 1\r\ny\r\n", b"stats detail dump\r\n", b"stats detail off\r\n",
    b"get foo:1\r\n", b"stats detail dump\r\n", b"stats reset\r\n", b"stats detail dump\r\n",
]


def detail_transcript(d):
    r = Raw(d.port)
    out = []
    for ln in DETAIL_LINES:
        r.send(ln)
        last = (b"END",) if ln.startswith((b"get", b"stats detail dump")) else None
        if last:
            # memcached lists prefixes in its hash table's order: compare as sets
            out.append(b"|".join(sorted(r.until(b"END"))))
        else:
            out.append(r.line())
    r.send(b"stats settings\r\n")
    st = dict(x.split(b" ", 2)[1:] for x in r.until(b"END"))
    return out, st[b"detail_enabled"]


@pytest.mark.parametrize("flags", [[], ["-D", "/"]])
def test_stats_detail_counts_per_prefix_as_memcached(daemon, flags):
    ours = detail_transcript(start(daemon, *flags))
    theirs = detail_transcript(start(daemon, *flags, impl="memcached"))
    assert ours == theirs
    if not flags:
        assert b"PREFIX foo get 2 hit 1 set 1 del 1" in ours[0][6]


@pytest.mark.parametrize("impl", ["ours", "memcached"])
def test_get_expired_and_get_flushed_are_counted(daemon, impl):
    # No background crawler: it could reclaim the item before the get sees it.
    r = Raw(start(daemon, "-o", "no_lru_crawler,no_lru_maintainer", impl=impl).port)
    # A 1 s TTL, then past it (memcached's clock ticks in whole seconds).
    assert r.cmd(b"set gone 0 1 3\r\nabc\r\n") == b"STORED"
    time.sleep(2.5)
    assert r.cmd(b"get gone\r\n") == b"END"
    assert r.cmd(b"set flushed 0 0 3\r\nabc\r\n") == b"STORED"
    assert r.cmd(b"flush_all\r\n") == b"OK"
    assert r.cmd(b"get flushed\r\n") == b"END"
    assert r.cmd(b"get never_there\r\n") == b"END"
    st = r.stats()
    assert (st["get_expired"], st["get_flushed"], st["get_misses"]) == ("1", "1", "3")
    assert st["listen_disabled_num"] == "0" and st["lrutail_reflocked"] == "0"
