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
