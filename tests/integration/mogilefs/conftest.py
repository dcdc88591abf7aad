"""Fixtures for the MogileFS tests (helpers in mog_cluster.py).

pytest loads every conftest.py under the name "conftest"; other tests import
helpers with `from conftest import ...`, so this file re-exports the shared
integration conftest's names and adds only fixtures of its own."""
import importlib.util
import os
import shutil
import tempfile

import pytest

_spec = importlib.util.spec_from_file_location(
    "_integration_conftest", os.path.join(os.path.dirname(__file__), "..", "conftest.py"))
_shared = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_shared)
globals().update({k: v for k, v in vars(_shared).items() if not k.startswith("__")})

from .mog_cluster import Cluster  # noqa: E402


@pytest.fixture
def cluster_factory():
    made = []
    tmp = tempfile.mkdtemp(prefix="mogtest-")

    def make(**kw):
        c = Cluster(tmp, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    """Three storage hosts, one device each; domain 'testdom' with classes."""
    tmp = tempfile.mkdtemp(prefix="mogtest-")
    c = Cluster(tmp, nhosts=3)
    try:
        c.admin.create_domain("testdom")
        c.admin.create_class("testdom", "two", 2)
        c.admin.create_class("testdom", "one", 1)
        c.admin.create_class("testdom", "md5", 1, hashtype="MD5")
        yield c
    finally:
        c.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def zone_netns():
    """zone_netns([ip, ...]) -> one network namespace per address, all on one
    bridge of their own with /16 prefixes, so addresses in different /24s
    (MogileFS network zones) reach each other directly."""
    import subprocess
    import uuid
    made = []

    def sh(*args):
        subprocess.run(list(args), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def factory(ips):
        tag = uuid.uuid4().hex[:5]
        br = "zb" + tag
        sh("ip", "netns", "add", br)
        made.append(br)
        sh("ip", "netns", "exec", br, "ip", "link", "add", "br0", "type", "bridge")
        sh("ip", "netns", "exec", br, "ip", "link", "set", "br0", "up")
        hosts = []
        for i, ip in enumerate(ips):
            name = "z%s%d" % (tag, i)
            sh("ip", "netns", "add", name)
            made.append(name)
            sh("ip", "link", "add", "v" + name, "type", "veth", "peer", "name", "p" + name)
            sh("ip", "link", "set", "v" + name, "netns", name)
            sh("ip", "link", "set", "p" + name, "netns", br)
            sh("ip", "netns", "exec", br, "ip", "link", "set", "p" + name, "master", "br0", "up")
            sh("ip", "netns", "exec", name, "ip", "addr", "add", ip + "/16", "dev", "v" + name)
            sh("ip", "netns", "exec", name, "ip", "link", "set", "v" + name, "up")
            sh("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
            hosts.append(Host(name, ip))  # noqa: F821 - from the shared conftest
        return hosts

    yield factory
    for ns in reversed(made):
        subprocess.run(["ip", "netns", "delete", ns], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
