"""Fixtures for schwartzd: a daemon factory, protocol clients, a MariaDB DSN."""
import pytest

from sw_helpers import SW


@pytest.fixture
def schwartzd(daemon, tmp_path):
    """schwartzd factory: schwartzd(databases=[dsn, ...], extra=[...])."""
    def start(databases=None, extra=()):
        if databases is None:
            databases = ["dbi:SQLite:dbname=%s" % (tmp_path / "jobs.db")]
        args = ["--listen", "127.0.0.1:{port}", "--console", "127.0.0.1:{admin}", "--queue-refresh", "1"]
        for d in databases:
            args += ["--database", d]
        return daemon("schwartzd", args + list(extra))
    return start


@pytest.fixture
def client():
    opened = []

    def connect(d):
        c = SW(d.port)
        opened.append(c)
        return c
    yield connect
    for c in opened:
        c.close()


@pytest.fixture
def mysql_dsn(mariadb):
    name = mariadb.create_database()
    return "dbi:mysql:database=%s;host=127.0.0.1;port=%d" % (name, mariadb.port)
