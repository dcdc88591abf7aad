"""`make install` lays out what a packager or admin needs: binaries, libraries,
headers, pkg-config files, systemd units with real paths and hardening, and
the sample configs the units point at."""
import glob
import os
import re
import subprocess

from conftest import BUILD_DIR, REPO


def install(tmp_path, prefix):
    dest = tmp_path / "root"
    subprocess.run(["make", "--no-print-directory", "-s", "-f", "build.mk", "install",
                    "BUILD=" + os.path.relpath(BUILD_DIR, REPO), "PREFIX=" + prefix, "DESTDIR=" + str(dest)],
                   cwd=REPO, check=True, capture_output=True, timeout=600)
    return dest



def test_install_layout_units_and_configs(tmp_path):
    dest = install(tmp_path, "/usr")
    units = sorted(glob.glob(str(dest / "usr/lib/systemd/system/*.service")))
    assert units, "no units installed"
    for unit in units:
        name = os.path.basename(unit)[:-len(".service")]
        text = open(unit).read()
        assert "@" not in re.sub(r"(?m)^#.*$", "", text), unit + " still has placeholders"
        execstart = re.search(r"(?m)^ExecStart=(\S+)(.*)$", text)
        assert execstart, unit
        assert os.access(str(dest) + execstart.group(1), os.X_OK), execstart.group(1)
        assert execstart.group(1) == "/usr/bin/" + name
        # the config the unit names is installed (prefix /usr -> /etc)
        conf = re.search(r"(?:--config|-c) (\S+)", execstart.group(2))
        assert conf and conf.group(1) == "/etc/stack/%s.conf" % name
        assert os.path.isfile(str(dest) + conf.group(1))
        for line in ("NoNewPrivileges=yes", "ProtectSystem=", "PrivateTmp=yes", "Restart=on-failure"):
            assert line in text, "%s lacks %s" % (unit, line)
        assert re.search(r"(?m)^Type=(notify|simple)$", text)
    for pc in glob.glob(str(dest / "usr/lib/pkgconfig/*.pc")):
        text = open(pc).read()
        assert "prefix=/usr\n" in text and "@" not in text
        lib = os.path.basename(pc)[:-3]
        assert os.path.isfile(str(dest / "usr/lib" / (lib + ".so")))
        assert os.path.isfile(str(dest / "usr/lib" / (lib + ".a")))


def test_install_keeps_an_edited_config(tmp_path):
    dest = install(tmp_path, "/usr/local")
    confs = glob.glob(str(dest / "usr/local/etc/stack/*.conf"))
    assert confs
    with open(confs[0], "a") as f:
        f.write("# edited by the admin\n")
    install(tmp_path, "/usr/local")
    assert open(confs[0]).read().endswith("# edited by the admin\n")


def test_install_never_replaces_a_file_it_did_not_install(tmp_path):
    """PREFIX=/usr must not silently replace Debian's memcached or its unit:
    a file already there that no earlier `make install` put there stops the
    install, untouched; our own files are replaced on the next install;
    FORCE=1 overrides."""
    dest = tmp_path / "root"
    foreign = dest / "usr/bin/memcached"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("#!/bin/sh\necho Debian's memcached\n")
    args = ["make", "--no-print-directory", "-s", "-f", "build.mk", "install",
            "BUILD=" + os.path.relpath(BUILD_DIR, REPO), "PREFIX=/usr", "DESTDIR=" + str(dest)]
    r = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0
    assert "usr/bin/memcached exists and was not installed by this tree" in r.stderr, r.stderr
    assert foreign.read_text().startswith("#!/bin/sh\necho Debian")
    # what we installed ourselves is ours to replace
    foreign.unlink()
    subprocess.run(args, cwd=REPO, check=True, capture_output=True, timeout=600)
    manifest = (dest / "usr/share/stack/installed-files").read_text().split()
    assert "/usr/bin/memcached" in manifest and "/usr/lib/systemd/system/memcached.service" in manifest
    subprocess.run(args, cwd=REPO, check=True, capture_output=True, timeout=600)
    # an admin's file under a unit name: refused; FORCE=1 replaces it
    other = tmp_path / "root2"
    unit = other / "usr/lib/systemd/system/gearmand.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Unit]\nDescription=the admin's\n")
    args2 = args[:-1] + ["DESTDIR=" + str(other)]
    r = subprocess.run(args2, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "gearmand.service" in r.stderr
    assert "the admin's" in unit.read_text()
    subprocess.run(args2 + ["FORCE=1"], cwd=REPO, check=True, capture_output=True, timeout=600)
    assert "the admin's" not in unit.read_text()


# ---- make run (deploy/run.sh) ------------------------------------------------

import queue
import signal
import socket
import struct
import threading
import time
import urllib.request

from conftest import free_port, wait_port


def gm_packet(kind, *args):
    body = b"\0".join(a if isinstance(a, bytes) else a.encode() for a in args)
    return b"\0REQ" + struct.pack(">II", kind, len(body)) + body


def gm_read(sock):
    head = b""
    while len(head) < 12:
        chunk = sock.recv(12 - len(head))
        assert chunk, "connection closed"
        head += chunk
    kind, size = struct.unpack(">II", head[4:])
    body = b""
    while len(body) < size:
        body += sock.recv(size - len(body))
    return kind, body.split(b"\0")


def free_port_run(n):
    """n consecutive bindable ports below the ephemeral range (run.sh hands
    metrics ports out one after another from a base, as make run does from
    9150; in the ephemeral range a neighbour may be some connection's)."""
    import random
    for _ in range(200):
        base = random.randrange(20000, 30000)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no free port run")


class Output:
    """run.sh's output, read line by line on a thread, so that a wait for a
    line ends at its deadline even when run.sh prints nothing more."""

    def __init__(self, proc):
        self.q = queue.Queue()
        self.eof = False
        threading.Thread(target=self._pump, args=(proc.stdout,), daemon=True).start()

    def _pump(self, f):
        for line in f:
            self.q.put(line)
        self.q.put(None)

    def line(self, deadline):
        if self.eof:
            return None
        try:
            line = self.q.get(timeout=max(0.0, deadline - time.time()))
        except queue.Empty:
            return None
        self.eof = line is None
        return line

    def rest(self, timeout=20):
        """Everything up to run.sh's end of output."""
        out, deadline = [], time.time() + timeout
        while (line := self.line(deadline)) is not None:
            out.append(line)
        assert self.eof, "run.sh's output did not end within %ss:\n%s" % (timeout, "".join(out))
        return "".join(out)


def read_until(output, text, timeout=20):
    """Lines of run.sh's output up to the one containing text."""
    out = []
    deadline = time.time() + timeout
    while (line := output.line(deadline)) is not None:
        out.append(line)
        if text in line:
            return out
    raise AssertionError("no %r in run.sh output:\n%s" % (text, "".join(out)))


def test_make_run_one_ctrl_c_is_a_graceful_stop(tmp_path):
    """The issue's case: Ctrl-C while a gearman job runs. The terminal's
    SIGINT reaches run.sh only; gearmand gets one SIGTERM, lets the job
    finish, exits 0. Metrics are on and their URLs printed; a daemon that
    dies is reported; the run directory is removed."""
    run_d = tmp_path / "run.d"
    run_d.mkdir()
    gm, mc = free_port(), free_port()
    (run_d / "10-test.sh").write_text(
        'start gearmand "127.0.0.1:%d" "-" -L 127.0.0.1 -p %d\n'
        'start memcached "127.0.0.1:%d" "-" -l 127.0.0.1 -p %d -U 0\n' % (gm, gm, mc, mc))
    env = dict(os.environ, RUN_D=str(run_d), BUILD=os.path.relpath(BUILD_DIR, REPO), METRICS_BASE=str(free_port_run(4)))
    env.pop("RUN_DIR", None)
    # SIGINT back to its default for run.sh: a shell started with it ignored
    # (a test run started in the background of a script) could not trap it
    proc = subprocess.Popen(["env", "--default-signal=INT", "bash", "deploy/run.sh"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output = Output(proc)
    try:
        out = read_until(output, "Running.")
        run_dir = re.search(r"run directory (\S+)\)", out[0]).group(1)
        urls = re.findall(r"metrics (http://\S+)", "".join(out))
        assert len(urls) == 2
        try:
            wait_port(gm)
            wait_port(mc)
        except TimeoutError:
            raise AssertionError("".join(out) + "".join(open(f).read() for f in glob.glob(run_dir + "/*.log")))
        for u in urls:
            wait_port(int(u.split(":")[2].split("/")[0]))
            assert "_current_connections" in urllib.request.urlopen(u, timeout=5).read().decode()
        # a daemon that dies is reported
        mc_pid = int(subprocess.run(["pgrep", "-f", "memcached -l 127.0.0.1 -p %d " % mc], capture_output=True,
                                    text=True).stdout.split()[0])
        os.kill(mc_pid, signal.SIGKILL)
        died = read_until(output, "exited with")
        assert any("memcached died" in l for l in died), died
        # a job in a worker's hands
        worker = socket.create_connection(("127.0.0.1", gm), timeout=20)
        client = socket.create_connection(("127.0.0.1", gm), timeout=20)
        worker.sendall(gm_packet(1, "slow"))                    # CAN_DO
        client.sendall(gm_packet(7, "slow", "", "work"))        # SUBMIT_JOB
        assert gm_read(client)[0] == 8                          # JOB_CREATED
        worker.sendall(gm_packet(9))                            # GRAB_JOB
        kind, args = gm_read(worker)
        assert kind == 11, (kind, args)                         # JOB_ASSIGN
        # Ctrl-C: the terminal signals the whole foreground process group
        os.killpg(proc.pid, signal.SIGINT)
        read_until(output, "Stopping")
        time.sleep(1.0)
        assert proc.poll() is None, "the stop did not wait for the job in flight"
        worker.sendall(gm_packet(13, args[0], b"done"))         # WORK_COMPLETE
        kind, args = gm_read(client)
        assert kind == 13 and args[-1] == b"done"
        worker.close()
        client.close()
        rest = output.rest()
        assert proc.wait(timeout=20) == 0
        assert "gearmand exited with 0" in rest, rest
        assert not os.path.exists(run_dir)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for d in re.findall(r"run directory (\S+)\)", "".join(out) if "out" in dir() else ""):
            subprocess.run(["rm", "-rf", d])
