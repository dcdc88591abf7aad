"""memcached over UDP (-U): the same datagrams sent to ours and to Debian's
memcached 1.6.18 get the same datagrams back, byte for byte, frame headers
included; a 1 MB value comes back in 1400-byte datagrams the test puts
together again; garbage is dropped (and counted) without harm; stats conns
and stats settings show the UDP sockets as memcached does; the start-up
combinations memcached refuses are refused."""
import os
import random
import socket
import struct
import subprocess
import time
import urllib.request

import pytest

from conftest import bin_path
from mc_helpers import PEER, Raw

IMPLS = ["ours", "memcached"]


def start_udp(daemon, impl, *extra, threads="2"):
    args = ["-p", "{port}", "-l", "127.0.0.1", "-U", "{port2}", "-t", threads] + list(extra)
    if impl == "ours":
        return daemon("memcached", args)
    if os.geteuid() == 0:
        args += ["-u", "root"]
    return daemon("memcached", args, binary=PEER)


class Udp:
    """A UDP client socket with a large receive buffer (a 1 MB reply is
    ~750 datagrams sent back to back)."""

    def __init__(self, port):
        self.port = port
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for opt in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
            try:
                self.s.setsockopt(socket.SOL_SOCKET, opt, 8 << 20)
                break
            except OSError:
                continue
        self.s.bind(("127.0.0.1", 0))

    def send(self, payload, rid=1, seq=0, total=1, reserved=0):
        self.s.sendto(struct.pack(">HHHH", rid, seq, total, reserved) + payload, ("127.0.0.1", self.port))

    def send_raw(self, data):
        self.s.sendto(data, ("127.0.0.1", self.port))

    def collect(self, quiet=0.3, first=3.0):
        """Every datagram that arrives until `quiet` seconds pass without one."""
        out = []
        self.s.settimeout(first)
        try:
            while True:
                out.append(self.s.recv(65536))
                self.s.settimeout(quiet)
        except socket.timeout:
            pass
        return out

    def close(self):
        self.s.close()


def hdr(rid, seq, total):
    return struct.pack(">HHHH", rid, seq, total, 0)


def bin_req(opcode, key=b"", extras=b"", value=b"", opaque=0):
    body = extras + key + value
    return struct.pack(">BBHBBHIIQ", 0x80, opcode, len(key), len(extras), 0, 0, len(body), opaque, 0) + body


# (name, payload) sent in one datagram each, in this order, after the same
# items were stored over TCP. Every reply datagram is compared.
TRANSCRIPT = [
    ("hit", b"get foo\r\n"),
    ("miss", b"get nope\r\n"),
    ("multi-get: one object per key, a miss after a hit sends nothing", b"get foo nope foo big\r\n"),
    ("multi-get starting with misses: one bare header", b"get a b c\r\n"),
    ("miss first then hit", b"get a foo b\r\n"),
    ("gets", b"gets foo\r\n"),
    ("two commands in one datagram", b"get foo\r\nget nope\r\n"),
    ("set", b"set k 1 0 3\r\nabc\r\n"),
    ("noreply sends nothing", b"set k2 1 0 3 noreply\r\nabc\r\n"),
    ("noreply then get", b"set k2 1 0 3 noreply\r\nxyz\r\nget k2\r\n"),
    ("line without its end: dropped", b"get foo"),
    ("a value over 1392 bytes: four datagrams", b"get big\r\n"),
    ("several replies, then a get", b"set a 0 0 1\r\n1\r\nincr a 5\r\ndecr a 2\r\ndelete zz\r\nget a\r\n"),
    ("touch and gat", b"touch foo 0\r\ngat 0 foo nope\r\n"),
    ("meta get", b"mg foo v f t\r\n"),
    ("meta quiet miss, then mn", b"mg nope v q\r\nmn\r\n"),
    ("meta set and delete", b"ms m1 2\r\nhi\r\nmd m1 q\r\nmd m1\r\nmn\r\n"),
    ("meta arithmetic", b"ma nope\r\nms n 1\r\n5\r\nma n D3 v\r\n"),
    ("garbage", b"\x01\x02garbage\r\n"),
    ("unknown command", b"bogus\r\n"),
    ("bad data chunk", b"set k 0 0 1\r\nabc\r\n"),
    ("a key too long", b"get " + b"k" * 251 + b"\r\n"),
    ("version", b"version\r\n"),
    ("-R: 25 requests, sent in two turns", b"get foo\r\n" * 25),
    ("verbosity", b"verbosity 0\r\n"),
    ("one byte after the header", b"\n"),
    ("binary get", bin_req(0x00, b"foo", opaque=0xDEAD)),
    ("binary get miss", bin_req(0x00, b"zzz", opaque=0xDEAD)),
    ("binary getq miss then noop", bin_req(0x09, b"zzz", opaque=1) + bin_req(0x0A, opaque=2)),
    ("binary getkq hit then noop", bin_req(0x0D, b"foo", opaque=1) + bin_req(0x0A, opaque=2)),
    ("binary set, setq, get", bin_req(0x01, b"b1", struct.pack(">II", 5, 0), b"vv") +
     bin_req(0x11, b"b2", struct.pack(">II", 0, 0), b"ww") + bin_req(0x00, b"b2")),
    ("binary incr", bin_req(0x05, b"ctr", struct.pack(">QQI", 2, 7, 0))),
    ("binary version", bin_req(0x0B, opaque=5)),
    ("binary delete miss", bin_req(0x04, b"nothere")),
]


# quit over UDP leaves memcached's UDP connection (one per thread) in a
# state that changes how it answers the next datagram it happens to read,
# so each of these is the first datagram sent to a fresh pair of daemons.
FRESH = [
    ("quit: a bare header", b"quit\r\n"),
    ("get then quit: the rest of the datagram is dropped", b"get foo\r\nquit\r\nget foo\r\n"),
    ("binary quit", bin_req(0x07)),
]

# Where we differ on purpose: memcached keeps a data block cut by the end
# of its datagram waiting and takes the next datagram that arrives, whoever
# sent it, header and all, as the rest of it (answering "bad data chunk"
# to the first sender's request id). Here every datagram stands alone: the
# cut request is dropped and the next datagram is a request of its own.
CUT = [
    ("data block cut by the datagram's end: dropped", b"set k3 1 0 10\r\nabc"),
    ("the cut set stored nothing", b"get k3\r\n"),
]


def run_transcript(port, transcript=TRANSCRIPT):
    u = Udp(port)
    out = []
    for i, (name, payload) in enumerate(transcript):
        u.send(payload, rid=100 + i)
        out.append((name, u.collect(quiet=0.25, first=0.6)))
    u.close()
    return out


def prepare(port):
    r = Raw(port)
    assert r.cmd(b"set foo 0 0 6\r\nfooval\r\n") == b"STORED"
    assert r.cmd(b"set big 7 0 5000\r\n" + bytes(b"ABCDEFGH"[b % 8] for b in random.Random(1).randbytes(5000)) +
                 b"\r\n") == b"STORED"
    r.close()


def test_udp_datagrams_byte_for_byte_as_memcached(daemon):
    got = {}
    for impl in IMPLS:
        d = start_udp(daemon, impl)
        prepare(d.port)
        got[impl] = run_transcript(d.port2)
        d.stop()
    for (name, ours), (_, theirs) in zip(got["ours"], got["memcached"]):
        assert ours == theirs, name
    # and the cases say what they claim
    by = dict(got["ours"])
    rid = {name: 100 + i for i, (name, _) in enumerate(TRANSCRIPT)}
    assert by["hit"] == [hdr(rid["hit"], 0, 1) + b"VALUE foo 0 6\r\nfooval\r\nEND\r\n"]
    assert by["multi-get starting with misses: one bare header"][0] == hdr(
        rid["multi-get starting with misses: one bare header"], 0, 0)
    assert [len(x) for x in by["a value over 1392 bytes: four datagrams"]] == [1400, 1400, 1400, 8 + 5025 - 3 * 1392]
    assert by["noreply sends nothing"] == []
    assert len(by["-R: 25 requests, sent in two turns"]) == 25


@pytest.mark.parametrize("case", range(len(FRESH)))
def test_udp_quit_as_memcached(daemon, case):
    got = {}
    for impl in IMPLS:
        d = start_udp(daemon, impl)
        prepare(d.port)
        got[impl] = run_transcript(d.port2, FRESH[case:case + 1])
        d.stop()
    assert got["ours"] == got["memcached"]
    name, dgs = got["ours"][0]
    if name.startswith("get then quit"):
        assert dgs == [hdr(100, 0, 1) + b"VALUE foo 0 6\r\nfooval\r\nEND\r\n", hdr(100, 0, 0)]
    elif name.startswith("quit"):
        assert dgs == [hdr(100, 0, 0)]


def test_udp_request_cut_by_the_datagram_is_dropped(daemon):
    d = start_udp(daemon, "ours")
    prepare(d.port)
    got = dict(run_transcript(d.port2, CUT))
    assert got[CUT[0][0]] == []
    assert got[CUT[1][0]] == [hdr(101, 0, 1) + b"END\r\n"]


def test_udp_header_fields(daemon):
    """The request id comes back in every datagram; sequence number and
    reserved field of a request are not looked at; a request of several
    datagrams, or no longer than the header, gets nothing (both daemons)."""
    for impl in IMPLS:
        d = start_udp(daemon, impl)
        prepare(d.port)
        u = Udp(d.port2)
        for rid in (0, 161, 162, 0xFFFF):
            u.send(b"get foo\r\n", rid=rid)
            assert u.collect() == [hdr(rid, 0, 1) + b"VALUE foo 0 6\r\nfooval\r\nEND\r\n"], impl
        u.send(b"get foo\r\n", rid=9, seq=5, reserved=7)
        assert u.collect() == [hdr(9, 0, 1) + b"VALUE foo 0 6\r\nfooval\r\nEND\r\n"], impl
        for total in (0, 2, 300):
            u.send(b"get foo\r\n", total=total)
            assert u.collect(first=0.5) == [], (impl, total)
        u.send_raw(hdr(1, 0, 1))
        u.send_raw(b"abc")
        u.send_raw(b"")
        assert u.collect(first=0.5) == [], impl
        u.close()
        d.stop()


@pytest.mark.parametrize("impl", IMPLS)
def test_udp_get_of_a_1mb_value_in_datagrams(daemon, impl):
    d = start_udp(daemon, impl, "-I", "2m", "-m", "64")
    value = random.Random(7).randbytes(1 << 20)
    r = Raw(d.port)
    assert r.cmd(b"set one_mb 3 0 %d\r\n" % len(value) + value + b"\r\n") == b"STORED"
    r.close()
    u = Udp(d.port2)
    u.send(b"get one_mb\r\n", rid=4242)
    dgs = u.collect(quiet=0.5)
    u.close()
    reply = b"VALUE one_mb 3 %d\r\n" % len(value) + value + b"\r\nEND\r\n"
    n = (len(reply) + 1391) // 1392
    assert len(dgs) == n
    parts = {}
    for dg in dgs:
        rid, seq, total, res = struct.unpack(">HHHH", dg[:8])
        assert (rid, total, res) == (4242, n, 0)
        assert len(dg) <= 1400
        parts[seq] = dg[8:]
    assert sorted(parts) == list(range(n))
    assert b"".join(parts[i] for i in range(n)) == reply


def metric(port, name):
    body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10).read().decode()
    for ln in body.splitlines():
        if ln.startswith(name + " "):
            return float(ln.split()[1])
    raise AssertionError("%s not in metrics" % name)


def test_udp_garbage_dropped_counted_and_survived(daemon):
    d = daemon("memcached", ["-p", "{port}", "-l", "127.0.0.1", "-U", "{port2}", "-t", "2",
                             "--metrics", "127.0.0.1:{admin}"])
    prepare(d.port)
    u = Udp(d.port2)
    rnd = random.Random(3)
    for i in range(300):
        u.send_raw(rnd.randbytes(rnd.randrange(0, 9)))  # header or less
        u.send(b"x" * 20, total=rnd.randrange(2, 60000))  # several datagrams
        if i % 20 == 19:  # let the server read them (a full socket buffer would drop them uncounted)
            u.send(b"version\r\n", rid=i)
            assert u.collect() == [hdr(i, 0, 1) + b"VERSION 1.6.18\r\n"]
    for _ in range(300):  # random requests: answered or not, never a crash
        n = rnd.randrange(1, 3000)
        u.send(rnd.randbytes(n), rid=rnd.randrange(65536))
        u.send(rnd.choice([b"get ", b"set ", b"mg ", b"\x80\x00", b"gat ", b"incr "]) +
               rnd.randbytes(rnd.randrange(0, 200)))
    u.collect(quiet=0.5)
    u.send(b"get foo\r\n", rid=77)
    assert u.collect() == [hdr(77, 0, 1) + b"VALUE foo 0 6\r\nfooval\r\nEND\r\n"]
    assert metric(d.admin, "memcached_udp_dropped") >= 600
    st = Raw(d.port).stats()
    assert "udp_dropped" not in st  # not a memcached stat: metrics only
    u.close()


@pytest.mark.parametrize("impl", IMPLS)
def test_udp_in_stats_conns_and_settings(daemon, impl):
    d = start_udp(daemon, impl, threads="3")
    r = Raw(d.port)
    u = Udp(d.port2)
    u.send(b"version\r\n")
    assert u.collect()
    r.send(b"stats conns\r\n")
    lines = [ln.decode() for ln in r.until()]
    udp_fds = {ln.split(":")[0][5:] for ln in lines if ln.endswith(":UDP UDP")}
    assert len(udp_fds) == 3, lines  # one per worker thread
    for fd in udp_fds:
        assert "STAT %s:addr udp:127.0.0.1:%d" % (fd, d.port2) in lines
        assert "STAT %s:state conn_read" % fd in lines
        assert not any(ln.startswith("STAT %s:listen_addr" % fd) for ln in lines)
    st = r.stats("settings")
    assert st["udpport"] == str(d.port2) and st["num_threads_per_udp"] == "3"
    assert r.stats()["curr_connections"] == "4"  # this client and the 3 UDP sockets, as memcached counts
    r.close()
    u.close()


def test_udp_port_alone_is_the_tcp_port_too(daemon):
    """-U N without -p: memcached listens on N for TCP as well."""
    for impl in IMPLS:
        args = ["-l", "127.0.0.1", "-U", "{port}", "-t", "2"]
        if impl == "memcached" and os.geteuid() == 0:
            args += ["-u", "root"]
        d = daemon("memcached", args, binary=None if impl == "ours" else PEER)
        st = Raw(d.port).stats("settings")
        assert st["tcpport"] == str(d.port) and st["udpport"] == str(d.port), impl
        d.stop()


def refused(binary, *args):
    extra = ["-u", "root"] if binary == PEER and os.geteuid() == 0 else []
    p = subprocess.run([binary, "-p", "0", "-l", "127.0.0.1"] + extra + list(args), capture_output=True, text=True,
                       timeout=20)
    return p.returncode != 0, p.stderr


@pytest.mark.parametrize("flags,says", [(["-U", "0", "-p", "65536"], "port"),
                                        (["-U", "70000"], "port"),
                                        (["-U", "-5"], "port")])
def test_udp_bad_ports_refused(flags, says):
    bad, err = refused(bin_path("memcached"), *flags)
    assert bad and says in err.lower()


def test_udp_with_sasl_or_ascii_auth_refused(tmp_path):
    auth = tmp_path / "auth"
    auth.write_text("u:p\n")
    for flags, says in ((["-S", "-U", "11999"], "Cannot enable UDP while using binary SASL authentication"),
                        (["-Y", str(auth), "-U", "11999"], "Cannot use UDP with ascii authentication")):
        bad, err = refused(bin_path("memcached"), *flags)
        assert bad and says in err, err
        bad, err = refused(PEER, *flags)
        assert bad and says in err, err


def test_udp_port_in_use_refused(daemon):
    """A UDP port another process holds is refused (SO_REUSEPORT spreads
    datagrams over our own loops only): next to Debian's memcached, and
    next to another daemon of ours."""
    for impl in IMPLS:
        d = start_udp(daemon, impl)
        bad, err = refused(bin_path("memcached"), "-U", str(d.port2))
        assert bad and "UDP port %d" % d.port2 in err and "in use" in err, (impl, err)
        d.stop()
