"""Fixtures for userdbd: four private MariaDB servers for the whole session
(the global database, cluster 1's master with a binary log and a real
replica of it, cluster 2's master), and a factory that starts userdbd in
front of fresh databases on them for each test.
"""
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid

import pytest

MARIADBD = shutil.which("mariadbd") or "/usr/sbin/mariadbd"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port, proc, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("mariadbd exited with %s" % proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("mariadbd did not accept on %d" % port)


class Server:
    """A private mariadbd in a temp dir, with extra server options."""

    def __init__(self, base, server_id, extra=()):
        self.base = base
        self.datadir = os.path.join(base, "data")
        self.socket = os.path.join(base, "mysqld.sock")
        self.port = _free_port()
        self.server_id = server_id
        run_as = ["--user=root"] if os.geteuid() == 0 else []
        # mariadb-install-db now and then fails when many run at once on this
        # shared machine (parallel workers, other suites): start afresh.
        for attempt in range(3):
            shutil.rmtree(self.datadir, ignore_errors=True)
            os.makedirs(self.datadir)
            inst = subprocess.run(["mariadb-install-db", "--no-defaults", "--datadir=" + self.datadir,
                                   "--auth-root-authentication-method=normal", "--skip-test-db"] + run_as,
                                  capture_output=True, text=True)
            if inst.returncode == 0:
                break
            time.sleep(1 + attempt)
        else:
            raise RuntimeError("mariadb-install-db failed 3 times:\n" + inst.stdout[-2000:] + inst.stderr[-2000:])
        self.log = open(os.path.join(base, "mariadb.log"), "ab")
        self.proc = subprocess.Popen(
            [MARIADBD, "--no-defaults", "--datadir=" + self.datadir, "--socket=" + self.socket,
             "--port=%d" % self.port, "--bind-address=127.0.0.1", "--pid-file=" + os.path.join(base, "pid"),
             "--innodb-buffer-pool-size=32M", "--innodb-log-file-size=16M", "--skip-name-resolve",
             "--server-id=%d" % server_id] + list(extra) + run_as,
            stdout=self.log, stderr=subprocess.STDOUT)
        _wait_port(self.port, self.proc)

    def sql(self, statement, database=None):
        cmd = ["mariadb", "--no-defaults", "-uroot", "--socket=" + self.socket, "-N", "-B", "-e", statement]
        if database:
            cmd.insert(-2, database)
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout

    def dsn(self, database, **kw):
        extra = "".join(";%s=%s" % kv for kv in kw.items())
        return "DBI:mysql:database=%s;host=127.0.0.1;port=%d%s" % (database, self.port, extra)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Servers:
    pass


@pytest.fixture(scope="session")
def ud_servers():
    base = tempfile.mkdtemp(prefix="userdb-mariadb-")
    s = Servers()
    started = []
    try:
        s.g = Server(os.path.join(base, "global"), 1); started.append(s.g)
        s.c1 = Server(os.path.join(base, "c1"), 11, ["--log-bin=c1-bin", "--binlog-format=ROW"]); started.append(s.c1)
        s.c1r = Server(os.path.join(base, "c1r"), 12, ["--read-only=0"]); started.append(s.c1r)
        s.c2 = Server(os.path.join(base, "c2"), 21); started.append(s.c2)
        s.c1r.sql("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='root', "
                  "MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos; START SLAVE" % s.c1.port)
        yield s
    finally:
        for srv in started:
            srv.stop()
        shutil.rmtree(base, ignore_errors=True)


def wait_replicated(s, timeout=20):
    """Wait until the replica has applied everything the c1 master wrote."""
    pos = s.c1.sql("SELECT @@gtid_binlog_pos").strip()
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not pos or s.c1r.sql("SELECT @@gtid_slave_pos").strip() == pos:
            return
        time.sleep(0.05)
    raise TimeoutError("replica did not catch up")


class Router:
    def __init__(self, d, s, dbs, conf):
        self.d = d
        self.s = s
        self.g_db, self.c_db = dbs
        self.port = d.port
        self.admin = d.admin
        self.conf = conf

    def connect(self, **kw):
        import pymysql
        args = dict(host="127.0.0.1", port=self.port, user="app", password="secret", autocommit=True)
        args.update(kw)
        return pymysql.connect(**args)

    def cli(self, sql, check=True):
        """Run statements through the real `mariadb` CLI with --comments."""
        cmd = ["mariadb", "--no-defaults", "--comments", "-h127.0.0.1", "-P%d" % self.port, "-uapp",
               "-psecret", "-N", "-B", "-e", sql]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if check and r.returncode != 0:
            raise AssertionError("mariadb failed: %s" % r.stderr)
        return r

    def console(self, line):
        with socket.create_connection(("127.0.0.1", self.admin), timeout=5) as c:
            c.sendall(line.encode() + b"\r\nquit\r\n")
            out = b""
            while True:
                b = c.recv(65536)
                if not b:
                    break
                out += b
        return out.decode()

    def on_cluster(self, n, sql):
        srv = {1: self.s.c1, 2: self.s.c2}[n]
        return srv.sql(sql, self.c_db)

    def on_global(self, sql):
        return self.s.g.sql(sql, self.g_db)


SCHEMA = ("CREATE TABLE posts (userid INT UNSIGNED NOT NULL, postid INT UNSIGNED NOT NULL, "
          "body VARCHAR(255), PRIMARY KEY (userid, postid))")


@pytest.fixture
def userdbd(daemon, ud_servers, tmp_path):
    """Factory: a userdbd in front of fresh databases (a global one and one
    per cluster, same name on every cluster server, `posts` created)."""
    s = ud_servers

    def start(extra="", replica=False, replica_weight=None, default_clusters="1,2", c1b=False, global_on_c1=False):
        tag = uuid.uuid4().hex[:8]
        g_db, c_db = "g_" + tag, "c_" + tag
        s.g.sql("CREATE DATABASE %s" % g_db)
        for srv in (s.c1, s.c2):
            srv.sql("CREATE DATABASE %s" % c_db)
            srv.sql(SCHEMA, c_db)
        if replica or global_on_c1:
            wait_replicated(s)
        lines = [
            "client_user = app",
            "client_password = secret",
            "backend_user = root",
            ("global = " + s.c1.dsn(c_db) + "\nglobal_replica = " + s.c1r.dsn(c_db)) if global_on_c1
            else "global = " + s.g.dsn(g_db),
            "cluster.1.master = " + s.c1.dsn(c_db),
            "cluster.2.master = " + s.c2.dsn(c_db),
            "default_clusters = " + default_clusters,
            "user_table = posts:userid",
            "max_lag = 1",
            "dead_retry = 0.5",
        ]
        if c1b:
            lines.append("cluster.1.master = " + s.c2.dsn(c_db))  # an a/b pair for flips
        if replica:
            kw = {"weight": replica_weight} if replica_weight is not None else {}
            lines.append("cluster.1.replica = " + s.c1r.dsn(c_db, **kw))
        conf = os.path.join(str(tmp_path), "userdbd-%s.conf" % tag)
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n" + extra + "\n")
        d = daemon("userdbd", ["-c", conf, "--listen", "127.0.0.1:{port}", "--console", "127.0.0.1:{admin}"])
        return Router(d, s, (g_db, c_db), conf)

    return start
