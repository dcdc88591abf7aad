"""Losing a storage host, dead devices, drain, a tracker restart."""
import urllib.parse

from .mog_cluster import Tracker, wait_until
from . import mogclient


def copies(c, key):
    info = c.file_info(key, devices=1)
    return sorted(int(d) for d in info["devids"].split(",") if d)


def make_files(cluster_factory, nfiles=6):
    cl = cluster_factory(nhosts=3)
    cl.admin.create_domain("d")
    cl.admin.create_class("d", "two", 2)
    c = cl.client("d")
    data = {"f%d" % i: (b"file %d " % i) * (i * 1000 + 1) for i in range(nfiles)}
    for k, v in data.items():
        c.store_content(k, "two", v)
    for k in data:
        wait_until(lambda: len(copies(c, k)) == 2, what="2 copies of %s" % k)
    return cl, c, data


def test_host_killed_files_readable_then_rereplicated_when_dead(cluster_factory):
    cl, c, data = make_files(cluster_factory)
    victim = cl.stores[0]
    victim_dev = victim.devids[0]
    victim.kill9()
    # Every file is still readable from its other copy.
    for k, v in data.items():
        assert c.get_file_data(k) == v
    # The monitor notices; get_paths (verifying) no longer hands the dead host out first.
    wait_until(lambda: any(d["devid"] == str(victim_dev) and d["observed_state"] == "unreachable"
                           for d in cl.admin.get_devices()), what="device unreachable")
    for k, v in data.items():
        first = c.get_paths(k)[0]
        assert urllib.parse.urlsplit(first).hostname != victim.ip
    # Marked dead: its copies are dropped and replaced on the remaining hosts.
    cl.admin.change_device_state("host1", victim_dev, "dead")
    for k, v in data.items():
        wait_until(lambda: len(copies(c, k)) == 2 and victim_dev not in copies(c, k), what="re-replication of " + k)
        paths = c.get_paths(k, noverify=1, pathcount=5)
        assert len({urllib.parse.urlsplit(p).hostname for p in paths}) == 2
        for p in paths:
            assert mogclient.http_get(p) == (200, v)
    # dead is final.
    try:
        cl.admin.change_device_state("host1", victim_dev, "alive")
        raise AssertionError("dead -> alive accepted")
    except mogclient.MogError as e:
        assert e.code == "state_too_high"


def test_drain_moves_files_off_a_device(cluster_factory):
    cl, c, data = make_files(cluster_factory)
    # The device with the most copies is drained.
    counts = {}
    for k in data:
        for d in copies(c, k):
            counts[d] = counts.get(d, 0) + 1
    drained = max(counts, key=counts.get)
    host = "host%d" % drained
    cl.admin.change_device_state(host, drained, "drain")
    for k, v in data.items():
        wait_until(lambda: drained not in copies(c, k) and len(copies(c, k)) == 2, what="drain of " + k)
        assert c.get_file_data(k) == v
    # The drained device gets no new files.
    for i in range(5):
        res = c.new_file_open("new%d" % i, "two")
        assert str(drained) not in [res["devid_%d" % j] for j in range(1, int(res["dev_count"]) + 1)]


def test_down_device_excluded_from_new_files_and_paths(cluster_factory):
    cl = cluster_factory(nhosts=2)
    cl.admin.create_domain("d")
    c = cl.client("d")
    cl.admin.change_device_state("host1", 1, "down")
    for i in range(5):
        res = c.new_file_open("k%d" % i, None)
        assert [res["devid_%d" % j] for j in range(1, int(res["dev_count"]) + 1)] == ["2"]
    cl.admin.change_device_state("host1", 1, "alive")


def test_tracker_restart_keeps_everything(cluster_factory, tmp_path):
    cl, c, data = make_files(cluster_factory, nfiles=2)
    cl.tracker.stop()
    cl.tracker.start()
    for k, v in data.items():
        assert c.get_file_data(k) == v
    assert "d" in cl.admin.get_domains()
