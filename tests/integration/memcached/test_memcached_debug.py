"""memcached -vv: the per-command debug lines memcached prints on stderr
("<fd command", ">fd reply", ">fd sending key K", binary header dumps),
compared line for line with Debian's memcached 1.6.18 for one client
script (file descriptor numbers aside)."""
import re
import struct
import time

from mc_helpers import Raw, bin_request, bin_response, start

DEBUG = re.compile(r"^([<>])(\d+) (.*)$|^(\d+): (Client using the .*)$")


def debug_lines(d):
    """The debug lines, connection by connection (threads interleave them),
    without the fd numbers; connections that sent nothing (the test
    fixture's port probe) are left out."""
    groups, open_ = [], {}
    for ln in d.output().splitlines():
        m = DEBUG.match(ln)
        if not m or "server listening" in ln:
            continue
        fd = m.group(2) or m.group(4)
        text = "%sFD %s" % (m.group(1), m.group(3)) if m.group(1) else "FD: %s" % m.group(5)
        if fd not in open_ or "new " in text and "client connection" in text:
            open_[fd] = []
            groups.append(open_[fd])
        open_[fd].append(text)
    return [g for g in groups if any("Client using" in t for t in g)]


def closed(groups):
    return sum(1 for g in groups if g[-1] == "<FD connection closed.")


def script(d):
    r = Raw(d.port)
    for ln in [b"set a 0 0 1\r\nx\r\n", b"add a 0 0 1\r\ny\r\n", b"set n 0 0 2\r\n10\r\n", b"incr n 5\r\n",
               b"decr zz 1\r\n", b"delete a\r\n", b"delete a\r\n", b"touch n 10\r\n", b"bogus\r\n",
               b"version\r\n", b"flush_all\r\n", b"set b 0 0 2 noreply\r\nhi\r\n", b"mn\r\n"]:
        r.send(ln)
        if b"noreply" not in ln:
            r.line()
    for ln in [b"get n b zz\r\n", b"gets n\r\n", b"stats\r\n"]:
        r.send(ln)
        r.until()
    r.send(b"mg n v\r\nmn\r\n")
    r.until(b"MN")
    r.close()
    b = Raw(d.port)
    b.send(bin_request(0x01, key=b"k", extras=struct.pack(">II", 0, 0), value=b"val"))
    bin_response(b)
    b.send(bin_request(0x00, key=b"k"))
    bin_response(b)
    b.send(bin_request(0x00, key=b"missing"))
    bin_response(b)
    b.close()


def test_vv_debug_lines_as_memcached(daemon):
    got = {}
    for impl in ("ours", "memcached"):
        d = start(daemon, "-vv", impl=impl)
        script(d)
        deadline = time.time() + 10   # both connections' "closed" lines
        while time.time() < deadline and closed(debug_lines(d)) < 2:
            time.sleep(0.1)
        got[impl] = debug_lines(d)
    assert len(got["ours"]) == 2
    assert got["ours"] == got["memcached"]
    assert "<FD get n b zz" in got["ours"][0] and ">FD sending key b" in got["ours"][0]
    assert ">FD NOREPLY STORED" in got["ours"][0] and "<FD GET missing" in got["ours"][1]


def test_no_debug_lines_without_vv(daemon):
    d = start(daemon, "-v")
    script(d)
    time.sleep(0.3)
    assert debug_lines(d) == []
