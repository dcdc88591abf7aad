"""The tracker driven as MogileFS::Client, MogileFS::Admin and mogadm drive it
(request for request, see mogclient.py), against our mogstored nodes."""
import hashlib
import os
import socket
import urllib.parse

import pytest

from . import mogclient
from .mog_cluster import wait_until
from .mogclient import MogError


def raw_lines(addr, payload, nlines, timeout=5):
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(payload)
        buf = b""
        while buf.count(b"\r\n") < nlines:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return buf.decode().split("\r\n")[:nlines]


def test_admin_domains_classes_as_mogadm(cluster):
    adm = cluster.admin
    adm.create_domain("admdom")
    with pytest.raises(MogError) as e:
        adm.create_domain("admdom")
    assert e.value.code == "domain_exists"
    res = adm.create_class("admdom", "photos", 3, replpolicy="MultipleHosts(2)", hashtype="MD5")
    assert res == {"class": "photos", "mindevcount": "3", "domain": "admdom"}
    with pytest.raises(MogError) as e:
        adm.create_class("admdom", "photos", 2)
    assert e.value.code == "class_exists"
    with pytest.raises(MogError) as e:
        adm.create_class("admdom", "bad", 0)
    assert e.value.code == "invalid_mindevcount"
    with pytest.raises(MogError) as e:
        adm.create_class("nodom", "x", 1)
    assert e.value.code == "domain_not_found"
    adm.update_class("admdom", "photos", 2)
    doms = adm.get_domains()
    assert doms["admdom"]["photos"] == {"mindevcount": 2, "replpolicy": "MultipleHosts(2)", "hashtype": "MD5"}
    # The implicit default class is always listed.
    assert doms["admdom"]["default"]["mindevcount"] == 2
    with pytest.raises(MogError) as e:
        adm.delete_domain("admdom")
    assert e.value.code == "domain_has_classes"
    with pytest.raises(MogError) as e:
        adm.delete_class("admdom", "default")
    assert e.value.code == "nodel_default_class"
    adm.delete_class("admdom", "photos")
    adm.delete_domain("admdom")
    assert "admdom" not in adm.get_domains()


def test_hosts_and_devices_listed_as_mogadm_reads_them(cluster):
    hosts = cluster.admin.get_hosts()
    assert [h["hostname"] for h in hosts] == ["host1", "host2", "host3"]
    assert all(h["status"] == "alive" for h in hosts)
    devs = cluster.admin.get_devices()
    assert [d["devid"] for d in devs] == ["1", "2", "3"]
    for d in devs:
        assert d["observed_state"] == "writeable"
        assert int(d["mb_total"]) > 0 and int(d["mb_used"]) >= 0
    with pytest.raises(MogError) as e:
        cluster.admin.create_host("host1", "127.0.9.9", 7500)
    assert e.value.code == "host_exists"
    with pytest.raises(MogError) as e:
        cluster.admin.create_device("host1", 1)
    assert e.value.code == "existing_devid"
    with pytest.raises(MogError) as e:
        cluster.admin.create_device("nohost", 77)
    assert e.value.code == "unknown_host"
    with pytest.raises(MogError) as e:
        cluster.admin.change_device_state("host2", 1, "down")
    assert e.value.code == "host_mismatch"


@pytest.mark.parametrize("size", [0, 1024, 1024 * 1024])
def test_store_and_fetch_byte_equal(cluster, size):
    c = cluster.client("testdom")
    data = os.urandom(size)
    key = "blob-%d" % size
    assert c.store_content(key, "one", data) == size
    assert c.get_file_data(key) == data
    info = c.file_info(key)
    assert info["length"] == str(size) and info["class"] == "one" and info["domain"] == "testdom"
    assert info["key"] == key


def test_store_and_fetch_100mib(cluster):
    c = cluster.client("testdom")
    block = os.urandom(1 << 20)
    data = block * 100
    c.store_content("big-100m", "one", data)
    got = c.get_file_data("big-100m")
    assert len(got) == len(data) and hashlib.md5(got).digest() == hashlib.md5(data).digest()


@pytest.mark.parametrize("key", ["with space", "a/b/c", "100%", "ключ-ü-日本", "amp&eq=plus+"])
def test_odd_keys_round_trip(cluster, key):
    c = cluster.client("testdom")
    c.store_content(key, "one", key.encode() * 3)
    assert c.get_file_data(key) == key.encode() * 3
    nxt, keys = c.list_keys(key[:3])
    assert key in keys


def test_get_paths_errors_and_callid(cluster):
    c = cluster.client("testdom")
    with pytest.raises(MogError) as e:
        c.get_paths("never-stored")
    assert e.value.code == "unknown_key"
    with pytest.raises(MogError) as e:
        mogclient.Client("nodomain", [cluster.tracker.addr]).get_paths("x")
    assert e.value.code == "unreg_domain"
    lines = raw_lines(cluster.tracker.addr, b"get_paths domain=testdom&key=nope&callid=42\r\nnoop callid=7\r\n"
                      b"\r\nnoop\r\n", 3)
    assert lines[0] == "ERR unknown_key unknown_key 42"
    assert lines[1] == "OK callid=7"
    assert lines[2] == "OK "


def test_garbage_gets_err_and_service_goes_on(cluster):
    lines = raw_lines(cluster.tracker.addr, b"bogus_cmd a=b\r\n\xff\xfe junk\r\nget_paths %zz&&&=\r\nnoop\r\n", 4)
    assert lines[0] == "ERR unknown_command Unknown+server+command"
    assert lines[1] == "ERR unknown_command Unknown+server+command"
    assert lines[2].startswith("ERR ")
    assert lines[3] == "OK "
    # A line beyond the bound gets an error and the connection closes.
    host, port = cluster.tracker.addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"noop " + b"x" * 70000 + b"\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"ERR line_too_long")
    assert mogclient.Client("testdom", [cluster.tracker.addr]).backend.raw("noop") == "OK "


def test_admin_bang_commands(cluster):
    lines = raw_lines(cluster.tracker.addr, b"!version\r\n", 2)
    assert lines[1] == "."
    stats = raw_lines(cluster.tracker.addr, b"!stats\r\n", 4)
    assert stats[0].startswith("uptime ")
    assert any(l.startswith("pending_queries ") for l in stats)


def test_delete_rename_list_keys_paging(cluster):
    c = cluster.client("testdom")
    for i in range(25):
        c.store_content("page/%03d" % i, "one", b"x%d" % i)
    nxt, keys = c.list_keys("page/", None, 10)
    assert keys == ["page/%03d" % i for i in range(10)] and nxt == "page/009"
    nxt, keys = c.list_keys("page/", nxt, 10)
    assert keys[0] == "page/010"
    assert len(list(c.foreach_key("page/"))) == 25
    with pytest.raises(MogError) as e:
        c.list_keys("page/", "other", 10)
    assert e.value.code == "after_mismatch"
    c.rename("page/000", "renamed/000")
    assert c.get_file_data("renamed/000") == b"x0"
    with pytest.raises(MogError) as e:
        c.rename("page/001", "page/002")
    assert e.value.code == "key_exists"
    with pytest.raises(MogError) as e:
        c.rename("page/nope", "page/zzz")
    assert e.value.code == "unknown_key"
    urls = c.get_paths("page/003", noverify=1)
    c.delete("page/003")
    with pytest.raises(MogError) as e:
        c.get_paths("page/003")
    assert e.value.code == "unknown_key"
    # The delete worker removes the file from every device.
    wait_until(lambda: all(mogclient.http_get(u)[0] == 404 for u in urls), what="copies deleted")
    with pytest.raises(MogError) as e:
        c.delete("page/003")
    assert e.value.code == "unknown_key"


def test_overwrite_key_gets_new_fid_and_old_copy_deleted(cluster):
    c = cluster.client("testdom")
    c.store_content("over", "one", b"first")
    fid1 = c.file_info("over")["fid"]
    old_urls = c.get_paths("over", noverify=1)
    c.store_content("over", "one", b"second")
    assert c.file_info("over")["fid"] != fid1
    assert c.get_file_data("over") == b"second"
    wait_until(lambda: all(mogclient.http_get(u)[0] == 404 for u in old_urls), what="old fid deleted")


def test_list_fids_pages_by_fid(cluster):
    c = cluster.client("testdom")
    c.store_content("lf-a", "one", b"a")
    fids = cluster.admin.list_fids(0, 500)
    assert fids and all(v["domain"] == "testdom" for v in fids.values())
    first = min(fids)
    rest = cluster.admin.list_fids(first, 500)
    assert first not in rest and len(rest) == len(fids) - 1


def test_create_close_checks(cluster):
    c = cluster.client("testdom")
    be = c.backend
    res = c.new_file_open("cc", "one")
    path, devid, fid = res["path_1"], res["devid_1"], res["fid"]
    assert mogclient.http_put(path, b"12345") == 200
    base = {"fid": fid, "devid": devid, "domain": "testdom", "key": "cc", "path": path}
    with pytest.raises(MogError) as e:
        be.do_request("create_close", dict(base, path=path.replace(".fid", "x.fid")))
    assert e.value.code == "bogus_args"
    with pytest.raises(MogError) as e:
        be.do_request("create_close", dict(base, checksum="SHA1:abc"))
    assert e.value.code == "invalid_checksum_format"
    with pytest.raises(MogError) as e:
        be.do_request("create_close", dict(base, size=6))
    assert e.value.code == "size_mismatch"
    # The tempfile row is gone after a close attempt that got that far.
    with pytest.raises(MogError) as e:
        be.do_request("create_close", dict(base, size=5))
    assert e.value.code == "no_temp_file"


def test_checksum_mismatch_rejected_and_match_stored(cluster):
    c = cluster.client("testdom")
    data = b"checksummed content"
    good = "MD5:" + hashlib.md5(data).hexdigest()
    bad = "MD5:" + hashlib.md5(b"other").hexdigest()
    with pytest.raises(MogError) as e:
        c.store_content("ck-bad", "md5", data, checksum=bad, checksumverify=True)
    assert e.value.code == "checksum_mismatch"
    with pytest.raises(MogError):
        c.get_paths("ck-bad")
    c.store_content("ck-good", "md5", data, checksum=good, checksumverify=True)
    assert c.file_info("ck-good")["checksum"] == good


def test_replication_reaches_mindevcount_on_distinct_hosts(cluster):
    c = cluster.client("testdom")
    c.store_content("rep2", "two", b"replicate me" * 100)

    def two_hosts():
        paths = c.get_paths("rep2", noverify=1, pathcount=5)
        hosts = {urllib.parse.urlsplit(p).hostname for p in paths}
        return len(paths) == 2 and len(hosts) == 2 and paths
    paths = wait_until(two_hosts, what="two copies on two hosts")
    for p in paths:
        assert mogclient.http_get(p) == (200, b"replicate me" * 100)
    # file_info's devcount is the file row's column (as MogileFS's), which
    # the replicator updates once it has recorded the copy.
    wait_until(lambda: c.file_info("rep2")["devcount"] == "2", what="devcount 2")


def test_updateclass_adds_copies(cluster):
    c = cluster.client("testdom")
    c.store_content("upc", "one", b"u")
    assert len(c.get_paths("upc", noverify=1, pathcount=5)) == 1
    c.update_class("upc", "two")
    wait_until(lambda: len(c.get_paths("upc", noverify=1, pathcount=5)) == 2, what="second copy")
    with pytest.raises(MogError) as e:
        c.update_class("upc", "nosuch")
    assert e.value.code == "class_not_found"



def test_slow_and_half_open_clients_do_not_block_others(cluster):
    host, port = cluster.tracker.addr.rsplit(":", 1)
    stalled = []
    try:
        # Many clients that stop half way through a line.
        for _ in range(100):
            s = socket.create_connection((host, int(port)))
            s.sendall(b"get_paths domain=testdom&key=")
            stalled.append(s)
        # One that leaves while its command runs.
        s = socket.create_connection((host, int(port)))
        s.sendall(b"sleep duration=1\r\n")
        s.close()
        c = mogclient.Client("testdom", [cluster.tracker.addr])
        for _ in range(20):
            assert c.backend.raw("noop") == "OK "
    finally:
        for s in stalled:
            s.close()
    assert mogclient.Client("testdom", [cluster.tracker.addr]).backend.raw("noop") == "OK "


def test_httpcopy_copies_and_records(cluster):
    c = cluster.client("testdom")
    c.store_content("hc", "one", b"copy me")
    info = c.file_info("hc", devices=1)
    src = int(info["devids"])
    dst = [d for d in (1, 2, 3) if d != src][0]
    be = cluster.admin.backend
    be.do_request("httpcopy", {"sdevid": src, "ddevid": dst, "fid": info["fid"]})
    assert sorted(int(d) for d in c.file_info("hc", devices=1)["devids"].split(",")) == sorted([src, dst])
    with pytest.raises(MogError) as e:
        be.do_request("httpcopy", {"sdevid": src, "ddevid": 99, "fid": info["fid"]})
    assert e.value.code == "copy_err"


def test_monitor_probes_content_md5_rejection(cluster):
    """As the original's monitor: a PUT with a wrong Content-MD5 is refused
    by our mogstored, so every device reports reject_bad_md5=1."""
    def probed():
        res = cluster.admin.backend.do_request("get_devices", {})
        vals = [res["dev%d_reject_bad_md5" % i] for i in range(1, int(res["devices"]) + 1)]
        return vals and all(v == "1" for v in vals)
    wait_until(probed, what="reject_bad_md5 probed")


def test_altip_for_zone_alt_and_clients_inside_altmask(cluster):
    """Host->ip of MogileFS: a host's altip names its URLs when it has an
    altip and a valid altmask, and the client asked for zone=alt or its
    address (127.0.0.1 here) lies inside the altmask."""
    adm, cl = cluster.admin, cluster.client("testdom")
    cl.store_content("alt/key", "one", b"alt data")
    hosts = {h["hostname"]: h for h in adm.get_hosts()}
    names = sorted(hosts)
    alt = {n: "127.0.99.%d" % (i + 1) for i, n in enumerate(names)}

    def ips(paths):
        found = {urllib.parse.urlsplit(p).hostname for p in paths}
        assert found  # a path was handed out
        return found

    def set_alt(mask, with_altip=True):
        for n in names:
            adm.update_host(n, altip=alt[n] if with_altip else "", altmask=mask)

    real = set(h["hostip"] for h in hosts.values())
    try:
        set_alt("10.0.0.0/8")  # the client is not inside
        assert ips(cl.get_paths("alt/key", noverify=1, pathcount=9)) <= real
        assert ips(cl.get_paths("alt/key", noverify=1, pathcount=9, zone="alt")) <= set(alt.values())
        set_alt("127.0.0.0/255.0.0.0")  # now it is
        assert ips(cl.get_paths("alt/key", noverify=1, pathcount=9)) <= set(alt.values())
        res = cl.new_file_open("alt/new", "one")
        assert ips(res["path_%d" % i] for i in range(1, int(res["dev_count"]) + 1)) <= set(alt.values())
        set_alt("")  # no altmask: altip is never used, even for zone=alt
        assert ips(cl.get_paths("alt/key", noverify=1, pathcount=9, zone="alt")) <= real
        set_alt("127.0.0.0/8", with_altip=False)  # no altip: nothing to use
        assert ips(cl.get_paths("alt/key", noverify=1, pathcount=9, zone="alt")) <= real
    finally:
        set_alt("", with_altip=False)
    assert ips(cl.get_paths("alt/key", noverify=1, pathcount=9, zone="alt")) <= real
