"""Processes for the MogileFS tests: storage nodes (our mogstored) on separate
loopback addresses (127.0.0.x, since MogileFS keys hosts by IP) and trackers
(our mogilefsd), registered as mogadm does."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

from . import mogclient

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
BUILD_DIR = os.environ.get("BUILD_DIR", os.path.join(REPO, "build"))


def bin_path(name):
    return os.path.join(BUILD_DIR, "bin", name)


def free_port(host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def common_free_port(ips):
    for _ in range(100):
        port = free_port(ips[0])
        ok = True
        for ip in ips[1:]:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((ip, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise RuntimeError("no port free on all of %s" % ips)


def wait_port(host, port, proc, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("exited with %s before accepting" % proc.returncode)
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError("nothing on %s:%d" % (host, port))


def wait_until(cond, timeout=15.0, step=0.05, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("timed out waiting for %s" % what)


class Proc:
    def __init__(self, name, argv, tmp, host, port):
        self.name, self.argv, self.tmp, self.host, self.port = name, argv, tmp, host, port
        self.log_path = os.path.join(tmp, "%s-%s.log" % (name, uuid.uuid4().hex[:6]))
        self.proc = None
        self.start()

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_port(self.host, self.port, self.proc)
        except Exception:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("%s did not start\n%s" % (self.name, self.output()))

    def output(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, timeout=15):
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("%s did not stop on SIGTERM\n%s" % (self.name, self.output()))
        rc = self.proc.returncode
        self.proc = None
        self.log.close()
        assert rc == 0, "%s exited with %s\n%s" % (self.name, rc, self.output())
        return rc

    def kill9(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            self.log.close()


class Storage(Proc):
    """One mogstored on its own loopback address with devices dev<ids>."""

    def __init__(self, tmp, ip, devids, extra=(), docroot=None, side_port=None):
        self.ip = ip
        self.docroot = docroot or os.path.join(tmp, "store-%s" % ip)
        for d in devids:
            os.makedirs(os.path.join(self.docroot, "dev%d" % d), exist_ok=True)
        self.devids = list(devids)
        self.http_port = free_port(ip)
        self.side_port = side_port or free_port(ip)
        argv = [bin_path("mogstored"), "--httplisten=%s:%d" % (ip, self.http_port),
                "--mgmtlisten=%s:%d" % (ip, self.side_port), "--docroot=%s" % self.docroot] + list(extra)
        super().__init__("mogstored-" + ip, argv, tmp, ip, self.http_port)


class Tracker(Proc):
    def __init__(self, tmp, dsn=None, extra=(), conf_lines=()):
        self.port = free_port()
        self.dsn = dsn or "DBI:SQLite:dbname=%s" % os.path.join(tmp, "tracker-%s.sqlite" % uuid.uuid4().hex[:6])
        self.conf = os.path.join(tmp, "mogilefsd-%s.conf" % uuid.uuid4().hex[:6])
        with open(self.conf, "w") as f:
            f.write("db_dsn = %s\nlisten = 127.0.0.1:%d\nquery_jobs = 8\nmonitor_interval_ms = 200\n"
                    % (self.dsn, self.port))
            for line in conf_lines:
                f.write(line + "\n")
        argv = [bin_path("mogilefsd"), "-c", self.conf] + list(extra)
        super().__init__("mogilefsd", argv, tmp, "127.0.0.1", self.port)

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port


class Cluster:
    """A tracker plus storage nodes, registered as mogadm would."""

    def __init__(self, tmp, nhosts=2, devs_per_host=1, tracker_extra=(), conf_lines=()):
        self.tmp = tmp
        self.stores = []
        self.tracker = None
        try:
            self._start(nhosts, devs_per_host, tracker_extra, conf_lines)
        except BaseException:
            # Nothing started may outlive a failed set-up.
            for p in [self.tracker] + self.stores:
                if p is not None:
                    p.kill9()
            raise

    def _start(self, nhosts, devs_per_host, tracker_extra, conf_lines):
        devid = 1
        ips = ["127.0.%d.%d" % (10 + h // 200, 2 + h % 200) for h in range(nhosts)]
        # MogileFS reaches every node's side channel on one port
        # (mogstored_stream_port): find one free on all the addresses.
        side = common_free_port(ips)
        for h in range(nhosts):
            ids = list(range(devid, devid + devs_per_host))
            devid += devs_per_host
            self.stores.append(Storage(self.tmp, ips[h], ids, side_port=side))
        self.tracker = Tracker(self.tmp, extra=tracker_extra,
                               conf_lines=list(conf_lines) + ["mogstored_stream_port = %d" % side])
        self.admin = mogclient.Admin([self.tracker.addr])
        for i, s in enumerate(self.stores):
            self.admin.create_host("host%d" % (i + 1), s.ip, s.http_port, "alive")
            for d in s.devids:
                self.admin.create_device("host%d" % (i + 1), d)
        wait_until(lambda: all(d["observed_state"] == "writeable" for d in self.admin.get_devices()),
                   what="devices writeable")

    def client(self, domain):
        return mogclient.Client(domain, [self.tracker.addr])

    def stop(self):
        errors = []
        for p in [self.tracker] + self.stores:
            try:
                p.stop()
            except AssertionError as e:
                errors.append(str(e))
            finally:
                p.kill9()  # whatever happened, nothing stays running
        if errors:
            raise AssertionError("\n".join(errors))
