"""libmc (memcached/client): the client library against three of our
daemons, loaded as the shared library users link (ctypes), plus its CLI:
ketama spread, pipelined multi-get across servers, text, meta and binary
protocols, timeouts, a killed server being skipped and then coming back, and
compression read and written by Perl's Cache::Memcached both ways."""
import ctypes
import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import bin_path

MC = "memcached"


def libmc(request):
    """The built libmc.so via ctypes. Under `make asan` the .so needs the ASan
    runtime loaded first, which a running python cannot do: the test then
    runs itself again in a python started with LD_PRELOAD=libasan and
    returns None (the caller returns; the child's result is asserted)."""
    path = os.path.abspath(os.path.join(os.path.dirname(bin_path(MC)), "..", "lib", "libmc.so"))
    with open(path, "rb") as f:
        asan = b"__asan_init" in f.read()
    if asan and "libasan" not in os.environ.get("LD_PRELOAD", ""):
        libasan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                                 text=True).stdout.strip()
        env = dict(os.environ, LD_PRELOAD=libasan, ASAN_OPTIONS="detect_leaks=0")
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", request.node.nodeid],
                             cwd=str(request.config.rootpath), env=env, capture_output=True,  # nodeid is rootdir-relative
                             text=True, timeout=300)
        assert out.returncode == 0 and " passed" in out.stdout, out.stdout[-3000:] + out.stderr[-2000:]
        return None
    lib = ctypes.CDLL(path)
    lib.mc_client_new.restype = ctypes.c_void_p
    lib.mc_client_new.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.mc_client_free.argtypes = [ctypes.c_void_p]
    for name in ("mc_client_set", "mc_client_add", "mc_client_replace"):
        f = getattr(lib, name)
        f.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t,
                      ctypes.c_uint32, ctypes.c_int32]
    lib.mc_client_get.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(Value)]
    lib.mc_client_value_free.argtypes = [ctypes.POINTER(Value)]
    lib.mc_client_get_multi.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p),
                                        ctypes.POINTER(ctypes.c_size_t), ctypes.c_size_t, HIT, ctypes.c_void_p]
    lib.mc_client_delete.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.mc_client_incr.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64,
                                   ctypes.POINTER(ctypes.c_uint64)]
    lib.mc_client_decr.argtypes = lib.mc_client_incr.argtypes
    lib.mc_client_touch.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int32]
    lib.mc_client_cas.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                                  ctypes.c_size_t, ctypes.c_uint32, ctypes.c_int32, ctypes.c_uint64]
    lib.mc_client_server_for_key.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.mc_client_server_alive.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    lib.mc_client_server_alive.restype = ctypes.c_bool
    lib.mc_client_flush_all.argtypes = [ctypes.c_void_p, ctypes.c_int32]
    lib.mc_client_strerror.restype = ctypes.c_char_p
    for name in ("mc_client_append", "mc_client_prepend"):
        getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                                       ctypes.c_size_t]
    lib.mc_client_version.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
    lib.mc_client_stats.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, STAT, ctypes.c_void_p]
    return lib


class Value(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("len", ctypes.c_size_t), ("flags", ctypes.c_uint32),
                ("cas", ctypes.c_uint64)]


class Options(ctypes.Structure):
    _fields_ = [("connect_timeout_ms", ctypes.c_int), ("io_timeout_ms", ctypes.c_int),
                ("failure_limit", ctypes.c_int), ("retry_interval_ms", ctypes.c_int), ("protocol", ctypes.c_int),
                ("compress_threshold", ctypes.c_int)]


HIT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint32,
                       ctypes.c_uint64, ctypes.c_void_p)
STAT = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p)
OK, NOT_FOUND, NOT_STORED, EXISTS, SERVER_ERROR, TIMEOUT, CONNECTION, NO_SERVER = range(8)


class Client:
    def __init__(self, lib, servers, protocol=0, io_timeout=1000, retry_ms=600, compress=0):
        self.lib = lib
        opts = Options(500, io_timeout, 2, retry_ms, protocol, compress)
        err = ctypes.create_string_buffer(256)
        self.c = lib.mc_client_new(servers.encode(), ctypes.byref(opts), err, 256)
        assert self.c, err.value

    def set(self, k, v, flags=0, exp=0):
        return self.lib.mc_client_set(self.c, k, len(k), v, len(v), flags, exp)

    def get(self, k):
        v = Value()
        rc = self.lib.mc_client_get(self.c, k, len(k), ctypes.byref(v))
        if rc != OK:
            return rc, None
        data = ctypes.string_at(v.data, v.len)
        flags, cas = v.flags, v.cas
        self.lib.mc_client_value_free(ctypes.byref(v))
        return rc, (data, flags, cas)

    def get_multi(self, keys):
        got = {}

        def hit(k, nk, d, n, flags, cas, arg):
            got[ctypes.string_at(k, nk)] = ctypes.string_at(d, n)
            self.multi_flags[ctypes.string_at(k, nk)] = flags
        self.multi_flags = {}
        cb = HIT(hit)
        arr = (ctypes.c_char_p * len(keys))(*keys)
        lens = (ctypes.c_size_t * len(keys))(*[len(k) for k in keys])
        rc = self.lib.mc_client_get_multi(self.c, arr, lens, len(keys), cb, None)
        return rc, got

    def server_for(self, k):
        return self.lib.mc_client_server_for_key(self.c, k, len(k))

    def close(self):
        self.lib.mc_client_free(self.c)


def three(daemon):
    ds = [daemon(MC, ["-p", "{port}", "-l", "127.0.0.1", "-t", "1"]) for _ in range(3)]
    return ds, ",".join("127.0.0.1:%d" % d.port for d in ds)


def curr_items(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"stats\r\n")
    buf = b""
    while not buf.endswith(b"END\r\n"):
        buf += s.recv(65536)
    s.close()
    for line in buf.split(b"\r\n"):
        if line.startswith(b"STAT curr_items "):
            return int(line.split()[2])


@pytest.mark.parametrize("protocol", [0, 1, 2], ids=["text", "meta", "binary"])
def test_libmc_three_servers_spread_multiget_and_ops(daemon, protocol, request):
    lib = libmc(request)
    if lib is None:
        return
    ds, servers = three(daemon)
    c = Client(lib, servers, protocol=protocol)
    keys = [b"key:%d" % i for i in range(600)]
    for k in keys:
        assert c.set(k, b"value-" + k, flags=7) == OK
    # Every key is on the server the continuum names, and the spread is fair.
    counts = [curr_items(d.port) for d in ds]
    assert sum(counts) == 600
    assert all(n > 120 for n in counts), counts
    expect = [0, 0, 0]
    for k in keys:
        expect[c.server_for(k)] += 1
    assert expect == counts
    # Pipelined multi-get across the three servers.
    rc, got = c.get_multi(keys + [b"missing:1", b"missing:2"])
    assert rc == OK and len(got) == 600 and got[b"key:5"] == b"value-key:5"
    rc, (data, flags, cas) = c.get(b"key:1")
    assert rc == OK and data == b"value-key:1" and flags == 7 and cas > 0
    assert c.get(b"nope")[0] == NOT_FOUND
    assert lib.mc_client_cas(c.c, b"key:1", 5, b"new", 3, 0, 0, cas) == OK
    assert lib.mc_client_cas(c.c, b"key:1", 5, b"newer", 5, 0, 0, cas) == EXISTS
    assert lib.mc_client_add(c.c, b"key:1", 5, b"x", 1, 0, 0) == NOT_STORED
    # The same answers whatever the protocol says underneath (binary's
    # KEY_EEXISTS / KEY_ENOENT for add / replace are NOT_STORED here).
    assert lib.mc_client_replace(c.c, b"absent", 6, b"x", 1, 0, 0) == NOT_STORED
    assert lib.mc_client_replace(c.c, b"key:1", 5, b"mid", 3, 3, 0) == OK
    assert lib.mc_client_append(c.c, b"key:1", 5, b">", 1) == OK
    assert lib.mc_client_prepend(c.c, b"key:1", 5, b"<", 1) == OK
    assert c.get(b"key:1")[1][:2] == (b"<mid>", 3)
    assert lib.mc_client_append(c.c, b"absent", 6, b">", 1) == NOT_STORED
    assert lib.mc_client_cas(c.c, b"absent", 6, b"x", 1, 0, 0, 12345) == NOT_FOUND
    assert lib.mc_client_incr(c.c, b"absent", 6, 1, None) == NOT_FOUND
    assert c.set(b"word", b"abc") == OK
    assert lib.mc_client_incr(c.c, b"word", 4, 1, None) == SERVER_ERROR
    vbuf = ctypes.create_string_buffer(64)
    assert lib.mc_client_version(c.c, 0, vbuf, 64) == OK and vbuf.value == b"1.6.18"
    stats = {}
    cb = STAT(lambda n, v, a: stats.__setitem__(n, v))
    assert lib.mc_client_stats(c.c, 0, None, cb, None) == OK
    assert int(stats[b"curr_items"]) == curr_items(ds[0].port) and b"pid" in stats
    stats.clear()
    assert lib.mc_client_stats(c.c, 1, b"settings", cb, None) == OK and stats[b"maxbytes"] == b"67108864"
    assert c.set(b"n", b"40") == OK
    v = ctypes.c_uint64()
    assert lib.mc_client_incr(c.c, b"n", 1, 2, ctypes.byref(v)) == OK and v.value == 42
    assert lib.mc_client_decr(c.c, b"n", 1, 50, ctypes.byref(v)) == OK and v.value == 0
    assert lib.mc_client_touch(c.c, b"n", 1, 100) == OK
    assert lib.mc_client_touch(c.c, b"zz", 2, 100) == NOT_FOUND
    assert lib.mc_client_delete(c.c, b"n", 1) == OK
    assert lib.mc_client_delete(c.c, b"n", 1) == NOT_FOUND
    assert c.set(b"bad key", b"x") == 8          # MC_CLIENT_BAD_ARGUMENT
    big = os.urandom(700 * 1024)
    assert c.set(b"big", big) == OK and c.get(b"big")[1][0] == big
    assert lib.mc_client_flush_all(c.c, 0) == OK
    assert c.get(b"key:1")[0] == NOT_FOUND
    c.close()


def test_libmc_dead_server_skipped_then_back(daemon, request):
    lib = libmc(request)
    if lib is None:
        return
    ds, servers = three(daemon)
    c = Client(lib, servers, retry_ms=800)
    keys = [b"k%d" % i for i in range(300)]
    for k in keys:
        assert c.set(k, b"v") == OK
    victim = 1
    mine = [k for k in keys if c.server_for(k) == victim]
    others = [k for k in keys if c.server_for(k) != victim]
    ds[victim].kill9()
    # The first calls to the dead server fail; after failure_limit (2) it
    # is marked dead and its keys go to the others.
    rcs = [c.set(mine[0], b"again"), c.set(mine[1], b"again")]
    assert all(rc in (CONNECTION, TIMEOUT) for rc in rcs), rcs
    assert not lib.mc_client_server_alive(c.c, victim)
    assert c.server_for(mine[0]) in (0, 2)
    assert c.set(mine[0], b"moved") == OK
    assert c.get(mine[0])[1][0] == b"moved"
    # Keys of the live servers did not move.
    assert all(c.server_for(k) != victim for k in others)
    assert sum(1 for k in others if c.get(k)[0] == OK) == len(others)
    # Multi-get while it is dead: all the other servers' keys come back.
    rc, got = c.get_multi(others)
    assert rc == OK and len(got) == len(others)
    # The server comes back; after the retry interval it is used again.
    ds[victim].start()
    time.sleep(1.0)
    assert c.server_for(mine[0]) == victim
    assert c.set(mine[0], b"home") == OK
    assert lib.mc_client_server_alive(c.c, victim)
    assert c.get(mine[0])[1][0] == b"home"
    assert curr_items(ds[victim].port) == 1
    c.close()


def test_libmc_timeout_on_silent_server(request):
    lib = libmc(request)
    if lib is None:
        return
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(5)          # accepts (kernel backlog) but never answers
    port = silent.getsockname()[1]
    c = Client(lib, "127.0.0.1:%d" % port, io_timeout=300)
    t0 = time.time()
    assert c.get(b"k")[0] == TIMEOUT
    assert time.time() - t0 < 2
    c.close()
    silent.close()


def test_cli(daemon):
    ds, servers = three(daemon)
    cli = bin_path("memcached-cli")

    def run(*args, stdin=None):
        return subprocess.run([cli, "-s", servers] + list(args), input=stdin, capture_output=True, timeout=30)
    assert run("set", "a", "hello", "0", "3").returncode == 0
    assert run("set", "b", "-", stdin=b"from stdin").returncode == 0
    out = run("get", "a", "b", "c")
    assert out.returncode == 1       # one miss
    lines = out.stdout.split(b"\n")
    got = {lines[i]: lines[i + 1] for i in range(0, len(lines) - 1, 2)}   # servers answer in any order
    assert got == {b"a 3 5": b"hello", b"b 0 10": b"from stdin"}
    assert run("-M", "get", "a").stdout == b"a 3 5\nhello\n"
    assert run("set", "n", "5").returncode == 0
    assert run("incr", "n", "10").stdout == b"15\n"
    assert run("delete", "n").returncode == 0
    assert run("delete", "n").returncode == 1
    server = run("server", "a").stdout.strip().decode()
    assert server in servers.split(",")
    vers = run("version").stdout.decode().splitlines()
    assert len(vers) == 3 and all(v.endswith("1.6.18") for v in vers)
    stats = run("stats").stdout.decode().splitlines()
    assert sum(1 for l in stats if " curr_items " in l) == 3
    assert run("flush").returncode == 0
    assert run("get", "a").returncode == 1


PERL_COMPRESS = r"""
use strict; use Cache::Memcached;
my ($port, $mode) = @ARGV;
my $m = Cache::Memcached->new({servers => ["127.0.0.1:$port"], compress_threshold => 1000});
if ($mode eq "write") {
    $m->set("from:perl", ("perl wrote this line. " x 500)) or die "set";
    $m->set("perl:small", "tiny") or die "set small";
    print "ok\n";
} else {
    my $v = $m->get("from:libmc");
    defined $v && $v eq ("libmc wrote this line. " x 400) or die "libmc value: " . (defined $v ? length $v : "undef");
    print "ok\n";
}
"""


def raw_get(port, key):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"get " + key + b"\r\n")
    buf = b""
    while not buf.endswith(b"END\r\n"):
        buf += s.recv(65536)
    s.close()
    head, _, rest = buf.partition(b"\r\n")
    _, _, flags, n = head.split()
    return int(flags), rest[:int(n)]


@pytest.mark.parametrize("protocol", [0, 2], ids=["text", "binary"])
def test_libmc_compression_with_perl_cache_memcached(daemon, protocol, request):
    lib = libmc(request)
    if lib is None:
        return
    d = daemon(MC, ["-p", "{port}", "-l", "127.0.0.1", "-t", "1"])
    c = Client(lib, "127.0.0.1:%d" % d.port, protocol=protocol, compress=1000)
    perl = lambda mode: subprocess.run(["perl", "-e", PERL_COMPRESS, str(d.port), mode], capture_output=True,
                                       text=True, timeout=60)
    # Perl -> libmc: Perl gzips it (flag 2); libmc hands back the plain text
    # with the bit cleared.
    out = perl("write")
    assert out.returncode == 0 and out.stdout == "ok\n", out.stdout + out.stderr
    flags, stored = raw_get(d.port, b"from:perl")
    assert flags == 2 and stored[:2] == b"\x1f\x8b"
    rc, (data, flags, _) = c.get(b"from:perl")
    assert rc == OK and data == b"perl wrote this line. " * 500 and flags == 0
    rc, got = c.get_multi([b"from:perl", b"perl:small"])
    assert rc == OK and got == {b"from:perl": b"perl wrote this line. " * 500, b"perl:small": b"tiny"}
    assert c.multi_flags == {b"from:perl": 0, b"perl:small": 0}
    # libmc -> Perl: at the threshold and compressible, stored gzip'd with
    # the caller's flags kept beside bit 2.
    assert c.set(b"from:libmc", b"libmc wrote this line. " * 400, flags=0) == OK
    flags, stored = raw_get(d.port, b"from:libmc")
    assert flags == 2 and stored[:2] == b"\x1f\x8b" and len(stored) < 9200 * 0.8
    out = perl("read")
    assert out.returncode == 0 and out.stdout == "ok\n", out.stdout + out.stderr
    assert c.set(b"mine", b"z" * 5000, flags=0x100) == OK
    assert raw_get(d.port, b"mine")[0] == 0x102
    assert c.get(b"mine")[1][:2] == (b"z" * 5000, 0x100)
    # Not compressed: under the threshold, or saving under 20% (random bytes),
    # or append/prepend.
    assert c.set(b"short", b"a" * 999) == OK and raw_get(d.port, b"short") == (0, b"a" * 999)
    noise = os.urandom(4000)
    assert c.set(b"noise", noise) == OK and raw_get(d.port, b"noise") == (0, noise)
    assert lib.mc_client_append(c.c, b"short", 5, b"b" * 2000, 2000) == OK
    assert raw_get(d.port, b"short") == (0, b"a" * 999 + b"b" * 2000)
    # A value flagged compressed that does not inflate is a miss, not garbage.
    s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
    s.sendall(b"set bogus 2 0 5\r\nhello\r\n")
    assert s.recv(100) == b"STORED\r\n"
    s.close()
    assert c.get(b"bogus")[0] == NOT_FOUND
    # With compression off, flags and bytes pass untouched.
    plain = Client(lib, "127.0.0.1:%d" % d.port, protocol=protocol)
    rc, (data, flags, _) = plain.get(b"mine")
    assert rc == OK and flags == 0x102 and data[:2] == b"\x1f\x8b"
    plain.close()
    c.close()


def test_cli_help_and_version():
    cli = bin_path("memcached-cli")
    for flag in ("--help", "-h"):
        p = subprocess.run([cli, flag], capture_output=True, text=True, timeout=10)
        assert p.returncode == 0 and p.stdout.startswith("usage: memcached-cli")
        assert "--version" in p.stdout and "exit status" in p.stdout
    for flag in ("--version", "-V"):
        p = subprocess.run([cli, flag], capture_output=True, text=True, timeout=10)
        assert p.returncode == 0 and p.stdout == "memcached-cli 1.6.18 (libmc)\n"
    p = subprocess.run([cli, "--bogus"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and "usage:" in p.stderr
    p = subprocess.run([cli, "-T", "soon", "get", "a"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and "bad timeout" in p.stderr
