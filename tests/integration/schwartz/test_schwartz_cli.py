"""The schwartz CLI (on libschwartz): insert with options and from stdin,
work's exit-status contract (0 completed, 75 retried per policy, other =
failed for good), queues, and a server list with a dead first entry."""
import socket

from sw_helpers import SW, client, schwartz_cli, schwartzd  # noqa: F401 (fixtures)


def test_insert_options_and_stdin(schwartzd, client):
    d = schwartzd()
    r = schwartz_cli(d.port, "insert", "Opt", "an arg", "--uniqkey", "u1", "--priority", "7", "--coalesce", "x.org")
    assert r.returncode == 0, r.stderr
    h = r.stdout.decode().strip()
    lines = client(d).lines("inspect " + h)
    assert lines[0] == "JOB %s Opt 6 0" % h
    fields = dict(l.split()[1:3] for l in lines if l.startswith("FIELD "))
    assert fields["uniqkey"] == "u1" and fields["priority"] == "7" and fields["coalesce"] == "x.org"
    r = schwartz_cli(d.port, "insert", "Opt", "again", "--uniqkey", "u1")
    assert r.returncode == 1 and b"DUPLICATE" in r.stderr
    r = schwartz_cli(d.port, "insert", "Stdin", input=b"\x00bin\r\nary")
    assert r.returncode == 0
    assert client(d).grab(1, 60, "Stdin")[0][2] == b"\x00bin\r\nary"


def test_work_exit_codes(schwartzd, client, tmp_path):
    d = schwartzd()
    c = client(d)
    assert c.cmd("policy Job max_retries=1 keep_exit_status_for=600") == "OK"
    ok, temp, bad = c.insert("Job", b"0"), c.insert("Job", b"75"), c.insert("Job", b"9")
    # the command exits with the status its stdin names
    r = schwartz_cli(d.port, "work", "Job", "--idle-exit", "1", "--", "sh", "-c", 'exit "$(cat)"')
    assert r.returncode == 0, r.stderr
    assert c.cmd("status " + ok).startswith("STATUS 0 ")
    assert c.cmd("status " + bad).startswith("STATUS 9 ")
    # 75: failed and retried once per the policy, then failed for good (2 error rows; 9 left 1)
    assert c.cmd("status " + temp).startswith("STATUS 75 ")
    import sqlite3
    con = sqlite3.connect(str(tmp_path / "jobs.db"))
    msgs = [m for (m,) in con.execute("SELECT message FROM error WHERE jobid = ?", (int(bad.split("-")[1]),))]
    con.close()
    assert msgs == ["command exited with status 9"]
    assert "Job ready 0 running 0 failed 3" in schwartz_cli(d.port, "queues").stdout.decode()


def test_server_list_skips_a_dead_server(schwartzd):
    d = schwartzd()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()
    r = schwartz_cli(d.port, "insert", "L", "x")  # sanity
    assert r.returncode == 0
    import subprocess
    from sw_helpers import bin_path
    r = subprocess.run([bin_path("schwartz"), "-s", "127.0.0.1:%d,127.0.0.1:%d" % (dead, d.port), "insert", "L", "y"],
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert len(SW(d.port).lines("list L")) == 4  # two JOB lines + their blocks


def test_work_keeps_the_lease_of_a_long_job(schwartzd, client, tmp_path):
    """grab-for 2 s, a job that runs 5 s: the worker touches the lease, so
    no one else gets the job meanwhile, and it is completed once."""
    d = schwartzd()
    c = client(d)
    h = c.insert("Long", b"x")
    import subprocess
    import time
    from sw_helpers import bin_path
    marker = tmp_path / "ran"
    w = subprocess.Popen([bin_path("schwartz"), "-s", "127.0.0.1:%d" % d.port, "work", "Long", "--max-jobs", "1",
                          "--grab-for", "2", "--", "sh", "-c", "echo run >> %s; sleep 5" % marker])
    deadline = time.time() + 10
    while not marker.exists():
        assert time.time() < deadline
        time.sleep(0.05)
    for _ in range(8):  # 4 s: well past the 2 s lease
        assert c.grab(1, 60, "Long") == []
        time.sleep(0.5)
    assert w.wait(timeout=20) == 0
    assert marker.read_text() == "run\n"
    assert c.cmd("inspect " + h).startswith("ERR NOT_FOUND")  # completed
