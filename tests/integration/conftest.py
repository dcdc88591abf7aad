"""Fixtures shared by every integration test.

daemon   -- start a built daemon on free loopback ports, wait until it accepts,
            and at teardown stop it with SIGTERM and fail the test unless it
            exited cleanly.
mariadb  -- a private MariaDB server in a temp dir (session scope).
netns    -- network namespaces joined by a bridge, as separate "hosts".
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD_DIR = os.environ.get("BUILD_DIR", os.path.join(REPO, "build"))


def bin_path(name):
    return os.path.join(BUILD_DIR, "bin", name)


def free_port():
    """A TCP port nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n):
    """n distinct free ports: the sockets are held together while the kernel
    picks, so it cannot hand out one port twice (it did, now and then, to
    free_port() calls made one after another)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_port(port, host="127.0.0.1", timeout=10.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s before accepting" % proc.returncode)
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError("nothing accepted on %s:%d within %.0fs" % (host, port, timeout))


class Daemon:
    def __init__(self, name, args, tmp, ready_port="{port}", env=None, binary=None):
        self.name = name
        self.tmp = tmp
        self.port, self.port2, self.admin = free_ports(3)
        self.binary = binary or bin_path(name)
        self.raw_args = list(args)
        self.ready_port = ready_port
        self.env = env
        self.proc = None
        self.log_path = os.path.join(tmp, "%s-%s.log" % (name, uuid.uuid4().hex[:6]))
        self.start()

    def subst(self, s):
        return (str(s).replace("{port}", str(self.port)).replace("{port2}", str(self.port2))
                .replace("{admin}", str(self.admin)).replace("{tmp}", self.tmp))

    @property
    def args(self):
        return [self.subst(a) for a in self.raw_args]

    @property
    def pid(self):
        return self.proc.pid

    def start(self):
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.binary] + self.args, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)
        if self.ready_port:
            try:
                wait_port(int(self.subst(self.ready_port)), proc=self.proc)
            except Exception:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError("%s did not start: %s\n%s" % (self.name, self.args, self.output()))

    def output(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-4000:]
        except OSError:
            return ""

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15):
        """SIGTERM; assert a clean exit (status 0) within timeout."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("%s did not exit within %ss of SIGTERM\n%s" % (self.name, timeout, self.output()))
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

    def restart(self):
        if self.running():
            self.stop()
        self.start()


@pytest.fixture
def daemon(tmp_path):
    started = []

    def factory(name, args, ready_port="{port}", env=None, binary=None):
        d = Daemon(name, args, str(tmp_path), ready_port=ready_port, env=env, binary=binary)
        started.append(d)
        return d

    yield factory
    errors = []
    for d in started:
        try:
            d.stop()
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n".join(errors))


class MariaDB:
    def __init__(self, base):
        self.base = base
        self.datadir = os.path.join(base, "data")
        self.socket = os.path.join(base, "mysqld.sock")
        self.host = "127.0.0.1"
        self.port = free_port()
        self.user = "root"
        self.password = ""
        os.makedirs(self.datadir)
        run_as = ["--user=root"] if os.geteuid() == 0 else []
        # mariadb-install-db has failed now and then when several servers were
        # set up at once on a loaded machine: one more try on a fresh datadir,
        # and its own output in the error if that fails too
        install = ["mariadb-install-db", "--no-defaults", "--datadir=" + self.datadir,
                   "--auth-root-authentication-method=normal", "--skip-test-db"] + run_as
        for attempt in (1, 2):
            r = subprocess.run(install, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            if r.returncode == 0:
                break
            if attempt == 2:
                raise RuntimeError("mariadb-install-db failed twice:\n" + r.stdout.decode(errors="replace")[-4000:])
            shutil.rmtree(self.datadir)
            os.makedirs(self.datadir)
            time.sleep(1)
        self.log = open(os.path.join(base, "mariadb.log"), "ab")
        self.proc = subprocess.Popen(
            [shutil.which("mariadbd") or "/usr/sbin/mariadbd", "--no-defaults", "--datadir=" + self.datadir,
             "--socket=" + self.socket, "--port=%d" % self.port, "--bind-address=127.0.0.1",
             "--pid-file=" + os.path.join(base, "mariadb.pid"), "--skip-grant-tables=0",
             "--innodb-buffer-pool-size=32M", "--innodb-log-file-size=16M", "--skip-name-resolve"] + run_as,
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port, timeout=60, proc=self.proc)

    def sql(self, statement, database=None):
        cmd = ["mariadb", "--no-defaults", "-uroot", "--socket=" + self.socket, "-N", "-B", "-e", statement]
        if database:
            cmd.insert(-2, database)
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout

    def create_database(self, name=None):
        name = name or "t_" + uuid.uuid4().hex[:10]
        self.sql("CREATE DATABASE `%s`" % name)
        return name

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="session")
def mariadb():
    base = tempfile.mkdtemp(prefix="mariadb-")
    db = MariaDB(base)
    yield db
    db.stop()
    shutil.rmtree(base, ignore_errors=True)


class Host:
    def __init__(self, name, ip):
        self.name = name
        self.ip = ip

    def cmd(self, cmd):
        return ["ip", "netns", "exec", self.name] + list(cmd)

    def run(self, cmd, **kw):
        kw.setdefault("check", True)
        return subprocess.run(self.cmd(cmd), **kw)

    def popen(self, cmd, **kw):
        return subprocess.Popen(self.cmd(cmd), **kw)


@pytest.fixture
def netns():
    """netns(n) -> n hosts 10.201.X.1..n/24 on one bridge (its own namespace)."""
    made = []

    def sh(*args):
        subprocess.run(list(args), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def factory(n):
        tag = uuid.uuid4().hex[:5]
        subnet = 200 + len(made) % 50
        br_ns = "br" + tag
        sh("ip", "netns", "add", br_ns)
        made.append(br_ns)
        sh("ip", "netns", "exec", br_ns, "ip", "link", "add", "br0", "type", "bridge")
        sh("ip", "netns", "exec", br_ns, "ip", "link", "set", "br0", "up")
        hosts = []
        for i in range(1, n + 1):
            name = "h%s%d" % (tag, i)
            sh("ip", "netns", "add", name)
            made.append(name)
            sh("ip", "link", "add", "v" + name, "type", "veth", "peer", "name", "p" + name)
            sh("ip", "link", "set", "v" + name, "netns", name)
            sh("ip", "link", "set", "p" + name, "netns", br_ns)
            sh("ip", "netns", "exec", br_ns, "ip", "link", "set", "p" + name, "master", "br0", "up")
            ip = "10.%d.0.%d" % (subnet, i)
            sh("ip", "netns", "exec", name, "ip", "addr", "add", ip + "/24", "dev", "v" + name)
            sh("ip", "netns", "exec", name, "ip", "link", "set", "v" + name, "up")
            sh("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
            hosts.append(Host(name, ip))
        return hosts

    yield factory
    for ns in reversed(made):
        subprocess.run(["ip", "netns", "delete", ns], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
