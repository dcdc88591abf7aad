"""The deploy/ example: our perlbal serves /<key> from our mogstored through
an application answering X-REPROXY-URL from the tracker's get_paths."""
import os

from . import mogclient
from .mog_cluster import REPO, Proc, bin_path, free_port


def test_perlbal_reproxies_files_from_mogstored(cluster):
    c = cluster.client("testdom")
    data = os.urandom(300000)
    c.store_content("site/logo.png", "two", data)
    tmp = cluster.tmp
    app_port, pb_port = free_port(), free_port()
    app = Proc("reproxy-app", ["/usr/bin/python3", os.path.join(REPO, "deploy/mogilefs/reproxy_app.py"),
                               "--listen=127.0.0.1:%d" % app_port, "--trackers=" + cluster.tracker.addr,
                               "--domain=testdom"], tmp, "127.0.0.1", app_port)
    conf = open(os.path.join(REPO, "deploy/mogilefs/perlbal-mogilefs.conf")).read()
    conf = conf.replace("@APP@", "127.0.0.1:%d" % app_port).replace("@LISTEN@", "127.0.0.1:%d" % pb_port)
    path = os.path.join(tmp, "perlbal-mog.conf")
    with open(path, "w") as f:
        f.write(conf)
    pb = Proc("perlbal", [bin_path("perlbal"), "-c", path], tmp, "127.0.0.1", pb_port)
    try:
        status, body = mogclient.http_get("http://127.0.0.1:%d/site/logo.png" % pb_port)
        assert status == 200 and body == data
        status, _ = mogclient.http_get("http://127.0.0.1:%d/site/none.png" % pb_port)
        assert status == 404
    finally:
        pb.stop()
        app.proc.terminate()
        app.proc.wait()
        app.proc = None
