#!/usr/bin/python3
"""perlbal benchmark: wrk through our perlbal vs haproxy (same thread count)
vs Debian's Perl Perlbal, all in front of the same nginx, 1 KiB responses,
keep-alive on both sides; then static serving: our web_server vs nginx.
Prints req/s, ratios and RSS, side by side from one run. Also the memory
cost of idle keep-alive clients on ours.

Ours runs twice: as it starts by default (socket I/O batched through the
core's io_uring) and as "ours-epoll" with STACK_IO_URING=0 (one system
call per socket operation); with STACK_IO_URING set in the environment
only the first runs, in the mode it names.

Env: BUILD_DIR (default ./build), BENCH_SECONDS (default 5), BENCH_CONNS
(default 50), BENCH_THREADS (proxy threads for ours and haproxy, default 1),
BENCH_IDLE (idle clients for the memory figure, default 2000), BENCH_ROUNDS
(interleaved rounds, median reported; default 3)."""
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("BUILD_DIR", os.path.join(REPO, "build"))
SECS = int(os.environ.get("BENCH_SECONDS", "5"))
CONNS = int(os.environ.get("BENCH_CONNS", "50"))
THREADS = int(os.environ.get("BENCH_THREADS", "1"))
IDLE = int(os.environ.get("BENCH_IDLE", "2000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("port %d never opened" % port)


def rss_kb(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_s(pids):
    """utime + stime of the processes, seconds."""
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / float(os.sysconf("SC_CLK_TCK"))


def children(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def wrk(url, secs=None):
    out = subprocess.run(["wrk", "-t1", "-c%d" % CONNS, "-d%ds" % (secs or SECS), url], capture_output=True,
                         text=True).stdout
    rps = 0.0
    errors = 0
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            rps = float(line.split()[1])
        if "Non-2xx" in line or "Socket errors" in line:
            errors += 1
    if errors:
        print("   (wrk reported errors)\n" + out)
    return rps


def main():
    if not shutil.which("wrk"):
        print("wrk not installed; skipping")
        return 0
    tmp = tempfile.mkdtemp(prefix="bench-perlbal-")
    procs = []
    try:
        www = os.path.join(tmp, "www")
        os.makedirs(www)
        with open(os.path.join(www, "1k.txt"), "wb") as f:
            f.write(b"x" * 1024)
        ngport = free_port()
        ngconf = os.path.join(tmp, "nginx.conf")
        with open(ngconf, "w") as f:
            f.write(("user root;\n" if os.geteuid() == 0 else "") + """
worker_processes 1; daemon off; pid %(t)s/nginx.pid; error_log %(t)s/nginx.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000; keepalive_timeout 300s;
  client_body_temp_path %(t)s; proxy_temp_path %(t)s; fastcgi_temp_path %(t)s; uwsgi_temp_path %(t)s; scgi_temp_path %(t)s;
  server { listen 127.0.0.1:%(p)d; root %(w)s; } }
""" % {"t": tmp, "p": ngport, "w": www})
        ng = subprocess.Popen(["nginx", "-c", ngconf, "-p", tmp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(ng)
        wait_port(ngport)

        # ours
        ours_port, ours_web, ours_m = free_port(), free_port(), free_port()
        conf = os.path.join(tmp, "ours.conf")
        with open(conf, "w") as f:
            f.write("""
CREATE POOL web
  POOL web ADD 127.0.0.1:%d
CREATE SERVICE proxy
  SET listen = 127.0.0.1:%d
  SET role = reverse_proxy
  SET pool = web
  SET persist_client = on
  SET persist_backend = on
  SET backend_persist_cache = %d
ENABLE proxy
CREATE SERVICE static
  SET listen = 127.0.0.1:%d
  SET role = web_server
  SET docroot = %s
  SET persist_client = on
ENABLE static
CREATE SERVICE mgmt
  SET role = management
  SET listen = 127.0.0.1:%d
ENABLE mgmt
""" % (ngport, ours_port, CONNS, ours_web, www, ours_m))
        ours = subprocess.Popen([os.path.join(BUILD, "bin", "perlbal"), "-c", conf, "-t", str(THREADS),
                                 "--log-level", "warn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(ours)
        wait_port(ours_port)
        # ours again with the core's io_uring batching off (perlbal turns it
        # on unless STACK_IO_URING says otherwise): plain epoll, one
        # read()/writev() per socket operation, as haproxy does
        ep_port, ep_m = free_port(), free_port()
        ep_conf = os.path.join(tmp, "ours-epoll.conf")
        with open(conf) as f:
            text = f.read()
        with open(ep_conf, "w") as f:
            f.write(text.replace("listen = 127.0.0.1:%d\n" % ours_port, "listen = 127.0.0.1:%d\n" % ep_port)
                    .replace("listen = 127.0.0.1:%d\n" % ours_web, "listen = 127.0.0.1:%d\n" % free_port())
                    .replace("listen = 127.0.0.1:%d\n" % ours_m, "listen = 127.0.0.1:%d\n" % ep_m))
        ours_ep = None
        if os.environ.get("STACK_IO_URING") is None:
            ours_ep = subprocess.Popen([os.path.join(BUILD, "bin", "perlbal"), "-c", ep_conf, "-t", str(THREADS),
                                        "--log-level", "warn"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, env=dict(os.environ, STACK_IO_URING="0"))
            procs.append(ours_ep)
            wait_port(ep_port)

        # haproxy, same threads
        hport = free_port()
        hconf = os.path.join(tmp, "haproxy.cfg")
        with open(hconf, "w") as f:
            f.write("""
global
  nbthread %d
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:%d
  default_backend be
backend be
  server ng 127.0.0.1:%d
""" % (THREADS, hport, ngport))
        hap = None
        if shutil.which("haproxy"):
            hap = subprocess.Popen(["haproxy", "-f", hconf, "-db"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
            procs.append(hap)
            wait_port(hport)

        # Debian's Perl Perlbal
        pport, pm = free_port(), free_port()
        pconf = os.path.join(tmp, "perl.conf")
        with open(pconf, "w") as f:
            f.write("""
CREATE POOL web
  POOL web ADD 127.0.0.1:%d
CREATE SERVICE proxy
  SET listen = 127.0.0.1:%d
  SET role = reverse_proxy
  SET pool = web
  SET persist_client = on
  SET persist_backend = on
ENABLE proxy
CREATE SERVICE mgmt
  SET role = management
  SET listen = 127.0.0.1:%d
ENABLE mgmt
""" % (ngport, pport, pm))
        perl = None
        if shutil.which("perlbal"):
            perl = subprocess.Popen(["perlbal", "--config=" + pconf], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            procs.append(perl)
            wait_port(pport)

        print("perlbal benchmark: wrk -t1 -c%d -d%ds, 1 KiB file, keep-alive; proxies use %d thread(s); "
              "backend nginx (1 worker); %d interleaved rounds, median" % (CONNS, SECS, THREADS, ROUNDS))
        targets = [(name, port, p) for name, port, p in
                   (("ours", ours_port, ours), ("ours-epoll", ep_port, ours_ep), ("haproxy", hport, hap),
                    ("perl-perlbal", pport, perl)) if p]
        for name, port, p in targets:          # warm-up
            wrk("http://127.0.0.1:%d/1k.txt" % port, 1)
        runs = {name: [] for name, _, _ in targets}
        cpu = {name: [0.0, 0.0] for name, _, _ in targets}   # CPU seconds, requests
        static = {"ours": [], "nginx": []}
        # The machine is shared: rounds interleave the contenders so a burst
        # of outside load hits all of them, and the median is reported.
        for _ in range(ROUNDS):
            for name, port, p in targets:
                pids = [p.pid] + children(p.pid)
                c0 = cpu_s(pids)
                rps = wrk("http://127.0.0.1:%d/1k.txt" % port)
                cpu[name][0] += cpu_s(pids) - c0
                cpu[name][1] += rps * SECS
                runs[name].append(rps)
            static["ours"].append(wrk("http://127.0.0.1:%d/1k.txt" % ours_web))
            static["nginx"].append(wrk("http://127.0.0.1:%d/1k.txt" % ngport))
        results = {name: statistics.median(v) for name, v in runs.items()}
        rss = {name: rss_kb([p.pid] + children(p.pid)) for name, _, p in targets}
        print("\n== reverse proxy (through X to nginx)")
        print("%-14s %12s %10s   %s" % ("", "req/s", "RSS KiB", "rounds"))
        for name in results:
            print("%-14s %12.0f %10d   %s" % (name, results[name], rss[name], " ".join("%.0f" % x for x in runs[name])))
        if results.get("haproxy"):
            print("ratio ours/haproxy      : %.2f" % (results["ours"] / results["haproxy"]))
            print("RSS ours/haproxy        : %.2f" % (rss["ours"] / float(rss["haproxy"])))
        if results.get("perl-perlbal"):
            print("ratio ours/perl-perlbal : %.2f" % (results["ours"] / results["perl-perlbal"]))
        # CPU per request is steadier than req/s on a shared machine
        us = {name: 1e6 * c / n for name, (c, n) in cpu.items() if n}
        print("CPU per request (us)    : " + ", ".join("%s %.1f" % (k, v) for k, v in us.items()))
        if us.get("ours") and us.get("haproxy"):
            print("CPU/request haproxy/ours: %.2f" % (us["haproxy"] / us["ours"]))
        if results.get("ours-epoll") and results.get("haproxy"):
            print("ours-epoll/haproxy      : req/s %.2f, CPU/request haproxy/ours-epoll %.2f, RSS %.2f"
                  % (results["ours-epoll"] / results["haproxy"], us["haproxy"] / us["ours-epoll"],
                     rss["ours-epoll"] / float(rss["haproxy"])))

        print("\n== static file serving (1 KiB)")
        s_ours, s_ng = statistics.median(static["ours"]), statistics.median(static["nginx"])
        print("%-14s %12.0f   %s" % ("ours", s_ours, " ".join("%.0f" % x for x in static["ours"])))
        print("%-14s %12.0f   %s" % ("nginx", s_ng, " ".join("%.0f" % x for x in static["nginx"])))
        if s_ng:
            print("ratio ours/nginx        : %.2f" % (s_ours / s_ng))

        # idle keep-alive clients: RSS per connection
        before = rss_kb([ours.pid])
        socks = []
        for _ in range(IDLE):
            s = socket.create_connection(("127.0.0.1", ours_web))
            s.sendall(b"GET /1k.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            socks.append(s)
        for s in socks:
            got = 0
            while got < 1024:
                got += len(s.recv(65536))
        time.sleep(0.5)
        after = rss_kb([ours.pid])
        print("\n== idle keep-alive clients on ours: %d clients, RSS +%d KiB = %.2f KiB per idle client"
              % (IDLE, after - before, (after - before) / float(IDLE)))
        for s in socks:
            s.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
