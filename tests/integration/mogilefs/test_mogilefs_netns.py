"""Replication across real hosts: the tracker and three storage nodes each in
its own network namespace (the conftest `netns` fixture: 10.X.0.N on one
bridge), driven through libmogile's `mogile` CLI from the tracker's host.
A class of mindevcount 3 ends with one copy on each host; with one host's
mogstored killed every copy is still fetched byte-equal."""
import os
import signal
import subprocess
import time

import pytest

from .mog_cluster import bin_path, wait_until


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
def test_replicates_to_mindevcount_on_distinct_network_hosts(netns, tmp_path):
    hosts = netns(4)
    th, stores = hosts[0], hosts[1:]
    procs = []
    logs = []

    def start(host, name, argv):
        log = open(tmp_path / (name + ".log"), "wb")
        logs.append(log)
        procs.append(host.popen(argv, stdout=log, stderr=subprocess.STDOUT))
        return procs[-1]

    conf = tmp_path / "mogilefsd.conf"
    # Each namespace has its own ports: the standard ones cannot collide.
    conf.write_text("db_dsn = DBI:SQLite:dbname=%s\nlisten = %s:7001\nquery_jobs = 4\n"
                    "monitor_interval_ms = 200\nmogstored_stream_port = 7501\n" % (tmp_path / "t.sqlite", th.ip))
    tracker = th.ip + ":7001"

    def mogile(*args, check=True):
        r = th.run([bin_path("mogile"), "--trackers=" + tracker] + list(args), capture_output=True, timeout=60,
                   check=False)
        if check and r.returncode != 0:
            raise AssertionError("mogile %s: %s" % (args, r.stderr.decode()))
        return r

    try:
        start(th, "mogilefsd", [bin_path("mogilefsd"), "-c", str(conf)])
        kids = {}
        for i, h in enumerate(stores):
            root = tmp_path / ("store%d" % (i + 1))
            (root / ("dev%d" % (i + 1))).mkdir(parents=True)
            kids[h.ip] = start(h, "mogstored%d" % (i + 1),
                               [bin_path("mogstored"), "--httplisten=%s:7500" % h.ip,
                                "--mgmtlisten=%s:7501" % h.ip, "--docroot=%s" % root])
        wait_until(lambda: mogile("domain", "list", check=False).returncode == 0, what="tracker up")
        for i, h in enumerate(stores):
            mogile("host", "add", "net%d" % (i + 1), "--ip=" + h.ip, "--port=7500", "--status=alive")
            mogile("device", "add", "net%d" % (i + 1), str(i + 1))
        mogile("domain", "add", "netdom")
        mogile("class", "add", "netdom", "three", "--mindevcount=3")
        wait_until(lambda: mogile("device", "list").stdout.decode().count("writeable") == 3,
                   what="the three devices writeable")

        data = os.urandom(200000)
        src = tmp_path / "in.bin"
        src.write_bytes(data)
        mogile("--domain=netdom", "--class=three", "upload", "net/key", str(src))

        def devids():
            info = dict(l.split(": ", 1) for l in mogile("--domain=netdom", "info", "net/key")
                        .stdout.decode().splitlines() if ": " in l)
            return sorted(info.get("devids", "").split(",")) if info.get("devids") else []
        wait_until(lambda: devids() == ["1", "2", "3"], timeout=30, what="a copy on each of the three hosts")
        # Each copy is on its host's disk, byte-equal.
        for i in range(3):
            files = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / ("store%d" % (i + 1))) for f in fs
                     if f.endswith(".fid")]
            assert len(files) == 1 and open(files[0], "rb").read() == data

        # One host's storage node gone: the file is still fetched, whole.
        victim = kids[stores[0].ip]
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        for n in range(3):
            dst = tmp_path / ("out%d.bin" % n)
            mogile("--domain=netdom", "fetch", "net/key", str(dst))
            assert dst.read_bytes() == data
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.time() + 10
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
