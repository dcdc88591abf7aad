"""Packaging: `dpkg-buildpackage -b` makes installable .debs (one per daemon,
libstack1, libstack-dev) whose files never collide with Debian's memcached,
perlbal and gearman-job-server; the installed daemon runs from its unit's
ExecStart; man pages come from --help and render; `make install` keeps an
admin's configs, refuses to overwrite files it did not write, and installs
versioned sonames; `make help` lists the targets.

The .debs are built once per session from a copy of the tree under a
temporary directory (the build's objects are reused when they are a plain
build, so only packaging work is left)."""
import glob
import os
import re
import shutil
import socket
import subprocess
import tarfile

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
