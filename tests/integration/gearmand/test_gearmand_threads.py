"""gearmand -t N: connections spread over N event loops share one job state.

Each loop owns its connections; a reply for a connection of another loop
crosses through that loop's mailbox (the `cross_loop_flushes` stat counts
the hops). These tests run the daemon with -t 2 and -t 4 and check that
jobs, coalescing, background jobs, timers, graceful stop and kill -9
durability behave exactly as on one loop while the work really crosses
loops. (Every other gearmand test runs on gearmand's default -t 4 too.)"""
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from test_gearmand_wire import Conn, admin, packet, status, wait_for  # noqa: E402
from test_gearmand_review import stats  # noqa: E402
from test_gearmand_queue import crash_and_restart_keeps_jobs  # noqa: E402


def start(daemon, threads, *extra):
    return daemon("gearmand", ["-p", "{port}", "-L", "127.0.0.1", "--log-level", "warn",
                               "-t", str(threads)] + list(extra))


def worker_loop(port, fn, stop, done_count):
    """A raw worker: grab, answer 'r:' + payload, sleep when idle."""
    w = Conn(port, timeout=30)
    w.send("CAN_DO", fn)
    while not stop.is_set():
        w.send("GRAB_JOB")
        name, args = w.recv(30)
        if name == "NO_JOB":
            w.send("PRE_SLEEP")
            try:
                name, _ = w.recv(0.5)
                assert name == "NOOP", name
            except OSError:
                pass  # timed out asleep: look at `stop` again
            continue
        assert name == "JOB_ASSIGN", (name, args)
        w.send("WORK_COMPLETE", args[0], b"r:" + b"\0".join(args[2:]))
        done_count.append(1)
    w.close()


def test_threads_are_real_loops_and_replies_cross_them(daemon):
    d = start(daemon, 2)
    st = stats(d.port)
    assert st["threads"] == "2"
    base = int(st["cross_loop_flushes"])
    # 20 worker/client pairs on their own function: with connections spread
    # over two loops, some pairs sit on different loops (all 20 on the same
    # side would happen about once in a million runs)
    pairs = []
    for i in range(20):
        w = Conn(d.port)
        w.send("CAN_DO", "pair%d" % i)
        c = Conn(d.port)
        pairs.append((w, c))
    for i, (w, c) in enumerate(pairs):
        c.send("SUBMIT_JOB", "pair%d" % i, "", "x%d" % i)
        h = c.expect("JOB_CREATED")[0]
        w.send("GRAB_JOB")
        assert w.expect("JOB_ASSIGN") == [h, b"pair%d" % i, b"x%d" % i]
        w.send("WORK_COMPLETE", h, "done%d" % i)
        assert c.expect("WORK_COMPLETE") == [h, b"done%d" % i]
    assert int(stats(d.port)["cross_loop_flushes"]) > base


def test_many_clients_and_workers_across_four_loops(daemon):
    d = start(daemon, 4)
    stop, done = threading.Event(), []
    workers = [threading.Thread(target=worker_loop, args=(d.port, "echo", stop, done)) for _ in range(6)]
    for t in workers:
        t.start()
    errors = []

    def client(k):
        try:
            c = Conn(d.port, timeout=30)
            # 10 in flight at a time, 60 in all: results must match their job
            for batch in range(6):
                buf = b"".join(packet("SUBMIT_JOB", "echo", "", "c%d-%d-%d" % (k, batch, i)) for i in range(10))
                c.raw(buf)
                handles = {}
                for i in range(10):
                    handles[c.expect("JOB_CREATED", 30)[0]] = b"r:c%d-%d-%d" % (k, batch, i)
                got = {}
                while len(got) < 10:
                    name, args = c.recv(30)
                    assert name == "WORK_COMPLETE", (name, args)
                    got[args[0]] = args[1]
                assert got == handles
            c.close()
        except Exception as e:  # reported below
            errors.append(repr(e))

    clients = [threading.Thread(target=client, args=(k,)) for k in range(12)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(120)
    stop.set()
    for t in workers:
        t.join(10)
    assert not errors, errors[:3]
    assert len(done) == 12 * 60
    st = stats(d.port)
    assert st["jobs_completed"] == str(12 * 60)
    assert st["jobs_current"] == "0"
    assert int(st["cross_loop_flushes"]) > 0


def test_coalescing_and_background_jobs_across_loops(daemon):
    d = start(daemon, 4)
    # 16 foreground submits of one unique key from 16 connections: one job
    clients = [Conn(d.port) for _ in range(16)]
    for c in clients:
        c.send("SUBMIT_JOB", "co", "same-key", "payload")
    handles = {c.expect("JOB_CREATED")[0] for c in clients}
    assert len(handles) == 1
    h = handles.pop()
    # 8 background submits of another key from 8 connections: one job
    bgs = [Conn(d.port) for _ in range(8)]
    for b in bgs:
        b.send("SUBMIT_JOB_BG", "co", "bg-key", "bgdata")
    bg_handles = {b.expect("JOB_CREATED")[0] for b in bgs}
    assert len(bg_handles) == 1
    assert status(d.port)["co"][0] == 2
    w = Conn(d.port)
    w.send("CAN_DO", "co")
    w.send("GRAB_JOB")
    assert w.expect("JOB_ASSIGN") == [h, b"co", b"payload"]
    w.send("WORK_DATA", h, "part")
    w.send("WORK_COMPLETE", h, "all")
    for c in clients:
        assert c.expect("WORK_DATA") == [h, b"part"]
        assert c.expect("WORK_COMPLETE") == [h, b"all"]
    w.send("GRAB_JOB")
    bh = w.expect("JOB_ASSIGN")[0]
    assert bh in bg_handles
    w.send("WORK_COMPLETE", bh, "")
    w.send("GRAB_JOB")
    assert w.expect("NO_JOB") == []
    assert wait_for(lambda: status(d.port).get("co", (0, 0, 0))[0] == 0)


def test_sleeping_workers_on_every_loop_are_woken(daemon):
    d = start(daemon, 4)
    sleepers = []
    for _ in range(8):
        w = Conn(d.port)
        w.send("CAN_DO", "wake")
        w.send("PRE_SLEEP")
        sleepers.append(w)
    assert wait_for(lambda: status(d.port).get("wake", (0, 0, 0))[2] == 8)
    c = Conn(d.port)
    for i in range(8):
        c.send("SUBMIT_JOB_BG", "wake", "", "j%d" % i)
        c.expect("JOB_CREATED")
    got = []
    for w in sleepers:
        w.expect("NOOP")
        w.send("GRAB_JOB")
        name, args = w.recv()
        if name == "JOB_ASSIGN":
            got.append(args[2])
            w.send("WORK_COMPLETE", args[0], "")
    # every job handed out exactly once, whichever loop its worker is on
    for w in sleepers:
        w.send("GRAB_JOB")
        name, args = w.recv()
        while name == "JOB_ASSIGN":
            got.append(args[2])
            w.send("WORK_COMPLETE", args[0], "")
            w.send("GRAB_JOB")
            name, args = w.recv()
        assert name == "NO_JOB"
    assert sorted(got) == sorted(b"j%d" % i for i in range(8))


def test_job_timers_across_loops(daemon):
    d = start(daemon, 4)
    # CAN_DO_TIMEOUT: the timer is armed on the worker's loop, the client
    # hears WORK_FAIL wherever it is
    pairs = []
    for i in range(6):
        w = Conn(d.port)
        w.send("CAN_DO_TIMEOUT", "to%d" % i, "1")
        c = Conn(d.port)
        c.send("SUBMIT_JOB", "to%d" % i, "", "x")
        h = c.expect("JOB_CREATED")[0]
        w.send("GRAB_JOB")
        assert w.expect("JOB_ASSIGN")[0] == h
        pairs.append((w, c, h))
    for w, c, h in pairs:
        assert c.expect("WORK_FAIL", timeout=5) == [h]
    # scheduled jobs cancelled from other connections (so from other loops
    # than the one whose timer holds them): gone, and nothing fires later
    handles = []
    for i in range(6):
        c = Conn(d.port)
        c.send("SUBMIT_JOB_EPOCH", "later", "", str(int(time.time()) + 2), "t%d" % i)
        handles.append(c.expect("JOB_CREATED")[0].decode())
    for h in handles:
        assert admin(d.port, "cancel job " + h) == "OK\r\n"
    w = Conn(d.port)
    w.send("CAN_DO", "later")
    time.sleep(2.5)
    w.send("GRAB_JOB")
    assert w.expect("NO_JOB") == []
    assert status(d.port).get("later", (0, 0, 1))[0] == 0


def test_graceful_stop_with_work_on_several_loops(daemon):
    d = start(daemon, 4, "--admin", "127.0.0.1:{admin}", "--grace", "30")
    running = []
    for i in range(6):
        w = Conn(d.port)
        w.send("CAN_DO", "long%d" % i)
        c = Conn(d.port)
        c.send("SUBMIT_JOB", "long%d" % i, "", "x")
        h = c.expect("JOB_CREATED")[0]
        w.send("GRAB_JOB")
        assert w.expect("JOB_ASSIGN")[0] == h
        running.append((w, c, h))
    idle = [Conn(d.port) for _ in range(6)]
    assert admin(d.admin, "shutdown graceful") == "OK\r\n"
    for conn in idle:
        assert conn.closed()              # nothing in flight: closed at once
    time.sleep(0.3)
    assert d.proc.poll() is None          # still waiting for the running jobs
    for w, c, h in running:
        w.send("WORK_COMPLETE", h, "result")
        assert c.expect("WORK_COMPLETE") == [h, b"result"]
    d.proc.wait(10)
    assert d.proc.returncode == 0


def test_kill9_durability_with_four_loops(daemon):
    d = start(daemon, 4, "-q", "libsqlite3", "--libsqlite3-db", "{tmp}/queue.sqlite")
    # background submits from several connections at once (several loops
    # waiting on one group commit), then the kill -9 round of the queue tests
    errors = []

    def submitter(k):
        try:
            c = Conn(d.port)
            c.raw(b"".join(packet("SUBMIT_JOB_BG", "par", "k%d-%d" % (k, i), "d") for i in range(50)))
            for _ in range(50):
                c.expect("JOB_CREATED")
            c.close()
        except Exception as e:
            errors.append(repr(e))

    ts = [threading.Thread(target=submitter, args=(k,)) for k in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors, errors[:3]
    assert status(d.port)["par"][0] == 300
    crash_and_restart_keeps_jobs(d)
    assert status(d.port)["par"][0] == 300   # acknowledged, never run: all back


def test_thread_count_is_bounded(tmp_path):
    build = os.environ.get("BUILD_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "..", "build"))
    r = subprocess.run([os.path.join(build, "bin", "gearmand"), "-p", "0", "-L", "127.0.0.1", "-t", "65"],
                       capture_output=True, text=True, timeout=20, cwd=str(tmp_path))
    assert r.returncode != 0
    assert "at most 64 threads" in r.stderr


def test_default_is_four_loops_as_gearmand(daemon):
    """gearmand 1.1's `--help`: `-t [ --threads ] arg (=4)`; ours too."""
    d = daemon("gearmand", ["-p", "{port}", "-L", "127.0.0.1"])
    assert stats(d.port)["threads"] == "4"
