"""MogileFS-Network zones across real network hosts: every daemon in its own
network namespace, addresses in two zones (10.55.1.0/24 = "east",
10.55.2.0/24 = "west"; one bridge, /16 prefixes). The ZoneLocal plugin
orders get_paths and create_open for a client in its own zone first, and
the replicator prefers local_network's zone; the MultipleNetworks policy
puts copies on both zones before a second copy in one zone, and
HostsPerNetwork(east=2, west=1) puts two copies on east hosts and one on a
west host."""
import os
import subprocess

import pytest

from . import mogclient
from .mog_cluster import bin_path, wait_until

TRACKER, CLIENT_EAST, CLIENT_WEST = "10.55.1.1", "10.55.1.9", "10.55.2.9"
STORES = ["10.55.1.2", "10.55.1.3", "10.55.2.2", "10.55.2.3"]


def zone_of(url):
    return "east" if "//10.55.1." in url else "west"


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
def test_zone_local_ordering_and_multiple_networks_replication(zone_netns, tmp_path):
    hosts = zone_netns([TRACKER, CLIENT_EAST, CLIENT_WEST] + STORES)
    th, east, west, stores = hosts[0], hosts[1], hosts[2], hosts[3:]
    procs, logs = [], []

    def start(host, name, argv):
        log = open(tmp_path / (name + ".log"), "wb")
        logs.append(log)
        procs.append(host.popen(argv, stdout=log, stderr=subprocess.STDOUT))

    conf = tmp_path / "mogilefsd.conf"
    conf.write_text("db_dsn = DBI:SQLite:dbname=%s\nlisten = %s:7001\nquery_jobs = 4\n"
                    "monitor_interval_ms = 200\nmogstored_stream_port = 7501\n"
                    "plugins = ZoneLocal\nlocal_network = 10.55.2.0/24\n" % (tmp_path / "t.sqlite", TRACKER))

    def client_py(host, script):
        """Run a request from a client namespace (its source address is what
        ZoneLocal looks at); returns stdout lines."""
        r = host.run(["/usr/bin/python3", "-c", script], capture_output=True, timeout=60, check=False)
        assert r.returncode == 0, r.stderr.decode()
        return r.stdout.decode().split()

    def get_paths_from(host, key):
        return client_py(host, (
            "import socket\n"
            "s=socket.create_connection(('%s',7001));s.sendall(b'get_paths domain=zd&key=%s&noverify=1&pathcount=9\\r\\n')\n"
            "b=b''\n"
            "while not b.endswith(b'\\r\\n'): b+=s.recv(4096)\n"
            "from urllib.parse import parse_qsl\n"
            "d=dict(parse_qsl(b.decode().split(' ',1)[1].strip()))\n"
            "print(' '.join(d['path%%d'%%i] for i in range(1,int(d['paths'])+1)))\n") % (TRACKER, key))

    def create_open_from(host):
        return client_py(host, (
            "import socket\n"
            "s=socket.create_connection(('%s',7001));s.sendall(b'create_open domain=zd&key=x&fid=0&multi_dest=1\\r\\n')\n"
            "b=b''\n"
            "while not b.endswith(b'\\r\\n'): b+=s.recv(4096)\n"
            "from urllib.parse import parse_qsl\n"
            "d=dict(parse_qsl(b.decode().split(' ',1)[1].strip()))\n"
            "print(' '.join(d['path_%%d'%%i] for i in range(1,int(d['dev_count'])+1)))\n") % TRACKER)

    try:
        start(th, "mogilefsd", [bin_path("mogilefsd"), "-c", str(conf)])
        for i, h in enumerate(stores):
            root = tmp_path / ("store%d" % (i + 1))
            (root / ("dev%d" % (i + 1))).mkdir(parents=True)
            start(h, "mogstored%d" % (i + 1), [bin_path("mogstored"), "--httplisten=%s:7500" % h.ip,
                                               "--mgmtlisten=%s:7501" % h.ip, "--docroot=%s" % root])
        # The tests' process is outside the namespaces: administer and
        # upload from the tracker's namespace through a tiny relay-free path:
        # run mogclient there.
        admin_script = (
            "import sys; sys.path.insert(0, %r)\n"
            "import mogclient, time\n"
            "a = mogclient.Admin(['%s:7001'])\n"
            "for _ in range(200):\n"
            "    try:\n"
            "        a.get_domains(); break\n"
            "    except Exception: time.sleep(0.05)\n"
            "for i, ip in enumerate(%r):\n"
            "    a.create_host('s%%d' %% (i + 1), ip, 7500, 'alive'); a.create_device('s%%d' %% (i + 1), i + 1)\n"
            "a.backend.do_request('set_server_setting', {'key': 'network_zones', 'value': 'east,west'})\n"
            "a.backend.do_request('set_server_setting', {'key': 'zone_east', 'value': '10.55.1.0/24'})\n"
            "a.backend.do_request('set_server_setting', {'key': 'zone_west', 'value': '10.55.2.0/24'})\n"
            "a.create_domain('zd')\n"
            "a.create_class('zd', 'nets', 2, replpolicy='MultipleNetworks()')\n"
            "a.create_class('zd', 'one', 1)\n"
            "a.create_class('zd', 'hpn', 1, replpolicy='HostsPerNetwork(east=2, west=1)')\n"
            "for _ in range(300):\n"
            "    if all(d['observed_state'] == 'writeable' for d in a.get_devices()): break\n"
            "    time.sleep(0.05)\n"
            "c = mogclient.Client('zd', ['%s:7001'])\n"
            "for i in range(6):\n"
            "    c.store_content('n%%d' %% i, 'nets', b'net file %%d' %% i)\n"
            "for i in range(3):\n"
            "    c.store_content('h%%d' %% i, 'hpn', b'hpn file %%d' %% i)\n"
            "print('ok')\n") % (os.path.dirname(mogclient.__file__), TRACKER, STORES, TRACKER)
        assert client_py(th, admin_script) == ["ok"]
        # MultipleNetworks(): with mindevcount 2 each file ends on one host of
        # each zone, wherever its first copy went.
        for i in range(6):
            wait_until(lambda: len(get_paths_from(th, "n%d" % i)) == 2, timeout=30, what="2 copies of n%d" % i)
            assert sorted(zone_of(u) for u in get_paths_from(th, "n%d" % i)) == ["east", "west"]
        # HostsPerNetwork(east=2, west=1): two east hosts and one west host.
        for i in range(3):
            wait_until(lambda: len(get_paths_from(th, "h%d" % i)) == 3, timeout=30, what="3 copies of h%d" % i)
            paths = get_paths_from(th, "h%d" % i)
            assert sorted(zone_of(u) for u in paths) == ["east", "east", "west"]
            assert len({u.split("/")[2] for u in paths}) == 3  # three hosts
        # ZoneLocal get_paths: a client's own zone comes first, every time.
        for _ in range(5):
            for i in range(6):
                assert zone_of(get_paths_from(east, "n%d" % i)[0]) == "east"
                assert zone_of(get_paths_from(west, "n%d" % i)[0]) == "west"
        # ZoneLocal create_open: the client's zone's devices are offered first.
        for _ in range(8):
            dests = create_open_from(east)
            assert [zone_of(u) for u in dests[:2]] == ["east", "east"]
            dests = create_open_from(west)
            assert [zone_of(u) for u in dests[:2]] == ["west", "west"]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
