"""memcached start-up flags, each against ours and Debian's memcached
1.6.18: which -p / -U combinations listen where (memcached's issue 67:
read back through $MEMCACHED_PORT_FILENAME), -k (mlockall; a refusal is
a warning, not a failure) and -L (the memory reserved at start in huge
pages, one page per class, a fixed limit)."""
import os
import re
import socket
import subprocess
import time

import pytest

from conftest import bin_path, free_port
from mc_helpers import PEER, Raw

BINARIES = {"ours": None, "memcached": PEER}


def binary(impl):
    return bin_path("memcached") if impl == "ours" else PEER


def sanitized():
    with open(bin_path("memcached"), "rb") as f:
        return b"__asan_init" in f.read()


def root_args(impl):
    return ["-u", "root"] if impl == "memcached" and os.geteuid() == 0 else []


def free_udp_port():
    """A port free for UDP and for TCP both (-U alone listens on it for TCP
    too)."""
    for _ in range(100):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        p = u.getsockname()[1]
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            t.bind(("127.0.0.1", p))
            return p
        except OSError:
            continue
        finally:
            t.close()
            u.close()
    raise AssertionError("no port free for both UDP and TCP")


def ports_of(impl, args, tmp_path):
    """Start, wait for the port file, stop; the file's lines as a dict."""
    pf = tmp_path / ("ports-%s" % impl)
    if pf.exists():
        pf.unlink()
    env = dict(os.environ, MEMCACHED_PORT_FILENAME=str(pf))
    p = subprocess.Popen([binary(impl), "-l", "127.0.0.1", "-t", "2"] + root_args(impl) + args, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 10
        while not pf.exists():
            assert p.poll() is None and time.time() < deadline, p.stderr.read() if p.poll() is not None else "slow"
            time.sleep(0.05)
        out = {}
        for ln in pf.read_text().splitlines():
            kind, port = ln.split(": ")
            out[kind] = int(port)
        return out
    finally:
        p.terminate()
        p.wait(timeout=15)


@pytest.mark.parametrize("case", ["tcp", "udp alone", "tcp ephemeral", "udp ephemeral", "tcp off",
                                  "tcp and udp", "tcp, udp off", "tcp ephemeral, udp", "tcp, udp ephemeral"])
def test_port_flag_combinations_as_memcached(case, tmp_path):
    P, U = free_port(), free_udp_port()
    # flags, expected TCP, expected UDP: a number, 0 = some port the kernel chose, None = none
    table = {
        "tcp": (["-p", str(P)], P, None),
        "udp alone": (["-U", str(U)], U, U),
        "tcp ephemeral": (["-p", "-1"], 0, None),
        "udp ephemeral": (["-U", "-1"], 0, 0),
        "tcp off": (["-p", "0"], None, None),
        "tcp and udp": (["-p", str(P), "-U", str(U)], P, U),
        "tcp, udp off": (["-p", str(P), "-U", "0"], P, None),
        "tcp ephemeral, udp": (["-p", "-1", "-U", str(U)], 0, U),
        "tcp, udp ephemeral": (["-p", str(P), "-U", "-1"], P, 0),
    }
    flags, tcp, udp = table[case]
    for impl in ("ours", "memcached"):
        got = ports_of(impl, flags, tmp_path)
        for kind, want in (("TCP INET", tcp), ("UDP INET", udp)):
            if want is None:
                assert kind not in got, (impl, got)
            elif want == 0:
                assert got.get(kind, 0) not in (0, 11211), (impl, got)
            else:
                assert got.get(kind) == want, (impl, got)


def test_dash_p_minus_one_serves_on_the_port_written(tmp_path):
    got = ports_of("ours", ["-p", "-1", "-U", "-1"], tmp_path)
    assert got["TCP INET"] != got["UDP INET"]  # each picked on its own, as memcached


def start(impl, *args):
    p = subprocess.Popen([binary(impl), "-p", str(free_port()), "-U", "0", "-l", "127.0.0.1"] + root_args(impl) +
                         list(args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return p


def wait_serving(p, port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert p.poll() is None, p.stderr.read()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("not serving")


def status(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith(field + ":"):
                return int(ln.split()[1])
    return None


@pytest.mark.parametrize("impl", ["ours", "memcached"])
def test_lock_memory_locks_pages(daemon, impl):
    if os.geteuid() != 0:
        pytest.fail("needs root (CAP_IPC_LOCK) to lock memory without a limit")
    if impl == "ours" and sanitized():
        # AddressSanitizer replaces mlockall with a no-op (locking its
        # shadow mappings is not possible): the plain build runs this.
        pytest.skip("AddressSanitizer makes mlockall a no-op")
    args = ["-p", "{port}", "-l", "127.0.0.1", "-U", "0", "-k", "-m", "16"] + root_args(impl)
    d = daemon("memcached", args, binary=BINARIES[impl])
    assert status(d.pid, "VmLck") > 0
    assert Raw(d.port).cmd(b"set a 0 0 1\r\nx\r\n") == b"STORED"


@pytest.mark.parametrize("impl", ["ours", "memcached"])
def test_lock_memory_refused_is_a_warning(impl, tmp_path):
    """Without the right to lock memory (an unprivileged user, no memlock
    allowance) memcached warns and runs on; so do we."""
    if impl == "ours" and sanitized():
        pytest.skip("AddressSanitizer makes mlockall a no-op")
    port = free_port()
    cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
           "prlimit", "--memlock=0:0", binary(impl), "-p", str(port), "-U", "0", "-l", "127.0.0.1", "-k"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_serving(p, port)
        assert status(p.pid, "VmLck") in (0, None)
    finally:
        p.terminate()
        p.wait(timeout=15)
    err = p.stderr.read()
    assert re.search(r"-k invalid, mlockall\(\) failed: (Cannot allocate memory|Operation not permitted)", err), err


def large_arena_flags(pid, size):
    """VmFlags of the mapping holding the reserved block (at least size bytes)."""
    with open("/proc/%d/smaps" % pid) as f:
        cur = None
        for ln in f:
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", ln)
            if m:
                cur = int(m.group(2), 16) - int(m.group(1), 16)
            elif ln.startswith("VmFlags:") and cur and cur >= size:
                if " hg" in ln:
                    return ln
    return None


def test_large_pages_reserve_memory_as_memcached(daemon):
    got = {}
    for impl in ("ours", "memcached"):
        d = daemon("memcached", ["-p", "{port}", "-l", "127.0.0.1", "-U", "0", "-L", "-m", "64"] + root_args(impl),
                   binary=BINARIES[impl])
        r = Raw(d.port)
        st = r.stats("slabs")
        pages = {k: v for k, v in st.items() if k.endswith(":total_pages")}
        assert pages and set(pages.values()) == {"1"}  # a page for every class, at start
        assert r.cmd(b"cache_memlimit 100\r\n") == b"MEMLIMIT_ADJUST_FAILED out of bounds or unable to adjust"
        got[impl] = (len(pages), st["active_slabs"], st["total_malloced"])
        if impl == "ours":
            assert large_arena_flags(d.pid, 64 << 20), "no MADV_HUGEPAGE block of -m"
        r.close()
        d.stop()
    assert got["ours"] == got["memcached"]


def test_large_pages_need_a_page_per_class():
    for impl in ("ours", "memcached"):
        p = start(impl, "-L", "-m", "8")
        _, err = p.communicate(timeout=20)
        assert p.returncode != 0
        assert "max memory must be at least 39 megabytes" in err, (impl, err)
