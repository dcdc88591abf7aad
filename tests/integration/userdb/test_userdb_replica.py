"""Reads on replicas: only fresh ones (within max_lag), by weight; dead
backends skipped; the topology reloads live on HUP."""
import os
import signal
import time

import pymysql
import pytest

from_cluster = None


def wait_for(cond, timeout=15, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    pytest.fail("timed out waiting for " + what)


def server_ids(r, uid, n=40, **kw):
    c = r.connect(**kw)
    cur = c.cursor()
    ids = []
    for _ in range(n):
        cur.execute("/* user=%d */ SELECT @@server_id" % uid)
        ids.append(cur.fetchone()[0])
        if not kw.get("autocommit", True):
            c.commit()
    c.close()
    return ids


def seconds_behind(rep):
    c = pymysql.connect(host="127.0.0.1", port=rep.port, user="root", password="",
                        cursorclass=pymysql.cursors.DictCursor)
    cur = c.cursor()
    cur.execute("SHOW SLAVE STATUS")
    row = cur.fetchone()
    c.close()
    return row["Seconds_Behind_Master"]


def replica_fresh(r):
    return "lag=0s" in r.console("clusters")


def test_fresh_replica_serves_reads_writes_go_to_master(userdbd):
    r = userdbd(replica=True, default_clusters="1")
    uid = int(r.cli("/* user=new */ SELECT userdb_create_user('reader')").stdout)
    wait_for(lambda: replica_fresh(r), what="the replica to be measured fresh")
    assert set(server_ids(r, uid)) == {12}              # c1's replica
    r.cli("/* user=%d */ INSERT INTO posts VALUES (%d, 1, 'w')" % (uid, uid))
    assert r.s.c1.sql("SELECT COUNT(*) FROM posts", r.c_db) == "1\n"   # written on the master
    # With autocommit off every statement is in a transaction: the master.
    assert set(server_ids(r, uid, n=5, autocommit=False)) == {11}
    # SELECT ... FOR UPDATE is a write.
    assert r.cli("/* user=%d */ SELECT @@server_id FROM posts FOR UPDATE" % uid).stdout == "11\n"


def test_lagging_or_stopped_replica_is_never_chosen(userdbd, ud_servers):
    r = userdbd(replica=True, default_clusters="1")
    uid = int(r.cli("/* user=new */ SELECT userdb_create_user('lagged')").stdout)
    wait_for(lambda: replica_fresh(r), what="the replica to be measured fresh")
    rep = ud_servers.c1r
    try:
        # Stopped SQL thread: lag unknown -> not used.
        rep.sql("STOP SLAVE SQL_THREAD")
        wait_for(lambda: "lag=unknown" in r.console("clusters"), what="the monitor to see the stop")
        assert set(server_ids(r, uid)) == {11}
        rep.sql("START SLAVE SQL_THREAD")
        wait_for(lambda: replica_fresh(r), what="the replica to recover")
        assert set(server_ids(r, uid)) == {12}
        # Real lag: a delayed replica falls behind after a write (max_lag = 1 s).
        rep.sql("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 30; START SLAVE")
        r.cli("/* user=%d */ INSERT INTO posts VALUES (%d, 1, 'lagging')" % (uid, uid))
        wait_for(lambda: (seconds_behind(rep) or 0) >= 2, what="the replica to lag")
        time.sleep(1.2)
        ids = server_ids(r, uid)
        assert set(ids) == {11}
        assert r.cli("/* user=%d */ SELECT body FROM posts" % uid).stdout == "lagging\n"
    finally:
        rep.sql("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 0; START SLAVE")


def test_replica_weights_split_reads(userdbd, ud_servers):
    # Two entries for the replica (different DSN text): weights 3 and 1.
    rep = ud_servers.c1r
    r = userdbd(replica=True, replica_weight=3, default_clusters="1",
                extra="cluster.1.replica = DBI:mysql:host=localhost;port=%d;database=%s;weight=1" % (rep.port, "%s"))
    # The extra line needs the test's database name: rewrite the config and reload.
    with open(r.conf) as f:
        text = f.read().replace("database=%s;weight=1", "database=%s;weight=1" % r.c_db)
    with open(r.conf, "w") as f:
        f.write(text)
    os.kill(r.d.pid, signal.SIGHUP)
    wait_for(lambda: r.console("clusters").count("lag=0s") == 2, what="both replica entries fresh")
    uid = int(r.cli("/* user=new */ SELECT userdb_create_user('weighted')").stdout)
    before = stats(r)
    server_ids(r, uid, n=400)
    after = stats(r)
    a = after["c1r0:statements"] - before.get("c1r0:statements", 0)
    b = after["c1r1:statements"] - before.get("c1r1:statements", 0)
    assert a + b == 400
    assert abs(a / 400 - 0.75) <= 0.03


def stats(r):
    out = {}
    for line in r.console("stats pools").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "STAT":
            out[parts[1]] = int(parts[2])
    return out


def test_dead_backend_is_skipped_at_once_and_reload_brings_it_back(userdbd, ud_servers):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    r = userdbd(default_clusters="1")
    a = int(r.cli("/* user=new */ SELECT userdb_create_user('alive')").stdout)
    r.on_global("INSERT INTO user (user, clusterid) VALUES ('ondead', 2)")
    b = int(r.on_global("SELECT userid FROM user WHERE user = 'ondead'"))
    with open(r.conf) as f:
        text = f.read()
    good = "cluster.2.master = " + ud_servers.c2.dsn(r.c_db)
    with open(r.conf, "w") as f:
        f.write(text.replace(good, "cluster.2.master = DBI:mysql:database=%s;host=127.0.0.1;port=%d" % (r.c_db, dead_port)))
    os.kill(r.d.pid, signal.SIGHUP)
    wait_for(lambda: str(dead_port) in r.console("clusters"), what="the reload")
    c = r.connect()
    cur = c.cursor()
    t0 = time.time()
    with pytest.raises(pymysql.err.MySQLError) as e:
        cur.execute("/* user=%d */ SELECT 1" % b)
    assert time.time() - t0 < 3
    assert "c2a" in e.value.args[1]
    # Marked dead: the next one fails at once, without a connect attempt.
    t0 = time.time()
    with pytest.raises(pymysql.err.MySQLError):
        cur.execute("/* user=%d */ SELECT 1" % b)
    assert time.time() - t0 < 0.5
    assert "DEAD" in r.console("clusters")
    # Cluster 1 keeps working meanwhile.
    cur.execute("/* user=%d */ SELECT COUNT(*) FROM posts" % a)
    assert cur.fetchone() == (0,)
    # Point it back at the live server and reload from the console.
    with open(r.conf, "w") as f:
        f.write(text)
    assert "OK" in r.console("reload")
    time.sleep(0.6)  # past dead_retry
    cur.execute("/* user=%d */ SELECT @@server_id" % b)
    assert cur.fetchone() == (21,)


def test_global_database_replica_serves_unhinted_reads(userdbd, ud_servers):
    s = ud_servers
    # The global database on cluster 1's master, which has a real replica.
    r = userdbd(global_on_c1=True)
    wait_for(lambda: "gr0" in r.console("clusters") and "lag=0s" in r.console("clusters"),
             what="the global replica to be measured fresh")
    c = r.connect()
    cur = c.cursor()
    ids = set()
    for _ in range(20):
        cur.execute("SELECT @@server_id")
        ids.add(cur.fetchone()[0])
    assert ids == {12}                                   # un-hinted reads: the global replica
    cur.execute("/* user=new */ SELECT userdb_create_user('gr')")   # directory writes: the global master
    assert s.c1.sql("SELECT user FROM user", r.c_db) == "gr\n"
    cur.execute("SELECT @@server_id FROM user FOR UPDATE")
    assert cur.fetchone() == (11,)
