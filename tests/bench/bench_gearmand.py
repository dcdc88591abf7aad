"""Benchmark: our gearmand against Debian's gearmand 1.1, side by side.

Both servers run with the same -t; one load generator (a C program on
Debian's libgearman, compiled here, neutral to both) drives each in turn:

  echo      N client threads x foreground jobs, M worker threads answering
            with the workload (jobs/s)
  bg-mem    N client threads x background submits, memory queue (submits/s)
  bg-sqlite the same with the SQLite persistent queue (-q libsqlite3)
each twice: one job per client at a time (gearman_client_do*), and
--batch jobs per client in flight (gearman_client_add_task* + run_tasks).

Prints jobs/s for both and the ratio ours/theirs, each server's CPU time
per job, the load generator's CPU time per job against each, and the
"ceiling": (theirs + loadgen) / (ours + loadgen) CPU per job, the most the
rate ratio can be when the two share the machine's cores and are CPU-bound
(each column is the median of its rounds). Usage:
  BUILD_DIR=build python3 tests/bench/bench_gearmand.py [--seconds 3] [--clients 8]
      [--workers 4] [--threads 2] [--rounds 3] [--batch 100]
"""
import argparse
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from statistics import median

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("BUILD_DIR", os.path.join(REPO, "build"))
OURS = os.path.join(BUILD, "bin", "gearmand")
THEIRS = shutil.which("gearmand") or "/usr/sbin/gearmand"

LOADGEN = r"""
#include <libgearman-1.0/gearman.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static in_port_t port;
static const char *mode;
static atomic_long done;
static atomic_int stop;
static int batch = 1;

static gearman_return_t echo_fn(gearman_job_st *job, void *ctx)
{
    (void)ctx;
    return gearman_job_send_complete(job, gearman_job_workload(job), gearman_job_workload_size(job));
}

static void *worker_main(void *a)
{
    (void)a;
    gearman_worker_st *w = gearman_worker_create(NULL);
    gearman_worker_add_server(w, "127.0.0.1", port);
    gearman_worker_set_timeout(w, 200);
    gearman_function_t f = gearman_function_create(echo_fn);
    gearman_worker_define_function(w, "bench_echo", 10, f, 0, NULL);
    while (!atomic_load(&stop))
        gearman_worker_work(w);
    gearman_worker_free(w);
    return NULL;
}

static void *client_main(void *a)
{
    long id = (long)a;
    gearman_client_st *c = gearman_client_create(NULL);
    gearman_client_add_server(c, "127.0.0.1", port);
    char payload[64];
    unsigned long n = 0;
    if (batch > 1) {
        /* pipelined: `batch` tasks in flight on the one connection, as
         * gearman_client_run_tasks users submit */
        while (!atomic_load(&stop)) {
            gearman_return_t rc = GEARMAN_SUCCESS;
            for (int k = 0; k < batch; k++) {
                int len = snprintf(payload, sizeof payload, "payload-%ld-%lu", id, n++);
                if (!strcmp(mode, "echo"))
                    gearman_client_add_task(c, NULL, NULL, "bench_echo", NULL, payload, (size_t)len, &rc);
                else
                    gearman_client_add_task_background(c, NULL, NULL, "bench_bg", NULL, payload, (size_t)len, &rc);
            }
            if (gearman_client_run_tasks(c) == GEARMAN_SUCCESS)
                atomic_fetch_add(&done, batch);
            else {
                fprintf(stderr, "client: %s\n", gearman_client_error(c));
                usleep(10000);
            }
        }
        gearman_client_free(c);
        return NULL;
    }
    while (!atomic_load(&stop)) {
        int len = snprintf(payload, sizeof payload, "payload-%ld-%lu", id, n++);
        gearman_return_t rc;
        if (!strcmp(mode, "echo")) {
            size_t rlen;
            void *r = gearman_client_do(c, "bench_echo", NULL, payload, (size_t)len, &rlen, &rc);
            free(r);
        } else {
            gearman_job_handle_t h;
            rc = gearman_client_do_background(c, "bench_bg", NULL, payload, (size_t)len, h);
        }
        if (rc == GEARMAN_SUCCESS)
            atomic_fetch_add(&done, 1);
        else {
            fprintf(stderr, "client: %s\n", gearman_client_error(c));
            usleep(10000);
        }
    }
    gearman_client_free(c);
    return NULL;
}

int main(int argc, char **argv)
{
    port = (in_port_t)atoi(argv[1]);
    mode = argv[2];
    int clients = atoi(argv[3]), workers = atoi(argv[4]);
    double secs = atof(argv[5]);
    if (argc > 6)
        batch = atoi(argv[6]);
    pthread_t th[512];
    int n = 0;
    if (!strcmp(mode, "echo"))
        for (int i = 0; i < workers && n < 256; i++)
            pthread_create(&th[n++], NULL, worker_main, NULL);
    usleep(300000);
    for (long i = 0; i < clients && n < 512; i++)
        pthread_create(&th[n++], NULL, client_main, (void *)i);
    usleep(500000); /* warm up */
    long start = atomic_load(&done);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    usleep((useconds_t)(secs * 1e6));
    long end = atomic_load(&done);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    atomic_store(&stop, 1);
    double el = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("%.0f %ld\n", (double)(end - start) / el, atomic_load(&done));
    fflush(stdout);
    _exit(0); /* don't wait for threads blocked in libgearman */
}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError("server exited with %s" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


def start(which, threads, queue, tmp):
    port = free_port()
    if which == "ours":
        cmd = [OURS, "-p", str(port), "-L", "127.0.0.1", "-t", str(threads), "--log-level", "error"]
    else:
        cmd = [THEIRS, "-p", str(port), "-L", "127.0.0.1", "-t", str(threads), "--log-file", "none",
               "--verbose", "ERROR"]
    if queue == "sqlite":
        db = os.path.join(tmp, "%s-%d.sqlite" % (which, port))
        cmd += ["-q", "libsqlite3", "--libsqlite3-db", db]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp)
    wait_port(port, proc)
    return proc, port


def cpu_seconds(pid):
    """user + system CPU of a process (all its threads), in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(loadgen, which, mode, queue, args, tmp, batch=1):
    threads = args.threads
    if which == "theirs" and args.vs_threads:
        # --vs-threads N: the other column is ours again, with -t N
        which, threads = "ours", args.vs_threads
    proc, port = start(which, threads, queue, tmp)
    try:
        cpu0 = cpu_seconds(proc.pid)
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run([loadgen, str(port), mode, str(args.clients), str(args.workers), str(args.seconds),
                              str(batch)],
                             capture_output=True, text=True, timeout=args.seconds + 60)
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        rate, total = (out.stdout.split() + ["0", "0"])[:2]
        cpu = cpu_seconds(proc.pid) - cpu0
        total = int(total)
        # the load generator's own CPU (it is the one child that ended
        # meanwhile): on a small box it needs more than either server
        lg = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        # server CPU per job: what the server itself costs, whoever the
        # bottleneck is (on a small box the load generator often is)
        return float(rate), (cpu * 1e6 / total) if total else 0.0, (lg * 1e6 / total) if total else 0.0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="runs of each server per test (median kept)")
    ap.add_argument("--batch", type=int, default=100, help="jobs each client keeps in flight when pipelining")
    ap.add_argument("--vs-threads", type=int, default=0,
                    help="compare ours -t THREADS with ours -t VS_THREADS instead of with Debian's gearmand")
    ap.add_argument("--only", default="", help="run only the tests whose name contains this")
    args = ap.parse_args()
    if not os.path.exists(THEIRS):
        print("Debian's gearmand not found (apt-get install gearman-job-server)")
        return 1
    tmp = tempfile.mkdtemp(prefix="bench-gearmand-")
    try:
        src = os.path.join(tmp, "loadgen.c")
        with open(src, "w") as f:
            f.write(LOADGEN)
        loadgen = os.path.join(tmp, "loadgen")
        subprocess.run(["cc", "-O2", "-o", loadgen, src, "-lgearman", "-pthread"], check=True)
        print("gearmand benchmark: -t %d, %d clients, %d workers, %.0fs per run, median of %d alternating runs, "
              "loopback, libgearman load generator" % (args.threads, args.clients, args.workers, args.seconds,
                                                        args.rounds))
        print("%-34s %10s %10s %6s   %s   %s" % ("test", "ours/s", "theirs/s", "ratio",
                                                  "server CPU us/job: ours theirs ratio(theirs/ours)",
                                                  "loadgen CPU us/job: vs ours, vs theirs, ceiling"))
        results = {}
        b = args.batch
        rows = (("echo, 1 job/client at a time", "echo", "mem", 1),
                ("echo, %d jobs/client pipelined" % b, "echo", "mem", b),
                ("bg submit, memory, 1 at a time", "bg", "mem", 1),
                ("bg submit, memory, %d pipelined" % b, "bg", "mem", b),
                ("bg submit, SQLite, 1 at a time", "bg", "sqlite", 1),
                ("bg submit, SQLite, %d pipelined" % b, "bg", "sqlite", b))
        if args.vs_threads:
            print("(--vs-threads: 'theirs' is ours with -t %d)" % args.vs_threads)
        for name, mode, queue, batch in rows:
            if args.only and args.only not in name:
                continue
            # alternate the two servers and keep each one's median: the
            # machine is shared, and load from elsewhere comes and goes
            o, t = [], []
            for _ in range(args.rounds):
                o.append(run(loadgen, "ours", mode, queue, args, tmp, batch))
                t.append(run(loadgen, "theirs", mode, queue, args, tmp, batch))
            # each column's own median (the CPU of the median-rate run
            # would be one sample)
            ours, ours_cpu, ours_lg = (median(x[k] for x in o) for k in range(3))
            theirs, theirs_cpu, theirs_lg = (median(x[k] for x in t) for k in range(3))
            results[name] = (ours, theirs)
            # were both runs CPU-bound on the same cores, the rates could
            # differ at most by the ratio of (server + load generator) CPU
            # per job: the ceiling a cheaper server can reach here
            ceiling = (theirs_cpu + theirs_lg) / (ours_cpu + ours_lg) if ours_cpu + ours_lg else float("inf")
            print("%-34s %10.0f %10.0f %6.2f   %6.1f %6.1f %5.2f   %6.1f %6.1f %6.2f" % (
                name, ours, theirs, ours / theirs if theirs else float("inf"), ours_cpu, theirs_cpu,
                theirs_cpu / ours_cpu if ours_cpu else float("inf"), ours_lg, theirs_lg, ceiling), flush=True)
        # the goal: our durable queue at least as fast as their memory queue
        for sq, mem in ((rows[4][0], rows[2][0]), (rows[5][0], rows[3][0])):
            if sq not in results or mem not in results or args.vs_threads:
                continue
            ours_sqlite, theirs_mem = results[sq][0], results[mem][1]
            print("%-34s %10.0f %10.0f %6.2f" % ("our SQLite vs their memory" + sq[sq.index(","):].replace(
                ", SQLite", ""), ours_sqlite, theirs_mem, ours_sqlite / theirs_mem if theirs_mem else float("inf")))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
