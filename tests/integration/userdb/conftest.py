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

from conftest import MariaDB


class Server(MariaDB):
    """A private mariadbd in a temp dir (the shared fixture's server, with a
    server id and extra options for replication)."""

    def __init__(self, base, server_id, extra=()):
        super().__init__(base, server_id=server_id, extra=extra)

    def dsn(self, database, **kw):
        extra = "".join(";%s=%s" % kv for kv in kw.items())
        return "DBI:mysql:database=%s;host=127.0.0.1;port=%d%s" % (database, self.port, extra)


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
