"""gearmand: the job server driven by the clients users have — Debian's
`gearman` and `gearadmin`, Perl Gearman::Client/Gearman::Worker — plus exact
packets (test_gearmand_wire) for the semantics those tools don't expose."""
import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from test_gearmand_wire import Conn, admin, packet, status, wait_for  # noqa: E402

GEARMAN = "/usr/bin/gearman"
GEARADMIN = "/usr/bin/gearadmin"


@pytest.fixture
def gm(daemon):
    def start(*extra):
        return daemon("gearmand", ["-p", "{port}", "-L", "127.0.0.1", "--log-level", "warn"] + list(extra))
    return start


class Procs:
    """Background helper processes, killed at teardown."""
    def __init__(self):
        self.procs = []

    def start(self, cmd, **kw):
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()


@pytest.fixture
def procs():
    p = Procs()
    yield p
    p.stop()


def gearman(port, *args, input=None, timeout=20):
    return subprocess.run([GEARMAN, "-h", "127.0.0.1", "-p", str(port)] + list(args), input=input,
                          capture_output=True, timeout=timeout)


def gearadmin(port, *args):
    r = subprocess.run([GEARADMIN, "-h", "127.0.0.1", "-p", str(port)] + list(args), capture_output=True,
                       timeout=20)
    assert r.returncode == 0, r.stderr
    return r.stdout.decode()


def wait_workers(port, fn, n=1):
    assert wait_for(lambda: status(port).get(fn, (0, 0, 0))[2] >= n), status(port)


PERL_WORKER = textwrap.dedent(r"""
    use strict; use warnings;
    use Gearman::Worker;
    my ($port, $mode) = @ARGV;
    $| = 1;
    my $w = Gearman::Worker->new(job_servers => ["127.0.0.1:$port"]);
    $w->register_function(upper => sub { return uc $_[0]->arg });
    $w->register_function(slowpoke => 1, sub { sleep 3; return "too late" });
    $w->register_function(die_midjob => sub {
        if ($mode eq 'die') { print "dying\n"; POSIX::_exit(9); }
        return "survived:" . $_[0]->arg;
    });
    print "ready\n";
    $w->work while 1;
""")

PERL_CLIENT = textwrap.dedent(r"""
    use strict; use warnings;
    use Gearman::Client;
    my ($port, $what) = @ARGV;
    $| = 1;
    my $c = Gearman::Client->new(job_servers => ["127.0.0.1:$port"]);
    if ($what eq 'upper') {
        my $r = $c->do_task(upper => "hello perl");
        print defined $r ? "result:$$r\n" : "fail\n";
        my $h = $c->dispatch_background(upper => "in the background");
        print "handle:", ($h // 'undef'), "\n";
    } elsif ($what eq 'slow') {
        my $r = $c->do_task(slowpoke => "x", { timeout => 30 });
        print defined $r ? "result:$$r\n" : "fail\n";
    } elsif ($what eq 'die') {
        my $r = $c->do_task(die_midjob => "payload", { timeout => 30 });
        print defined $r ? "result:$$r\n" : "fail\n";
    }
""")


def perl(tmp, name, code):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write("use POSIX;\n" + code)
    return path


# ---- the stock CLI tools -------------------------------------------------------

def test_gearman_cli_worker_client_and_background(gm, procs):
    d = gm()
    procs.start([GEARMAN, "-h", "127.0.0.1", "-p", str(d.port), "-w", "-f", "rev", "--", "rev"])
    wait_workers(d.port, "rev")
    r = gearman(d.port, "-f", "rev", input=b"hello world")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == b"dlrow olleh"
    r = gearman(d.port, "-b", "-f", "rev", input=b"bg job")
    assert r.returncode == 0, r.stderr
    # the background job ran: nothing left for rev
    assert wait_for(lambda: status(d.port)["rev"][0] == 0)


def test_gearman_cli_high_and_low_priority(gm, procs):
    d = gm()
    procs.start([GEARMAN, "-h", "127.0.0.1", "-p", str(d.port), "-w", "-f", "cat", "--", "cat"])
    wait_workers(d.port, "cat")
    for flag in ("-I", "-L"):
        r = gearman(d.port, flag, "-f", "cat", input=b"prio " + flag.encode())
        assert r.stdout == b"prio " + flag.encode(), r


def test_gearadmin_status_workers_show_jobs(gm, procs):
    d = gm()
    procs.start([GEARMAN, "-h", "127.0.0.1", "-p", str(d.port), "-w", "-f", "rev", "--", "rev"])
    wait_workers(d.port, "rev")
    # two background jobs for a function nobody serves stay queued
    for i in range(2):
        assert gearman(d.port, "-b", "-f", "nobody", "-u", "uk%d" % i, input=b"x").returncode == 0
    st = gearadmin(d.port, "--status")
    lines = dict((ln.split("\t")[0], ln.split("\t")[1:]) for ln in st.splitlines() if "\t" in ln)
    assert lines["rev"] == ["0", "0", "1"]
    assert lines["nobody"] == ["2", "0", "0"]
    assert st.rstrip().endswith(".")
    prio = gearadmin(d.port, "--priority-status")
    assert "nobody\t0\t2\t0\t0" in prio.splitlines() and "rev\t0\t0\t0\t1" in prio.splitlines(), prio
    workers = gearadmin(d.port, "--workers")
    assert any(ln.endswith(": rev") and "127.0.0.1" in ln for ln in workers.splitlines()), workers
    jobs = gearadmin(d.port, "--show-jobs")
    handles = [ln.split("\t")[0] for ln in jobs.splitlines() if "\t" in ln]
    assert len(handles) == 2 and all(h.startswith("H:") for h in handles), jobs
    assert all(ln.split("\t")[1:] == ["0", "0", "1"] for ln in jobs.splitlines() if "\t" in ln)
    uniq = gearadmin(d.port, "--show-unique-jobs")
    assert {"uk0", "uk1"} <= set(uniq.split()), uniq
    assert gearadmin(d.port, "--getpid").strip() == str(d.pid)
    assert "1.1.20" in gearadmin(d.port, "--server-version")
    # cancel one queued job
    assert "OK" in gearadmin(d.port, "--cancel-job", handles[0])
    assert status(d.port)["nobody"][0] == 1
    assert "OK" in gearadmin(d.port, "--create-function", "made_up")
    assert "made_up" in status(d.port)
    assert "OK" in gearadmin(d.port, "--drop-function", "made_up")
    assert "made_up" not in status(d.port)


def test_admin_text_exact_formats(gm):
    d = gm()
    assert admin(d.port, "version").startswith("OK 1.1.20")
    assert admin(d.port, "getpid") == "OK %d\n" % d.pid
    assert admin(d.port, "bogus") == "ERR UNKNOWN_COMMAND Unknown+server+commandbogus\r\n"
    assert admin(d.port, "show bogus") == "ERR UNKNOWN_SHOW_ARGUMENTS\r\n"
    assert admin(d.port, "cancel job H:nope:1") == "ERR UNKNOWN_JOB\r\n"
    assert admin(d.port, "drop function nosuch") == "ERR function not found\r\n"
    assert admin(d.port, "maxqueue").startswith("ERR INVALID_ARGUMENTS")
    assert admin(d.port, "maxqueue fq 1") == "OK\r\n"
    assert admin(d.port, "status") == "fq\t0\t0\t0\n.\n"
    assert admin(d.port, "prioritystatus") == "fq\t0\t0\t0\t0\n.\n"
    assert admin(d.port, "verbose") == "OK WARNING\n"
    assert admin(d.port, "shutdown bogus") == "ERR UNKNOWN_COMMAND Unknown+server+commandshutdown\r\n"
    c = Conn(d.port)
    c.send("CAN_DO", "fq")
    c.send("SET_CLIENT_ID", "my-worker")
    c.send("ECHO_REQ", "sync")
    c.expect("ECHO_RES")
    assert "my-worker : fq" in admin(d.port, "workers")
    assert admin(d.port, "drop function fq").startswith("ERR there are still connected workers")


# ---- Perl Gearman::Client / Gearman::Worker -------------------------------------

def test_perl_client_and_worker(gm, procs, tmp_path):
    d = gm()
    w = procs.start(["perl", perl(str(tmp_path), "w.pl", PERL_WORKER), str(d.port), "ok"])
    assert w.stdout.readline() == b"ready\n"
    wait_workers(d.port, "upper")
    r = subprocess.run(["perl", perl(str(tmp_path), "c.pl", PERL_CLIENT), str(d.port), "upper"],
                       capture_output=True, timeout=30)
    out = r.stdout.decode()
    assert "result:HELLO PERL" in out, (out, r.stderr)
    assert "handle:" in out and "//H:" in out, out
    assert wait_for(lambda: status(d.port)["upper"][0] == 0)


def test_perl_worker_can_do_timeout_fails_the_job(gm, procs, tmp_path):
    d = gm()
    w = procs.start(["perl", perl(str(tmp_path), "w.pl", PERL_WORKER), str(d.port), "ok"])
    assert w.stdout.readline() == b"ready\n"
    wait_workers(d.port, "slowpoke")
    t0 = time.time()
    r = subprocess.run(["perl", perl(str(tmp_path), "c.pl", PERL_CLIENT), str(d.port), "slow"],
                       capture_output=True, timeout=30)
    assert r.stdout.decode().strip() == "fail", r
    assert time.time() - t0 < 2.9  # failed by the server's 1 s timer, not by the worker finishing
    assert status(d.port)["slowpoke"][:2] == (0, 0)


def test_worker_death_mid_job_is_retried(gm, procs, tmp_path):
    d = gm()
    wscript = perl(str(tmp_path), "w.pl", PERL_WORKER)
    dying = procs.start(["perl", wscript, str(d.port), "die"])
    assert dying.stdout.readline() == b"ready\n"
    wait_workers(d.port, "die_midjob")
    client = procs.start(["perl", perl(str(tmp_path), "c.pl", PERL_CLIENT), str(d.port), "die"])
    assert dying.stdout.readline() == b"dying\n"
    dying.wait(10)
    # the job went back to the queue; a healthy worker finishes it
    good = procs.start(["perl", wscript, str(d.port), "ok"])
    out, err = client.communicate(timeout=30)
    assert out.decode().strip() == "result:survived:payload", err
    good.kill()


def test_worker_death_fails_after_job_retries(gm, procs, tmp_path):
    d = gm("-j", "2")
    wscript = perl(str(tmp_path), "w.pl", PERL_WORKER)
    first = procs.start(["perl", wscript, str(d.port), "die"])
    assert first.stdout.readline() == b"ready\n"
    wait_workers(d.port, "die_midjob")
    client = procs.start(["perl", perl(str(tmp_path), "c.pl", PERL_CLIENT), str(d.port), "die"])
    assert first.stdout.readline() == b"dying\n"
    second = procs.start(["perl", wscript, str(d.port), "die"])
    assert second.stdout.readline() == b"ready\n"
    assert second.stdout.readline() == b"dying\n"
    out, err = client.communicate(timeout=30)
    assert out.decode().strip() == "fail", err
    assert admin(d.port, "show jobs") == ".\n"
    assert "die_midjob" not in status(d.port)   # no job, no worker: the name is freed


# ---- coalescing -------------------------------------------------------------------

def test_coalescing_50_identical_submits_run_once(gm, procs, tmp_path):
    d = gm()
    runs = tmp_path / "runs"
    procs.start([GEARMAN, "-h", "127.0.0.1", "-p", str(d.port), "-w", "-f", "slow", "--", "sh", "-c",
                 "echo run >> %s; sleep 2; cat" % runs])
    wait_workers(d.port, "slow")
    clients = [subprocess.Popen([GEARMAN, "-h", "127.0.0.1", "-p", str(d.port), "-f", "slow", "-u", "same-key"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for _ in range(50)]
    for i, c in enumerate(clients):
        c.stdin.write(b"payload-%d" % i)
        c.stdin.close()
    outs = [c.stdout.read() for c in clients]
    assert all(c.wait(30) == 0 for c in clients)
    # every client got the one result (the first payload that reached the server)
    assert len(set(outs)) == 1 and outs[0].startswith(b"payload-"), set(outs)
    assert runs.read_text().count("run") == 1


def test_coalescing_unique_dash_uses_payload(gm):
    d = gm()
    a, b = Conn(d.port), Conn(d.port)
    a.send("SUBMIT_JOB", "f", "-", "same data")
    h1 = a.expect("JOB_CREATED")[0]
    b.send("SUBMIT_JOB", "f", "-", "same data")
    assert b.expect("JOB_CREATED")[0] == h1
    b.send("SUBMIT_JOB", "f", "-", "other data")
    assert b.expect("JOB_CREATED")[0] != h1


# ---- protocol semantics (exact packets) ------------------------------------------------

def test_priorities_high_normal_low(gm):
    d = gm()
    c = Conn(d.port)
    for cmd, data in (("SUBMIT_JOB_LOW_BG", "low"), ("SUBMIT_JOB_BG", "normal"), ("SUBMIT_JOB_HIGH_BG", "high")):
        c.send(cmd, "p", "", data)
        c.expect("JOB_CREATED")
    w = Conn(d.port)
    w.send("CAN_DO", "p")
    got = []
    for _ in range(3):
        w.send("GRAB_JOB")
        args = w.expect("JOB_ASSIGN")
        got.append(args[2])
        w.send("WORK_COMPLETE", args[0], "")
    assert got == [b"high", b"normal", b"low"]
    w.send("GRAB_JOB")
    w.expect("NO_JOB")


def test_high_priority_is_global_across_functions(gm):
    d = gm()
    c = Conn(d.port)
    c.send("SUBMIT_JOB_BG", "a", "", "a-normal")
    c.expect("JOB_CREATED")
    c.send("SUBMIT_JOB_HIGH_BG", "b", "", "b-high")
    c.expect("JOB_CREATED")
    w = Conn(d.port)
    w.send("CAN_DO", "a")
    w.send("CAN_DO", "b")
    w.send("GRAB_JOB_UNIQ")
    assert w.expect("JOB_ASSIGN_UNIQ")[3] == b"b-high"


def test_grab_variants_and_assign_formats(gm):
    d = gm()
    c = Conn(d.port)
    c.send("SUBMIT_JOB_BG", "g", "u1", "d1")
    c.expect("JOB_CREATED")
    c.send("SUBMIT_REDUCE_JOB_BG", "g", "u2", "red", "", "d2")
    c.expect("JOB_CREATED")
    w = Conn(d.port)
    w.send("CAN_DO", "g")
    w.send("GRAB_JOB_ALL")  # no reducer -> JOB_ASSIGN_UNIQ, as gearmand
    a = w.expect("JOB_ASSIGN_UNIQ")
    assert a[1:] == [b"g", b"u1", b"d1"]
    w.send("GRAB_JOB_ALL")
    a = w.expect("JOB_ASSIGN_ALL")
    assert a[1:] == [b"g", b"u2", b"red", b"d2"]


def test_wakeup_only_as_many_sleepers_as_jobs(gm):
    d = gm()
    workers = []
    for _ in range(3):
        w = Conn(d.port)
        w.send("CAN_DO", "wake")
        w.send("GRAB_JOB")
        w.expect("NO_JOB")
        w.send("PRE_SLEEP")
        workers.append(w)
    time.sleep(0.2)
    c = Conn(d.port)
    c.send("SUBMIT_JOB_BG", "wake", "", "one job")
    c.expect("JOB_CREATED")
    woken = 0
    for w in workers:
        try:
            w.expect("NOOP", timeout=0.5)
            woken += 1
        except OSError:
            pass
    assert woken == 1


def test_pre_sleep_with_queued_job_gets_noop(gm):
    d = gm()
    c = Conn(d.port)
    c.send("SUBMIT_JOB_BG", "ps", "", "x")
    c.expect("JOB_CREATED")
    w = Conn(d.port)
    w.send("CAN_DO", "ps")
    w.send("PRE_SLEEP")
    w.expect("NOOP", timeout=2)


def test_epoch_job_runs_at_its_time(gm):
    d = gm()
    w = Conn(d.port)
    w.send("CAN_DO", "later")
    c = Conn(d.port)
    when = int(time.time()) + 2
    c.send("SUBMIT_JOB_EPOCH", "later", "", str(when), "tick")
    c.expect("JOB_CREATED")
    w.send("GRAB_JOB")
    w.expect("NO_JOB")
    w.send("PRE_SLEEP")
    w.expect("NOOP", timeout=5)
    assert time.time() >= when - 0.01
    w.send("GRAB_JOB")
    assert w.expect("JOB_ASSIGN")[2] == b"tick"


def test_sched_job_is_scheduled_for_a_matching_minute(gm):
    d = gm()
    c = Conn(d.port)
    t = time.gmtime(time.time() + 120)
    c.send("SUBMIT_JOB_SCHED", "cron", "", str(t.tm_min), str(t.tm_hour), "", "", "", "data")
    h = c.expect("JOB_CREATED")[0]
    w = Conn(d.port)
    w.send("CAN_DO", "cron")
    w.send("GRAB_JOB")
    w.expect("NO_JOB")
    c.send("GET_STATUS", h)
    assert c.expect("STATUS_RES")[1:3] == [b"1", b"0"]


def test_status_and_status_unique(gm):
    d = gm()
    c = Conn(d.port)
    c.send("SUBMIT_JOB_BG", "st", "my-unique", "x")
    h = c.expect("JOB_CREATED")[0]
    c.send("GET_STATUS", h)
    assert c.expect("STATUS_RES") == [h, b"1", b"0", b"0", b"0"]
    w = Conn(d.port)
    w.send("CAN_DO", "st")
    w.send("GRAB_JOB")
    w.expect("JOB_ASSIGN")
    w.send("WORK_STATUS", h, "1", "2")
    w.send("ECHO_REQ", "sync")
    w.expect("ECHO_RES")
    c.send("GET_STATUS", h)
    assert c.expect("STATUS_RES") == [h, b"1", b"1", b"1", b"2"]
    c.send("GET_STATUS_UNIQUE", "my-unique")
    assert c.expect("STATUS_RES_UNIQUE") == [b"my-unique", b"1", b"1", b"1", b"2", b"0"]
    w.send("WORK_COMPLETE", h, "done")
    w.send("ECHO_REQ", "sync")
    w.expect("ECHO_RES")
    c.send("GET_STATUS", h)
    assert c.expect("STATUS_RES") == [h, b"0", b"0", b"0", b"0"]
    c.send("GET_STATUS_UNIQUE", "my-unique")
    assert c.expect("STATUS_RES_UNIQUE") == [b"my-unique", b"0", b"0", b"0", b"0", b"0"]


def test_work_packets_forwarded_to_every_attached_client(gm):
    d = gm()
    a, b = Conn(d.port), Conn(d.port)
    a.send("OPTION_REQ", "exceptions")
    assert a.expect("OPTION_RES") == [b"exceptions"]
    a.send("SUBMIT_JOB", "fw", "k", "x")
    h = a.expect("JOB_CREATED")[0]
    b.send("SUBMIT_JOB", "fw", "k", "x")
    assert b.expect("JOB_CREATED")[0] == h
    w = Conn(d.port)
    w.send("CAN_DO", "fw")
    w.send("GRAB_JOB")
    w.expect("JOB_ASSIGN")
    w.send("WORK_DATA", h, "chunk")
    w.send("WORK_WARNING", h, "careful")
    w.send("WORK_STATUS", h, "3", "4")
    w.send("WORK_EXCEPTION", h, "boom")
    for cl in (a, b):
        assert cl.expect("WORK_DATA") == [h, b"chunk"]
        assert cl.expect("WORK_WARNING") == [h, b"careful"]
        assert cl.expect("WORK_STATUS") == [h, b"3", b"4"]
    assert a.expect("WORK_EXCEPTION") == [h, b"boom"]
    assert b.expect("WORK_FAIL") == [h]


def test_option_req_unknown_and_echo(gm):
    d = gm()
    c = Conn(d.port)
    c.send("OPTION_REQ", "nonsense")
    assert c.expect("ERROR")[0] == b"UNKNOWN_OPTION"
    c.send("ECHO_REQ", b"a\0b")
    assert c.expect("ECHO_RES") == [b"a", b"b"]
    c.send("WORK_COMPLETE", "H:nope:1", "x")
    assert c.expect("ERROR")[0] == b"JOB_NOT_FOUND"


def test_can_do_timeout_fails_the_job(gm):
    d = gm()
    w = Conn(d.port)
    w.send("CAN_DO_TIMEOUT", "to", "1")  # seconds, as gearmand 1.1 and its clients
    c = Conn(d.port)
    c.send("SUBMIT_JOB", "to", "", "x")
    h = c.expect("JOB_CREATED")[0]
    w.send("GRAB_JOB")
    w.expect("JOB_ASSIGN")
    t0 = time.time()
    assert c.expect("WORK_FAIL", timeout=5) == [h]
    assert 0.8 < time.time() - t0 < 4


def test_maxqueue_full_gets_queue_error(gm):
    d = gm()
    assert admin(d.port, "maxqueue mq 1") == "OK\r\n"
    c = Conn(d.port)
    c.send("SUBMIT_JOB_BG", "mq", "", "1")
    c.expect("JOB_CREATED")
    c.send("SUBMIT_JOB_BG", "mq", "", "2")
    err = c.expect("ERROR")
    assert err == [b"QUEUE_ERROR", b"Job queue is full"]


def test_max_jobs_bounds_the_job_table(gm):
    d = gm("--max-jobs", "3")
    c = Conn(d.port)
    for i in range(3):
        c.send("SUBMIT_JOB_BG", "mj%d" % i, "u%d" % i, "x")
        c.expect("JOB_CREATED")
    c.send("SUBMIT_JOB", "mj9", "", "x")
    assert c.expect("ERROR") == [b"QUEUE_ERROR", b"Server holds its maximum number of jobs"]
    # coalescing onto an existing job is still fine
    c.send("SUBMIT_JOB_BG", "mj0", "u0", "x")
    c.expect("JOB_CREATED")
    assert admin(d.port, "cancel job %s" % admin(d.port, "show jobs").split("\t")[0]) == "OK\r\n"
    c.send("SUBMIT_JOB_BG", "mj9", "", "x")
    c.expect("JOB_CREATED")


def test_unique_too_large_is_refused(gm):
    d = gm()
    c = Conn(d.port)
    c.send("SUBMIT_JOB", "f", "u" * 65, "x")
    assert c.expect("ERROR")[0] == b"ARGUMENT_TOO_LARGE"
    c.send("SUBMIT_JOB", "f", "u" * 64, "x")
    c.expect("JOB_CREATED")


def test_client_disconnect_drops_its_queued_foreground_job(gm):
    d = gm()
    c = Conn(d.port)
    c.send("SUBMIT_JOB", "gone", "", "x")
    c.expect("JOB_CREATED")
    assert status(d.port)["gone"][0] == 1
    c.close()
    assert wait_for(lambda: "gone" not in status(d.port))   # job dropped, name freed


# ---- bad input ---------------------------------------------------------------------

def test_garbage_and_oversized_packets_get_error_and_server_keeps_serving(gm):
    d = gm("--max-packet-size", "64k")
    big = Conn(d.port)
    big.raw(b"\0REQ" + struct.pack(">II", 7, 100 * 1024 * 1024))
    name, args = big.recv()
    assert name == "ERROR" and args[0] == b"ARGUMENT_TOO_LARGE"
    assert big.closed()
    bad = Conn(d.port)
    bad.raw(b"\0XYZ" + b"\0" * 8)
    name, args = bad.recv()
    assert name == "ERROR" and args[0] == b"INVALID_MAGIC"
    assert bad.closed()
    unk = Conn(d.port)
    unk.raw(packet(999, "x"))
    assert unk.expect("ERROR")[0] == b"INVALID_COMMAND"
    unk.raw(packet("SUBMIT_JOB", "only-one-arg"))
    assert unk.expect("ERROR")[0] == b"INVALID_PACKET"
    unk.send("ECHO_REQ", "still here")
    assert unk.expect("ECHO_RES") == [b"still here"]
    text = Conn(d.port)
    text.raw(b"A" * 20000)
    assert text.closed()
    assert "LINE_TOO_LONG" in text.buf.decode()
    half = Conn(d.port)
    half.raw(b"\0REQ\0\0\0\x07\0\0\0\x20abc")  # half a packet, then silence
    ok = Conn(d.port)
    ok.send("ECHO_REQ", "alive")
    assert ok.expect("ECHO_RES") == [b"alive"]
    half.close()


def test_random_garbage_never_kills_the_server(gm):
    d = gm("--max-packet-size", "1m")
    import random
    rnd = random.Random(4)
    for i in range(200):
        c = Conn(d.port)
        blob = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 300)))
        if i % 2:
            blob = b"\0REQ" + blob
        try:
            c.raw(blob)
        except OSError:
            pass
        c.close()
    ok = Conn(d.port)
    ok.send("ECHO_REQ", "alive")
    assert ok.expect("ECHO_RES") == [b"alive"]


def test_shutdown_command_stops_cleanly(gm):
    d = gm("--admin", "127.0.0.1:{admin}")
    # gearmand 1.1.15 removed it from the job port; our console keeps it
    assert admin(d.port, "shutdown") == "ERR UNKNOWN_COMMAND Unknown+server+commandshutdown\r\n"
    assert admin(d.admin, "shutdown") == "OK\r\n"
    d.proc.wait(10)
    assert d.proc.returncode == 0


def test_graceful_shutdown_lets_the_running_job_finish(gm):
    d = gm("--admin", "127.0.0.1:{admin}")
    w = Conn(d.port)
    w.send("CAN_DO", "long")
    c = Conn(d.port)
    c.send("SUBMIT_JOB", "long", "", "x")
    h = c.expect("JOB_CREATED")[0]
    w.send("GRAB_JOB")
    assert w.expect("JOB_ASSIGN")[0] == h
    idle = Conn(d.port)
    assert admin(d.admin, "shutdown graceful") == "OK\r\n"
    assert idle.closed()                     # nothing in flight: closed at once
    time.sleep(0.3)
    assert d.proc.poll() is None             # still waiting for the running job
    w.send("WORK_COMPLETE", h, "result")
    assert c.expect("WORK_COMPLETE") == [h, b"result"]
    d.proc.wait(10)
    assert d.proc.returncode == 0


def test_worker_dying_during_graceful_shutdown_is_noticed_at_once(gm):
    d = gm("--grace", "30", "-j", "1", "--admin", "127.0.0.1:{admin}")
    w = Conn(d.port)
    w.send("CAN_DO", "long")
    c = Conn(d.port)
    c.send("SUBMIT_JOB", "long", "", "x")
    h = c.expect("JOB_CREATED")[0]
    w.send("GRAB_JOB")
    assert w.expect("JOB_ASSIGN")[0] == h
    assert admin(d.admin, "shutdown graceful") == "OK\r\n"
    time.sleep(0.2)
    assert d.proc.poll() is None             # waiting for the running job
    t0 = time.time()
    w.close()                                # the worker dies mid-job
    assert c.expect("WORK_FAIL") == [h]      # its client hears now, not after --grace
    d.proc.wait(10)
    assert time.time() - t0 < 10
    assert d.proc.returncode == 0


def test_gearmand_compatible_options(daemon, tmp_path):
    d = daemon("gearmand", ["-p", "{port}", "-L", "127.0.0.1", "-t", "4", "-j", "3", "-P", "{tmp}/gd.pid",
                            "-l", "{tmp}/gd.log", "--verbose", "INFO", "-q", "builtin", "-R", "-w", "1", "-f", "1024"])
    # the pidfile is written just after the port opens
    assert wait_for(lambda: (tmp_path / "gd.pid").exists() and (tmp_path / "gd.pid").read_text().strip())
    assert (tmp_path / "gd.pid").read_text().strip() == str(d.pid)
    assert admin(d.port, "verbose") == "OK INFO\n"
    assert wait_for(lambda: "ready" in (tmp_path / "gd.log").read_text())
    r = subprocess.run([d.binary, "--help"], capture_output=True, text=True)
    for opt in ("--port", "--listen", "--threads", "--job-retries", "--queue-type", "--libsqlite3-db",
                "--mysql-host", "--mysql-port", "--mysql-socket", "--mysql-user", "--mysql-password", "--mysql-db",
                "--mysql-table", "--user", "--pid-file", "--log-file", "--verbose"):
        assert opt in r.stdout + r.stderr, opt
    bad = subprocess.run([d.binary, "-p", "0", "-q", "nosuchqueue"], capture_output=True, text=True, timeout=10)
    assert bad.returncode != 0 and "nosuchqueue" in bad.stdout + bad.stderr


def test_console_and_metrics_from_the_core(daemon):
    d = daemon("gearmand", ["-p", "{port}", "-L", "127.0.0.1", "--admin", "127.0.0.1:{admin}",
                            "--metrics", "127.0.0.1:{port2}"])
    c = Conn(d.port)
    c.send("SUBMIT_JOB_BG", "metered", "", "x")
    c.expect("JOB_CREATED")
    # gearmand's text commands on the console too, next to the core's
    assert admin(d.admin, "status") == "metered\t1\t0\t0\n.\n"
    con = Conn(d.admin)
    con.raw(b"stats\r\n")
    while not con.buf.endswith(b"END\r\n"):
        con._fill()
    assert b"STAT jobs_submitted 1\r\n" in con.buf
    import urllib.request
    body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % d.port2, timeout=5).read().decode()
    assert "gearmand_jobs_submitted_total 1" in body, body[:500]


def test_user_option_drops_privileges(daemon):
    if os.geteuid() != 0:
        pytest.skip("-u needs root to switch users")
    d = daemon("gearmand", ["-p", "{port}", "-L", "127.0.0.1", "-u", "nobody"])
    with open("/proc/%d/status" % d.pid) as f:
        uids = [ln.split()[1:] for ln in f if ln.startswith("Uid:")][0]
    import pwd
    assert set(uids) == {str(pwd.getpwnam("nobody").pw_uid)}
    c = Conn(d.port)
    c.send("ECHO_REQ", "still serving")
    assert c.expect("ECHO_RES") == [b"still serving"]
