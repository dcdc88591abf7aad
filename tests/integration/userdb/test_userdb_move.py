"""The user mover (usermove): copies, verifies, flips; under load; killed
with -9 mid-copy and run again."""
import os
import signal
import subprocess
import threading
import time

import pymysql
import pytest


BUILD_DIR = os.environ.get("BUILD_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "..", "build"))
USERMOVE = os.path.join(BUILD_DIR, "bin", "usermove")

FAST = "directory_ttl = 0.3\n"


def mover(r, uid, dest, *extra):
    return subprocess.run([USERMOVE, "-c", r.conf, "--drain", "0.2"] + list(extra) + [str(uid), str(dest)],
                          capture_output=True, text=True, timeout=120)


def new_user(r, name):
    return int(r.cli("/* user=new */ SELECT userdb_create_user('%s')" % name).stdout)


def test_move_copies_verifies_and_flips(userdbd):
    r = userdbd(extra=FAST, default_clusters="1")
    uid = new_user(r, "mover1")
    other = new_user(r, "stays")
    values = ",".join("(%d, %d, %s)" % (uid, i, "NULL" if i % 7 == 0 else "'body %d \\' quoted'" % i)
                      for i in range(1, 301))
    r.cli("/* user=%d */ INSERT INTO posts VALUES %s" % (uid, values))
    r.cli("/* user=%d */ INSERT INTO posts VALUES (%d, 1, 'not moved')" % (other, other))
    before = r.on_cluster(1, "SELECT postid, body FROM posts WHERE userid = %d ORDER BY postid" % uid)
    res = mover(r, uid, 2)
    assert res.returncode == 0, res.stderr
    assert "300 rows copied" in res.stdout
    assert r.on_global("SELECT clusterid, readonly FROM user WHERE userid = %d" % uid) == "2\t0\n"
    assert r.on_cluster(2, "SELECT postid, body FROM posts WHERE userid = %d ORDER BY postid" % uid) == before
    assert r.on_global("SELECT state FROM clustermove WHERE userid = %d" % uid) == "done\n"
    # Without --delete the source keeps its copy; the other user is untouched.
    assert r.on_cluster(1, "SELECT COUNT(*) FROM posts WHERE userid = %d" % uid) == "300\n"
    assert r.on_cluster(2, "SELECT COUNT(*) FROM posts WHERE userid = %d" % other) == "0\n"
    time.sleep(0.4)  # the router's cached entry expires
    r.cli("/* user=%d */ INSERT INTO posts VALUES (%d, 1000, 'after the move')" % (uid, uid))
    assert r.on_cluster(2, "SELECT body FROM posts WHERE postid = 1000") == "after the move\n"
    # Moving back with --delete removes the copy on the cluster it leaves.
    res = mover(r, uid, 1, "--delete")
    assert res.returncode == 0, res.stderr
    assert r.on_cluster(2, "SELECT COUNT(*) FROM posts WHERE userid = %d" % uid) == "0\n"
    assert r.on_cluster(1, "SELECT COUNT(*) FROM posts WHERE userid = %d" % uid) == "301\n"
    # A user already there: nothing to do.
    res = mover(r, uid, 1)
    assert res.returncode == 0 and "already on cluster 1" in res.stdout


def test_move_under_concurrent_reader_and_writer_loses_nothing(userdbd):
    r = userdbd(extra=FAST, default_clusters="1")
    uid = new_user(r, "busy")
    acked, refused, errors = [], [0], []
    stop = threading.Event()

    def writer():
        c = r.connect()
        cur = c.cursor()
        i = 1
        while not stop.is_set() or i <= 50:
            try:
                cur.execute("/* user=%d */ INSERT INTO posts VALUES (%%s, %%s, 'w')" % uid, (uid, i))
                acked.append(i)
                i += 1
            except pymysql.err.MySQLError as e:
                if e.args[0] != 1290:
                    errors.append(e)
                    return
                refused[0] += 1
                time.sleep(0.02)

    reads = []

    def reader():
        c = r.connect()
        cur = c.cursor()
        while not stop.is_set():
            cur.execute("/* user=%d */ SELECT COUNT(*) FROM posts WHERE userid = %%s" % uid, (uid,))
            reads.append(cur.fetchone()[0])

    ts = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in ts:
        t.start()
    time.sleep(0.5)
    res = mover(r, uid, 2)
    time.sleep(0.8)
    stop.set()
    for t in ts:
        t.join(timeout=60)
    assert res.returncode == 0, res.stderr
    assert not errors
    assert refused[0] > 0               # writes were held off during the move
    assert r.on_global("SELECT clusterid, readonly FROM user WHERE userid = %d" % uid) == "2\t0\n"
    on_dest = [int(x) for x in r.on_cluster(2, "SELECT postid FROM posts WHERE userid = %d ORDER BY postid" % uid).split()]
    assert on_dest == sorted(acked)     # every acknowledged write, once, nothing else
    assert on_dest == list(range(1, len(acked) + 1))
    # Readers never saw rows vanish.
    assert all(b >= a for a, b in zip(reads, reads[1:]))


def test_mover_killed_mid_copy_leaves_user_on_source_and_rerun_finishes(userdbd, ud_servers):
    r = userdbd(extra=FAST, default_clusters="1")
    uid = new_user(r, "crashy")
    r.cli("/* user=%d */ INSERT INTO posts VALUES %s" % (uid, ",".join("(%d,%d,'x')" % (uid, i) for i in range(1, 101))))
    # Hold a lock on the destination table so the copy blocks inside its transaction.
    lock = pymysql.connect(host="127.0.0.1", port=ud_servers.c2.port, user="root", password="", database=r.c_db)
    lock.cursor().execute("LOCK TABLES posts WRITE")
    p = subprocess.Popen([USERMOVE, "-c", r.conf, "--drain", "0.2", str(uid), "2"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        pl = ud_servers.c2.sql("SELECT COUNT(*) FROM information_schema.processlist "
                               "WHERE state LIKE 'Waiting for table metadata lock%%' AND db = '%s'" % r.c_db)
        if pl.strip() != "0":
            break
        time.sleep(0.05)
    else:
        pytest.fail("the mover never reached the copy")
    p.send_signal(signal.SIGKILL)
    p.wait()
    lock.close()
    # The user is still on the source, read-only, with the move open.
    assert r.on_global("SELECT clusterid, readonly FROM user WHERE userid = %d" % uid) == "1\t1\n"
    assert r.on_global("SELECT state, timedone IS NULL FROM clustermove WHERE userid = %d" % uid) == "copying\t1\n"
    time.sleep(0.4)
    res = r.cli("/* user=%d */ INSERT INTO posts VALUES (%d, 999, 'x')" % (uid, uid), check=False)
    assert "ERROR 1290" in res.stderr
    assert r.cli("/* user=%d */ SELECT COUNT(*) FROM posts WHERE userid = %d" % (uid, uid)).stdout == "100\n"
    # Run again: it resumes the same move and finishes.
    res = mover(r, uid, 2)
    assert res.returncode == 0, res.stderr
    assert "resuming move" in res.stdout
    assert r.on_global("SELECT clusterid, readonly FROM user WHERE userid = %d" % uid) == "2\t0\n"
    assert r.on_cluster(2, "SELECT COUNT(*) FROM posts WHERE userid = %d" % uid) == "100\n"
    assert r.on_global("SELECT COUNT(*) FROM clustermove WHERE userid = %d" % uid) == "1\n"


def test_two_movers_for_one_user_do_not_overlap(userdbd, ud_servers):
    r = userdbd(extra=FAST, default_clusters="1")
    uid = new_user(r, "contended")
    hold = pymysql.connect(host="127.0.0.1", port=ud_servers.g.port, user="root", password="", database=r.g_db)
    cur = hold.cursor()
    cur.execute("SELECT GET_LOCK('userdb-move-%d', 0)" % uid)
    assert cur.fetchone() == (1,)
    res = mover(r, uid, 2)
    assert res.returncode == 2 and "another mover" in res.stderr
    hold.close()
    assert r.on_global("SELECT clusterid, readonly FROM user WHERE userid = %d" % uid) == "1\t0\n"


def test_write_that_waited_for_a_backend_past_its_directory_answer_is_refused_once_read_only(userdbd):
    """The mover's window: a router looked the user up (writable), the write
    then waited for a backend longer than directory_ttl while the mover set
    the read-only flag and started copying. The router must ask the
    directory again before it sends the write, and refuse it."""
    r = userdbd(extra="pool_max = 1\ndirectory_ttl = 0.3\n", default_clusters="1")
    uid = new_user(r, "waiter")
    other = new_user(r, "holder")
    # A transaction of another user pins cluster 1's only pooled connection.
    a = r.connect(autocommit=False)
    ca = a.cursor()
    ca.execute("/* user=%d */ SELECT COUNT(*) FROM posts WHERE userid = %%s" % other, (other,))
    b = r.connect()
    cb = b.cursor()
    outcome = {}

    def write():
        try:
            cb.execute("/* user=%d */ INSERT INTO posts VALUES (%%s, 1, 'late')" % uid, (uid,))
            outcome["ok"] = True
        except pymysql.err.MySQLError as e:
            outcome["err"] = e

    t = threading.Thread(target=write)
    t.start()
    deadline = time.time() + 30
    while "waiting=1" not in r.console("pools"):   # the write holds a writable answer and waits
        assert time.time() < deadline, r.console("pools")
        time.sleep(0.02)
    r.on_global("UPDATE user SET readonly = 1 WHERE userid = %d" % uid)
    time.sleep(0.5)   # longer than directory_ttl: the answer the write holds has expired
    a.commit()        # the connection is free: the waiting write gets it now
    t.join(timeout=30)
    assert "ok" not in outcome, "a write routed on an expired answer reached the source"
    assert outcome["err"].args[0] == 1290 and "read-only" in outcome["err"].args[1]
    assert r.on_cluster(1, "SELECT COUNT(*) FROM posts WHERE userid = %d" % uid) == "0\n"
    assert "route_refreshes 1" in r.console("stats")
