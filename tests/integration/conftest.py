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
import warnings

import pytest

from netports import free_port, free_ports  # noqa: F401  (re-exported to the tests)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD_DIR = os.environ.get("BUILD_DIR", os.path.join(REPO, "build"))


def bin_path(name):
    return os.path.join(BUILD_DIR, "bin", name)


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
    """A private mariadbd: its own datadir, socket, port and tmpdir under base.

    The tmpdir must be private: a starting mariadbd (mariadb-install-db's
    bootstrap too) deletes every "#sql*" file in its tmpdir as a leftover of a
    crash, so servers sharing /tmp remove each other's live temporary tables
    (install-db then fails with "Unknown table 'mysql.tmp_user_sys'"; seen in
    3 of 12 installs run four at a time). server_id and extra are options for
    replication set-ups."""

    INSTALL_TRIES = 3
    START_TRIES = 3
    START_TIMEOUT = 120.0

    def __init__(self, base, server_id=None, extra=()):
        self.base = base
        self.datadir = os.path.join(base, "data")
        self.tmpdir = os.path.join(base, "tmp")
        self.socket = os.path.join(base, "mysqld.sock")
        self.host = "127.0.0.1"
        self.user = "root"
        self.password = ""
        self.server_id = server_id
        os.makedirs(self.tmpdir, exist_ok=True)
        self.run_as = ["--user=root"] if os.geteuid() == 0 else []
        self._install()
        self.log_path = os.path.join(base, "mariadb.log")
        self.log = open(self.log_path, "ab")
        options = ["--server-id=%d" % server_id] if server_id is not None else []
        self._start(options + list(extra))

    def _install(self):
        # a failure is retried on a fresh datadir; each one's output is kept
        # in base/install-N.log and named in a warning, so a flaky install
        # shows in the run's summary instead of passing unseen
        install = ["mariadb-install-db", "--no-defaults", "--datadir=" + self.datadir, "--tmpdir=" + self.tmpdir,
                   "--auth-root-authentication-method=normal", "--skip-test-db"] + self.run_as
        for attempt in range(1, self.INSTALL_TRIES + 1):
            shutil.rmtree(self.datadir, ignore_errors=True)
            os.makedirs(self.datadir)
            r = subprocess.run(install, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
            if r.returncode == 0:
                return
            out = r.stdout.decode(errors="replace")
            path = os.path.join(self.base, "install-%d.log" % attempt)
            with open(path, "w") as f:
                f.write(out)
            cause = next((l for l in out.splitlines() if "ERROR" in l), out.strip()[:200])
            warnings.warn("mariadb-install-db try %d of %d failed (exit %d): %s (full output: %s)"
                          % (attempt, self.INSTALL_TRIES, r.returncode, cause, path))
            time.sleep(attempt)
        raise RuntimeError("mariadb-install-db failed %d times; last output:\n%s" % (self.INSTALL_TRIES, out[-4000:]))

    def _start(self, options):
        # free_port() closes its socket before mariadbd binds: another test
        # may take the port in between, and mariadbd then exits; start again
        # on another port
        for attempt in range(1, self.START_TRIES + 1):
            self.port = free_port()
            mark = os.path.getsize(self.log_path)
            self.proc = subprocess.Popen(
                [shutil.which("mariadbd") or "/usr/sbin/mariadbd", "--no-defaults", "--datadir=" + self.datadir,
                 "--tmpdir=" + self.tmpdir, "--socket=" + self.socket, "--port=%d" % self.port,
                 "--bind-address=127.0.0.1", "--pid-file=" + os.path.join(self.base, "mariadb.pid"),
                 "--skip-grant-tables=0", "--innodb-buffer-pool-size=32M", "--innodb-log-file-size=16M",
                 "--skip-name-resolve"] + options + self.run_as,
                stdout=self.log, stderr=subprocess.STDOUT)
            try:
                # the port alone could be another test's listener that took
                # it first: ours is up when its own unix socket answers too
                wait_port(self.port, timeout=self.START_TIMEOUT, proc=self.proc)
                self._wait_socket()
                return
            except RuntimeError:
                # exited before accepting: say why, and try again if tries are left
                with open(self.log_path, "rb") as f:
                    f.seek(mark)
                    tail = f.read().decode(errors="replace")[-3000:]
                if attempt == self.START_TRIES:
                    raise RuntimeError("mariadbd exited with %s before accepting, %d times; last log:\n%s"
                                       % (self.proc.returncode, attempt, tail))
                warnings.warn("mariadbd try %d exited with %s before accepting on port %d: %s"
                              % (attempt, self.proc.returncode, self.port,
                                 next((l for l in tail.splitlines() if "ERROR" in l), "see " + self.log_path)))
            except TimeoutError:
                self.proc.kill()
                self.proc.wait()
                raise

    def _wait_socket(self, timeout=30.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("process exited with %s before accepting" % self.proc.returncode)
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(0.5)
                    s.connect(self.socket)
                    return
            except OSError:
                time.sleep(0.02)
        raise TimeoutError("mariadbd's socket %s did not accept within %.0fs" % (self.socket, timeout))

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
