"""Benchmark: schwartzd vs Debian's Perl TheSchwartz 1.12 (same SQLite file
schema) vs beanstalkd with its binlog fsync'd on every write (-b DIR -f 0),
side by side in one run. All durable: SQLite WAL + synchronous=FULL for
both schwartz variants.

Per system, two phases over N jobs of 16 bytes:
  insert   I clients (default 4) insert N jobs, each one at a time (jobs/s, p99 latency)
  work     W workers grab one job at a time and complete it (jobs/s)
  cycle    N / (insert time + work time)
CPU per job: the server process's user+system time (schwartzd, beanstalkd);
for Perl TheSchwartz, which has no server, the CPU of its client processes.

Usage: BUILD_DIR=build python3 tests/bench/bench_schwartz.py [--jobs 1000] [--workers 4] [--inserters 4]
       [--rounds 1] [--no-mariadb]
"""
import argparse
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("BUILD_DIR", os.path.join(REPO, "build"))
sys.path.insert(0, os.path.join(REPO, "tests", "integration", "schwartz"))
from sw_helpers import SW  # noqa: E402


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port):
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("port %d never opened" % port)


def proc_cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def p99(lat):
    lat = sorted(lat)
    return lat[int(len(lat) * 0.99) - 1] * 1000 if lat else 0


INSERTERS = 1


def parallel(fn, n, k):
    """Run fn(share) on k threads splitting n; returns the wall time."""
    shares = [n // k + (1 if i < n % k else 0) for i in range(k)]
    ts = [threading.Thread(target=fn, args=(sh,)) for sh in shares]
    t0 = time.time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return time.time() - t0


def bench_ours(dsn, user, n, workers):
    port = free_port()
    d = subprocess.Popen([os.path.join(BUILD, "bin", "schwartzd"), "--listen", "127.0.0.1:%d" % port,
                          "--database", dsn, "--db-user", user, "--queue-refresh", "0", "--log-level", "warn"])
    try:
        wait_port(port)
        cpu0 = proc_cpu(d.pid)
        lat = []

        def inserter(k):
            c = SW(port)
            mine = []
            for i in range(k):
                a = time.time()
                c.insert("Bench", b"0123456789abcdef")
                mine.append(time.time() - a)
            lat.extend(mine)
        t_ins = parallel(inserter, n, INSERTERS)

        def worker():
            w = SW(port)
            while True:
                jobs = w.grab(1, 60, "Bench")
                if not jobs:
                    return
                assert w.cmd("completed " + jobs[0][0]) == "OK"
        t0 = time.time()
        ts = [threading.Thread(target=worker) for _ in range(workers)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        t_work = time.time() - t0
        cpu = proc_cpu(d.pid) - cpu0
        return t_ins, t_work, p99(lat), cpu
    finally:
        d.terminate()
        d.wait()


PERL_INSERT = r'''
use strict; use TheSchwartz; use Time::HiRes qw(time);
my ($dsn, $user, $n) = @ARGV;
my $c = TheSchwartz->new(databases => [{ dsn => $dsn, user => $user, pass => '' }], driver_cache_expiration => 300);
for my $i (1..$n) { my $a = time; $c->insert("Bench", "0123456789abcdef") or die; printf "%f\n", time - $a; }
'''

PERL_WORK = r'''
use strict; use TheSchwartz;
package Bench; use base 'TheSchwartz::Worker'; sub work { $_[1]->completed }
package main;
my $c = TheSchwartz->new(databases => [{ dsn => $ARGV[0], user => $ARGV[1], pass => '' }], driver_cache_expiration => 300);
$c->can_do("Bench"); $c->work_until_done;
'''


def bench_perl(dsn, user, n, workers, count_left):
    # the schema: created by schwartzd (TheSchwartz's own), then stopped
    port = free_port()
    d = subprocess.Popen([os.path.join(BUILD, "bin", "schwartzd"), "--listen", "127.0.0.1:%d" % port,
                          "--database", dsn, "--db-user", user, "--log-level", "warn"])
    wait_port(port)
    d.terminate()
    d.wait()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    shares = [n // INSERTERS + (1 if i < n % INSERTERS else 0) for i in range(INSERTERS)]
    t0 = time.time()
    ps = [subprocess.Popen(["perl", "-e", PERL_INSERT, dsn, user, str(sh)], stdout=subprocess.PIPE) for sh in shares]
    lat = []
    for p in ps:
        lat += [float(x) for x in p.communicate()[0].split()]
        assert p.returncode == 0
    t_ins = time.time() - t0
    lat99 = p99(lat)
    t0 = time.time()
    ps = [subprocess.Popen(["perl", "-e", PERL_WORK, dsn, user]) for _ in range(workers)]
    for p in ps:
        p.wait()
    t_work = time.time() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    left = count_left()
    assert left == 0, left
    return t_ins, t_work, lat99, cpu


def bench_beanstalk(tmp, n, workers):
    # a load generator in Python as for the others: one round trip per command
    exe = shutil.which("beanstalkd") or "/usr/bin/beanstalkd"
    port = free_port()
    os.makedirs("%s/binlog" % tmp)
    d = subprocess.Popen([exe, "-l", "127.0.0.1", "-p", str(port), "-b", "%s/binlog" % tmp, "-f", "0"])
    try:
        wait_port(port)
        cpu0 = proc_cpu(d.pid)
        lat = []

        def inserter(k):
            s = socket.create_connection(("127.0.0.1", port))
            f = s.makefile("rb")
            mine = []
            for i in range(k):
                a = time.time()
                s.sendall(b"put 0 0 60 16\r\n0123456789abcdef\r\n")
                assert f.readline().startswith(b"INSERTED")
                mine.append(time.time() - a)
            lat.extend(mine)
            s.close()
        t_ins = parallel(inserter, n, INSERTERS)

        def worker():
            w = socket.create_connection(("127.0.0.1", port))
            wf = w.makefile("rb")
            while True:
                w.sendall(b"reserve-with-timeout 0\r\n")
                r = wf.readline()
                if not r.startswith(b"RESERVED"):
                    return
                jid, size = r.split()[1:3]
                wf.read(int(size) + 2)
                w.sendall(b"delete " + jid + b"\r\n")
                assert wf.readline().startswith(b"DELETED")
        t0 = time.time()
        ts = [threading.Thread(target=worker) for _ in range(workers)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        t_work = time.time() - t0
        return t_ins, t_work, p99(lat), proc_cpu(d.pid) - cpu0
    finally:
        d.terminate()
        d.wait()


def sqlite_left(db):
    return lambda: int(subprocess.run(["sqlite3", db, "SELECT COUNT(*) FROM job"], capture_output=True,
                                      text=True).stdout.strip())


def report(rows, jobs, workers, rnd):
    print("round %d: %d jobs, %d inserting clients, then %d workers (one job per grab), 16-byte args; durable everywhere"
          % (rnd, jobs, INSERTERS, workers))
    print("%-38s %10s %10s %10s %12s %14s" % ("system", "insert/s", "work/s", "cycle/s", "p99 ins ms", "CPU us/job"))
    cyc = {}
    for name, (ti, tw, l99, cpu) in rows:
        cyc[name] = jobs / (ti + tw)
        print("%-38s %10.0f %10.0f %10.0f %12.2f %14.0f" % (name, jobs / ti, jobs / tw, cyc[name], l99,
                                                           cpu / jobs * 1e6))
    pairs = [("schwartzd, SQLite FULL", "Perl TheSchwartz 1.12, SQLite FULL"),
             ("schwartzd, MariaDB InnoDB", "Perl TheSchwartz 1.12, MariaDB InnoDB"),
             ("schwartzd, SQLite FULL", "beanstalkd -b DIR -f 0"),
             ("schwartzd, MariaDB InnoDB", "beanstalkd -b DIR -f 0")]
    for x, y in pairs:
        if x in cyc and y in cyc:
            print("cycle ratio %s / %s: %.2f" % (x, y, cyc[x] / cyc[y]))
    print()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=1, help="repeat the whole comparison (each round is one table)")
    ap.add_argument("--inserters", type=int, default=4, help="clients inserting at once (each one job per round trip)")
    ap.add_argument("--no-mariadb", action="store_true", help="skip the MariaDB rows")
    a = ap.parse_args()
    global INSERTERS
    INSERTERS = max(1, a.inserters)
    tmp = tempfile.mkdtemp(prefix="bench-schwartz-")
    maria = None
    try:
        if not a.no_mariadb:
            sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
            from conftest import MariaDB  # the test fixture's private server (flush_log_at_trx_commit=1)
            maria = MariaDB(os.path.join(tmp, "mariadb"))
        for rnd in range(1, a.rounds + 1):
            rows = []
            ours_db, perl_db = "%s/ours%d.db" % (tmp, rnd), "%s/perl%d.db" % (tmp, rnd)
            rows.append(("schwartzd, SQLite FULL", bench_ours("dbi:SQLite:dbname=" + ours_db, "", a.jobs, a.workers)))
            rows.append(("Perl TheSchwartz 1.12, SQLite FULL",
                         bench_perl("dbi:SQLite:dbname=" + perl_db, "", a.jobs, a.workers, sqlite_left(perl_db))))
            if maria:
                for label, name in (("schwartzd, MariaDB InnoDB", "ours%d" % rnd),
                                    ("Perl TheSchwartz 1.12, MariaDB InnoDB", "perl%d" % rnd)):
                    maria.sql("CREATE DATABASE " + name)
                    dsn = "dbi:mysql:database=%s;host=127.0.0.1;port=%d" % (name, maria.port)
                    if name.startswith("ours"):
                        rows.append((label, bench_ours(dsn, "root", a.jobs, a.workers)))
                    else:
                        rows.append((label, bench_perl(dsn, "root", a.jobs, a.workers,
                                                       lambda n=name: int(maria.sql("SELECT COUNT(*) FROM job", n)))))
            rows.append(("beanstalkd -b DIR -f 0", bench_beanstalk("%s/b%d" % (tmp, rnd), a.jobs, a.workers)))
            report(rows, a.jobs, a.workers, rnd)
    finally:
        if maria:
            maria.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
