"""rebalance as mogadm rebalance drives it: policy, test, start, status,
stop/reset, and files really leaving the source device."""
import os

import pytest

from .mog_cluster import wait_until
from .mogclient import MogError


def devs_of(c, key):
    return [int(d) for d in c.file_info(key, devices=1)["devids"].split(",") if d]


def test_rebalance_moves_files_off_source_devices(cluster_factory):
    cl = cluster_factory(nhosts=3)
    be = cl.admin.backend
    with pytest.raises(MogError) as e:
        be.do_request("rebalance_start", {})
    assert e.value.code == "no_rebal_policy"
    with pytest.raises(MogError) as e:
        be.do_request("rebalance_status", {})
    assert e.value.code == "no_rebal_state"
    with pytest.raises(MogError) as e:
        be.do_request("rebalance_stop", {})
    assert e.value.code == "rebal_not_started"
    with pytest.raises(MogError) as e:
        be.do_request("rebalance_set_policy", {"policy": "from_devices=1 bogus_key=2"})
    assert e.value.code == "bad_rebal_pol"

    cl.admin.create_domain("rb")
    cl.admin.create_class("rb", "one", 1)
    c = cl.client("rb")
    # Everything lands on dev1 first: the others are down while storing.
    cl.admin.change_device_state("host2", 2, "down")
    cl.admin.change_device_state("host3", 3, "down")
    data = {"f%d" % i: os.urandom(1000 + i) for i in range(8)}
    for k, v in data.items():
        c.store_content(k, "one", v)
        assert devs_of(c, k) == [1]
    cl.admin.change_device_state("host2", 2, "alive")
    cl.admin.change_device_state("host3", 3, "alive")

    # A limited run moves exactly that many.
    be.do_request("rebalance_set_policy", {"policy": "from_devices=1 to_devices=2,3 limit_type=device "
                                                     "limit_by=count limit=3"})
    t = be.do_request("rebalance_test", {})
    assert t == {"sdevs": "1", "ddevs": "2,3"}
    st = be.do_request("rebalance_start", {})
    assert "sdevs=1" in st["state"]
    wait_until(lambda: "completed=1" in be.do_request("rebalance_status", {})["state"], timeout=30,
               what="limited rebalance")
    on1 = [k for k in data if 1 in devs_of(c, k)]
    assert len(on1) == len(data) - 3
    # Then everything.
    be.do_request("rebalance_set_policy", {"policy": "from_devices=1 to_devices=2,3"})
    be.do_request("rebalance_start", {})
    wait_until(lambda: "completed=1" in be.do_request("rebalance_status", {})["state"], timeout=30,
               what="full rebalance")
    for k, v in data.items():
        devs = devs_of(c, k)
        assert devs and 1 not in devs and len(devs) == 1
        assert c.get_file_data(k) == v
    # The source copies are gone from disk.
    dev1 = os.path.join(cl.stores[0].docroot, "dev1")
    fids = [n for _, _, files in os.walk(dev1) for n in files if n.endswith(".fid")]
    assert fids == []
    be.do_request("rebalance_reset", {})
    with pytest.raises(MogError) as e:
        be.do_request("rebalance_status", {})
    assert e.value.code == "no_rebal_state"
