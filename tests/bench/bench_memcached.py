"""bench_memcached: our memcached against Debian's memcached 1.6, side by side
in one run, same -t and -m.

  1. memcaslap (libmemcached-tools): 90% get / 10% set, 100-byte values,
     64 concurrent connections; then the same with 10-key multi-gets.
     Rounds alternate ours/theirs; the median ops/s of each is reported.
  2. RSS after storing 1M items of 100 bytes (12-byte keys), loaded by a
     pipelined noreply loader, checked with `stats curr_items`.

Prints both figures and the ratio ours/theirs. Run: make bench, or
  BUILD_DIR=build /usr/bin/python3 tests/bench/bench_memcached.py [--seconds N] [--rounds N]
"""
import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.environ.get("BUILD_DIR", os.path.join(HERE, "..", "..", "build"))
OURS = os.path.join(BUILD, "bin", "memcached")
THEIRS = shutil.which("memcached", path="/usr/bin") or "/usr/bin/memcached"
SLAP = shutil.which("memcaslap") or shutil.which("memaslap")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server on %d did not start" % port)


def start(which, threads, mem_mb):
    port = free_port()
    if which == "ours":
        cmd = [OURS, "-p", str(port), "-l", "127.0.0.1", "-t", str(threads), "-m", str(mem_mb), "-U", "0"]
    else:
        cmd = [THEIRS, "-p", str(port), "-l", "127.0.0.1", "-t", str(threads), "-m", str(mem_mb), "-U", "0"]
        if os.geteuid() == 0:
            cmd += ["-u", "root"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return p, port


def stop(p):
    p.terminate()
    try:
        p.wait(timeout=15)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def stats(port, group=""):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(("stats %s\r\n" % group).encode())
    buf = b""
    while not buf.endswith(b"END\r\n"):
        d = s.recv(65536)
        if not d:
            break
        buf += d
    s.close()
    out = {}
    for line in buf.decode().split("\r\n"):
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] == "STAT":
            out[parts[1]] = parts[2]
    return out


def slap(port, seconds, threads, concurrency, division, cfg):
    cmd = [SLAP, "-s", "127.0.0.1:%d" % port, "-F", cfg, "-T", str(threads), "-c", str(concurrency),
           "-t", "%ds" % seconds]
    if division > 1:
        cmd += ["-d", str(division)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    m = re.search(r"Ops: (\d+) TPS: (\d+)", out)
    if not m:
        raise RuntimeError("memcaslap output not understood:\n" + out)
    return int(m.group(1)), int(m.group(2))


def cpu_seconds(pid):
    """User + system CPU time the process has used so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(port, n, value_size):
    """Store n items key:%07d (12-byte keys) with noreply sets, pipelined."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    value = b"v" * value_size
    batch = []
    for i in range(n):
        batch.append(b"set key:%07d 0 0 %d noreply\r\n%s\r\n" % (i, value_size, value))
        if len(batch) == 2000:
            s.sendall(b"".join(batch))
            batch = []
    s.sendall(b"".join(batch) + b"mn\r\n")
    buf = b""
    while not buf.endswith(b"MN\r\n"):
        d = s.recv(4096)
        if not d:
            raise RuntimeError("server closed during load")
        buf += d
    s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="-t for both servers and memcaslap's threads")
    ap.add_argument("--memory", type=int, default=1024, help="-m (MB) for both servers")
    ap.add_argument("--items", type=int, default=1000000)
    ap.add_argument("--no-rss", action="store_true", help="skip the RSS part (short runs)")
    args = ap.parse_args()
    if not SLAP:
        sys.exit("memcaslap (libmemcached-tools) is needed")
    tmp = tempfile.mkdtemp(prefix="bench-mc-")
    cfg = os.path.join(tmp, "slap.cfg")
    with open(cfg, "w") as f:
        # key length, value length, get/set mix (cmd 0 = set, 1 = get)
        f.write("key\n16 16 1\nvalue\n100 100 1\ncmd\n0 0.1\n1 0.9\n")
    print("memcached bench: ours=%s theirs=%s (%s)" % (OURS, THEIRS,
          subprocess.run([THEIRS, "-V"], capture_output=True, text=True).stdout.strip()))
    print("-t %d -m %d, memcaslap -T %d -c 64, %d s x %d rounds per server, alternating"
          % (args.threads, args.memory, args.threads, args.seconds, args.rounds))
    results = {}
    for name, division in (("get/set 90/10", 1), ("multi-get x10 90/10", 10)):
        tps = {"ours": [], "theirs": []}
        cpu = {"ours": [], "theirs": []}   # server CPU microseconds per operation
        servers = {w: start(w, args.threads, args.memory) for w in ("ours", "theirs")}
        try:
            for w in ("ours", "theirs"):   # warm up: fill the key window
                slap(servers[w][1], 2, args.threads, 64, division, cfg)
            for r in range(args.rounds):
                order = ("ours", "theirs") if r % 2 == 0 else ("theirs", "ours")
                for w in order:
                    c0 = cpu_seconds(servers[w][0].pid)
                    ops, rate = slap(servers[w][1], args.seconds, args.threads, 64, division, cfg)
                    tps[w].append(rate)
                    cpu[w].append((cpu_seconds(servers[w][0].pid) - c0) * 1e6 / max(ops, 1))
        finally:
            for p, _ in servers.values():
                stop(p)
        o, t = statistics.median(tps["ours"]), statistics.median(tps["theirs"])
        co, ct = statistics.median(cpu["ours"]), statistics.median(cpu["theirs"])
        results[name] = (o, t)
        print("%-22s ours %9.0f ops/s  theirs %9.0f ops/s  ratio %.2f   (rounds ours %s theirs %s)"
              % (name, o, t, o / t, tps["ours"], tps["theirs"]))
        print("%-22s server CPU per op: ours %.2f us  theirs %.2f us  ratio %.2f"
              % ("", co, ct, co / ct))
    if args.no_rss:
        shutil.rmtree(tmp, ignore_errors=True)
        return
    rss = {}
    for w in ("ours", "theirs"):
        p, port = start(w, args.threads, args.memory)
        try:
            base = rss_kb(p.pid)
            t0 = time.time()
            load(port, args.items, 100)
            took = time.time() - t0
            st = stats(port)
            assert int(st["curr_items"]) == args.items, st.get("curr_items")
            malloced = int(stats(port, "slabs").get("total_malloced", 0))
            rss[w] = (rss_kb(p.pid), base, took, int(st.get("bytes", 0)), malloced)
        finally:
            stop(p)
    o, t = rss["ours"][0], rss["theirs"][0]
    print("%-22s ours %7.1f MB  theirs %7.1f MB  ratio %.2f   (idle %.1f / %.1f MB; load %.1fs / %.1fs; "
          "total_malloced %.1f / %.1f MB)"
          % ("RSS, %d x 100 B" % args.items, o / 1024, t / 1024, o / t, rss["ours"][1] / 1024,
             rss["theirs"][1] / 1024, rss["ours"][2], rss["theirs"][2], rss["ours"][4] / 2**20,
             rss["theirs"][4] / 2**20))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
