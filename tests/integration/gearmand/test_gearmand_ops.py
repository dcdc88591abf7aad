"""Operating gearmand (issue 12): per-function Prometheus gauges parsed by
python3-prometheus-client, a debug line per request at -vv, and
gearman-cli used with gearman(1)'s letters, side by side with Debian's
`gearman` where both do the same thing."""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, os.path.dirname(__file__))
from conftest import bin_path  # noqa: E402
from test_gearmand_wire import Conn, packet, status, wait_for  # noqa: E402


def scrape(port):
    body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5).read().decode()
    return body, {f.name: f for f in text_string_to_metric_families(body)}


def by_function(fam):
    return {s.labels["function"]: s.value for s in fam.samples}


def test_per_function_gauges_parse_and_are_bounded(daemon):
    d = daemon("gearmand", ["-p", "{port}", "-L", "127.0.0.1", "--metrics", "127.0.0.1:{port2}",
                            "--metrics-max-functions", "3"])
    odd = 'we"ird\\name'
    c = Conn(d.port)
    for fn, n in (("resize", 3), (odd, 1)):
        for i in range(n):
            c.send("SUBMIT_JOB_BG", fn, "%s-%d" % (fn, i), "x")
            c.expect("JOB_CREATED")
    w = Conn(d.port)
    w.send("CAN_DO", "resize")
    w.send("CAN_DO", "idle")
    w.send("GRAB_JOB")
    w.expect("JOB_ASSIGN")                  # one resize job running, two queued
    for fn in ("late1", "late2"):            # past the bound of 3
        c.send("SUBMIT_JOB_BG", fn, "", "x")
        c.expect("JOB_CREATED")
    body, fams = scrape(d.port2)
    for name in ("gearmand_status_total", "gearmand_status_running", "gearmand_status_workers",
                 "gearmand_status_queued"):
        assert fams[name].type == "gauge", name
        assert "# HELP %s " % name in body and "# TYPE %s gauge" % name in body
    # in creation order, the first three: resize, the odd name, idle
    assert by_function(fams["gearmand_status_total"]) == {"resize": 3, odd: 1, "idle": 0}
    assert by_function(fams["gearmand_status_running"]) == {"resize": 1, odd: 0, "idle": 0}
    assert by_function(fams["gearmand_status_queued"]) == {"resize": 2, odd: 1, "idle": 0}
    assert by_function(fams["gearmand_status_workers"]) == {"resize": 1, odd: 0, "idle": 1}
    assert fams["gearmand_status_functions_omitted"].samples[0].value == 2
    # the same numbers as the admin `status` gearman exporters read
    st = status(d.port)
    assert st["resize"] == (3, 1, 1) and st["late1"] == (1, 0, 0)
    # the job counters are typed counters now
    assert fams["gearmand_jobs_submitted"].type == "counter"
    assert fams["gearmand_jobs_submitted"].samples[0].value == 6
    assert fams["gearmand_jobs_current"].type == "gauge"


def test_metrics_every_function_when_unbounded(daemon):
    d = daemon("gearmand", ["-p", "{port}", "-L", "127.0.0.1", "--metrics", "127.0.0.1:{port2}",
                            "--metrics-max-functions", "0"])
    c = Conn(d.port)
    c.raw(b"".join(packet("SUBMIT_JOB_BG", "f%d" % i, "", "x") for i in range(1500)))
    for _ in range(1500):
        c.expect("JOB_CREATED")
    _, fams = scrape(d.port2)
    assert len(by_function(fams["gearmand_status_total"])) == 1500
    assert fams["gearmand_status_functions_omitted"].samples[0].value == 0


def test_vv_logs_a_line_per_request_without_job_data(daemon):
    d = daemon("gearmand", ["-p", "{port}", "-L", "127.0.0.1", "-vv"])
    c = Conn(d.port)
    c.send("SUBMIT_JOB_BG", "thumb\nnail", "uniq-1", "secret payload")
    h = c.expect("JOB_CREATED")[0].decode()
    c.send("GET_STATUS", h)
    c.expect("STATUS_RES")
    c.raw(b"status\n")
    assert wait_for(lambda: b"text status" in open(d.log_path, "rb").read())
    log = open(d.log_path, "rb").read().decode()
    assert "SUBMIT_JOB_BG thumb\\x0anail uniq-1 [14 bytes]" in log, log
    assert "GET_STATUS %s" % h in log
    assert "secret payload" not in log
    # the longest line: four long arguments of bytes that are all escaped
    # (a byte becomes four characters) stay one bounded line
    odd = "\x01" * 500
    c3 = Conn(d.port)
    c3.send("SUBMIT_REDUCE_JOB", odd, "\x02" * 60, odd, odd, "data")
    c3.recv(10)
    c3.send("ECHO_REQ", "after")
    assert c3.expect("ECHO_RES") == [b"after"]
    lines = [ln for ln in open(d.log_path, "rb").read().decode().splitlines() if "SUBMIT_REDUCE_JOB" in ln]
    assert len(lines) == 1 and len(lines[0]) < 1100 and lines[0].endswith("[4 bytes]"), lines
    # -v alone: no per-request lines
    q = daemon("gearmand", ["-p", "{port}", "-L", "127.0.0.1", "-v"])
    c2 = Conn(q.port)
    c2.send("ECHO_REQ", "hi")
    c2.expect("ECHO_RES")
    assert "ECHO_REQ" not in open(q.log_path, "rb").read().decode()


# ---- gearman-cli with gearman(1)'s letters -----------------------------------

def run(tool, port, *args, input=None):
    exe = bin_path("gearman-cli") if tool == "ours" else "gearman"
    return subprocess.run([exe, "-h", "127.0.0.1", "-p", str(port)] + list(args), input=input,
                          capture_output=True, timeout=20)


def test_cli_help_and_version():
    exe = bin_path("gearman-cli")
    for flag in ("--help", "-H"):
        r = subprocess.run([exe, flag], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0
        for letter in ("-f", "-h", "-H", "-v", "-p", "-t", "-i", "-S", "-b", "-I", "-L", "-n", "-N", "-P",
                       "-s", "-u", "-c", "-w"):
            assert "\t%s " % letter in r.stdout or "\t%s, " % letter in r.stdout, letter
    for flag in ("--version", "-V"):
        r = subprocess.run([exe, flag], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0 and r.stdout.startswith("gearman-cli ")
    r = subprocess.run([exe, "--no-such-option"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "Client mode" in r.stderr
    r = subprocess.run([exe, "-S", "-f", "x", "d"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "SSL is not built" in r.stderr


def test_cli_client_letters_match_gearman(daemon, tmp_path):
    """The same command lines through Debian's gearman and gearman-cli give
    the same output, against one worker that brackets each job's data."""
    d = daemon("gearmand", ["-p", "{port}", "-L", "127.0.0.1"])
    pid = str(tmp_path / "worker.pid")
    w = subprocess.Popen([bin_path("gearman-cli"), "-h", "127.0.0.1", "-p", str(d.port), "-w", "-f", "br",
                          "-f", "br2", "-i", pid, "--", "sh", "-c", 'printf "[%s]" "$(cat)"'])
    try:
        assert wait_for(lambda: status(d.port).get("br2", (0, 0, 0))[2] == 1)
        assert int(open(pid).read()) == w.pid             # -i: the pid file
        cases = [
            (("-f", "br", "a", "b"), None),               # one job per argument
            (("-f", "br"), b"all of stdin"),              # stdin is one job
            (("-n", "-f", "br"), b"x\ny\n"),              # -n: one job per line
            (("-N", "-f", "br"), b"x\ny\n"),              # -N: without the newline
            (("-P", "-f", "br", "p"), None),              # -P: "FUNC: " before each result
            (("-s", "-f", "br"), b"ignored"),             # -s: no stdin
            (("-f", "br", "-f", "br2", "q"), None),       # every -f gets the job
            (("-I", "-f", "br", "hi"), None),
            (("-L", "-f", "br", "lo"), None),
            (("-u", "key", "-f", "br", "uniq"), None),
        ]
        for args, data in cases:
            theirs, ours = run("gearman", d.port, *args, input=data), run("ours", d.port, *args, input=data)
            assert ours.returncode == theirs.returncode == 0, (args, ours, theirs)
            assert ours.stdout == theirs.stdout, (args, ours.stdout, theirs.stdout)
        # -b: nothing on stdout; -v shows the handle as gearman's "Task created:"
        assert run("ours", d.port, "-b", "-f", "bgq", "x").stdout == b""
        r = run("ours", d.port, "-v", "-b", "-f", "bgq", "x")
        assert r.stdout.startswith(b"Task created: H:")
        assert wait_for(lambda: status(d.port).get("bgq", (0,))[0] == 2)
    finally:
        w.send_signal(signal.SIGKILL)
        w.wait()


def test_cli_worker_letters_c_and_n(daemon):
    d = daemon("gearmand", ["-p", "{port}", "-L", "127.0.0.1"])
    port = str(d.port)
    # -c 2: exits after two jobs
    w = subprocess.Popen([bin_path("gearman-cli"), "-h", "127.0.0.1", "-p", port, "-w", "-c", "2", "-f", "up",
                          "--", "tr", "a-z", "A-Z"])
    assert wait_for(lambda: status(d.port).get("up", (0, 0, 0))[2] == 1)
    assert run("gearman", d.port, "-f", "up", "one").stdout == b"ONE"
    assert run("ours", d.port, "-f", "up", "two").stdout == b"TWO"
    assert w.wait(timeout=20) == 0
    # -n: each line of the command's output goes out as WORK_DATA
    w = subprocess.Popen([bin_path("gearman-cli"), "-h", "127.0.0.1", "-p", port, "-w", "-n", "-f", "lines",
                          "--", "printf", "l1\\nl2\\n"])
    try:
        assert wait_for(lambda: status(d.port).get("lines", (0, 0, 0))[2] == 1)
        c = Conn(d.port)
        c.send("SUBMIT_JOB", "lines", "", "x")
        c.expect("JOB_CREATED")
        got = []
        deadline = time.time() + 20
        while time.time() < deadline:
            name, args = c.recv(20)
            got.append((name, args[1:]))
            if name == "WORK_COMPLETE":
                break
        assert got == [("WORK_DATA", [b"l1\n"]), ("WORK_DATA", [b"l2\n"]), ("WORK_COMPLETE", [b""])], got
        # the same through Debian's gearman: the lines arrive in order
        assert run("gearman", d.port, "-f", "lines", "x").stdout == b"l1\nl2\n"
    finally:
        w.send_signal(signal.SIGKILL)
        w.wait()


def test_a_half_closed_peer_still_gets_its_replies(daemon):
    """`echo version | nc -N host 4730`: the request and the peer's FIN come
    together; replies leave at the end of the loop iteration, before the
    EOF is read, so none is lost (binary and text, 4 loops)."""
    d = daemon("gearmand", ["-p", "{port}", "-L", "127.0.0.1"])
    got = 0
    for i in range(100):
        s = socket.create_connection(("127.0.0.1", d.port))
        s.sendall(b"version\n" if i % 2 else packet("ECHO_REQ", "hi"))
        s.shutdown(socket.SHUT_WR)
        s.settimeout(10)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        got += data.startswith(b"OK " if i % 2 else b"\0RES")
    assert got == 100

