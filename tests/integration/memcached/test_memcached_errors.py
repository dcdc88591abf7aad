"""memcached: a reply that cannot be built is an error value, never
silently dropped bytes, and all connections' reply memory has one global
bound (-o read_buf_mem_limit): the "get k k k ..." amplification."""
import threading

import pytest

from mc_helpers import Raw, bin_request, bin_response, start

BIG = 1000 * 1000


def store_big(r, key=b"big", size=BIG):
    assert r.cmd(b"set %s 0 0 %d\r\n%s\r\n" % (key, size, b"x" * size)) == b"STORED"


def test_multiget_over_the_output_bound_gets_server_error_and_close(daemon):
    d = start(daemon, "-m", "64", "-o", "read_buf_mem_limit=8")
    r = Raw(d.port)
    store_big(r)
    # 40 copies of a 1 MB item = 40 MB of reply, past the 8 MB bound.
    r.send(b"get" + b" big" * 40 + b"\r\n")
    # Nothing of the partial reply: the error alone, then the close.
    assert r.line() == b"SERVER_ERROR out of memory writing get response"
    assert r.closed()
    assert r.buf == b""
    # The daemon still serves, counts the refusal, and gave the memory back.
    r2 = Raw(d.port)
    r2.send(b"get big\r\n")
    assert r2.line() == b"VALUE big 0 %d" % BIG
    assert r2.exact(BIG + 2)[-2:] == b"\r\n"
    assert r2.line() == b"END"
    st = r2.stats()
    assert int(st["response_obj_oom"]) >= 1
    assert int(st["response_obj_bytes"]) < 8 * 1024 * 1024
    assert st.keys() >= {"response_obj_count"}
    assert r2.stats("settings")["read_buf_mem_limit"] == str(8 * 1024 * 1024)


def test_many_amplifying_clients_stay_under_the_global_bound(daemon):
    """16 clients each asking for one 1 MB item 200 times: every one gets
    either the whole reply or the error, and the server's RSS stays far
    below 16 x 200 MB."""
    d = start(daemon, "-m", "64", "-o", "read_buf_mem_limit=32")
    r = Raw(d.port)
    store_big(r)
    results = []

    def client():
        c = Raw(d.port, timeout=30)
        c.send(b"get" + b" big" * 200 + b"\r\n")
        first = c.line()
        results.append(first)
        c.close()

    ts = [threading.Thread(target=client) for _ in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert len(results) == 16
    assert set(results) == {b"SERVER_ERROR out of memory writing get response"}
    with open("/proc/%d/status" % d.pid) as f:
        rss_kb = next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))
    assert rss_kb < 400 * 1024, rss_kb


def test_binary_get_over_the_bound_gets_enomem_and_close(daemon):
    d = start(daemon, "-m", "64", "-o", "read_buf_mem_limit=4")
    r = Raw(d.port)
    store_big(r)
    # A pipeline of quiet getkq for the big item, then a noop: the replies
    # outgrow 4 MB before the noop.
    r2 = Raw(d.port)
    r2.send(b"".join(bin_request(0x0D, key=b"big", opaque=i) for i in range(12)) + bin_request(0x0A, opaque=99))
    seen = []
    while True:
        op, status, opaque, _cas, _e, _k, value = bin_response(r2)
        seen.append((op, status))
        if status != 0:
            break
    assert (op, status, value) == (0x0D, 0x82, b"out of memory writing get response")
    assert r2.closed()
    assert r.cmd(b"version\r\n").startswith(b"VERSION ")


def test_replies_within_the_bound_are_whole(daemon):
    d = start(daemon, "-m", "64", "-o", "read_buf_mem_limit=16")
    r = Raw(d.port)
    store_big(r)
    r.send(b"get big big big\r\n")
    for _ in range(3):
        assert r.line() == b"VALUE big 0 %d" % BIG
        r.exact(BIG + 2)
    assert r.line() == b"END"


def test_read_buf_mem_limit_must_be_a_number(daemon):
    import subprocess
    from conftest import bin_path
    p = subprocess.run([bin_path("memcached"), "-p", "0", "-o", "read_buf_mem_limit=lots"],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode != 0
    assert "read_buf_mem_limit" in p.stderr


@pytest.mark.parametrize("impl", ["ours", "memcached"])
def test_read_buf_mem_limit_bounds_response_objects_as_memcached(daemon, impl):
    """-o read_buf_mem_limit given: as memcached 1.6.18, each thread gets its
    share in 16 KB blocks of response objects (one per command and per key
    of a get). 1 MB over 32 threads leaves a thread 14: a get naming 500
    keys answers SERVER_ERROR and the connection goes on; 500 pipelined
    commands close the connection without a reply; small requests work."""
    d = start(daemon, "-o", "read_buf_mem_limit=1", "-R", "500", threads="32", impl=impl)
    r = Raw(d.port)
    assert r.cmd(b"set foo 0 0 2\r\nhi\r\n") == b"STORED"
    r.send(b"get " + b" ".join([b"foo"] * 10) + b"\r\n")
    assert r.until() == [b"VALUE foo 0 2", b"hi"] * 10
    r.send(b"get " + b" ".join([b"nokey"] * 500) + b"\r\n")
    assert r.line() == b"SERVER_ERROR out of memory writing get response"
    st = r.stats()
    assert int(st["response_obj_oom"]) >= 1
    assert r.stats("settings")["read_buf_mem_limit"] == str(1 << 20)
    s = Raw(d.port)
    s.send(b"mg nokey v\r\n" * 500)
    assert s.closed()
    assert s.buf == b""
    assert int(r.stats()["response_obj_oom"]) >= 2
    assert r.cmd(b"version\r\n").startswith(b"VERSION ")
