#!/usr/bin/python3
"""djabberd vs Prosody, side by side in one run.

For each server: start it on free loopback ports with N accounts (PLAIN
passwords: djabberd's users_file, Prosody's internal_plain files), then
  1. log in N idle sessions (bind + initial presence) with a bounded number
     of logins in flight: logins/s and server CPU ms per login;
  2. RSS growth per idle authenticated session (VmRSS after - before) / N;
  3. local message throughput: P sender/receiver pairs, each sender keeping a
     window of messages in flight: messages/s, p50/p99 latency, server CPU
     microseconds per message.
Prints a table with the ratios (ours / theirs). Absolute numbers on a shared
2-core machine are noise; compare within one run.

  BUILD_DIR=build /usr/bin/python3 tests/bench/bench_djabberd.py [--sessions 2000,10000]
      [--pairs 20] [--messages 20000] [--only djabberd|prosody]
"""
import argparse
import asyncio
import base64
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>").encode()
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited with %s" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("port %d" % port)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / TICK


class Conn:
    def __init__(self, r, w):
        self.r, self.w, self.buf = r, w, b""

    async def until(self, rx, timeout=60):
        while True:
            m = rx.search(self.buf)
            if m:
                self.buf = self.buf[m.end():]
                return m
            chunk = await asyncio.wait_for(self.r.read(65536), timeout)
            if not chunk:
                raise EOFError(self.buf[-300:])
            self.buf += chunk


FEATURES = re.compile(rb"</stream:features>")
SUCCESS = re.compile(rb"<success[^>]*?(/>|>.*?</success>)|<failure", re.S)
BOUND = re.compile(rb"<iq[^>]*id=.b1.[^>]*>.*?</iq>", re.S)


async def login(port, user, pw, resource_="r"):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    c = Conn(r, w)
    w.write(HEADER)
    await c.until(FEATURES)
    tok = base64.b64encode(b"\0" + user.encode() + b"\0" + pw.encode())
    w.write(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" + tok + b"</auth>")
    m = await c.until(SUCCESS)
    if m.group(0).startswith(b"<failure"):
        raise RuntimeError("auth failed for %s" % user)
    w.write(HEADER)
    await c.until(FEATURES)
    w.write(b"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>" +
            resource_.encode() + b"</resource></bind></iq>")
    await c.until(BOUND)
    w.write(b"<presence/>")
    await w.drain()
    return c


class Server:
    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Djabberd(Server):
    name = "djabberd"

    def __init__(self, tmp, nusers):
        build = os.environ.get("BUILD_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
        users = os.path.join(tmp, "users.txt")
        with open(users, "w") as f:
            for i in range(nusers):
                f.write("u%d:pw%d\n" % (i, i))
        self.port = free_port()
        self.proc = subprocess.Popen(
            [os.path.join(build, "bin", "djabberd"), "--require_tls=no", "--c2s_port", str(self.port),
             "--listen", "127.0.0.1", "--vhost", "localhost", "--users_file", users, "--storage",
             "DBI:SQLite:dbname=%s" % os.path.join(tmp, "dj.sqlite"), "--max-fds", "40000",
             "--log-level", "warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)


class Prosody(Server):
    name = "prosody"

    def __init__(self, tmp, nusers):
        self.port = free_port()
        data = os.path.join(tmp, "data")
        acc = os.path.join(data, "localhost", "accounts")
        os.makedirs(acc)
        for i in range(nusers):
            with open(os.path.join(acc, "u%d.dat" % i), "w") as f:
                f.write('return {\n\t["password"] = "pw%d";\n};\n' % i)
        cfg = os.path.join(tmp, "prosody.cfg.lua")
        with open(cfg, "w") as f:
            f.write("""daemonize = false
run_as_root = true
pidfile = "%(t)s/prosody.pid"
data_path = "%(d)s"
certificates = "%(t)s"
network_backend = "epoll"
c2s_ports = { %(p)d }
c2s_interfaces = { "127.0.0.1" }
s2s_ports = { }
http_ports = {}
https_ports = {}
modules_enabled = { "roster", "saslauth", "disco", "ping", "offline" }
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
log = { warn = "%(t)s/prosody.log" }
VirtualHost "localhost"
""" % {"t": tmp, "d": data, "p": self.port})
        self.proc = subprocess.Popen([shutil.which("prosody"), "--config", cfg, "-F"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)


async def bench_sessions(srv, n, inflight=50):
    sem = asyncio.Semaphore(inflight)
    conns = [None] * n

    async def one(i):
        async with sem:
            conns[i] = await login(srv.port, "u%d" % i, "pw%d" % i)

    base_rss = rss_kib(srv.proc.pid)
    cpu0 = cpu_s(srv.proc.pid)
    t0 = time.time()
    results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    dt = time.time() - t0
    errors = sum(1 for r in results if isinstance(r, Exception))
    cpu = cpu_s(srv.proc.pid) - cpu0
    await asyncio.sleep(1.0)  # let the initial presences settle
    conns = [c for c in conns if c is not None]
    for c in conns:  # drop what the server sent so far (own presence echo)
        c.buf = b""
    rss = rss_kib(srv.proc.pid)
    return {"logins_s": (n - errors) / dt, "cpu_ms_login": cpu * 1000 / max(1, n - errors), "errors": errors,
            "rss_per_session_kib": (rss - base_rss) / max(1, n - errors), "rss_kib": rss, "conns": conns}


async def bench_messages(srv, conns, pairs, total, window=8):
    """Closed loop: each sender keeps at most `window` messages in flight
    (sent, not yet seen by its receiver), so latency is the server's, not a
    client-side queue's."""
    senders = conns[:pairs]
    receivers = conns[pairs:2 * pairs]
    per = total // pairs
    lat = []
    rx = re.compile(rb"<body>t=([0-9.]+)</body>")
    credits = [asyncio.Semaphore(window) for _ in range(pairs)]

    async def receive(i, expect):
        c = receivers[i]
        got = 0
        while got < expect:
            chunk = await asyncio.wait_for(c.r.read(65536), 60)
            if not chunk:
                raise EOFError()
            c.buf += chunk
            now = time.time()
            last = 0
            for m in rx.finditer(c.buf):
                lat.append(now - float(m.group(1)))
                got += 1
                last = m.end()
                credits[i].release()
            c.buf = c.buf[last:]
        return got

    async def send(i, to):
        c = senders[i]
        for _ in range(per):
            await credits[i].acquire()
            c.w.write(b"<message type='chat' to='%s@localhost'><body>t=%.6f</body></message>" %
                      (to.encode(), time.time()))
            if c.w.transport.get_write_buffer_size() > 65536:
                await c.w.drain()

    cpu0 = cpu_s(srv.proc.pid)
    t0 = time.time()
    recv_tasks = [asyncio.create_task(receive(i, per)) for i in range(pairs)]
    await asyncio.gather(*(send(i, "u%d" % (pairs + i)) for i in range(pairs)))
    got = sum(await asyncio.gather(*recv_tasks))
    dt = time.time() - t0
    cpu = cpu_s(srv.proc.pid) - cpu0
    lat.sort()
    q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))] * 1000 if lat else float("nan")
    return {"msgs_s": got / dt, "p50_ms": q(0.5), "p99_ms": q(0.99), "cpu_us_msg": cpu * 1e6 / max(1, got)}


async def run_one(kind, n, args):
    tmp = tempfile.mkdtemp(prefix="bench-dj-")
    srv = (Djabberd if kind == "djabberd" else Prosody)(tmp, n)
    try:
        s = await bench_sessions(srv, n)
        m = await bench_messages(srv, s["conns"], args.pairs, args.messages) if args.messages else {}
        for c in s.pop("conns"):
            c.w.close()
        s.update(m)
        return s
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", default="2000,10000")
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--only", default=None)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 50000
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard) if hard > 0 else want, hard))
    except ValueError:
        pass
    kinds = [k for k in ("djabberd", "prosody") if not args.only or args.only == k]
    if "prosody" in kinds and not shutil.which("prosody"):
        sys.exit("prosody is not installed")
    print("djabberd vs Prosody (loopback, shared 2-core machine; ratios from one run)")
    for n in [int(x) for x in args.sessions.split(",")]:
        res = {}
        for k in kinds:
            res[k] = asyncio.run(run_one(k, n, args))
        print("\n%d idle authenticated sessions, then %d messages over %d pairs" % (n, args.messages, args.pairs))
        keys = [("errors", "%d"), ("logins_s", "%.0f"), ("cpu_ms_login", "%.3f"), ("rss_per_session_kib", "%.2f"),
                ("rss_kib", "%d"), ("msgs_s", "%.0f"), ("p50_ms", "%.2f"), ("p99_ms", "%.2f"),
                ("cpu_us_msg", "%.1f")]
        print("%-22s" % "" + "".join("%14s" % k for k in kinds) + ("%14s" % "ours/theirs" if len(kinds) == 2 else ""))
        for key, fmt in keys:
            vals = [res[k].get(key) for k in kinds]
            row = "%-22s" % key + "".join("%14s" % (fmt % v if v is not None else "-") for v in vals)
            if len(kinds) == 2 and vals[0] is not None and vals[1]:
                row += "%14.2f" % (vals[0] / vals[1])
            print(row)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
