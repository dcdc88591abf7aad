#!/usr/bin/python3
"""mogilefs benchmark, side by side in one run:

1. tracker: uploads/s (create_open + PUT 1 KiB + create_close, as
   MogileFS::Client's store_content) and get_paths/s (noverify=1), driven by
   build/bin/mogile-bench with BENCH_THREADS client threads, against our
   mogilefsd on SQLite and, when MOGILEFS_PERL_SRC points at a checkout of
   mogilefs/MogileFS-Server (never committed here), the Perl MogileFS 2.73
   tracker on SQLite with the same storage node and the same load;
2. storage: GETs of 1 KiB and 1 MiB files with wrk from our mogstored and
   from nginx serving the same docroot.
Each line shows ops/s, the server's CPU time per op (user+sys from /proc,
the figure that holds on a shared machine) and the ratio ours/theirs.

Env: BUILD_DIR, BENCH_SECONDS (default 5), BENCH_THREADS (default 16),
BENCH_CONNS (wrk connections, default 50), MOGILEFS_PERL_SRC."""
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("BUILD_DIR", os.path.join(REPO, "build"))
SECS = int(os.environ.get("BENCH_SECONDS", "5"))
THREADS = int(os.environ.get("BENCH_THREADS", "16"))
CONNS = int(os.environ.get("BENCH_CONNS", "50"))
PERL_SRC = os.environ.get("MOGILEFS_PERL_SRC")


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(port, host="127.0.0.1", timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("port %s:%d never opened" % (host, port))


def tree(pid):
    """pid and all its descendants."""
    out = [pid]
    for p in list(out):
        kids = subprocess.run(["ps", "-o", "pid=", "--ppid", str(p)], capture_output=True, text=True).stdout
        out += [int(x) for x in kids.split()]
    return out


def cpu_s(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            # utime + stime, plus cutime + cstime: a worker process that
            # exits during a run (the Perl tracker restarts its workers)
            # is reaped by its parent, whose c-times then carry its CPU.
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        except OSError:
            pass
    return total / float(os.sysconf("SC_CLK_TCK"))


def mogile(tracker, *args):
    subprocess.run([os.path.join(BUILD, "bin", "mogile"), "--trackers=" + tracker] + list(args), check=True,
                   capture_output=True, timeout=30)


def drive(tracker, mode, server_pids, threads=None):
    pids = [p for root in server_pids for p in tree(root)]
    c0 = cpu_s(pids)
    out = subprocess.run([os.path.join(BUILD, "bin", "mogile-bench"), tracker, "bench", "b", mode,
                          str(threads or THREADS),
                          str(SECS), "1024"], capture_output=True, text=True, timeout=SECS * 10 + 60).stdout
    c1 = cpu_s(pids)
    m = re.search(r"ops=(\d+) errors=(\d+) secs=([\d.]+) ops_per_sec=([\d.]+)", out)
    if not m:
        return None
    ops = int(m.group(1))
    return {"rate": float(m.group(4)), "errors": int(m.group(2)), "cpu_ms": (c1 - c0) * 1000.0 / max(ops, 1)}


def setup_tracker(addr, store_ip, store_port):
    for _ in range(100):
        try:
            mogile(addr, "ping")
            break
        except subprocess.CalledProcessError:
            time.sleep(0.1)
    mogile(addr, "host", "add", "s1", "--ip=" + store_ip, "--port=%d" % store_port, "--status=alive")
    mogile(addr, "device", "add", "s1", "1")
    mogile(addr, "device", "add", "s1", "2")
    mogile(addr, "domain", "add", "bench")
    mogile(addr, "class", "add", "bench", "b", "--mindevcount=1")
    time.sleep(2)  # the monitor's first round


def start_store(tmp, ip):
    root = os.path.join(tmp, "store-" + ip)
    for d in ("dev1", "dev2"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    port, side = free_port(ip), free_port(ip)
    p = subprocess.Popen([os.path.join(BUILD, "bin", "mogstored"), "--httplisten=%s:%d" % (ip, port),
                          "--mgmtlisten=%s:%d" % (ip, side), "--docroot=" + root],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, ip)
    return p, root, port


def tracker_bench(tmp):
    results = {}
    procs = []
    try:
        store, root, sport = start_store(tmp, "127.0.0.2")
        procs.append(store)
        port = free_port()
        ours = subprocess.Popen([os.path.join(BUILD, "bin", "mogilefsd"), "--db_dsn=DBI:SQLite:dbname=%s/ours.sqlite" % tmp,
                                 "--listen=127.0.0.1:%d" % port, "--query_jobs=20"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(ours)
        wait_port(port)
        addr = "127.0.0.1:%d" % port
        setup_tracker(addr, "127.0.0.2", sport)
        results["ours"] = {m: drive(addr, m, [ours.pid]) for m in ("upload", "get_paths")}
        results["ours1"] = {m: drive(addr, m, [ours.pid], 1) for m in ("upload", "get_paths")}
        ours.terminate()
        ours.wait()
        procs.remove(ours)
        if PERL_SRC:
            store2, root2, sport2 = start_store(tmp, "127.0.0.3")
            procs.append(store2)
            db = os.path.join(tmp, "perl.sqlite")
            subprocess.run(["perl", "-I" + os.path.join(PERL_SRC, "lib"), os.path.join(PERL_SRC, "mogdbsetup"),
                            "--type=SQLite", "--dbname=" + db, "--yes"], check=True, capture_output=True)
            pport = free_port()
            conf = os.path.join(tmp, "perl.conf")
            with open(conf, "w") as f:
                f.write("db_dsn = DBI:SQLite:%s\nlisten = 127.0.0.1:%d\nuser = %s\nquery_jobs = 20\n"
                        % (db, pport, os.environ.get("USER", "root")))
            env = dict(os.environ, PERL5LIB=os.path.join(PERL_SRC, "lib"))
            perl = subprocess.Popen(["perl", os.path.join(PERL_SRC, "mogilefsd"), "-c", conf], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            procs.append(perl)
            wait_port(pport)
            paddr = "127.0.0.1:%d" % pport
            setup_tracker(paddr, "127.0.0.3", sport2)
            time.sleep(3)
            results["perl1"] = {m: drive(paddr, m, [perl.pid], 1) for m in ("upload", "get_paths")}
            results["perl"] = {m: drive(paddr, m, [perl.pid]) for m in ("upload", "get_paths")}
    finally:
        for p in procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, 15) if p.args[0] == "perl" else p.terminate()
                except OSError:
                    pass
                p.wait()
    return results


def wrk(url):
    out = subprocess.run(["wrk", "-t1", "-c%d" % CONNS, "-d%ds" % SECS, url], capture_output=True, text=True).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    if "Non-2xx" in out:
        raise RuntimeError("wrk saw errors from %s:\n%s" % (url, out))
    return float(m.group(1)) if m else 0.0, int(n.group(1)) if n else 0


def storage_bench(tmp):
    store, root, sport = start_store(tmp, "127.0.0.4")
    with open(os.path.join(root, "dev1", "1k.fid"), "wb") as f:
        f.write(os.urandom(1024))
    with open(os.path.join(root, "dev1", "1m.fid"), "wb") as f:
        f.write(os.urandom(1 << 20))
    nport = free_port()
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write("user root;\nworker_processes 1;\nerror_log %s/nginx.err;\npid %s/nginx.pid;\nevents { worker_connections 4096; }\n"
                "http { access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;\n"
                "  server { listen 127.0.0.1:%d; root %s; } }\n" % (tmp, tmp, nport, root))
    nginx = subprocess.Popen(["nginx", "-c", conf, "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    out = {}
    try:
        wait_port(nport)
        for name in ("1k", "1m"):
            for who, port, pid in (("ours", sport, store.pid), ("nginx", nport, nginx.pid)):
                pids = tree(pid)
                c0 = cpu_s(pids)
                rate, n = wrk("http://%s:%d/dev1/%s.fid" % ("127.0.0.4" if who == "ours" else "127.0.0.1", port, name))
                c1 = cpu_s(pids)
                out[(name, who)] = {"rate": rate, "cpu_ms": (c1 - c0) * 1000.0 / max(n, 1)}
    finally:
        nginx.terminate()
        nginx.wait()
        store.terminate()
        store.wait()
    return out


def line(label, ours, theirs, unit):
    if ours is None:
        print("%-28s ours: failed" % label)
        return
    s = "%-34s ours %9.1f %s (%.3f ms CPU/op%s)" % (label, ours["rate"], unit, ours["cpu_ms"],
                                                   ", %d errors" % ours["errors"] if ours.get("errors") else "")
    if theirs:
        s += "   theirs %9.1f (%.3f ms CPU/op%s)   ratio %.2fx, CPU/op ratio %.2f" % (
            theirs["rate"], theirs["cpu_ms"], ", %d errors" % theirs["errors"] if theirs.get("errors") else "",
            ours["rate"] / max(theirs["rate"], 0.001), ours["cpu_ms"] / max(theirs["cpu_ms"], 1e-9))
    print(s)


def main():
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool):
            print("bench_mogilefs: %s is not installed" % tool)
            return 1
    tmp = tempfile.mkdtemp(prefix="mogbench-")
    os.chmod(tmp, 0o755)
    try:
        print("mogilefs benchmark: %ds per run, %d client threads, wrk -c%d (load: %s)"
              % (SECS, THREADS, CONNS, open("/proc/loadavg").read().split()[0]))
        t = tracker_bench(tmp)
        perl = t.get("perl") or {}
        if not PERL_SRC:
            print("(Perl MogileFS 2.73 not run: set MOGILEFS_PERL_SRC to a MogileFS-Server checkout)")
        perl1 = t.get("perl1") or {}
        line("tracker uploads 1 KiB, 1 client", t["ours1"]["upload"], perl1.get("upload"), "/s")
        line("tracker get_paths, 1 client", t["ours1"]["get_paths"], perl1.get("get_paths"), "/s")
        line("tracker uploads 1 KiB, %d clients" % THREADS, t["ours"]["upload"], perl.get("upload"), "/s")
        line("tracker get_paths, %d clients" % THREADS, t["ours"]["get_paths"], perl.get("get_paths"), "/s")
        s = storage_bench(tmp)
        line("mogstored GET 1 KiB vs nginx", s[("1k", "ours")], s[("1k", "nginx")], "req/s")
        line("mogstored GET 1 MiB vs nginx", s[("1m", "ours")], s[("1m", "nginx")], "req/s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
