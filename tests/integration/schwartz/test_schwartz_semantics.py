"""TheSchwartz semantics through schwartzd: retries and error rows, exit
status, replace_with (atomic, with a fault before commit), declined,
uniqkey, coalesce, priority and floor, fairness, lease expiry, several
databases with one down, bad input."""
import os
import signal
import sqlite3
import subprocess
import threading
import time

from sw_helpers import SW, bin_path, schwartz_cli, client, mysql_dsn, schwartzd, sw_backend  # noqa: F401 (fixtures)


def db_path(tmp_path):
    return str(tmp_path / "jobs.db")


def q(tmp_path, sql, *args):
    con = sqlite3.connect(db_path(tmp_path), timeout=30)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def test_failed_retries_per_policy_then_fails_with_error_rows_and_exit_status(schwartzd, client, tmp_path):
    d = schwartzd()
    c = client(d)
    assert c.cmd("policy Flaky max_retries=2 retry_delay=0 keep_exit_status_for=600") == "OK"
    h = c.insert("Flaky", b"x")
    results = []
    for i in range(3):
        jobs = c.grab(1, 60, "Flaky")
        assert [j[0] for j in jobs] == [h]
        assert jobs[0][3] == i  # failures so far
        results.append(c.cmd("failed %s exit=3 :attempt %d broke" % (h, i)))
    assert results == ["OK retry", "OK retry", "OK failed"]
    jobid = int(h.split("-")[1])
    assert [r[0] for r in q(tmp_path, "SELECT message FROM error WHERE jobid=? ORDER BY rowid", jobid)] == \
        ["attempt 0 broke", "attempt 1 broke", "attempt 2 broke"]
    assert q(tmp_path, "SELECT COUNT(*) FROM job") == [(0,)]
    assert c.cmd("status " + h).startswith("STATUS 3 ")
    assert c.cmd("completed " + h).startswith("ERR NOT_FOUND")


def test_retry_delay_sets_run_after(schwartzd, client, tmp_path):
    d = schwartzd()
    c = client(d)
    h = c.insert("Later", b"x")
    assert c.grab(1, 60, "Later")
    t = int(time.time())
    assert c.cmd("failed %s max_retries=5 retry_delay=100 :later" % h) == "OK retry"
    run_after, grabbed = q(tmp_path, "SELECT run_after, grabbed_until FROM job")[0]
    assert grabbed == 0 and t + 99 <= run_after <= t + 102
    assert c.grab(1, 60, "Later") == []


def test_permanent_failure_never_retries(schwartzd, client):
    c = client(schwartzd())
    h = c.insert("P", b"x")
    c.grab(1, 60, "P")
    assert c.cmd("failed %s permanent=1 max_retries=9 :no" % h) == "OK failed"
    assert c.grab(1, 60, "P") == []


def test_completed_keeps_exit_status_only_when_asked(schwartzd, client):
    c = client(schwartzd())
    h1, h2 = c.insert("K", b"1"), c.insert("K", b"2")
    c.grab(2, 60, "K")
    assert c.cmd("completed " + h1) == "OK"
    assert c.cmd("completed %s keep_exit_status_for=60" % h2) == "OK"
    assert c.cmd("status " + h1) == "STATUS none"
    assert c.cmd("status " + h2).startswith("STATUS 0 ")


def test_replace_with_is_atomic(schwartzd, client, tmp_path):
    d = schwartzd()
    c = client(d)
    h = c.insert("Fan", b"parent")
    c.grab(1, 60, "Fan")
    c.send(b"replace_with %s 2\r\nChild 1\r\na\r\nChild 1\r\nb\r\n" % h.encode())
    r = c.line()
    assert r.startswith("OK ") and len(r.split()) == 3
    assert sorted(a for _, _, a, _ in c.grab(5, 60, "Child")) == [b"a", b"b"]
    assert c.cmd("inspect " + h).startswith("ERR NOT_FOUND")


def test_replace_with_fault_before_commit_changes_nothing(schwartzd, client, tmp_path):
    d = schwartzd(extra=["--test-fault", "replace_with"])
    c = client(d)
    h = c.insert("Fan", b"parent")
    c.grab(1, 60, "Fan")
    c.send(b"replace_with %s 2\r\nChild 1\r\na\r\nChild 1\r\nb\r\n" % h.encode())
    assert c.line().startswith("ERR FAULT")
    # the old job survives, no new job exists, and the session goes on
    assert q(tmp_path, "SELECT jobid FROM job") == [(int(h.split("-")[1]),)]
    assert c.cmd("version").startswith("VERSION")


def test_declined_with_run_after_releases_and_without_keeps_lease(schwartzd, client, tmp_path):
    c = client(schwartzd())
    h = c.insert("D", b"x")
    c.grab(1, 60, "D")
    assert c.cmd("declined " + h) == "OK"
    assert c.grab(1, 60, "D") == []  # still leased
    assert c.cmd("declined %s run_after=1" % h) == "OK"
    assert [j[0] for j in c.grab(1, 60, "D")] == [h]


def test_uniqkey_is_unique_per_function(schwartzd, client):
    c = client(schwartzd())
    c.insert("U", b"1", uniqkey="k")
    assert c.cmd("insert U 1 uniqkey=k\r\n2").startswith("ERR DUPLICATE")
    c.insert("V", b"1", uniqkey="k")  # another function: fine


def test_coalesce_value_and_prefix(schwartzd, client):
    c = client(schwartzd())
    a = c.insert("Mail", b"a", coalesce="example.com")
    b = c.insert("Mail", b"b", coalesce="example.org")
    c.insert("Mail", b"c", coalesce="other.net")
    assert [j[0] for j in c.grab(5, 60, "Mail", coalesce="example.org")] == [b]
    assert [j[0] for j in c.grab(5, 60, "Mail", coalesce_prefix="example.")] == [a]


def test_priority_larger_first_and_floor(schwartzd, client):
    c = client(schwartzd())
    lo = c.insert("Pri", b"lo", priority=1)
    hi = c.insert("Pri", b"hi", priority=9)
    mid = c.insert("Pri", b"mid", priority=5)
    assert [j[0] for j in c.grab(1, 60, "Pri", prioritize=1, floor=6)] == [hi]
    assert [j[0] for j in c.grab(5, 60, "Pri", prioritize=1)] == [mid, lo]


def test_run_after_in_future_is_not_grabbed(schwartzd, client):
    c = client(schwartzd())
    c.insert("Fut", b"x", run_after=int(time.time()) + 3600)
    assert c.grab(1, 60, "Fut") == []


def test_small_queue_not_starved_by_big_one(schwartzd, client):
    c = client(schwartzd())
    c.insert_many([("Big", b"x")] * 200)
    small = c.insert("Small", b"y")
    seen = []
    for _ in range(4):
        jobs = c.grab(1, 60, "Big", "Small")
        seen += [j[0] for j in jobs]
    assert small in seen


def test_lease_expiry_after_worker_kill9(schwartzd, client, tmp_path):
    d = schwartzd()
    c = client(d)
    h = c.insert("Slow", b"x")
    marker = tmp_path / "started"
    w = subprocess.Popen([bin_path("schwartz"),
                          "-s", "127.0.0.1:%d" % d.port, "work", "Slow", "--grab-for", "1", "--",
                          "sh", "-c", "touch %s; sleep 60" % marker], start_new_session=True)
    deadline = time.time() + 20
    while not marker.exists():
        assert time.time() < deadline
        time.sleep(0.02)
    os.killpg(w.pid, signal.SIGKILL)
    w.wait()
    deadline = time.time() + 10
    got = []
    while not got and time.time() < deadline:
        got = c.grab(1, 60, "Slow")
        time.sleep(0.2)
    assert [j[0] for j in got] == [h]


def test_several_databases_one_down(schwartzd, client, tmp_path):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead_port = s.getsockname()[1]
    s.close()
    dbs = ["dbi:SQLite:dbname=%s" % (tmp_path / "a.db"), "dbi:SQLite:dbname=%s" % (tmp_path / "b.db"),
           "dbi:mysql:database=x;host=127.0.0.1;port=%d" % dead_port]
    d = schwartzd(dbs, extra=["--db-user", "root"])
    c = client(d)
    handles = [c.insert("Many", b"%d" % i) for i in range(50)]
    prefixes = {h.split("-")[0] for h in handles}
    assert len(prefixes) == 2  # spread over the two live ones, none lost
    got = []
    while True:
        jobs = c.grab(10, 60, "Many")
        if not jobs:
            break
        got += jobs
        for j in jobs:
            assert c.cmd("completed " + j[0]) == "OK"
    assert sorted(j[0] for j in got) == sorted(handles)
    assert "dead" in "\n".join(SW(d.admin).lines("databases"))


def test_garbage_gets_clear_errors_and_session_goes_on(schwartzd, client):
    d = schwartzd()
    c = client(d)
    for bad in ["frobnicate", "insert", "insert f notanumber", "grab 0 1 f", "grab 5 1", "completed nothandle",
                "failed 0123456789abcdef0123456789abcdef-1 bogus=1", "list", "insert f 1 priority=99999"]:
        r = c.cmd(bad)
        assert r.startswith("ERR "), (bad, r)
    assert c.cmd("version").startswith("VERSION")
    # an unknown database in a handle
    assert c.cmd("completed 0123456789abcdef0123456789abcdef-1").startswith("ERR NOT_FOUND")
    # a block without its CRLF can't be resynchronised: error, then close
    c.send(b"insert f 3\r\nabcXY")
    assert c.line().startswith("ERR BAD_DATA")
    # an over-long line: error, then close
    c2 = client(d)
    c2.send(b"x" * 10000 + b"\r\n")
    assert c2.line().startswith("ERR LINE_TOO_LONG")
    assert client(d).cmd("version").startswith("VERSION")


def test_eight_workers_each_job_completed_once(schwartzd, client, sw_backend):
    """8 workers race for 5,000 jobs (on MariaDB over 4 connections grabbing
    in parallel): each job is handed out and completed exactly once."""
    dbs, extra, jobs_left = sw_backend
    d = schwartzd(dbs, extra=extra)
    c = client(d)
    total = 5000
    handles = []
    for i in range(0, total, 500):
        handles += c.insert_many([("Bulk", b"%d" % n) for n in range(i, i + 500)])
    done = {}
    lock = threading.Lock()
    errors = []

    def worker():
        w = SW(d.port)
        try:
            while True:
                jobs = w.grab(20, 300, "Bulk")
                if not jobs:
                    return
                for h, _, arg, _ in jobs:
                    r = w.cmd("completed " + h)
                    with lock:
                        if r != "OK":
                            errors.append(r)
                        done[h] = done.get(h, 0) + 1
        finally:
            w.close()
    ts = [threading.Thread(target=worker) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=300)
    assert errors == []
    assert sorted(done) == sorted(handles) and set(done.values()) == {1}
    assert jobs_left() == 0


def test_new_function_inserted_concurrently_gets_one_funcid(schwartzd, client, sw_backend):
    """Clients racing to insert the first job of a new function (funcmap
    insert-or-find on parallel connections): every job is filed under the
    one funcid and can be grabbed."""
    dbs, extra, _ = sw_backend
    d = schwartzd(dbs, extra=extra)
    handles, lock = [], threading.Lock()
    barrier = threading.Barrier(8)

    def ins(i):
        c = SW(d.port)
        barrier.wait()
        h = c.insert("Fresh", b"%d" % i)
        with lock:
            handles.append(h)
        c.close()
    ts = [threading.Thread(target=ins, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    c = client(d)
    assert sorted(j[0] for j in c.grab(20, 60, "Fresh")) == sorted(handles)
    assert [line.split()[3] for line in c.lines("funcmap")] == ["Fresh"]


def test_grab_before_the_function_exists(schwartzd, client):
    """TheSchwartz t/work-before-funcids-exist: asking for a function no job
    has used yet finds nothing (and creates nothing); its first job is then
    found."""
    c = client(schwartzd())
    assert c.grab(1, 60, "NotYet") == []
    assert c.lines("funcmap") == []
    h = c.insert("NotYet", b"x")
    assert [j[0] for j in c.grab(1, 60, "NotYet")] == [h]


def test_funcids_differ_per_database(schwartzd, client, tmp_path):
    """TheSchwartz t/funcid: each database maps names to its own funcids;
    jobs are found by name whatever the id."""
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    con = sqlite3.connect(str(b))
    con.execute("CREATE TABLE funcmap (funcid INTEGER PRIMARY KEY AUTOINCREMENT, funcname VARCHAR(255) NOT NULL, "
                "UNIQUE(funcname))")
    con.execute("INSERT INTO funcmap (funcname) VALUES ('Other'), ('More')")
    con.commit()
    con.close()
    d = schwartzd(["dbi:SQLite:dbname=%s" % a, "dbi:SQLite:dbname=%s" % b])
    c = client(d)
    handles = {c.insert("Same", b"%d" % i) for i in range(30)}
    assert len({h.split("-")[0] for h in handles}) == 2
    fm = [l.split() for l in c.lines("funcmap")]
    ids = {(f[1], f[3]): f[2] for f in fm}
    assert ids[("0", "Same")] == "1" and ids[("1", "Same")] == "3"
    got = set()
    while True:
        jobs = c.grab(10, 60, "Same")
        if not jobs:
            break
        got |= {j[0] for j in jobs}
    assert got == handles


def test_mysql_socket_dsn_and_config_keys(schwartzd, client, mariadb, tmp_path):
    """database = dbi:mysql:database=D;mysql_socket=S with db_user from the
    config file (the key spelled as TheSchwartz users write it)."""
    name = mariadb.create_database()
    conf = tmp_path / "s.conf"
    conf.write_text("database = dbi:mysql:database=%s;mysql_socket=%s\ndb_user = root\ndb_pass =\n"
                    % (name, mariadb.socket))
    d = schwartzd([], extra=["-c", str(conf)])
    c = client(d)
    h = c.insert("Sock", b"via unix socket")
    assert [j[2] for j in c.grab(1, 60, "Sock")] == [b"via unix socket"]
    assert c.cmd("completed " + h) == "OK"
    assert mariadb.sql("SELECT COUNT(*) FROM job", name).strip() == "0"


def test_stats_on_the_job_port_and_bad_job_line_closes(schwartzd, client):
    d = schwartzd()
    c = client(d)
    c.insert("St", b"x")
    stats = dict(l.split()[1:3] for l in c.lines("stats"))
    assert stats["jobs_inserted"] == "1" and "insert_latency_p99_us" in stats
    # a bad job line inside insert_many: its block can't be told from commands
    c.send(b"insert_many 2\r\nSt 1\r\na\r\nSt notanumber\r\n")
    assert c.line().startswith("ERR BAD_ARGS")
    try:
        c.line()
        raise AssertionError("the session should have closed")
    except (EOFError, OSError):
        pass
    assert client(d).lines("list St")[0].startswith("JOB ")  # only the first insert exists
    assert len(client(d).lines("list St")) == 2


def test_replace_with_no_jobs_completes_the_job(schwartzd, client):
    c = client(schwartzd())
    h = c.insert("Zero", b"x")
    c.grab(1, 60, "Zero")
    assert c.cmd("replace_with %s 0" % h) == "OK"
    assert c.cmd("inspect " + h).startswith("ERR NOT_FOUND")


def test_dead_database_is_retried_later(schwartzd, client, tmp_path):
    """A database that cannot be opened is skipped at once, and used again
    once it can be (after retry-seconds)."""
    late_dir = tmp_path / "late"
    dbs = ["dbi:SQLite:dbname=%s" % (tmp_path / "a.db"), "dbi:SQLite:dbname=%s" % (late_dir / "b.db")]
    d = schwartzd(dbs, extra=["--retry-seconds", "1"])
    c = client(d)
    first = {c.insert("Late", b"x").split("-")[0] for _ in range(20)}
    assert len(first) == 1  # only the live one
    late_dir.mkdir()
    deadline = time.time() + 20
    seen = set(first)
    while len(seen) < 2:
        assert time.time() < deadline, "the second database was never used"
        seen.add(c.insert("Late", b"y").split("-")[0])
    con = SW(d.admin)
    assert sum(" alive " in l for l in con.lines("databases")) == 2
    con.close()


def test_grab_job_takes_one_job_by_handle_if_free(schwartzd, client):
    """TheSchwartz's grab_and_work_on: a given job, only if nobody holds it."""
    c = client(schwartzd())
    a, b = c.insert("One", b"a"), c.insert("One", b"b")
    c.send(("grab_job %s 60\r\n" % b).encode())
    assert [(j[0], j[2]) for j in c.jobs_until_end()] == [(b, b"b")]
    c.send(("grab_job %s 60\r\n" % b).encode())
    assert c.jobs_until_end() == []  # held now
    assert [j[0] for j in c.grab(5, 60, "One")] == [a]
    assert c.cmd("completed " + b) == "OK"
    assert c.cmd("grab_job %s 60" % b).startswith("ERR NOT_FOUND")


def test_touch_extends_a_live_lease_only(schwartzd, client):
    c = client(schwartzd())
    h = c.insert("Long", b"x")
    assert c.grab(1, 1, "Long")
    assert c.cmd("touch %s 60" % h) == "OK"
    time.sleep(1.5)  # past the first lease: still held thanks to touch
    assert c.grab(1, 60, "Long") == []
    h2 = c.insert("Short", b"y")
    c.grab(1, 1, "Short")
    time.sleep(2.2)  # the 1 s lease has run out (whole seconds, database clock)
    assert c.cmd("touch %s 60" % h2).startswith("ERR NOT_FOUND")
