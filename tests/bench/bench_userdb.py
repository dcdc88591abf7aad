"""Benchmark: sysbench oltp_point_select directly against MariaDB and
through userdbd, side by side in one run, plus 10,000 client connections
multiplexed over at most 64 backend connections.

A private MariaDB (temp dir) holds the sysbench table in the database that
userdbd's `global` DSN names, so un-hinted statements go straight through
the router's pool to it. For each thread count the same sysbench command
runs direct, then through userdbd; printed per run: queries/s, latency
p50 and avg, the ratio (router / direct), and CPU per query of userdbd and
of mariadbd (from /proc, user+system). Each run is short: the machine is
shared, compare the ratios and CPU per query, not absolute numbers.

  BUILD_DIR=build python3 tests/bench/bench_userdb.py [--seconds 5] [--threads 1,4,16]
      [--ps-mode disable|auto] [--clients 10000] [--pool 64] [--moves 100]

--moves N: N scripted usermove runs (4 at a time, --delete, users moving
between clusters 1 and 2) while two writers insert rows for those users
through userdbd; then every acknowledged row must be on its user's cluster,
once, and nothing left behind on the other.
"""
import argparse
import hashlib
import random
import threading
import os
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("BUILD_DIR", os.path.join(REPO, "build"))
USERDBD = os.path.join(BUILD, "bin", "userdbd")
USERMOVE = os.path.join(BUILD, "bin", "usermove")
MARIADBD = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(port)


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def sysbench(port, threads, seconds, ps_mode, cmd="run"):
    args = ["sysbench", "oltp_point_select", "--db-driver=mysql", "--mysql-host=127.0.0.1", "--mysql-port=%d" % port,
            "--mysql-user=app", "--mysql-password=secret", "--mysql-db=sb", "--tables=1", "--table-size=10000",
            "--threads=%d" % threads, "--time=%d" % seconds, "--percentile=50", "--db-ps-mode=%s" % ps_mode, cmd]
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stdout + out.stderr)
    return out.stdout


def parse(out):
    qps = float(out.split("queries:")[1].split("(")[1].split()[0])
    total = int(out.split("queries:")[1].split()[0])
    p50 = float(out.split("50th percentile:")[1].split()[0])
    avg = float(out.split("avg:")[1].split()[0])
    return qps, total, p50, avg


def mysql_login(port, user, password):
    """A minimal MySQL client login (protocol 4.1, mysql_native_password)."""
    s = socket.create_connection(("127.0.0.1", port))
    greet = read_packet(s)
    v_end = greet.index(b"\0", 1)
    p = v_end + 1 + 4
    salt = greet[p:p + 8]
    p += 8 + 1 + 2 + 1 + 2 + 2 + 1 + 10
    salt += greet[p:p + 12]
    h1 = hashlib.sha1(password.encode()).digest()
    h3 = hashlib.sha1(salt + hashlib.sha1(h1).digest()).digest()
    auth = bytes(a ^ b for a, b in zip(h1, h3))
    caps = 0x200 | 0x8000 | 0x80000 | 0x1
    body = struct.pack("<IIB", caps, 1 << 24, 45) + b"\0" * 23 + user.encode() + b"\0" + bytes([20]) + auth
    body += b"mysql_native_password\0"
    s.sendall(struct.pack("<I", len(body))[:3] + b"\x01" + body)
    ok = read_packet(s)
    if ok[0] != 0:
        raise RuntimeError("login failed: %r" % ok)
    return s


def read_packet(s):
    hdr = b""
    while len(hdr) < 4:
        b = s.recv(4 - len(hdr))
        if not b:
            raise EOFError
        hdr += b
    n = hdr[0] | hdr[1] << 8 | hdr[2] << 16
    body = b""
    while len(body) < n:
        b = s.recv(n - len(body))
        if not b:
            raise EOFError
        body += b
    return body


def console(port, line):
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.sendall(line.encode() + b"\r\nquit\r\n")
        out = b""
        while True:
            b = c.recv(65536)
            if not b:
                return out.decode()
            out += b


def many_clients(port, admin, n):
    """n logged-in clients each run SELECT 1 at the same moment."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 1000)), hard))
    t0 = time.time()
    socks = [mysql_login(port, "app", "secret") for _ in range(n)]
    t1 = time.time()
    q = b"SELECT 1"
    pkt = struct.pack("<I", len(q) + 1)[:3] + b"\x00\x03" + q
    for s in socks:
        s.sendall(pkt)
    ok = 0
    for s in socks:
        # column count, column def, EOF, row, EOF
        pk = [read_packet(s) for _ in range(5)]
        ok += pk[3] == b"\x011"
    t2 = time.time()
    pools = console(admin, "pools")
    backend = max(int(w.split("=")[1]) for line in pools.splitlines() if line.startswith("global")
                  for w in line.split() if w.startswith("connects="))
    for s in socks:
        s.close()
    return ok, backend, t1 - t0, t2 - t1


def scripted_moves(base, sock, port, n_moves):
    """n_moves usermove runs under two writers; returns (moves ok, acked, lost, leftover, refused, seconds)."""
    import pymysql
    sql = lambda q: subprocess.run(["mariadb", "--no-defaults", "-uroot", "--socket=" + sock, "-N", "-B", "-e", q],
                                   check=True, capture_output=True, text=True).stdout
    sql("CREATE DATABASE mv_g; CREATE DATABASE mv_c1; CREATE DATABASE mv_c2")
    for c in ("mv_c1", "mv_c2"):
        sql("CREATE TABLE %s.posts (userid INT UNSIGNED NOT NULL, postid INT UNSIGNED NOT NULL, body VARCHAR(64), "
            "PRIMARY KEY (userid, postid))" % c)
    rport, admin = free_port(), free_port()
    conf = os.path.join(base, "mv.conf")
    dsn = "DBI:mysql:database=%s;host=127.0.0.1;port=" + str(port)
    with open(conf, "w") as f:
        f.write("listen = 127.0.0.1:%d\nconsole = 127.0.0.1:%d\nclient_user = app\nclient_password = secret\n"
                "backend_user = app\nbackend_password = secret\nglobal = %s\ncluster.1.master = %s\n"
                "cluster.2.master = %s\ndefault_clusters = 1\nuser_table = posts:userid\ndirectory_ttl = 0.2\n"
                % (rport, admin, dsn % "mv_g", dsn % "mv_c1", dsn % "mv_c2"))
    ud = subprocess.Popen([USERDBD, "-c", conf, "--log-level", "warn"], stdout=open(base + "/mv.log", "w"),
                          stderr=subprocess.STDOUT)
    try:
        wait_port(rport)
        c = pymysql.connect(host="127.0.0.1", port=rport, user="app", password="secret", autocommit=True)
        cur = c.cursor()
        users = []
        for i in range(12):
            cur.execute("/* user=new */ SELECT userdb_create_user(%s)", ("mover%d" % i,))
            users.append(cur.fetchone()[0])
        acked, refused, stop, errors = set(), [0], threading.Event(), []
        lock = threading.Lock()
        next_id = [0]

        def writer():
            w = pymysql.connect(host="127.0.0.1", port=rport, user="app", password="secret", autocommit=True)
            wc = w.cursor()
            while not stop.is_set():
                uid = random.choice(users)
                with lock:
                    next_id[0] += 1
                    pid = next_id[0]
                while not stop.is_set():
                    try:
                        wc.execute("/* user=%d */ INSERT INTO posts VALUES (%d, %d, 'w')" % (uid, uid, pid))
                        with lock:
                            acked.add((uid, pid))
                        break
                    except pymysql.err.MySQLError as e:
                        if e.args[0] != 1290:
                            errors.append(e)
                            return
                        refused[0] += 1
                        time.sleep(0.01)

        writers = [threading.Thread(target=writer) for _ in range(2)]
        for t in writers:
            t.start()
        t0 = time.time()
        ok = [0]
        todo = list(range(n_moves))

        def mover_loop(slot):
            # each slot owns 3 users, so no two movers touch one user
            mine = users[slot * 3:slot * 3 + 3]
            k = 0
            while True:
                with lock:
                    if not todo:
                        return
                    todo.pop()
                uid = mine[k % len(mine)]
                k += 1
                cl = int(sql("SELECT clusterid FROM mv_g.user WHERE userid = %d" % uid))
                r = subprocess.run([USERMOVE, "-q", "-c", conf, "--drain", "0.1", "--delete", str(uid),
                                    str(3 - cl)], capture_output=True, text=True)
                if r.returncode == 0:
                    with lock:
                        ok[0] += 1
                else:
                    errors.append(r.stderr)

        movers = [threading.Thread(target=mover_loop, args=(i,)) for i in range(4)]
        for t in movers:
            t.start()
        for t in movers:
            t.join()
        elapsed = time.time() - t0
        stop.set()
        for t in writers:
            t.join()
        lost = leftover = 0
        for uid in users:
            cl = int(sql("SELECT clusterid FROM mv_g.user WHERE userid = %d" % uid))
            here = set(int(x) for x in sql("SELECT postid FROM mv_c%d.posts WHERE userid = %d" % (cl, uid)).split())
            want = set(p for (u, p) in acked if u == uid)
            lost += len(want - here) + len(here - want)
            leftover += int(sql("SELECT COUNT(*) FROM mv_c%d.posts WHERE userid = %d" % (3 - cl, uid)))
        if errors:
            print("errors:", errors[:3])
        return ok[0], len(acked), lost, leftover, refused[0], elapsed
    finally:
        ud.terminate()
        ud.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--threads", default="1,4,16")
    ap.add_argument("--ps-mode", default="disable")
    ap.add_argument("--clients", type=int, default=10000)
    ap.add_argument("--pool", type=int, default=64)
    ap.add_argument("--moves", type=int, default=100)
    a = ap.parse_args()
    if not shutil.which("sysbench"):
        print("sysbench is not installed (apt-get install sysbench)")
        return 1
    base = tempfile.mkdtemp(prefix="bench-userdb-")
    procs = []
    try:
        port = free_port()
        run_as = ["--user=root"] if os.geteuid() == 0 else []
        # a private tmpdir: a starting mariadbd deletes the #sql* files in its
        # tmpdir, other servers' live temporary tables too
        os.makedirs(base + "/tmp")
        common = run_as + ["--tmpdir=%s/tmp" % base]
        subprocess.run(["mariadb-install-db", "--no-defaults", "--datadir=%s/data" % base,
                        "--auth-root-authentication-method=normal", "--skip-test-db"] + common,
                       check=True, capture_output=True)
        db = subprocess.Popen([MARIADBD, "--no-defaults", "--datadir=%s/data" % base, "--socket=%s/sock" % base,
                               "--port=%d" % port, "--bind-address=127.0.0.1", "--skip-name-resolve",
                               "--max-connections=1000", "--innodb-buffer-pool-size=128M"] + common,
                              stdout=open(base + "/mariadb.log", "w"), stderr=subprocess.STDOUT)
        procs.append(db)
        wait_port(port)
        subprocess.run(["mariadb", "--no-defaults", "-uroot", "--socket=%s/sock" % base, "-e",
                        "CREATE DATABASE sb; CREATE USER app@'%' IDENTIFIED BY 'secret'; "
                        "GRANT ALL ON *.* TO app@'%'; CREATE USER app@localhost IDENTIFIED BY 'secret'; "
                        "GRANT ALL ON *.* TO app@localhost"], check=True)
        sysbench(port, 1, 1, a.ps_mode, "prepare")
        rport, admin = free_port(), free_port()
        conf = os.path.join(base, "userdbd.conf")
        with open(conf, "w") as f:
            f.write("listen = 127.0.0.1:%d\nconsole = 127.0.0.1:%d\nclient_user = app\nclient_password = secret\n"
                    "backend_user = app\nbackend_password = secret\npool_max = %d\n"
                    "global = DBI:mysql:database=sb;host=127.0.0.1;port=%d\n" % (rport, admin, a.pool, port))
        ud = subprocess.Popen([USERDBD, "-c", conf, "--max-fds", str(a.clients + 2000), "--log-level", "warn"],
                              stdout=open(base + "/userdbd.log", "w"), stderr=subprocess.STDOUT)
        procs.append(ud)
        wait_port(rport)
        print("sysbench oltp_point_select, 1 table x 10,000 rows, %ds per run, --db-ps-mode=%s; "
              "machine shared, loaded: compare ratios" % (a.seconds, a.ps_mode))
        print("%-7s %-7s %10s %9s %9s %12s %12s" % ("threads", "target", "queries/s", "p50 ms", "avg ms",
                                                     "router us/q", "mariadb us/q"))
        for th in [int(x) for x in a.threads.split(",")]:
            res = {}
            for target, p in (("direct", port), ("userdbd", rport)):
                c0, d0 = cpu_seconds(ud.pid), cpu_seconds(db.pid)
                qps, total, p50, avg = parse(sysbench(p, th, a.seconds, a.ps_mode))
                c1, d1 = cpu_seconds(ud.pid), cpu_seconds(db.pid)
                res[target] = (qps, p50, avg)
                rcpu = "%.1f" % ((c1 - c0) / total * 1e6) if target == "userdbd" else "-"
                print("%-7d %-7s %10.0f %9.3f %9.3f %12s %12.1f" % (th, target, qps, p50, avg, rcpu,
                                                                   (d1 - d0) / total * 1e6))
            print("        ratio   %9.2fx  added p50 %.0f us, avg %.0f us" % (
                res["userdbd"][0] / res["direct"][0], (res["userdbd"][1] - res["direct"][1]) * 1000,
                (res["userdbd"][2] - res["direct"][2]) * 1000))
        if a.clients:
            ok, backend, t_login, t_query = many_clients(rport, admin, a.clients)
            print("%d clients logged in (%.1fs), each ran SELECT 1 at once: %d answered in %.1fs over %d backend "
                  "connections (pool_max %d)" % (a.clients, t_login, ok, t_query, backend, a.pool))
        if a.moves:
            ok, acked, lost, leftover, refused, secs = scripted_moves(base, base + "/sock", port, a.moves)
            print("%d/%d scripted moves done in %.0fs under 2 writers: %d rows acknowledged, %d lost or duplicated, "
                  "%d left on the old cluster, %d writes refused while read-only (retried)"
                  % (ok, a.moves, secs, acked, lost, leftover, refused))
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
