"""Pool nodes given by host name: resolved at each connect on the loop,
without blocking (the core's evdns reads /etc/hosts first), so a config may
name its backends as Perlbal users do with `POOL p ADD app1:8080`."""
import os

import pytest

from conftest import bin_path, free_port
from pb_helpers import Backend, console, get, start_perlbal

pytestmark = pytest.mark.skipif(not os.path.exists(bin_path("perlbal")), reason="perlbal not built")


def loopback_hosts_name():
    """A name /etc/hosts maps to 127.0.0.1 other than "localhost" (which
    perlbal maps itself): resolving it never leaves the machine."""
    with open("/etc/hosts") as f:
        for line in f:
            parts = line.split("#")[0].split()
            if len(parts) >= 2 and parts[0] == "127.0.0.1":
                for name in parts[1:]:
                    if name != "localhost" and all(c.isalnum() or c in "-." for c in name):
                        return name
    return None


def conf(port, mport, node):
    return """
CREATE POOL named
  POOL named ADD %s
CREATE SERVICE proxy
  SET role = reverse_proxy
  SET listen = 127.0.0.1:%d
  SET pool = named
ENABLE proxy
CREATE SERVICE mgmt
  SET role = management
  SET listen = 127.0.0.1:%d
ENABLE mgmt
""" % (node, port, mport)


def test_pool_node_given_by_host_name_is_resolved_and_used(daemon, tmp_path):
    name = loopback_hosts_name()
    if name is None:
        pytest.skip("/etc/hosts names no loopback host besides localhost on this machine")
    be = Backend()
    try:
        port, mport = free_port(), free_port()
        start_perlbal(daemon, str(tmp_path), conf(port, mport, "%s:%d" % (name, be.port)), port)
        for i in range(3):
            r, _ = get(port, "/n%d" % i)
            assert r.status == 200
        assert [q["path"] for q in be.requests if q["method"] == "GET"] == ["/n0", "/n1", "/n2"]
        assert ("%s:%d" % (name, be.port)) in console(mport, "show pool named")
        # removed by the same name: no more requests reach it
        assert "OK" in console(mport, "POOL named REMOVE %s:%d" % (name, be.port))
        assert ("%s:%d" % (name, be.port)) not in console(mport, "show pool named")
    finally:
        be.stop()


def test_pool_add_refuses_what_is_neither_address_nor_name(daemon, tmp_path):
    be = Backend()
    try:
        port, mport = free_port(), free_port()
        start_perlbal(daemon, str(tmp_path), conf(port, mport, "127.0.0.1:%d" % be.port), port)
        for bad in ("bad_name:80", "-x.org:80", "a..b:80", "1.2.3:80", "host:0"):
            assert console(mport, "POOL named ADD %s" % bad).startswith("ERROR"), bad
        assert get(port, "/ok")[0].status == 200
    finally:
        be.stop()


def test_reproxy_url_with_a_host_name(daemon, tmp_path):
    """X-REPROXY-URL naming its storage node by host name: resolved without
    blocking, the file comes from there; a first URL whose connect fails
    falls over to the next, as with addresses."""
    name = loopback_hosts_name()
    if name is None:
        pytest.skip("/etc/hosts names no loopback host besides localhost on this machine")
    store = Backend(lambda h, info: (200, {"Content-Type": "text/plain"}, b"stored:" + info["path"].encode()))
    dead = free_port()

    def app(h, info):
        return 200, {"X-REPROXY-URL": "http://%s:%d/x http://%s:%d/obj" % (name, dead, name, store.port)}, b""

    be = Backend(app)
    try:
        port, mport = free_port(), free_port()
        start_perlbal(daemon, str(tmp_path), conf(port, mport, "127.0.0.1:%d" % be.port)
                      .replace("  SET pool = named\n", "  SET pool = named\n  SET enable_reproxy = on\n"), port)
        r, body = get(port, "/page")
        assert r.status == 200 and body == b"stored:/obj"
        assert [q["path"] for q in store.requests] == ["/obj"]
    finally:
        be.stop()
        store.stop()
