"""Packaging: `dpkg-buildpackage -b` makes installable .debs (one per daemon,
libstack1, libstack-dev) whose files never collide with Debian's memcached,
perlbal and gearman-job-server; the installed daemon runs from its unit's
ExecStart; under a real systemd (a container booted by systemd-nspawn) the
.debs install with dpkg, the units start as their own users, log to the
journal at native priorities, reload and stop cleanly, and a unit that
cannot start fails with its reason at error priority; man pages come from
--help and render; `make install` keeps an
admin's configs, refuses to overwrite files it did not write, and installs
versioned sonames; `make help` lists the targets.

The .debs are built once per session from a copy of the tree under a
temporary directory (the build's objects are reused when they are a plain
build, so only packaging work is left)."""
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import tarfile
import time

import pytest

from conftest import BUILD_DIR, REPO, free_port, wait_port

MULTIARCH = subprocess.run(["dpkg-architecture", "-qDEB_HOST_MULTIARCH"], capture_output=True,
                           text=True).stdout.strip()
DEBIAN_PEERS = ["memcached", "perlbal", "gearman-job-server"]


def programs():
    """debian/programs: (binary, package, installed name, section)."""
    rows = []
    for line in open(os.path.join(REPO, "debian", "programs")):
        if line.strip() and not line.startswith("#"):
            binary, pkg, name, section = line.split()[:4]
            rows.append((binary, pkg, name, section))
    return rows


DAEMONS = [p for p in programs() if p[3] == "8"]
PACKAGES = sorted({p[1] for p in programs()}) + ["libstack1", "libstack-dev"]


def source_files():
    if os.path.isdir(os.path.join(REPO, ".git")) or os.path.isfile(os.path.join(REPO, ".git")):
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                             capture_output=True).stdout.decode()
        return [f for f in out.split("\0") if f and os.path.lexists(os.path.join(REPO, f))]
    files = []
    for root, dirs, names in os.walk(REPO):
        dirs[:] = [d for d in dirs if not (root == REPO and (d.startswith("build") or d.startswith(".")))]
        files += [os.path.relpath(os.path.join(root, n), REPO) for n in names]
    return files


@pytest.fixture(scope="module")
def debs(tmp_path_factory):
    top = tmp_path_factory.mktemp("debs")
    src = top / "src"
    for f in source_files():
        dst = src / f
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.join(REPO, f), str(dst), follow_symlinks=False)
    # reuse a plain build's objects (not an ASan one: its objects need -fsanitize to link)
    # (-nc: no `debian/rules clean`, which would remove them; the copy is fresh anyway)
    args = ["dpkg-buildpackage", "-b", "-us", "-uc"]
    if os.path.basename(os.path.normpath(BUILD_DIR)) == "build" and os.path.isdir(BUILD_DIR):
        for sub in ("obj", "pic", "lib", "bin"):
            if os.path.isdir(os.path.join(BUILD_DIR, sub)):
                shutil.copytree(os.path.join(BUILD_DIR, sub), str(src / "debian" / "build" / sub), symlinks=True)
        args.append("-nc")
    env = dict(os.environ, DEB_BUILD_OPTIONS="noddebs parallel=2 nocheck")
    env.pop("MAKEFLAGS", None)
    env.pop("MFLAGS", None)
    r = subprocess.run(args, cwd=str(src), env=env,
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    found = {}
    for deb in glob.glob(str(top / "*.deb")):
        found[os.path.basename(deb).split("_")[0]] = deb
    return found


def contents(deb):
    """Non-directory paths in a .deb, as installed (leading '/')."""
    out = subprocess.run(["dpkg-deb", "--fsys-tarfile", deb], check=True, capture_output=True).stdout
    import io
    with tarfile.open(fileobj=io.BytesIO(out)) as t:
        return {m.name[1:]: m for m in t.getmembers() if not m.isdir()}


def usrmerged(path):
    """Debian 12 is merged-/usr: /lib/x and /usr/lib/x are one file."""
    for d in ("/lib/", "/bin/", "/sbin/"):
        if path.startswith(d):
            return "/usr" + path
    return path


def test_every_built_program_is_packaged():
    """A new program in some <component>.mk must get a line in debian/programs."""
    built = sorted(os.listdir(os.path.join(BUILD_DIR, "bin")))
    assert built
    assert sorted(p[0] for p in programs()) == built


def test_build_depends_cover_every_build_list():
    """deploy/deps/*.build is what `make` needs (a unit test links libmemcached,
    for one): a clean chroot with only the Build-Depends must build too."""
    control = open(os.path.join(REPO, "debian", "control")).read()
    field = re.search(r"(?ms)^Build-Depends:(.*?)^\S", control).group(1)
    build_depends = {re.sub(r"\s*\(.*", "", d).strip() for d in field.split(",")}
    needed = set()
    for path in glob.glob(os.path.join(REPO, "deploy", "deps", "*.build")):
        for line in open(path):
            needed.update(line.split("#")[0].split())
    needed.discard("build-essential")   # implied for every Debian build
    assert needed <= build_depends, sorted(needed - build_depends)
    packaging = open(os.path.join(REPO, "deploy", "deps", "packaging.test")).read()
    assert "help2man" in packaging and "debhelper" in packaging


def test_installed_programs_start_with_the_installed_files(installed):
    for binary, pkg, name, section in programs():
        path = str(installed) + ("/usr/sbin/" if section == "8" else "/usr/bin/") + name
        assert os.access(path, os.X_OK), path
        if section == "8":
            r = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
            assert r.returncode == 0 and r.stdout.strip(), (name, r.stderr)


def test_every_package_is_built(debs):
    assert sorted(debs) == sorted(PACKAGES)


TOOLS_WITH_HELP = ["mogile", "mogile-bench", "schwartz", "userdb", "usermove"]


def test_tools_with_help_get_a_man_page_from_it(debs):
    for binary, pkg, name, section in programs():
        if section != "1" or binary not in TOOLS_WITH_HELP:
            continue
        files = contents(debs[pkg])
        assert "/usr/bin/" + name in files
        page = "/usr/share/man/man1/%s.1.gz" % name
        assert page in files, (name, sorted(f for f in files if "/man/" in f))


def test_each_daemon_package_has_binary_unit_config_user_and_man_page(debs):
    for binary, pkg, name, _ in DAEMONS:
        files = contents(debs[pkg])
        assert files["/usr/sbin/" + name].mode & 0o111, name
        assert "/lib/systemd/system/%s.service" % name in files
        assert "/etc/stack/%s.conf" % binary in files
        assert "/usr/share/man/man8/%s.8.gz" % name in files
        assert "/usr/lib/sysusers.d/%s.conf" % pkg in files
        assert "/usr/share/doc/%s/README.Debian" % pkg in files
        conffiles = subprocess.run(["dpkg-deb", "-I", debs[pkg], "conffiles"], capture_output=True,
                                   text=True).stdout.split()
        assert "/etc/stack/%s.conf" % binary in conffiles, "config is not a conffile"


def test_no_file_collides_with_debians_own_packages(debs):
    ours = {}
    for pkg in PACKAGES:
        for path in contents(debs[pkg]):
            ours[usrmerged(path)] = pkg
    for peer in DEBIAN_PEERS:
        listing = subprocess.run(["dpkg", "-L", peer], capture_output=True, text=True)
        assert listing.returncode == 0, peer + " is not installed (deploy/deps lists it)"
        theirs = {usrmerged(p) for p in listing.stdout.split("\n") if p and not os.path.isdir(p)}
        assert theirs, peer
        clash = sorted((p, ours[p]) for p in theirs if p in ours)
        assert not clash, "%s collides: %s" % (peer, clash)


def test_library_package_has_versioned_sonames_in_the_multiarch_libdir(debs, tmp_path):
    libdir = "/usr/lib/%s/" % MULTIARCH
    lib = contents(debs["libstack1"])
    dev = contents(debs["libstack-dev"])
    subprocess.run(["dpkg-deb", "-x", debs["libstack1"], str(tmp_path)], check=True)
    for name in ("mc", "gm", "mogile", "schwartz"):
        real = libdir + "lib%s.so.1.0.0" % name
        assert lib[real].isfile()
        assert lib[libdir + "lib%s.so.1" % name].linkname == "lib%s.so.1.0.0" % name
        dyn = subprocess.run(["readelf", "-d", str(tmp_path) + real], check=True, capture_output=True,
                             text=True).stdout
        assert "Library soname: [lib%s.so.1]" % name in dyn
        # the development package: unversioned link, static library, header, pkg-config file
        assert dev[libdir + "lib%s.so" % name].linkname == "lib%s.so.1.0.0" % name
        assert libdir + "lib%s.a" % name in dev
        assert "/usr/include/lib%s.h" % name in dev
        assert libdir + "pkgconfig/lib%s.pc" % name in dev
    subprocess.run(["dpkg-deb", "-x", debs["libstack-dev"], str(tmp_path)], check=True)
    pc = open(str(tmp_path) + libdir + "pkgconfig/libmc.pc").read()
    assert "libdir=" + libdir.rstrip("/") + "\n" in pc
    assert "@" not in pc


@pytest.fixture(scope="module")
def installed(debs, tmp_path_factory):
    """The .debs installed by dpkg -i into a throwaway root. The root has no
    shell, so maintainer scripts run outside it with DPKG_ROOT set; every
    snippet in ours honours DPKG_ROOT (systemd-sysusers --root,
    deb-systemd-helper), so the host is not touched."""
    root = tmp_path_factory.mktemp("root")
    for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"):
        (root / d).mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text("")
    r = subprocess.run(["dpkg", "--root=" + str(root), "--force-script-chrootless", "--force-depends",
                        "-i"] + [debs[p] for p in PACKAGES], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return root


def test_dpkg_records_the_packages_and_sysusers_creates_one_user_per_daemon(installed):
    status = subprocess.run(["dpkg-query", "--admindir=%s/var/lib/dpkg" % installed, "-W",
                             "-f=${Package} ${Status}\n"], check=True, capture_output=True, text=True).stdout
    for pkg in PACKAGES:
        assert re.search(r"(?m)^%s install ok installed$" % re.escape(pkg), status), status
    users = {line.split(":")[0]: line.split(":") for line in open(str(installed / "etc/passwd"))}
    for _, _, name, _ in DAEMONS:
        assert name in users, name
        assert subprocess.run(["getent", "passwd", name], capture_output=True).returncode != 0, \
            "the host got a user"
        assert int(users[name][2]) < 1000 and users[name][6].strip().endswith("nologin")


def test_units_verify_and_name_the_packaged_user_binary_and_config(installed, tmp_path):
    for binary, pkg, name, _ in DAEMONS:
        text = (installed / "lib/systemd/system" / (name + ".service")).read_text()
        execstart = re.search(r"(?m)^ExecStart=(\S+)", text).group(1)
        assert execstart == "/usr/sbin/" + name
        assert "/etc/stack/%s.conf" % binary in text
        assert "DynamicUser" not in text
        user = re.search(r"(?m)^User=(\S+)$", text) or re.search(r"(?m)^ExecStart=.* --user (\S+)", text)
        assert user and user.group(1) == name, name
        assert "Documentation=man:%s(8)" % name in text
        # systemd's own check, with the binary where it was unpacked
        copy = tmp_path / (name + ".service")
        copy.write_text(text.replace("=/usr/sbin/", "=%s/usr/sbin/" % installed))
        r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0 and name not in r.stderr, r.stderr


def test_state_and_runtime_paths_are_the_packages_own(installed):
    """Unit and config agree on /var/lib/stack-<daemon> (never Debian's
    /var/lib/gearmand etc.), and that directory is created for the user."""
    tmpfiles = "".join(open(f).read() for f in glob.glob(str(installed / "usr/lib/tmpfiles.d/*.conf")))
    for binary, pkg, name, _ in DAEMONS:
        unit = (installed / "lib/systemd/system" / (name + ".service")).read_text()
        conf = (installed / "etc/stack" / (binary + ".conf")).read_text()
        for m in re.finditer(r"(?m)^(State|Runtime)Directory=(\S+)$", unit):
            assert m.group(2) == name, (name, m.group(0))
        paths = set(re.findall(r"/(?:var/lib|run)/[^/\s;]+", re.sub(r"(?m)^\s*#.*$", "", unit + conf)))
        for path in paths:
            assert path.rsplit("/", 1)[1] == name, (name, path)
            if path.startswith("/var/lib/"):
                assert "StateDirectory=" + name in unit or \
                    re.search(r"(?m)^d %s \d+ %s " % (re.escape(path), name), tmpfiles), (name, path)


def test_installed_memcached_serves_from_its_units_execstart(installed):
    text = (installed / "lib/systemd/system/stack-memcached.service").read_text()
    argv = re.search(r"(?m)^ExecStart=(.*)$", text).group(1).split()
    argv = [str(installed) + a if a.startswith(("/usr/", "/etc/")) else a for a in argv]
    port = free_port()
    # the command line wins over the packaged config: a free port, no console
    proc = subprocess.Popen(argv + ["--port", str(port), "--admin", ""], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc=proc)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"set packaged 0 0 2\r\nok\r\nget packaged\r\nversion\r\n")
            data = b""
            while not data.endswith(b"\r\n") or b"VERSION" not in data:
                chunk = s.recv(4096)
                assert chunk, data
                data += chunk
        assert data.startswith(b"STORED\r\nVALUE packaged 0 2\r\nok\r\nEND\r\nVERSION ")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert proc.returncode == 0


def test_man_pages_render_and_list_every_option_of_help(installed):
    for binary, pkg, name, _ in DAEMONS:
        page = installed / "usr/share/man/man8" / (name + ".8.gz")
        r = subprocess.run(["man", "-l", str(page)], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, MANWIDTH="200", MAN_KEEP_FORMATTING="", PAGER="cat"))
        assert r.returncode == 0, r.stderr
        text = r.stdout
        assert re.search(r"(?m)^NAME\n\s+%s - \S" % re.escape(name), text), text[:300]
        assert "/etc/stack/%s.conf" % binary in text
        helptext = subprocess.run([str(installed) + "/usr/sbin/" + name, "--help"], capture_output=True,
                                  text=True).stdout
        options = re.findall(r"--[a-z][a-z0-9-]+", helptext)
        assert options, name
        for opt in set(options):
            assert opt in text, "%s(8) lacks %s" % (name, opt)


# ---- under a real systemd ------------------------------------------------------
# This machine's PID 1 is not systemd, so a Debian 12 system is booted with
# systemd-nspawn (systemd as PID 1 of its own namespaces, a private network)
# on an overlay of this machine's own root: no debootstrap, nothing
# downloaded, every write lands in a temporary upper directory. It boots to
# basic.target (the image's own enabled services, e.g. Debian's memcached,
# stay down), then the .debs are installed with dpkg inside it, maintainer
# scripts and all, and the units are started with systemctl.

# daemons that run with the packaged defaults alone
# (djabberd's STARTTLS certificate is made self-signed by its postinst)
STANDALONE = ["stack-memcached", "stack-perlbal", "stack-gearmand", "stack-mogilefsd", "stack-mogstored",
              "stack-schwartzd", "stack-djabberd"]


class Booted:
    def __init__(self, top):
        self.top = top
        self.root = top / "root"
        self.mounted = False
        self.proc = None
        self.log = None

    def start(self, debs):
        for d in ("upper", "work", "root"):
            (self.top / d).mkdir()
        top = self.top
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", "lowerdir=/,upperdir=%s,workdir=%s"
                        % (top / "upper", top / "work"), str(self.root)], check=True, capture_output=True)
        self.mounted = True
        # /tmp inside is a fresh tmpfs: the packages go to /srv
        dst = self.root / "srv" / "stack-debs"
        dst.mkdir(parents=True, exist_ok=True)
        for pkg in PACKAGES:
            shutil.copy(debs[pkg], str(dst))
        # its own machine id (the journal is the container's, not linked to the host's)
        mid = subprocess.run(["systemd-id128", "new"], capture_output=True, text=True, check=True).stdout
        (self.root / "etc" / "machine-id").write_text(mid)
        self.log = open(str(top / "nspawn.log"), "ab")
        self.proc = subprocess.Popen(["systemd-nspawn", "-D", str(self.root), "--register=no", "--keep-unit",
                                      "--private-network", "-b", "--console=passive", "--",
                                      "systemd.unit=basic.target"], stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.leader = self._leader()
        deadline = time.time() + 90
        while True:  # the manager's bus socket appears a moment after it starts
            r = self.sh("systemctl is-system-running --wait", timeout=90, check=False)
            if r.stdout.strip() in ("running", "degraded") or time.time() > deadline:
                break
            time.sleep(0.2)
        assert r.stdout.strip() in ("running", "degraded"), (r.stdout, r.stderr, self.boot_log())

    def _leader(self):
        """systemd's pid: the nspawn process's child."""
        deadline = time.time() + 30
        while time.time() < deadline:
            assert self.proc.poll() is None, self.boot_log()
            kids = []
            for task in glob.glob("/proc/%d/task/*/children" % self.proc.pid):
                try:
                    kids += open(task).read().split()
                except OSError:
                    pass
            for k in kids:
                try:
                    if open("/proc/%s/comm" % k).read().strip() == "systemd":
                        return int(k)
                except OSError:
                    pass
            time.sleep(0.1)
        raise AssertionError("no systemd in the container\n" + self.boot_log())

    def boot_log(self):
        try:
            return open(str(self.top / "nspawn.log"), errors="replace").read()[-3000:]
        except OSError:
            return ""

    def sh(self, cmd, timeout=60, check=True, net_only=False):
        """Run cmd inside (all namespaces), or only in its network namespace
        with this machine's programs (net_only)."""
        ns = ["-n"] if net_only else ["-a"]
        argv = ["nsenter", "-t", str(self.leader)] + ns + (["sh", "-c", cmd] if isinstance(cmd, str) else cmd)
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check:
            assert r.returncode == 0, "%s: %s%s" % (cmd, r.stdout[-2000:], r.stderr[-2000:])
        return r

    def journal(self, unit):
        out = self.sh("journalctl --no-pager -o json -u %s" % unit).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # nspawn: an orderly poweroff of the container
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log:
            self.log.close()
        if self.mounted:
            if subprocess.run(["umount", str(self.root)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(self.root)], capture_output=True)
        shutil.rmtree(str(self.top), ignore_errors=True)


@pytest.fixture(scope="module")
def booted(debs, tmp_path_factory):
    b = Booted(tmp_path_factory.mktemp("nspawn"))
    try:
        b.start(debs)
        yield b
    finally:
        b.close()


def messages(entries, ident):
    return [(int(e["PRIORITY"]), e["MESSAGE"]) for e in entries if e.get("SYSLOG_IDENTIFIER") == ident]


def test_debs_install_under_systemd_and_units_start_log_and_stop(booted):
    r = booted.sh("dpkg -i /srv/stack-debs/*.deb", timeout=300)
    assert "error" not in r.stderr.lower(), r.stderr
    for unit in STANDALONE:
        booted.sh("systemctl start %s" % unit)  # Type=notify ones return once READY=1 came
        assert booted.sh("systemctl is-active %s" % unit, check=False).stdout.strip() == "active", \
            booted.sh("systemctl status --no-pager %s" % unit, check=False).stdout
        # it runs as its own user (the package's sysusers file; User= or --user)
        pid = booted.sh("systemctl show -p MainPID --value %s" % unit).stdout.strip()
        user = booted.sh("ps -o user= -p %s" % pid).stdout.strip()
        assert user == unit, (unit, user)
    # the journal: native priorities, the message without a "<6>" or a name[pid] prefix
    for unit in ("stack-memcached", "stack-gearmand", "stack-mogilefsd", "stack-schwartzd", "stack-djabberd"):
        msgs = messages(booted.journal(unit), unit)
        ready = [(p, m) for p, m in msgs if re.search(r"\bready\b", m)]
        assert ready and ready[0][0] == 6, msgs
        assert all(not re.match(r"<\d>|\S+\[\d+\]:", m) for _, m in msgs), msgs
    # the packaged memcached serves on its configured port inside the container
    client = ("import socket; s = socket.create_connection(('127.0.0.1', 11211), 5); "
              "s.sendall(b'set k 0 0 2\\r\\nok\\r\\nget k\\r\\n'); import time; time.sleep(0.3); "
              "print(s.recv(4096))")
    r = booted.sh(["/usr/bin/python3", "-c", client], net_only=True)
    assert "STORED\\r\\nVALUE k 0 2\\r\\nok\\r\\nEND" in r.stdout, r.stdout
    # -vv through a drop-in: a debug line per command, at debug priority (7)
    booted.sh("mkdir -p /etc/systemd/system/stack-schwartzd.service.d && printf '[Service]\\nExecStart=\\n"
              "ExecStart=/usr/sbin/stack-schwartzd --config /etc/stack/schwartzd.conf -vv\\n' "
              ">/etc/systemd/system/stack-schwartzd.service.d/vv.conf && systemctl daemon-reload && "
              "systemctl restart stack-schwartzd")
    client = ("import socket; s = socket.create_connection(('127.0.0.1', 7003), 5); "
              "s.sendall(b'insert vv.func 2\\r\\nhi\\r\\n'); print(s.recv(4096))")
    r = booted.sh(["/usr/bin/python3", "-c", client], net_only=True)
    assert "OK " in r.stdout, r.stdout
    deadline = time.time() + 15
    while True:
        debug = [m for p, m in messages(booted.journal("stack-schwartzd"), "stack-schwartzd")
                 if p == 7 and "insert vv.func 2 -> OK" in m]
        if debug or time.time() > deadline:
            break
        time.sleep(0.2)
    assert debug and debug[0].startswith("debug: cmd 127.0.0.1:"), messages(booted.journal("stack-schwartzd"),
                                                                             "stack-schwartzd")
    # reload (HUP) and an orderly stop
    booted.sh("systemctl reload stack-memcached")
    for unit in STANDALONE:
        booted.sh("systemctl stop %s" % unit)
        assert booted.sh("systemctl show -p Result --value %s" % unit).stdout.strip() == "success", unit
        assert booted.sh("systemctl is-active %s" % unit, check=False).stdout.strip() == "inactive", unit


def test_a_unit_that_cannot_start_fails_with_its_reason_at_error_priority(booted):
    """userdbd's packaged config names a MariaDB that is not there: the unit
    fails (not "active" while useless) and the journal says why, priority 3."""
    booted.sh("dpkg -s stack-userdb >/dev/null 2>&1 || dpkg -i /srv/stack-debs/*.deb", timeout=300)
    r = booted.sh("systemctl start stack-userdbd", check=False, timeout=60)
    assert r.returncode != 0
    assert booted.sh("systemctl is-failed stack-userdbd", check=False).stdout.strip() in ("failed", "activating")
    msgs = messages(booted.journal("stack-userdbd"), "stack-userdbd")
    errors = [m for p, m in msgs if p == 3]
    assert any("global database" in m for m in errors), msgs
    booted.sh("systemctl stop stack-userdbd", check=False)


# ---- make install / make help --------------------------------------------------


def make_install(destdir, prefix, check=True):
    return subprocess.run(["make", "--no-print-directory", "-s", "-f", "build.mk", "install",
                           "BUILD=" + os.path.relpath(BUILD_DIR, REPO), "PREFIX=" + prefix,
                           "DESTDIR=" + str(destdir)], cwd=REPO, check=check, capture_output=True,
                          text=True, timeout=600)


def test_make_install_twice_keeps_edited_configs_and_installs_versioned_sonames(tmp_path):
    dest = tmp_path / "root"
    make_install(dest, "/usr/local")
    conf = dest / "usr/local/etc/stack/memcached.conf"
    conf.write_text(conf.read_text() + "memory-limit = 128\n")
    edited = conf.read_text()
    binary = dest / "usr/local/bin/memcached"
    os.utime(str(binary), (0, 0))
    r = make_install(dest, "/usr/local")
    assert conf.read_text() == edited
    assert "keeping existing %s" % conf in r.stdout
    assert binary.stat().st_mtime > 0, "our own binary was not updated"
    lib = dest / "usr/local/lib"
    assert os.path.isfile(str(lib / "libmc.so.1.0.0")) and not os.path.islink(str(lib / "libmc.so.1.0.0"))
    assert os.readlink(str(lib / "libmc.so.1")) == "libmc.so.1.0.0"
    assert os.readlink(str(lib / "libmc.so")) == "libmc.so.1.0.0"
    manifest = (dest / "usr/local/share/stack/installed-files").read_text().split()
    assert "/usr/local/bin/memcached" in manifest


def test_make_man_then_install_ships_pages_naming_the_prefixs_paths(tmp_path):
    subprocess.run(["make", "--no-print-directory", "-s", "-f", "build.mk", "man", "PREFIX=/usr/local",
                    "BUILD=" + os.path.relpath(BUILD_DIR, REPO)], cwd=REPO, check=True, capture_output=True,
                   timeout=300)
    dest = tmp_path / "root"
    make_install(dest, "/usr/local")
    for binary, _, _, section in DAEMONS:
        page = dest / "usr/local/share/man/man8" / (binary + ".8")
        text = subprocess.run(["man", "-l", str(page)], check=True, capture_output=True, text=True,
                              env=dict(os.environ, MANWIDTH="200")).stdout
        assert re.search(r"(?m)^NAME\n\s+%s - \S" % binary, text), text[:300]
        assert "/usr/local/etc/stack/%s.conf" % binary in text
        assert "/usr/local/lib/systemd/system/%s.service" % binary in text


def test_make_install_refuses_to_overwrite_a_file_it_did_not_write(tmp_path):
    """As Debian's /usr/bin/memcached and memcached.service under PREFIX=/usr."""
    dest = tmp_path / "root"
    foreign = {"usr/bin/memcached": "debian's memcached\n",
               "usr/lib/systemd/system/memcached.service": "[Service]\n"}
    for path, text in foreign.items():
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        (dest / path).write_text(text)
    r = make_install(dest, "/usr", check=False)
    assert r.returncode != 0
    assert str(dest / "usr/bin/memcached") in r.stderr
    for path, text in foreign.items():
        assert (dest / path).read_text() == text


def test_make_help_lists_the_targets():
    out = subprocess.run(["make", "--no-print-directory", "help"], cwd=REPO, check=True, capture_output=True,
                         text=True, timeout=60).stdout
    for target in ("make ", "make test", "make unit", "make integration", "make asan", "make fuzz", "make bench",
                   "make run", "make install", "make clean", "make help", "dpkg-buildpackage"):
        assert target in out, target
