"""memcached: the "watch" log streams, each behaviour run against ours and
against Debian's memcached 1.6.18 where it can be seen from outside: the
lines of fetchers, mutations, evictions and connevents (fields and their
order; the time, gid and descriptor values differ), the command's answers
(unknown kind, -W, pipelining, the watcher limit), a watcher taking no more
commands, watchers on every thread seeing every thread's events, a watcher
that does not read losing lines with memcached's "skipped=N" line while the
server's memory stays bounded, and watchers going away cleanly
(log_watchers)."""
import os
import re
import socket
import time

import pytest

from conftest import bin_path
from mc_helpers import PEER, Raw, start

IMPLS = ["ours", "memcached"]


class Watcher:
    """A connection that sent "watch ..." and reads log lines (LF ended)."""

    def __init__(self, port, kinds="", timeout=10, path=None):
        if path:
            self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.s.settimeout(timeout)
            self.s.connect(path)
        else:
            self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.s.sendall(("watch %s\r\n" % kinds).replace(" \r", "\r").encode())
        self.ok = self.raw_line(b"\r\n")

    def raw_line(self, end=b"\n"):
        while end not in self.buf:
            chunk = self.s.recv(1 << 16)
            if not chunk:
                raise EOFError("watcher closed; have %r" % self.buf[:200])
            self.buf += chunk
        ln, self.buf = self.buf.split(end, 1)
        return ln.decode()

    def line(self):
        return self.raw_line()

    def until(self, pattern):
        """Lines up to and including the first matching pattern."""
        out = []
        while True:
            ln = self.line()
            out.append(ln)
            if re.search(pattern, ln):
                return out

    def close(self):
        self.s.close()


def normalize(ln):
    """A line with the values that differ between runs and servers
    replaced: time, gid, descriptor, client port."""
    ln = re.sub(r"^ts=\d+\.\d+ gid=\d+ ", "ts=T gid=G ", ln)
    ln = re.sub(r"cfd=\d+", "cfd=C", ln)
    return re.sub(r"rport=[1-9]\d*", "rport=P", ln)


def sanitized():
    with open(bin_path("memcached"), "rb") as f:
        return b"__asan_init" in f.read()


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    raise AssertionError("no VmRSS")


def watcher_count(c, want, timeout=10):
    """log_watchers once it equals want (memcached updates it from its
    logger thread, so it lags)."""
    deadline = time.time() + timeout
    while True:
        n = int(c.stats()["log_watchers"])
        if n == want or time.time() > deadline:
            return n
        time.sleep(0.05)


# The requests of the format comparison and what each must log.
SCRIPT = [
    b"set a 5 100 3\r\nabc\r\n",
    b"get a\r\n",
    b"get nope\r\n",
    b"gets a nope\r\n",
    b"gat 0 a\r\n",
    b"touch a 0\r\n",
    b"touch zz 20\r\n",
    b"add a 0 0 1\r\nx\r\n",
    b"replace q 0 0 1\r\nx\r\n",
    b"append a 0 0 2\r\nde\r\n",
    b"prepend a 0 0 2\r\nde\r\n",
    b"cas a 0 0 1 999999\r\nx\r\n",
    b"cas nn 0 0 1 1\r\nx\r\n",
    b"set n 0 0 2\r\n10\r\n",
    b"incr n 5\r\n",
    b"decr n 1\r\n",
    b"incr zz 1\r\n",
    b"delete a\r\n",
    b"delete a\r\n",
    b"mg n v\r\n",
    b"mg zz v\r\n",
    b"ms m 2 T0\r\nhi\r\n",
    b"md m\r\n",
    b"ma n\r\n",
    b"mn\r\n",
    b"set k%20/#\x7f 0 0 1\r\nx\r\n",
    b"get k%20/#\x7f\r\n",
    b"set " + b"#" * 250 + b" 0 0 9\r\nmemcached\r\n",
    b"get end_of_script\r\n",
]


def run_script(port, watch):
    c = Raw(port)
    for req in SCRIPT:
        c.send(req)
        if req.startswith(b"get") or req.startswith(b"gets") or req.startswith(b"gat "):
            c.until()
        elif req.startswith(b"mg n"):
            c.line()
            c.line()
        else:
            c.line()
    lines = watch.until(r"key=end_of_script ")
    c.close()
    return lines


@pytest.mark.parametrize("impl", IMPLS)
def test_fetchers_and_mutations_lines_as_memcached(daemon, impl):
    d = start(daemon, impl=impl)
    w = Watcher(d.port, "fetchers mutations")
    assert w.ok == "OK"
    lines = run_script(d.port, w)
    w.close()
    got = [normalize(ln) for ln in lines]
    # every line: the time and an increasing gid first, one descriptor
    gids = [int(re.match(r"ts=\d+\.\d+ gid=(\d+) ", ln).group(1)) for ln in lines]
    assert gids == sorted(gids) and len(set(gids)) == len(gids)
    assert len({re.search(r"cfd=(\d+)", ln).group(1) for ln in lines}) == 1
    ttl100 = [ln for ln in got if "cmd=set" in ln and "key=a " in ln]
    assert re.search(r" ttl=(99|100) ", ttl100[0]), ttl100
    got = [re.sub(r" ttl=(99|100) ", " ttl=100 ", ln) for ln in got]
    get = "ts=T gid=G type=item_get key=%s status=%s clsid=%s cfd=C size=%s"
    store = "ts=T gid=G type=item_store key=%s status=%s cmd=%s ttl=%s clsid=%s cfd=C size=%s"
    long_key = "%23" * 250
    assert got == [
        get % ("a", "not_found", 0, 0), store % ("a", "stored", "set", 100, 1, 3),
        get % ("a", "found", 1, 3),
        get % ("nope", "not_found", 0, 0),
        get % ("a", "found", 1, 3), get % ("nope", "not_found", 0, 0),
        get % ("a", "found", 1, 3),
        get % ("a", "found", 1, 3),
        get % ("zz", "not_found", 0, 0),
        get % ("a", "found", 1, 3), store % ("a", "not_stored", "add", 0, 1, 1),
        get % ("q", "not_found", 0, 0), store % ("q", "not_stored", "replace", 0, 1, 1),
        get % ("a", "found", 1, 3), store % ("a", "stored", "append", 0, 1, 5),
        get % ("a", "found", 1, 5), store % ("a", "stored", "prepend", 0, 1, 7),
        get % ("a", "found", 1, 7), store % ("a", "exists", "cas", 0, 1, 1),
        get % ("nn", "not_found", 0, 0), store % ("nn", "not_found", "cas", 0, 1, 1),
        get % ("n", "not_found", 0, 0), store % ("n", "stored", "set", 0, 1, 2),
        get % ("n", "found", 1, 2),
        get % ("n", "found", 1, 2),
        get % ("zz", "not_found", 0, 0),
        get % ("a", "found", 1, 7),
        get % ("a", "not_found", 0, 0),
        get % ("n", "found", 1, 2),
        get % ("zz", "not_found", 0, 0),
        get % ("m", "not_found", 0, 0), store % ("m", "stored", "set", 0, 1, 2),
        get % ("m", "found", 1, 2),
        get % ("n", "found", 1, 2),
        get % ("k%2520%2F%23%7F", "not_found", 0, 0), store % ("k%2520%2F%23%7F", "stored", "set", 0, 1, 1),
        get % ("k%2520%2F%23%7F", "found", 1, 1),
        get % (long_key, "not_found", 0, 0), store % (long_key, "stored", "set", 0, 7, 9),
        get % ("end_of_script", "not_found", 0, 0),
    ]


def conn_lines(w, port):
    """The conn_new and conn_close lines of the client at port (lines of
    the test fixture's readiness probe, accepted late, are passed over)."""
    got = []
    while len(got) < 2:
        ln = w.line()
        if " rport=%d " % port in ln:
            got.append(ln)
    return got


@pytest.mark.parametrize("impl", IMPLS)
def test_connevents_lines_as_memcached(daemon, impl):
    d = start(daemon, impl=impl)
    w = Watcher(d.port, "connevents")
    assert w.ok == "OK"
    c = Raw(d.port)
    assert c.cmd(b"version\r\n").startswith(b"VERSION ")
    port = c.s.getsockname()[1]
    c.send(b"quit\r\n")
    assert c.closed()
    new, close = conn_lines(w, port)
    assert re.fullmatch(r"ts=\d+\.\d+ gid=\d+ type=conn_new rip=127\.0\.0\.1 rport=%d transport=tcp cfd=\d+" % port,
                        new), new
    assert normalize(close) == "ts=T gid=G type=conn_close rip=127.0.0.1 rport=P transport=tcp reason=normal cfd=C"
    assert re.search(r"cfd=\d+$", new).group(0) == re.search(r"cfd=\d+$", close).group(0)
    # a request memcached refuses by closing: reason=error
    e = Raw(d.port)
    e.send(b"GET / HTTP/1.1\r\n")
    assert e.closed()
    assert [normalize(ln) for ln in conn_lines(w, e.s.getsockname()[1])] == [
        "ts=T gid=G type=conn_new rip=127.0.0.1 rport=P transport=tcp cfd=C",
        "ts=T gid=G type=conn_close rip=127.0.0.1 rport=P transport=tcp reason=error cfd=C"]
    # the client hanging up: reason=normal
    h = Raw(d.port)
    assert h.cmd(b"version\r\n").startswith(b"VERSION ")
    hport = h.s.getsockname()[1]
    h.close()
    assert [normalize(ln) for ln in conn_lines(w, hport)] == [
        "ts=T gid=G type=conn_new rip=127.0.0.1 rport=P transport=tcp cfd=C",
        "ts=T gid=G type=conn_close rip=127.0.0.1 rport=P transport=tcp reason=normal cfd=C"]
    w.close()


@pytest.mark.parametrize("impl", IMPLS)
def test_connevents_on_a_unix_socket_as_memcached(daemon, tmp_path, impl):
    path = str(tmp_path / "mc.sock")
    args = ["-s", path, "-t", "1", "-U", "0"]
    if impl == "memcached" and os.geteuid() == 0:
        args += ["-u", "root"]
    daemon("memcached", args, ready_port=None, binary=None if impl == "ours" else PEER)
    for _ in range(250):
        if os.path.exists(path):
            break
        time.sleep(0.02)
    w = Watcher(0, "connevents", path=path)
    assert w.ok == "OK"
    c = Raw(0, path=path)
    assert c.cmd(b"version\r\n").startswith(b"VERSION ")
    c.send(b"quit\r\n")
    assert c.closed()
    assert [normalize(w.line()) for _ in range(2)] == [
        "ts=T gid=G type=conn_new rip=unix rport=0 transport=local cfd=C",
        "ts=T gid=G type=conn_close rip=unix rport=0 transport=local reason=normal cfd=C"]
    w.close()


@pytest.mark.parametrize("impl", IMPLS)
def test_eviction_lines_as_memcached(daemon, impl):
    d = start(daemon, "-m", "2", "-o", "no_lru_maintainer", impl=impl)
    c = Raw(d.port)
    value = b"v" * 20000
    for i in range(200):
        c.send(b"set fill%d 0 0 %d noreply\r\n%s\r\n" % (i, len(value), value))
    assert c.cmd(b"version\r\n").startswith(b"VERSION ")
    w = Watcher(d.port, "evictions")
    assert w.ok == "OK"
    c.send(b"set late 0 0 %d\r\n%s\r\n" % (len(value), value))
    assert c.line() == b"STORED"
    ev = w.line()
    m = re.fullmatch(r"ts=\d+\.\d+ gid=\d+ type=eviction key=(fill\d+) fetch=no ttl=-1 la=(\d+) clsid=(\d+) "
                     r"size=20000", ev)
    assert m, ev
    w.close()


@pytest.mark.parametrize("impl", IMPLS)
def test_watch_command_answers_as_memcached(daemon, impl):
    d = start(daemon, impl=impl)
    c = Raw(d.port)
    assert c.cmd(b"watch nonsense\r\n") == b"ERROR"
    assert c.cmd(b"watch fetchers nonsense\r\n") == b"ERROR"
    # an unknown kind with noreply: no answer at all
    c.send(b"watch nonsense noreply\r\nversion\r\n")
    assert c.line().startswith(b"VERSION ")
    # a reply still waiting to go out: watch is refused
    c.send(b"version\r\nwatch\r\n")
    assert c.line().startswith(b"VERSION ")
    assert c.line() == b"ERROR cannot pipeline other commands before watch"
    assert c.cmd(b"version\r\n").startswith(b"VERSION ")
    # every kind memcached 1.6.18 knows is accepted
    w = Watcher(d.port, "rawcmds evictions fetchers mutations sysevents connevents proxyreqs proxyevents proxyuser")
    assert w.ok == "OK"
    w.close()
    # bare "watch" is fetchers
    w = Watcher(d.port)
    assert w.ok == "OK"
    assert c.cmd(b"set k 0 0 1\r\nx\r\n") == b"STORED"
    assert re.fullmatch(r"ts=\d+\.\d+ gid=\d+ type=item_get key=k status=not_found clsid=0 cfd=\d+ size=0", w.line())
    assert c.cmd(b"get k\r\n") == b"VALUE k 0 1"
    c.until()
    assert "key=k status=found" in w.line()  # no item_store line: mutations were not asked for
    w.close()


@pytest.mark.parametrize("impl", IMPLS)
def test_watch_refused_with_dash_W(daemon, impl):
    d = start(daemon, "-W", impl=impl)
    c = Raw(d.port)
    assert c.cmd(b"watch mutations\r\n") == b"CLIENT_ERROR watch commands not allowed"
    assert c.cmd(b"version\r\n").startswith(b"VERSION ")


@pytest.mark.parametrize("impl", IMPLS)
def test_twenty_watchers_at_most(daemon, impl):
    d = start(daemon, impl=impl)
    ws = [Watcher(d.port, "mutations") for _ in range(20)]
    assert [w.ok for w in ws] == ["OK"] * 20
    extra = Watcher(d.port, "mutations")
    assert extra.ok == "WATCHER_TOO_MANY log watcher limit reached"
    c = Raw(d.port)
    assert watcher_count(c, 20) == 20
    for w in ws:
        w.close()
    assert watcher_count(c, 0) == 0
    # a slot is free again
    again = Watcher(d.port, "mutations")
    assert again.ok == "OK"
    again.close()
    extra.close()


@pytest.mark.parametrize("impl", IMPLS)
def test_a_watcher_takes_no_more_commands(daemon, impl):
    d = start(daemon, impl=impl)
    w = Watcher(d.port, "fetchers")
    assert w.ok == "OK"
    # commands sent on the watcher's connection get no answer and log nothing
    w.s.sendall(b"get fromwatcher\r\nversion\r\n")
    time.sleep(0.3)
    c = Raw(d.port)
    c.send(b"get fromclient\r\n")
    c.until()
    ln = w.line()
    assert "key=fromclient " in ln, ln
    assert b"VERSION" not in w.buf and b"fromwatcher" not in w.buf
    w.close()


@pytest.mark.parametrize("impl", IMPLS)
def test_watchers_see_events_from_every_thread(daemon, impl):
    d = start(daemon, "-t", "4", impl=impl)
    watchers = [Watcher(d.port, "mutations") for _ in range(8)]
    clients = [Raw(d.port) for _ in range(8)]
    for i, c in enumerate(clients):
        for j in range(10):
            c.send(b"set k%d_%d 0 0 1 noreply\r\nx\r\n" % (i, j))
    for c in clients:
        assert c.cmd(b"version\r\n").startswith(b"VERSION ")
    want = {"k%d_%d" % (i, j) for i in range(8) for j in range(10)}
    for w in watchers:
        seen = set()
        while seen != want:
            m = re.search(r" type=item_store key=(\S+) status=stored cmd=set ", w.line())
            assert m
            seen.add(m.group(1))
        w.close()


@pytest.mark.parametrize("impl", IMPLS)
def test_a_watcher_that_does_not_read_skips_lines_and_memory_stays_bounded(daemon, impl):
    d = start(daemon, "-o", "watcher_logbuf_size=8", impl=impl)
    w = Watcher(d.port, "fetchers")
    assert w.ok == "OK"
    c = Raw(d.port)
    rss0 = rss_kb(d.pid)
    spacer = b"X" * 200
    batch = b"".join(b"get foo%d%s\r\n" % (i, spacer) for i in range(1000))
    for _ in range(100):  # 100,000 misses: about 30 MB of log lines
        c.send(batch)
        for _ in range(1000):
            assert c.until() == []
    grown = rss_kb(d.pid) - rss0
    # (Under AddressSanitizer freed memory sits in its quarantine, so RSS
    # says nothing there; the skipped count below still shows the bound.)
    if impl == "memcached" or not sanitized():
        assert grown < 16 * 1024, "RSS grew by %d kB with a watcher that does not read" % grown
    stats = c.stats()
    assert int(stats["log_watcher_skipped"]) > 0
    assert int(stats["log_watcher_sent"]) > 0
    # reading now: a "skipped=N" line comes, then lines again
    deadline = time.time() + 60
    skipped = None
    n = 0
    while skipped is None:
        assert time.time() < deadline
        ln = w.line()
        n += 1
        if n % 100 == 0:  # new events, so the skipped line gets written
            c.send(b"get after\r\n")
            c.until()
        if ln.startswith("skipped="):
            skipped = ln
    assert re.fullmatch(r"skipped=\d+", skipped) and int(skipped[8:]) > 0
    c.send(b"get afterskip\r\n")
    c.until()
    assert re.fullmatch(r"ts=\d+\.\d+ gid=\d+ type=item_get key=\S+ status=not_found clsid=0 cfd=\d+ size=0",
                        w.line())
    w.close()


@pytest.mark.parametrize("impl", IMPLS)
def test_watchers_close_cleanly(daemon, impl):
    d = start(daemon, "-o", "watcher_logbuf_size=8", impl=impl)
    c = Raw(d.port)
    ws = [Watcher(d.port, "fetchers mutations connevents") for _ in range(5)]
    assert watcher_count(c, 5) == 5
    # lines are waiting for all of them; close them with data unread, one
    # half-closed first
    for i in range(2000):
        c.send(b"get gone%d\r\n" % i)
    for i in range(2000):
        c.until()
    ws[0].s.shutdown(socket.SHUT_WR)
    for w in ws:
        w.close()
    assert watcher_count(c, 0) == 0
    assert c.cmd(b"set after 0 0 1\r\nx\r\n") == b"STORED"
    # and new watchers work
    w = Watcher(d.port, "mutations")
    assert w.ok == "OK"
    assert c.cmd(b"set again 0 0 1\r\nx\r\n") == b"STORED"
    assert " type=item_store key=again status=stored " in w.line()
    w.close()


def test_sysevents_show_page_moves(daemon):
    """Ours only: the page mover's moves as memcached's slab_move lines
    (memcached's automover moves pages on its own timetable and also logs
    LRU crawler runs, which ours does not: README)."""
    d = start(daemon, "-m", "8")
    w = Watcher(d.port, "sysevents")
    assert w.ok == "OK"
    r = Raw(d.port)
    small = b"s" * 50
    for start_i in range(0, 120000, 2000):
        r.send(b"".join(b"set small:%d 0 0 50 noreply\r\n%s\r\n" % (i, small)
                        for i in range(start_i, start_i + 2000)))
    assert r.cmd(b"mn\r\n") == b"MN"
    time.sleep(3)  # the allocation demand is aged every second: the mix "changes"
    big = b"B" * 20000
    for i in range(400):
        r.send(b"set big:%d 0 0 20000 noreply\r\n%s\r\n" % (i, big))
    assert r.cmd(b"mn\r\n") == b"MN"
    moved = int(r.stats()["slabs_moved"])
    assert moved > 0
    slabs = r.stats("slabs")
    big_cls = {k.split(":")[0] for k, v in slabs.items() if k.endswith(":chunk_size") and int(v) > 20000}
    lines = [w.line() for _ in range(moved)]
    for ln in lines:
        m = re.fullmatch(r"ts=\d+\.\d+ gid=\d+ type=slab_move src=(\d+) dst=(\d+)", ln)
        assert m, ln
        assert m.group(1) != m.group(2) and m.group(2) in big_cls, (ln, big_cls)
    w.close()


@pytest.mark.parametrize("impl", IMPLS)
def test_a_stuck_watcher_does_not_hold_up_a_stop(daemon, impl):
    """A watcher that does not read (its socket full, lines being skipped)
    is closed when the server stops, not waited for."""
    d = start(daemon, "-o", "watcher_logbuf_size=8", impl=impl)
    w = Watcher(d.port, "fetchers")
    assert w.ok == "OK"
    w.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c = Raw(d.port)
    batch = b"".join(b"get stuck%d%s\r\n" % (i, b"Y" * 200) for i in range(1000))
    for _ in range(100):  # ~30 MB of lines: the sockets' buffers fill up
        c.send(batch)
        for _ in range(1000):
            c.until()
    assert int(c.stats()["log_watcher_skipped"]) > 0
    c.close()
    t0 = time.time()
    d.stop()
    assert time.time() - t0 < 5  # the grace period is 10 s
    w.close()
