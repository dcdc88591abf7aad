"""memcached: options and "stats settings" as memcached 1.6.18 has them,
checked side by side against Debian's memcached started with the same
flags; -B, -R (conn_yields), -o idle_timeout (idle_kicks), bad values."""
import subprocess
import time

import pytest

from conftest import bin_path
from mc_helpers import Raw, bin_request, bin_response, start

# Fields the real one shows that are about parts this daemon does not build
# (extstore, the proxy, NAPI ids).
NOT_BUILT_PREFIXES = ("ext_", "proxy_")
NOT_BUILT = {"num_napi_ids", "drop_privileges"}

FLAGS = ["-m", "32", "-c", "300", "-b", "512", "-R", "7", "-C", "-M", "-f", "1.5", "-n", "64", "-I", "2m",
         "-o", "idle_timeout=30,hot_lru_pct=25,warm_lru_pct=30,temporary_ttl=90,slab_automove=2,"
               "lru_crawler_sleep=50,lru_crawler_tocrawl=5,hot_max_factor=0.5,warm_max_factor=3,"
               "slab_automove_window=10,slab_automove_ratio=0.5,tail_repair_time=20,hashpower=18"]

# Values that may differ, and why: the hash function is our own; ours
# bounds reply memory by default (memcached: 0 = none, but it never copies
# values into replies); inter/tcpport name the test's own address.
MAY_DIFFER = {"hash_algorithm", "read_buf_mem_limit", "tcpport", "udpport", "inter", "domain_socket"}


def settings(d):
    r = Raw(d.port)
    st = r.stats("settings")
    r.close()
    return st


def test_stats_settings_names_and_values_match_memcached(daemon):
    ours = settings(start(daemon, *FLAGS))
    theirs = settings(start(daemon, *FLAGS, impl="memcached"))
    missing = [k for k in theirs if k not in ours and not k.startswith(NOT_BUILT_PREFIXES) and k not in NOT_BUILT]
    assert missing == []
    extra = [k for k in ours if k not in theirs]
    assert extra == []
    # Same order as memcached's for the names both have.
    common = [k for k in theirs if k in ours]
    assert [k for k in ours if k in theirs] == common
    differ = {k: (ours[k], theirs[k]) for k in common if ours[k] != theirs[k] and k not in MAY_DIFFER}
    assert differ == {}
    assert ours["tcp_backlog"] == "512" and ours["reqs_per_event"] == "7" and ours["cas_enabled"] == "no"
    assert ours["evictions"] == "off" and ours["idle_timeout"] == "30" and ours["hot_lru_pct"] == "25"


@pytest.mark.parametrize("impl", ["ours", "memcached"])
def test_binding_protocol_ascii_treats_binary_bytes_as_text(daemon, impl):
    d = start(daemon, "-B", "ascii", impl=impl)
    r = Raw(d.port)
    assert r.stats("settings")["binding_protocol"] == "ascii"
    r2 = Raw(d.port)
    r2.send(bin_request(0x0B) + b"\r\n")
    assert r2.line() == b"ERROR"


@pytest.mark.parametrize("impl", ["ours", "memcached"])
def test_binding_protocol_binary_closes_text_clients(daemon, impl):
    d = start(daemon, "-B", "binary", impl=impl)
    r = Raw(d.port)
    # Text is read as a binary header: nothing until 24 bytes are in,
    # then the bad magic byte closes the connection without a reply.
    r.send(b"version\r\n")
    assert not r.closed(timeout=0.3)
    r.send(b"get some_longer_key\r\n")
    assert r.closed()
    assert r.buf == b""
    b = Raw(d.port)
    b.send(bin_request(0x0B, opaque=5))
    op, status, opaque, _c, _e, _k, value = bin_response(b)
    assert (op, status, opaque) == (0x0B, 0, 5)
    assert value.startswith(b"1.6")


@pytest.mark.parametrize("args, message", [
    (["-B", "xml"], "Invalid value for binding protocol: xml"),
    (["-R", "0"], "Number of requests per event must be greater than 0"),
    (["-o", "read_buf_mem_limit=abc"], "read_buf_mem_limit"),
    (["-o", "idle_timeout=-5"], "idle_timeout"),
    (["-o", "bogus_option"], 'Illegal suboption "bogus_option"'),
    (["-o", "slab_automove=5"], "slab_automove"),
    (["-o", "slab_automove_ratio"], "Missing slab_automove_ratio argument"),
    (["-o", "hot_lru_pct=60,warm_lru_pct=40"], "hot_lru_pct + warm_lru_pct"),
    (["-o", "hash_algorithm=md5"], "hash_algorithm"),
    (["-o", "tail_repair_time=5"], "tail_repair_time"),
])
def test_bad_option_values_refuse_to_start(args, message):
    p = subprocess.run([bin_path("memcached"), "-p", "0", "-l", "127.0.0.1"] + args,
                       capture_output=True, text=True, timeout=10)
    assert p.returncode != 0
    assert message in p.stderr + p.stdout


def test_help_lists_the_extended_options():
    out = subprocess.run([bin_path("memcached"), "--help"], capture_output=True, text=True, timeout=10).stdout
    for name in ("read_buf_mem_limit", "idle_timeout", "slab_automove", "temporary_ttl", "hot_lru_pct",
                 "lru_crawler_sleep", "-B", "-R"):
        assert name in out, name


@pytest.mark.parametrize("impl", ["ours", "memcached"])
def test_reqs_per_event_yields_and_counts_conn_yields(daemon, impl):
    d = start(daemon, "-R", "5", impl=impl)
    r = Raw(d.port)
    r.send(b"version\r\n" * 100)
    for _ in range(100):
        assert r.line().startswith(b"VERSION ")
    assert int(r.stats()["conn_yields"]) >= 10


@pytest.mark.parametrize("impl", ["ours", "memcached"])
def test_idle_timeout_kicks_idle_clients_and_counts_them(daemon, impl):
    d = start(daemon, "-o", "idle_timeout=1", impl=impl)
    idle = Raw(d.port)
    assert idle.cmd(b"version\r\n").startswith(b"VERSION ")
    assert idle.closed(timeout=8)
    r = Raw(d.port)
    assert int(r.stats()["idle_kicks"]) >= 1


@pytest.mark.parametrize("impl", ["ours", "memcached"])
def test_bare_slab_automove_means_one(daemon, impl):
    r = Raw(start(daemon, "-o", "slab_reassign,slab_automove=0,slab_automove", impl=impl).port)
    st = r.stats("settings")
    assert (st["slab_reassign"], st["slab_automove"]) == ("yes", "1")
