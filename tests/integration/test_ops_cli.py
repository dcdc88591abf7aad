"""--help and --version on the daemons and CLIs of mogilefs, schwartz, userdb
and djabberd: both exit 0 without touching the network; --version is one
line "NAME VERSION"; --help goes to stdout (help2man reads it for the man
page), starts with a usage line and names every option the program takes;
a usage error still fails, on stderr."""
import re
import subprocess

import pytest

from conftest import bin_path

# program -> options its --help must name (besides --help/--version)
PROGRAMS = {
    "mogile": ["--trackers", "--domain", "--class", "upload", "MOGILE_TRACKERS"],
    "mogile-bench": ["upload", "get_paths"],
    "mogilefsd": ["--config", "--listen", "--db_dsn", "--verbose", "--log-level", "--daemon"],
    "mogstored": ["--httplisten", "--mgmtlisten", "--docroot", "--verbose", "--daemon"],
    "schwartz": ["-s HOST:PORT", "insert", "work", "queues", "--uniqkey", "--max-jobs", "EX_TEMPFAIL"],
    "schwartzd": ["--listen", "--database", "--verbose", "--daemon"],
    "userdb": ["-h HOST", "-P PORT", "-u USER", "USERDB_PASSWORD", "create", "counter", "where"],
    "usermove": ["--config", "--delete", "--drain", "--quiet"],
    "userdbd": ["--listen", "--client_password", "--verbose", "--daemon"],
    "djabberd": ["--c2s_port", "--vhost", "--verbose", "--daemon"],
}


def run(name, *args):
    return subprocess.run([bin_path(name)] + list(args), capture_output=True, text=True, timeout=20,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_version_is_one_line(name):
    r = run(name, "--version")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and re.fullmatch(r"%s \d+\.\d+[\w.-]*" % re.escape(name), lines[0]), r.stdout


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_help_is_complete_on_stdout(name):
    r = run(name, "--help")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert re.match(r"(?i)usage: ", out), out[:200]
    assert "--help" in out and "--version" in out, out
    for opt in PROGRAMS[name]:
        assert opt in out, "%s --help does not mention %s:\n%s" % (name, opt, out)


@pytest.mark.parametrize("name", ["mogile", "schwartz", "userdb", "usermove"])
def test_cli_usage_error_fails_on_stderr(name):
    r = run(name, "--no-such-option-here")
    assert r.returncode != 0
    assert r.stdout == "" and re.search(r"(?i)usage: %s" % re.escape(name), r.stderr), (r.stdout, r.stderr)
