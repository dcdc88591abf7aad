"""The shared core as every daemon exposes it: settings (--help, --config,
SIGHUP reload), the telnet console, the Prometheus endpoint, the pidfile,
systemd readiness and the graceful stop. Run against each built daemon
that uses the core's start-up sequence."""
import os
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import bin_path, free_port, wait_port

# Each daemon's minimal listen arguments ({tmp}: a scratch folder of the test).
DAEMONS = {
    "memcached": ["-l", "127.0.0.1", "-p", "{port}", "-U", "0"],
    "gearmand": ["-L", "127.0.0.1", "-p", "{port}"],
    "mogstored": ["--httplisten", "127.0.0.1:{port}", "--mgmtlisten", "127.0.0.1:{port2}", "--docroot", "{tmp}"],
    "mogilefsd": ["--listen", "127.0.0.1:{port}", "--db_dsn", "DBI:SQLite:dbname={tmp}/mogilefs.sqlite"],
    "schwartzd": ["-l", "127.0.0.1:{port}", "--database", "dbi:SQLite:dbname={tmp}/schwartz.sqlite"],
    "djabberd": ["-l", "127.0.0.1", "-p", "{port}", "--storage", "DBI:SQLite:dbname={tmp}/djabberd.sqlite",
                 "--require_tls=no"],
}
BUILT = [name for name in DAEMONS if os.path.exists(bin_path(name))]


def argv(name, port, tmp, extra=()):
    """The command line of a daemon started by hand (not by the fixture)."""
    port2 = free_port()
    sub = lambda a: a.replace("{port}", str(port)).replace("{port2}", str(port2)).replace("{tmp}", str(tmp))
    return [bin_path(name)] + [sub(a) for a in list(DAEMONS[name]) + list(extra)]


def console(port, *lines, timeout=5):
    """Send lines to the console; return everything it answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(("".join(l + "\r\n" for l in lines) + "quit\r\n").encode())
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    return out.decode()


def admin_args(name):
    return DAEMONS[name] + ["--admin", "127.0.0.1:{admin}"]


@pytest.fixture(params=BUILT)
def name(request):
    return request.param


def test_help_and_version_exit_zero(name):
    out = subprocess.run([bin_path(name), "--help"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0
    for opt in ("--admin", "--metrics", "--config", "--log-level", "--pidfile"):
        assert opt in out.stdout
    ver = subprocess.run([bin_path(name), "--version"], capture_output=True, text=True, timeout=10)
    assert ver.returncode == 0 and ver.stdout.strip()


def test_bad_option_is_a_usage_error(name):
    out = subprocess.run([bin_path(name), "--no-such-option"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 64
    assert "no-such-option" in out.stderr


def test_console_builtins(name, daemon):
    d = daemon(name, admin_args(name), ready_port="{admin}")
    out = console(d.admin, "version", "stats", "show settings", "nosuchcommand", "help")
    # gearmand's console answers `version` the way gearadmin expects ("OK 1.1.x")
    assert ("OK " if name == "gearmand" else "VERSION " + name) in out.splitlines()[0]
    assert "STAT pid %d\r\n" % d.pid in out
    assert "STAT curr_connections " in out
    assert "admin = 127.0.0.1:%d\r\n" % d.admin in out
    if name == "gearmand":  # gearmand's own wording for an unknown admin command
        assert "ERR UNKNOWN_COMMAND" in out
    else:
        assert "ERROR unknown command 'nosuchcommand'" in out
    assert "shutdown [graceful]" in out


def test_console_live_set_and_refusal(name, daemon):
    d = daemon(name, admin_args(name), ready_port="{admin}")
    out = console(d.admin, "set log-level debug", "show settings", "set pidfile /x", "loglevel",
                  "set log-level loud", "loglevel")
    assert "OK\r\n" in out
    assert "log-level = debug  [live]" in out
    assert "ERROR setting 'pidfile' cannot change while running" in out
    assert "LOGLEVEL debug" in out
    # an invalid live value is refused, and the running one stays
    assert "ERROR log-level: 'loud' is not one of" in out
    assert out.count("LOGLEVEL debug") == 2


def test_metrics_endpoint_serves_prometheus_text(name, daemon):
    mport = free_port()
    d = daemon(name, DAEMONS[name] + ["--metrics", "127.0.0.1:%d" % mport])
    deadline = time.time() + 5
    while True:
        try:
            body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=5).read().decode()
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)
    assert "%s_current_connections " % name in body
    assert "%s_uptime_seconds_total " % name in body
    assert d.running()


def scrape(port):
    deadline = time.time() + 5
    while True:
        try:
            return urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5).read().decode()
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.05)


def test_metrics_follow_prometheus_conventions(name, daemon):
    """Parsed by the Prometheus client library's own text parser: every
    family typed once, counters named *_total, the exporter's names for the
    process figures."""
    from prometheus_client.parser import text_string_to_metric_families
    mport = free_port()
    d = daemon(name, DAEMONS[name] + ["--metrics", "127.0.0.1:%d" % mport])
    with socket.create_connection(("127.0.0.1", d.port)):
        body = scrape(mport)
    families = {f.name: f for f in text_string_to_metric_families(body)}
    types = [l.split()[2] for l in body.splitlines() if l.startswith("# TYPE ")]
    assert len(types) == len(set(types)), "a family typed twice"
    for f in families.values():
        assert f.type in ("counter", "gauge", "histogram", "unknown"), f  # unknown: "untyped"
        if f.type == "counter":
            assert all(s.name.endswith("_total") for s in f.samples), f
    # the process figures under the names the memcached exporter uses
    for fam, typ in (("current_connections", "gauge"), ("connections", "counter"), ("uptime_seconds", "counter"),
                     ("process_cpu_seconds", "counter"), ("process_open_fds", "gauge"),
                     ("process_max_fds", "gauge"), ("process_start_time_seconds", "gauge")):
        f = families.get("%s_%s" % (name, fam))
        assert f is not None and f.type == typ, (fam, f)
        assert f.documentation
    assert families["%s_current_connections" % name].samples[0].value >= 1
    assert families["%s_process_open_fds" % name].samples[0].value > 3


def test_pidfile_written_and_removed(name, daemon, tmp_path):
    pidfile = tmp_path / "d.pid"
    d = daemon(name, DAEMONS[name] + ["--pidfile", str(pidfile)])
    assert int(pidfile.read_text()) == d.pid
    d.stop()
    assert not pidfile.exists()


# mogstored and mogilefsd read their own --config (MogileFS's file format)
# and do not re-read it on SIGHUP yet.
def test_config_file_and_sighup_reload(name, daemon, tmp_path):
    conf = tmp_path / "d.conf"
    conf.write_text("# settings\nlog-level = warn\nadmin = 127.0.0.1:%d\n" % free_port())
    d = daemon(name, DAEMONS[name] + ["--config", str(conf)])
    admin_port = int(conf.read_text().split("127.0.0.1:")[1])
    wait_port(admin_port)  # the console opens just after the service port
    out = console(admin_port, "show settings")
    assert "log-level = warn" in out
    conf.write_text("log-level = debug\nadmin = 127.0.0.1:1\n")
    os.kill(d.pid, signal.SIGHUP)
    deadline = time.time() + 5
    while "log-level = debug" not in out and time.time() < deadline:
        time.sleep(0.05)
        out = console(admin_port, "show settings")
    assert "log-level = debug" in out
    # a setting that cannot change live keeps its start-up value
    assert "admin = 127.0.0.1:%d" % admin_port in out


def test_sd_notify_ready_and_stopping(name, daemon, tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    d = daemon(name, DAEMONS[name], env={"NOTIFY_SOCKET": path})
    assert sock.recv(256) == b"READY=1"
    d.stop()
    assert sock.recv(256) == b"STOPPING=1"
    sock.close()


def wait_accepted(port, timeout=5.0):
    """Until the listener on port has no connection waiting in its accept queue."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(["ss", "-Hltn", "sport = :%d" % port], capture_output=True, text=True).stdout
        queues = [line.split()[1] for line in out.splitlines() if line.strip()]
        if queues and all(q == "0" for q in queues):
            return
        time.sleep(0.02)
    raise TimeoutError("port %d: a connection is still waiting to be accepted" % port)


def test_graceful_stop_closes_idle_clients(name, daemon):
    d = daemon(name, DAEMONS[name])
    idle = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    # an idle client is one the daemon has accepted; one still in the kernel's
    # accept queue when the listener closes is reset by the kernel, not by us
    wait_accepted(d.port)
    t0 = time.time()
    d.stop()  # asserts exit status 0
    assert time.time() - t0 < 5, "an idle client held up the stop"
    assert idle.recv(16) == b""
    idle.close()


def test_console_shutdown_stops_the_daemon(name, daemon):
    d = daemon(name, admin_args(name), ready_port="{admin}")
    out = console(d.admin, "shutdown graceful")
    assert out.startswith("OK")
    d.proc.wait(timeout=10)
    assert d.proc.returncode == 0


# ---- ports: a busy port refuses to start; bare console/metrics ports bind loopback ----

THREADED = {"memcached": ["-t", "2"]}  # several loops: one SO_REUSEPORT socket each


def socket_inodes(pid):
    """Inodes of the sockets process pid holds open."""
    out = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            out.add(target[len("socket:["):-1])
    return out


def listening_addrs(port, pid):
    """Local addresses on which process pid has a socket LISTENing on port,
    from /proc/net/tcp and tcp6. Only that process's own sockets count: other
    tests running at the same time may listen on the same port number on
    other loopback addresses (127.0.10.x and the like)."""
    mine = socket_inodes(pid)
    out = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            f = open(table)
        except FileNotFoundError:
            continue
        with f:
            next(f)
            for line in f:
                parts = line.split()
                local, state, inode = parts[1], parts[3], parts[9]
                ip_hex, port_hex = local.split(":")
                if state == "0A" and int(port_hex, 16) == port and inode in mine:
                    raw = bytes.fromhex(ip_hex)
                    # the kernel prints each 32-bit word in host (little-endian) order
                    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                    out.add(socket.inet_ntop(family, raw))
    return out


def test_second_instance_on_a_busy_port_refuses_to_start(name, daemon, tmp_path):
    first = daemon(name, DAEMONS[name] + THREADED.get(name, []))
    second = subprocess.run(argv(name, first.port, tmp_path, THREADED.get(name, [])), capture_output=True, text=True,
                            timeout=20)
    assert second.returncode != 0
    assert "in use" in second.stderr + second.stdout
    # the first one still has every client
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", first.port), timeout=5):
            pass
    assert first.running()


def test_a_port_held_by_another_program_refuses_to_start(name, tmp_path):
    """The real peers refuse a port someone else holds, even one held with
    SO_REUSEPORT; so do we."""
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen(8)
    port = holder.getsockname()[1]
    try:
        out = subprocess.run(argv(name, port, tmp_path, THREADED.get(name, [])), capture_output=True, text=True,
                             timeout=20)
        assert out.returncode != 0
        assert "in use" in out.stderr + out.stdout
    finally:
        holder.close()


def test_bare_console_and_metrics_ports_bind_loopback_only(name, daemon):
    metrics = free_port()
    d = daemon(name, DAEMONS[name] + ["--admin", "{admin}", "--metrics", str(metrics)])
    wait_port(metrics, proc=d.proc)
    assert listening_addrs(d.admin, d.proc.pid) == {"127.0.0.1"}
    assert listening_addrs(metrics, d.proc.pid) == {"127.0.0.1"}
    assert "STAT" in console(d.admin, "stats")
    # an explicit address is what exposes them
    d2 = daemon(name, DAEMONS[name] + ["--admin", "0.0.0.0:{admin}"])
    assert listening_addrs(d2.admin, d2.proc.pid) == {"0.0.0.0"}


@pytest.mark.skipif(not os.path.exists(bin_path("perlbal")), reason="perlbal not built")
def test_perlbal_on_a_busy_port_refuses_to_start(tmp_path):
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen(8)
    port = holder.getsockname()[1]
    conf = tmp_path / "perlbal.conf"
    conf.write_text("CREATE SERVICE mgmt\n  SET role = management\n  SET listen = 127.0.0.1:%d\nENABLE mgmt\n" % port)
    try:
        proc = subprocess.Popen([bin_path("perlbal"), "-c", str(conf)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            rc = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = None
        assert rc is not None and rc != 0
    finally:
        holder.close()


def open_file_limits(pid):
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError("no open-file limit for %d" % pid)


def test_open_file_limit_raised_to_the_hard_limit_at_start(name, tmp_path):
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = 256
    port = free_port()
    # a low soft limit, as a shell's `ulimit -n` or an init system may leave it
    proc = subprocess.Popen(argv(name, port, tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard)))
    try:
        wait_port(port, proc=proc)
        got_soft, got_hard = open_file_limits(proc.pid)
        assert got_hard == got_soft
        assert got_soft > low
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)


def test_journald_stream_gets_native_priorities_and_one_pid(name, tmp_path):
    """Under systemd (JOURNAL_STREAM names stderr), each line carries its
    priority as <N> and no name[pid] (the journal records both); anywhere
    else, one name[pid] prefix."""
    port = free_port()
    args = argv(name, port, tmp_path)
    log = tmp_path / "stderr"
    with open(log, "wb") as f:
        st = os.fstat(f.fileno())
        env = dict(os.environ, JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino))
        proc = subprocess.Popen(args + ["--log-level", "info"], stdout=f, stderr=f, env=env)
        wait_port(port, proc=proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    lines = log.read_text().splitlines()
    assert lines, "nothing logged"
    assert all(l[:3] in ("<3>", "<4>", "<6>", "<7>") for l in lines), lines
    assert any(l.startswith("<6>") for l in lines)
    assert not any("[%d]" % proc.pid in l for l in lines)
    # not the journal: one name[pid] per line
    log2 = tmp_path / "stderr2"
    with open(log2, "wb") as f:
        proc = subprocess.Popen(args + ["--log-level", "info"], stdout=f, stderr=f,
                                env={k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"})
        wait_port(port, proc=proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    for l in log2.read_text().splitlines():
        assert l.count("[%d]" % proc.pid) == 1, l
        assert not l.startswith("<")


def test_daemon_flag_forks_after_start_up(name, tmp_path):
    """-d, as Debian's init scripts and configs use it: the command returns
    once the daemon serves (exit 0), the pidfile names the background
    process; a daemon that cannot start makes the command fail, with its
    error on the terminal."""
    port = free_port()
    pidfile = tmp_path / "d.pid"
    args = argv(name, port, tmp_path)
    r = subprocess.run(args + ["--daemon", "--pidfile", str(pidfile)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    pid = int(pidfile.read_text())
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # ready when the command returned: no waiting needed
        assert os.getsid(pid) != os.getsid(0)  # a session of its own, away from ours
        # a second one on the same port fails, and says why
        r2 = subprocess.run(args + ["--daemon"], capture_output=True, text=True, timeout=20)
        assert r2.returncode != 0
        assert "in use" in r2.stderr
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("daemon %d did not stop" % pid)
    assert not pidfile.exists()
