"""gearmand: the review findings of issue 11, each reproduced.

- a background job is acknowledged only once its row committed, and every
  submitter coalesced onto it hears the same truth; it is not handed to a
  worker before that;
- the job port speaks gearmand 1.1's admin commands only (no `set`,
  `shutdown`, `show settings`), can be narrowed further by an option, and the
  console's `show settings` never prints a password;
- WORK_DATA fanned out to clients that don't read is bounded;
- function names are freed when nothing uses them, and their number is
  bounded;
- the unique key `-` coalesces by payload without making the payload a key,
  as gearmand 1.1."""
import os
import sqlite3
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from test_gearmand_wire import Conn, admin, packet, status, wait_for  # noqa: E402


def stats(port):
    c = Conn(port)
    c.raw(b"stats\r\n")
    while not c.buf.endswith(b"END\r\n"):
        c._fill()
    c.close()
    return {ln.split()[1]: ln.split()[2] for ln in c.buf.decode().splitlines() if ln.startswith("STAT ")}


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    return 0


@pytest.fixture
def refusing_store(tmp_path):
    """A SQLite store whose table refuses rows whose payload starts with
    'boom' (a trigger), so an INSERT fails on demand."""
    path = str(tmp_path / "q.sqlite")
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE gm_queue (id INTEGER PRIMARY KEY, unique_key BLOB, function_name BLOB,
                               priority INTEGER, data BLOB, when_to_run INTEGER, reducer BLOB);
        CREATE TRIGGER refuse BEFORE INSERT ON gm_queue
            WHEN CAST(NEW.data AS TEXT) LIKE 'boom%'
            BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END;
    """)
    db.commit()
    db.close()
    return path


def start_sqlite(daemon, path, *extra):
    return daemon("gearmand", ["-p", "{port}", "-L", "127.0.0.1", "--log-level", "error",
                               "-q", "libsqlite3", "--libsqlite3-db", path] + list(extra))


def test_coalesced_background_submits_share_a_failed_insert(daemon, refusing_store):
    d = start_sqlite(daemon, refusing_store)
    c1, c2 = Conn(d.port), Conn(d.port)
    # the second submit arrives while the first one's INSERT is in flight
    c1.raw(packet("SUBMIT_JOB_BG", "f", "same", "boom-1"))
    c2.raw(packet("SUBMIT_JOB_BG", "f", "same", "boom-1"))
    assert c1.expect("ERROR")[0] == b"QUEUE_ERROR"
    assert c2.expect("ERROR")[0] == b"QUEUE_ERROR"   # was JOB_CREATED: a lost job
    # and nothing of it is left to run
    assert status(d.port).get("f", (0, 0, 0))[0] == 0
    # a good one coalesces and both hear JOB_CREATED, one row stored
    c1.raw(packet("SUBMIT_JOB_BG", "f", "ok", "fine"))
    c2.raw(packet("SUBMIT_JOB_BG", "f", "ok", "fine"))
    h1, h2 = c1.expect("JOB_CREATED"), c2.expect("JOB_CREATED")
    assert h1 == h2
    db = sqlite3.connect(refusing_store)
    assert db.execute("SELECT COUNT(*) FROM gm_queue").fetchone()[0] == 1


def test_background_job_reaches_no_worker_before_its_row_commits(daemon, refusing_store):
    d = start_sqlite(daemon, refusing_store)
    c = Conn(d.port)
    # one connection, one write: worker and client at once, GRAB before the
    # INSERT can have committed
    c.raw(packet("CAN_DO", "g") + packet("SUBMIT_JOB_BG", "g", "u", "boom-2") + packet("GRAB_JOB"))
    assert c.expect("ERROR")[0] == b"QUEUE_ERROR"
    assert c.recv()[0] == "NO_JOB"                     # was JOB_ASSIGN: a job run while its client heard QUEUE_ERROR
    # a job that does commit is handed out once it has
    c.raw(packet("SUBMIT_JOB_BG", "g", "u2", "good") + packet("PRE_SLEEP"))
    h = c.expect("JOB_CREATED")[0]
    assert c.expect("NOOP") == []
    c.send("GRAB_JOB")
    assert c.expect("JOB_ASSIGN") == [h, b"g", b"good"]


def test_foreground_client_on_a_job_whose_insert_fails_still_gets_its_result(daemon, refusing_store):
    d = start_sqlite(daemon, refusing_store)
    fg, bg, w = Conn(d.port), Conn(d.port), Conn(d.port)
    fg.send("SUBMIT_JOB", "h", "k", "boom-3")
    h = fg.expect("JOB_CREATED")[0]
    bg.send("SUBMIT_JOB_BG", "h", "k", "boom-3")      # joins it, cannot be stored
    assert bg.expect("ERROR")[0] == b"QUEUE_ERROR"
    w.send("CAN_DO", "h")
    w.send("GRAB_JOB")
    assert w.expect("JOB_ASSIGN")[0] == h               # still runs for the foreground client
    w.send("WORK_COMPLETE", h, "done")
    assert fg.expect("WORK_COMPLETE") == [h, b"done"]


def test_job_port_refuses_console_commands_as_gearmand(daemon):
    d = daemon("gearmand", ["-p", "{port}", "-L", "127.0.0.1", "--admin", "127.0.0.1:{admin}",
                            "--mysql-password", "s3cret-pw"])
    # gearmand 1.1.20's answers, compared with Debian's gearmand
    assert admin(d.port, "show settings") == "ERR UNKNOWN_SHOW_ARGUMENTS\r\n"
    assert admin(d.port, "set idle-timeout 5") == "ERR UNKNOWN_COMMAND Unknown+server+commandset\r\n"
    assert admin(d.port, "shutdown") == "ERR UNKNOWN_COMMAND Unknown+server+commandshutdown\r\n"
    assert admin(d.port, "shutdown graceful") == "ERR UNKNOWN_COMMAND Unknown+server+commandshutdown\r\n"
    assert admin(d.port, "loglevel debug") == "ERR UNKNOWN_COMMAND Unknown+server+commandloglevel\r\n"
    assert d.running()
    # the console (loopback by default) keeps them, and never prints a secret
    con = Conn(d.admin)
    con.raw(b"show settings\r\n")
    assert wait_for(lambda: (con.s.settimeout(1), con._fill(), b"verbose" in con.buf)[2], timeout=5)
    text = con.buf.decode()
    assert "s3cret-pw" not in text
    assert "mysql-password = <redacted>" in text


def test_job_port_admin_can_be_narrowed(daemon):
    d = daemon("gearmand", ["-p", "{port}", "-L", "127.0.0.1", "--job-port-admin", "read-only"])
    assert admin(d.port, "status") == ".\n"
    for cmd in ("maxqueue f 1", "cancel job H:x:1", "create function f", "drop function f"):
        assert admin(d.port, cmd).startswith("ERR PERMISSION_DENIED"), cmd
    assert "f" not in status(d.port)
    off = daemon("gearmand", ["-p", "{port}", "-L", "127.0.0.1", "--job-port-admin", "off"])
    assert admin(off.port, "status").startswith("ERR PERMISSION_DENIED")
    c = Conn(off.port)
    c.send("ECHO_REQ", "binary still works")
    assert c.expect("ECHO_RES") == [b"binary still works"]


def test_work_data_fanned_out_to_clients_that_do_not_read_is_bounded(daemon):
    d = daemon("gearmand", ["-p", "{port}", "-L", "127.0.0.1", "--log-level", "error",
                            "--max-client-output", "4m", "--client-stall-timeout", "1", "-t", "4"])
    n_idle, chunk, chunks = 20, 1 << 20, 24
    idle = []
    for _ in range(n_idle):
        c = Conn(d.port)
        c.send("SUBMIT_JOB", "fan", "one", "x")
        c.expect("JOB_CREATED")
        idle.append(c)                                   # never read again
    reader = Conn(d.port)
    reader.send("SUBMIT_JOB", "fan", "one", "x")
    h = reader.expect("JOB_CREATED")[0]
    got = {"bytes": 0, "done": False}

    def read_all():
        while True:
            name, args = reader.recv(timeout=30)
            if name == "WORK_DATA":
                got["bytes"] += len(b"\0".join(args[1:]))
            elif name == "WORK_COMPLETE":
                got["done"] = True
                return
    t = threading.Thread(target=read_all)
    t.start()
    before = rss_kib(d.pid)
    w = Conn(d.port, timeout=30)
    w.send("CAN_DO", "fan")
    w.send("GRAB_JOB")
    assert w.expect("JOB_ASSIGN")[0] == h
    blob = b"d" * chunk
    peak = 0
    for _ in range(chunks):
        w.send("WORK_DATA", h, blob)
        peak = max(peak, rss_kib(d.pid))
    w.send("WORK_COMPLETE", h, "end")
    t.join(60)
    peak = max(peak, rss_kib(d.pid))
    assert got["done"] and got["bytes"] == chunk * chunks   # a client that reads gets everything
    # 20 clients x 24 MiB would be 480 MiB copied; bounded it stays far below
    assert peak - before < 120 * 1024, (before, peak)
    st = stats(d.port)
    assert int(st["workers_throttled"]) >= 1, st       # the worker waited for the slow clients
    dropped = int(st["clients_output_dropped"])
    assert dropped >= 1, st                            # the ones that never read were closed
    assert sum(c.closed(timeout=2) for c in idle) == dropped


def test_function_names_are_freed_and_bounded(daemon):
    d = daemon("gearmand", ["-p", "{port}", "-L", "127.0.0.1", "--max-functions", "100"])
    w = Conn(d.port)
    w.raw(b"".join(packet("CAN_DO", "fn%d" % i) for i in range(100)))
    w.send("CAN_DO", "one-too-many")
    assert w.expect("ERROR")[0] == b"QUEUE_ERROR"
    assert int(stats(d.port)["functions"]) == 100
    c = Conn(d.port)
    c.send("SUBMIT_JOB_BG", "not-yet-known", "", "x")
    assert c.expect("ERROR")[0] == b"QUEUE_ERROR"
    w.close()
    # nothing uses them any more: gone
    assert wait_for(lambda: int(stats(d.port)["functions"]) == 0)
    c.send("SUBMIT_JOB_BG", "now-fine", "", "x")
    c.expect("JOB_CREATED")
    # CANT_DO of the last user frees it too; a maxqueue keeps it (a setting)
    w2 = Conn(d.port)
    w2.send("CAN_DO", "brief")
    assert wait_for(lambda: "brief" in status(d.port))
    w2.send("CANT_DO", "brief")
    assert wait_for(lambda: "brief" not in status(d.port))
    assert admin(d.port, "maxqueue kept 5") == "OK\r\n"
    assert "kept" in status(d.port)
    # names are bounded in length on every path (CAN_DO, submits, console)
    long = "n" * 513
    for cmd in ("create function " + long, "maxqueue " + long + " 3"):
        assert admin(d.port, cmd).startswith("ERR INVALID_FUNCTION_NAME"), cmd
    w2.send("CAN_DO", long)
    assert w2.expect("ERROR")[0] == b"INVALID_FUNCTION_NAME"
    c.send("SUBMIT_JOB", long, "", "x")
    assert c.expect("ERROR")[0] == b"INVALID_FUNCTION_NAME"


def test_many_abilities_on_one_worker(daemon):
    """80,000 CAN_DO (the finding took 6.2 s of the job loop) register,
    show up, and go away with the worker."""
    d = daemon("gearmand", ["-p", "{port}", "-L", "127.0.0.1"])
    w = Conn(d.port, timeout=60)
    w.raw(b"".join(packet("CAN_DO", "f%d" % i) for i in range(80000)))
    w.send("CAN_DO", "f79999")                           # a repeat is no second ability
    w.send("CANT_DO", "f0")
    w.send("ECHO_REQ", "synced")
    assert w.expect("ECHO_RES", timeout=60) == [b"synced"]
    assert int(stats(d.port)["functions"]) == 79999
    workers = admin(d.port, "workers")
    assert workers.count(" f7999") == 11                 # f7999, f79990..f79999
    w.close()
    assert wait_for(lambda: int(stats(d.port)["functions"]) == 0, timeout=30)


def test_dash_unique_coalesces_by_payload_as_gearmand(daemon):
    """Verified against gearmand 1.1.20: the key stays "-" (show unique jobs,
    JOB_ASSIGN_UNIQ), jobs with the same payload coalesce."""
    d = daemon("gearmand", ["-p", "{port}", "-L", "127.0.0.1"])
    c = Conn(d.port)
    big = b"p" * 200000
    c.send("SUBMIT_JOB_BG", "dash", "-", big)
    h1 = c.expect("JOB_CREATED")[0]
    c.send("SUBMIT_JOB_BG", "dash", "-", big)
    assert c.expect("JOB_CREATED")[0] == h1
    c.send("SUBMIT_JOB_BG", "dash", "-", "other")
    h2 = c.expect("JOB_CREATED")[0]
    assert h2 != h1
    assert admin(d.port, "show unique jobs") == "-\n-\n.\n"
    w = Conn(d.port)
    w.send("CAN_DO", "dash")
    w.send("GRAB_JOB_UNIQ")
    assert w.expect("JOB_ASSIGN_UNIQ") == [h1, b"dash", b"-", big]
    c.send("GET_STATUS_UNIQUE", "other")
    assert c.expect("STATUS_RES_UNIQUE")[1] == b"0"      # as gearmand: not found by payload


def test_dash_unique_jobs_survive_a_restart(daemon, tmp_path):
    path = str(tmp_path / "dash.sqlite")
    d = start_sqlite(daemon, path)
    c = Conn(d.port)
    c.send("SUBMIT_JOB_BG", "dash", "-", b"q" * 5000)
    h = c.expect("JOB_CREATED")[0]
    c.close()
    d.kill9()
    d.start()
    c = Conn(d.port)
    c.send("SUBMIT_JOB_BG", "dash", "-", b"q" * 5000)  # still coalesces onto the replayed job
    c.expect("JOB_CREATED")
    assert status(d.port)["dash"][0] == 1
    w = Conn(d.port)
    w.send("CAN_DO", "dash")
    w.send("GRAB_JOB_UNIQ")
    args = w.expect("JOB_ASSIGN_UNIQ")
    assert args[1:] == [b"dash", b"-", b"q" * 5000]
    del h


def test_background_submit_onto_a_job_that_finishes_before_its_insert_commits(daemon, refusing_store):
    """A background submit joins a running foreground job, which completes
    before the (failing) INSERT is answered: the work is done, so the
    submitter hears JOB_CREATED, and the ordering on the connection holds."""
    d = start_sqlite(daemon, refusing_store, "--job-handle-prefix", "H:t")
    c = Conn(d.port)
    c.raw(packet("SUBMIT_JOB", "k", "same", "boom-4") + packet("CAN_DO", "k") + packet("GRAB_JOB") +
          packet("SUBMIT_JOB_BG", "k", "same", "boom-4") + packet("WORK_COMPLETE", "H:t:1", "done"))
    assert c.expect("JOB_CREATED") == [b"H:t:1"]
    assert c.expect("JOB_ASSIGN") == [b"H:t:1", b"k", b"boom-4"]
    assert c.expect("JOB_CREATED") == [b"H:t:1"]       # the background submitter's answer
    assert c.expect("WORK_COMPLETE") == [b"H:t:1", b"done"]
    assert status(d.port)["k"] == (0, 0, 1)              # no job left; the connection is still its worker


def test_grab_goes_round_robin_over_functions_with_work_and_by_priority(daemon):
    """A worker's grabs look only at its functions that have queued jobs
    (so thousands of idle abilities cost nothing per grab): highest priority
    first across all of them, round robin among equals."""
    d = daemon("gearmand", ["-p", "{port}", "-L", "127.0.0.1"])
    w = Conn(d.port)
    w.raw(b"".join(packet("CAN_DO", "idle%d" % i) for i in range(5000)))
    w.raw(packet("CAN_DO", "a") + packet("CAN_DO", "b"))
    c = Conn(d.port)
    for i in range(3):
        c.send("SUBMIT_JOB_BG", "a", "", "a%d" % i)
        c.expect("JOB_CREATED")
        c.send("SUBMIT_JOB_BG", "b", "", "b%d" % i)
        c.expect("JOB_CREATED")
    c.send("SUBMIT_JOB_HIGH_BG", "b", "", "urgent")
    c.expect("JOB_CREATED")
    got = []
    for _ in range(7):
        w.send("GRAB_JOB")
        got.append(w.expect("JOB_ASSIGN")[2].decode())
    assert got[0] == "urgent"
    rest = got[1:]
    assert sorted(rest) == ["a0", "a1", "a2", "b0", "b1", "b2"]
    assert all(rest[i][0] != rest[i + 1][0] for i in range(len(rest) - 1)), rest   # alternating
    assert [x for x in rest if x[0] == "a"] == ["a0", "a1", "a2"]                   # FIFO within a function
    w.send("GRAB_JOB")
    assert w.recv()[0] == "NO_JOB"


def test_mariadb_store_shares_a_failed_insert_with_coalesced_submitters(daemon, mariadb):
    """The same promise on the production store: a trigger refuses one row;
    both coalesced submitters hear QUEUE_ERROR, no worker gets the job, and
    a good submit in the same group commit is stored and acknowledged."""
    dbname = mariadb.create_database()
    mariadb.sql("CREATE TABLE gm_queue (id BIGINT PRIMARY KEY, unique_key VARBINARY(64), "
                "function_name VARBINARY(512), priority INT, data LONGBLOB, when_to_run BIGINT, "
                "reducer VARBINARY(512)) ENGINE=InnoDB", database=dbname)
    # one statement (no ';' for the CLI to split): a NULL primary key fails the row
    mariadb.sql("CREATE TRIGGER refuse BEFORE INSERT ON gm_queue FOR EACH ROW "
                "SET NEW.id = IF(NEW.data LIKE 'boom%', NULL, NEW.id)", database=dbname)
    d = daemon("gearmand", ["-p", "{port}", "-L", "127.0.0.1", "--log-level", "error", "-q", "mysql",
                            "--mysql-host", mariadb.host, "--mysql-port", str(mariadb.port),
                            "--mysql-user", mariadb.user, "--mysql-password", mariadb.password,
                            "--mysql-db", dbname])
    c1, c2, w = Conn(d.port), Conn(d.port), Conn(d.port)
    w.send("CAN_DO", "m")
    c1.raw(packet("SUBMIT_JOB_BG", "m", "same", "boom-5") + packet("SUBMIT_JOB_BG", "m", "good", "fine"))
    c2.raw(packet("SUBMIT_JOB_BG", "m", "same", "boom-5"))
    assert c1.expect("ERROR")[0] == b"QUEUE_ERROR"
    h = c1.expect("JOB_CREATED")[0]
    assert c2.expect("ERROR")[0] == b"QUEUE_ERROR"
    assert mariadb.sql("SELECT COUNT(*) FROM gm_queue", database=dbname).strip() == "1"
    w.send("GRAB_JOB")
    assert w.expect("JOB_ASSIGN") == [h, b"m", b"fine"]   # only the stored one ever runs
    w.send("GRAB_JOB")
    assert w.recv()[0] == "NO_JOB"
