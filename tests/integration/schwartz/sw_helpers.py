"""Helpers and fixtures for the schwartzd tests: a raw protocol client
(PROTOCOL.md), the schwartz CLI, Perl TheSchwartz (Debian's
libtheschwartz-perl), a daemon factory and a MariaDB DSN.

The fixtures live here, imported by each test module, rather than in a
conftest.py of this folder: a second module named `conftest` would shadow
tests/integration/conftest.py for the flat test files that import from it."""
import os
import socket
import subprocess

import pytest

BUILD_DIR = os.environ.get("BUILD_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "..", "build"))


def wait_port(port, timeout=10):
    import time
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError("nothing on port %d" % port)


def bin_path(name):
    return os.path.join(BUILD_DIR, "bin", name)


class SW:
    """A schwartzd protocol client over one socket (PROTOCOL.md)."""

    def __init__(self, port, timeout=30):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.s.close()

    def send(self, data):
        self.s.sendall(data)

    def _fill(self):
        d = self.s.recv(65536)
        if not d:
            raise EOFError("schwartzd closed the connection")
        self.buf += d

    def line(self):
        while b"\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode()

    def block(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def cmd(self, line):
        self.send(line.encode() + b"\r\n")
        return self.line()

    def insert(self, func, arg=b"", **opts):
        if isinstance(arg, str):
            arg = arg.encode()
        o = "".join(" %s=%s" % kv for kv in opts.items())
        self.send(b"insert %s %d%s\r\n" % (func.encode(), len(arg), o.encode()) + arg + b"\r\n")
        r = self.line()
        assert r.startswith("OK "), r
        return r[3:]

    def insert_many(self, jobs):
        out = b"insert_many %d\r\n" % len(jobs)
        for func, arg in jobs:
            out += b"%s %d\r\n" % (func.encode(), len(arg)) + arg + b"\r\n"
        self.send(out)
        r = self.line()
        assert r.startswith("OK "), r
        return r[3:].split()

    def jobs_until_end(self):
        jobs = []
        while True:
            r = self.line()
            if r == "END":
                return jobs
            assert r.startswith("JOB "), r
            _, handle, func, n, failures = r.split()
            jobs.append((handle, func, self.block(int(n)), int(failures)))

    def grab(self, n, grab_for, *funcs, **opts):
        o = "".join(" %s=%s" % kv for kv in opts.items())
        self.send(("grab %d %d %s%s\r\n" % (n, grab_for, " ".join(funcs), o)).encode())
        return self.jobs_until_end()

    def lines(self, command):
        self.send(command.encode() + b"\r\n")
        out = []
        while True:
            r = self.line()
            if r == "END":
                return out
            if r.startswith("ERR "):
                raise AssertionError(r)
            out.append(r)


def schwartz_cli(port, *args, input=None, timeout=60):
    return subprocess.run([bin_path("schwartz"), "-s", "127.0.0.1:%d" % port] + list(args), input=input,
                          capture_output=True, timeout=timeout)


def perl(script, *args, timeout=60, env=None):
    """Run a Perl script with Debian's TheSchwartz; returns stdout (bytes)."""
    e = dict(os.environ)
    e.update(env or {})
    r = subprocess.run(["perl", "-e", script] + [str(a) for a in args], capture_output=True, timeout=timeout, env=e)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout




@pytest.fixture
def schwartzd(daemon, tmp_path):
    """schwartzd factory: schwartzd(databases=[dsn, ...], extra=[...])."""
    def start(databases=None, extra=()):
        if databases is None:
            databases = ["dbi:SQLite:dbname=%s" % (tmp_path / "jobs.db")]
        args = ["--listen", "127.0.0.1:{port}", "--console", "127.0.0.1:{admin}", "--queue-refresh", "1"]
        for d in databases:
            args += ["--database", d]
        return daemon("schwartzd", args + list(extra))
    return start


@pytest.fixture
def client():
    opened = []

    def connect(d):
        c = SW(d.port)
        opened.append(c)
        return c
    yield connect
    for c in opened:
        c.close()


@pytest.fixture
def mysql_dsn(mariadb):
    name = mariadb.create_database()
    return "dbi:mysql:database=%s;host=127.0.0.1;port=%d" % (name, mariadb.port)


@pytest.fixture(params=["sqlite", "mariadb"])
def sw_backend(request, tmp_path):
    """(databases, extra daemon args, jobs_left()) on an SQLite file or a
    fresh database of the private MariaDB."""
    if request.param == "sqlite":
        import sqlite3
        path = str(tmp_path / "jobs.db")

        def left():
            con = sqlite3.connect(path, timeout=30)
            try:
                return con.execute("SELECT COUNT(*) FROM job").fetchone()[0]
            finally:
                con.close()
        return ["dbi:SQLite:dbname=%s" % path], [], left
    maria = request.getfixturevalue("mariadb")
    name = maria.create_database()
    dsn = "dbi:mysql:database=%s;host=127.0.0.1;port=%d" % (name, maria.port)
    return [dsn], ["--db-user", "root"], lambda: int(maria.sql("SELECT COUNT(*) FROM job", name))
