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
