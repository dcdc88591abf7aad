"""fsck as MogileFS::Admin / mogadm fsck drive it: missing, truncated and
corrupted copies are found, logged with the original's event codes and
repaired by re-replication."""
import hashlib
import os
import urllib.parse

from .mog_cluster import wait_until


def disk_path(cl, url):
    u = urllib.parse.urlsplit(url)
    store = [s for s in cl.stores if s.ip == u.hostname][0]
    return os.path.join(store.docroot, u.path.lstrip("/"))


def test_fsck_finds_and_repairs_bad_copies(cluster_factory):
    cl = cluster_factory(nhosts=3)
    adm = cl.admin
    adm.create_domain("fd")
    adm.create_class("fd", "two", 2, hashtype="MD5")
    c = cl.client("fd")
    data = {k: os.urandom(5000) for k in ("miss", "short", "corrupt", "fine")}
    for k, v in data.items():
        c.store_content(k, "two", v, checksum="MD5:" + hashlib.md5(v).hexdigest())
    for k in data:
        wait_until(lambda: len(c.get_paths(k, noverify=1, pathcount=5)) == 2, what="2 copies of " + k)
    fids = {k: int(c.file_info(k)["fid"]) for k in data}
    # Damage one copy of three files on disk.
    os.unlink(disk_path(cl, c.get_paths("miss", noverify=1)[0]))
    with open(disk_path(cl, c.get_paths("short", noverify=1)[0]), "r+b") as f:
        f.truncate(100)
    with open(disk_path(cl, c.get_paths("corrupt", noverify=1)[0]), "r+b") as f:
        f.write(b"\0" * 10)
    be = adm.backend
    be.do_request("fsck_clearlog", {})
    be.do_request("fsck_reset", {"policy_only": 0, "startpos": 0})
    be.do_request("fsck_start", {})
    wait_until(lambda: be.do_request("fsck_status", {})["running"] == "0", timeout=30, what="fsck finished")
    st = be.do_request("fsck_status", {})
    assert int(st["max_fid_checked"]) >= max(fids.values())
    log = be.do_request("fsck_getlog", {"after_logid": 0})
    events = {(int(log["row_%d_fid" % i]), log["row_%d_evcode" % i]) for i in range(1, int(log["row_count"]) + 1)}
    assert (fids["miss"], "MISS") in events
    assert (fids["short"], "BLEN") in events
    assert (fids["corrupt"], "BSUM") in events
    assert not [e for e in events if e[0] == fids["fine"]]
    assert int(st["num_MISS"]) >= 1 and int(st["num_BSUM"]) >= 1
    # Repaired: two good copies of everything again.
    for k, v in data.items():
        def healthy():
            paths = c.get_paths(k, noverify=1, pathcount=5)
            return len(paths) == 2 and all(open(disk_path(cl, p), "rb").read() == v for p in paths)
        wait_until(healthy, timeout=30, what="repair of " + k)
