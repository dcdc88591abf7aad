"""Interoperability with Debian's Perl TheSchwartz on the same database:
jobs cross between schwartzd and Perl clients/workers in both directions,
on SQLite and on a private MariaDB, with handles and argument bytes equal."""
import pytest

from sw_helpers import perl, schwartz_cli, client, mysql_dsn, schwartzd  # noqa: F401 (fixtures)

PERL_WORKER = r'''
use strict; use warnings; use TheSchwartz;
package PerlFunc; use base 'TheSchwartz::Worker';
sub work { my ($class, $job) = @_;
  open my $fh, '>>', $ENV{OUT} or die; binmode $fh;
  print $fh $job->handle->as_string, "\t", unpack("H*", $job->arg), "\n"; close $fh;
  $job->completed; }
package main;
my ($dsn, $user) = @ARGV;
my $c = TheSchwartz->new(databases => [{ dsn => $dsn, user => $user, pass => '' }]);
$c->can_do('PerlFunc');
$c->work_until_done;
'''

PERL_INSERT = r'''
use strict; use warnings; use TheSchwartz;
my ($dsn, $user, $func, $hexarg) = @ARGV;
my $c = TheSchwartz->new(databases => [{ dsn => $dsn, user => $user, pass => '' }]);
my $h = $c->insert($func, pack("H*", $hexarg)) or die "insert failed";
print $h->as_string;
'''

ARG = b"raw \x00 bytes\r\n\xff\xfe end"


@pytest.fixture(params=["sqlite", "mariadb"])
def backend(request, tmp_path):
    if request.param == "sqlite":
        return "dbi:SQLite:dbname=%s" % (tmp_path / "jobs.db"), ""
    dsn = request.getfixturevalue("mysql_dsn")
    return dsn, "root"


def start(schwartzd, backend):
    dsn, user = backend
    return schwartzd([dsn], extra=["--db-user", user] if user else [])


def test_job_inserted_through_daemon_is_worked_by_perl_worker(schwartzd, client, backend, tmp_path):
    d = start(schwartzd, backend)
    c = client(d)
    handle = c.insert("PerlFunc", ARG)
    out = tmp_path / "perl.out"
    perl(PERL_WORKER, backend[0], backend[1], env={"OUT": str(out)})
    got = out.read_text().split()
    # Perl names the job by the same handle and sees the same bytes.
    assert got == [handle, ARG.hex()]
    assert c.lines("list PerlFunc") == []


def test_job_inserted_by_perl_is_worked_by_schwartz_work(schwartzd, backend, tmp_path):
    d = start(schwartzd, backend)
    handle = perl(PERL_INSERT, backend[0], backend[1], "CFunc", ARG.hex()).decode()
    out = tmp_path / "c.out"
    r = schwartz_cli(d.port, "work", "CFunc", "--max-jobs", "1", "--idle-exit", "5", "--",
                     "sh", "-c", 'cat > "$0"; echo "$SCHWARTZ_JOB_HANDLE" > "$0.handle"', str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == ARG
    assert (tmp_path / "c.out.handle").read_text().strip() == handle
    q = schwartz_cli(d.port, "queues").stdout.decode()
    assert "CFunc ready 0 running 0 failed 0" in q


def test_perl_lookup_job_accepts_our_handle(schwartzd, client, backend):
    d = start(schwartzd, backend)
    handle = client(d).insert("Look", b"x")
    script = r'''
use strict; use TheSchwartz;
my ($dsn, $user, $h) = @ARGV;
my $c = TheSchwartz->new(databases => [{ dsn => $dsn, user => $user, pass => '' }]);
my $job = $c->lookup_job($h) or die "no job";
print $job->funcname, " ", $job->jobid;
'''
    assert perl(script, backend[0], backend[1], handle).decode() == "Look %s" % handle.split("-")[1]


def test_grab_race_with_perl_held_between_select_and_cas(schwartzd, client, tmp_path):
    """A Perl worker selects the job, is held 1.5 s before its compare-and-set;
    meanwhile schwartzd grabs and completes it. Perl loses the race: done once."""
    dsn = "dbi:SQLite:dbname=%s" % (tmp_path / "jobs.db")
    d = schwartzd([dsn])
    c = client(d)
    handle = c.insert("PerlFunc", b"once")
    script = r'''
use strict; use warnings; use TheSchwartz; use Time::HiRes qw(sleep);
package PerlFunc; use base 'TheSchwartz::Worker';
sub work { my ($class, $job) = @_; open my $fh, '>>', $ENV{OUT}; print $fh "perl ran\n"; $job->completed; }
package main;
my $c = TheSchwartz->new(databases => [{ dsn => $ARGV[0], user => '' }]);
$TheSchwartz::T_AFTER_GRAB_SELECT_BEFORE_UPDATE = sub { open my $f, '>', $ENV{OUT} . '.selected'; close $f; sleep 1.5 };
$TheSchwartz::T_LOST_RACE = sub { open my $fh, '>>', $ENV{OUT}; print $fh "perl lost\n" };
$c->can_do('PerlFunc');
$c->work_once;
'''
    import os
    import subprocess
    import time
    out = tmp_path / "race.out"
    env = dict(os.environ, OUT=str(out))
    p = subprocess.Popen(["perl", "-e", script, dsn], env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 20
    while not (tmp_path / "race.out.selected").exists():
        assert time.time() < deadline and p.poll() is None, p.stderr.read()
        time.sleep(0.02)
    jobs = c.grab(1, 60, "PerlFunc")
    assert [j[0] for j in jobs] == [handle]
    assert c.cmd("completed " + handle) == "OK"
    assert p.wait(timeout=20) == 0
    assert out.read_text() == "perl lost\n"


def test_failures_cross_between_perl_and_daemon(schwartzd, client, backend):
    """A Perl worker fails a job (its class allows one retry); we see the
    failure count and the error row, fail it again ourselves, and Perl's
    failure_log and exit status show both."""
    d = start(schwartzd, backend)
    c = client(d)
    handle = c.insert("Flaky", b"x")
    script = r'''
use strict; use warnings; use TheSchwartz;
package Flaky; use base 'TheSchwartz::Worker';
sub max_retries { 1 } sub keep_exit_status_for { 600 }
sub work { $_[1]->failed("perl says no", 4) }
package main;
my ($dsn, $user) = @ARGV;
my $c = TheSchwartz->new(databases => [{ dsn => $dsn, user => $user, pass => '' }]);
$c->can_do('Flaky');
$c->work_once or die "no job";
'''
    perl(script, backend[0], backend[1])
    jobs = c.grab(1, 60, "Flaky")
    assert [(j[0], j[3]) for j in jobs] == [(handle, 1)]
    assert c.cmd("failed %s exit=5 max_retries=1 keep_exit_status_for=600 :daemon says no" % handle) == "OK failed"
    check = r'''
use strict; use TheSchwartz; use TheSchwartz::JobHandle;
my ($dsn, $user, $h) = @ARGV;
my $c = TheSchwartz->new(databases => [{ dsn => $dsn, user => $user, pass => '' }]);
my $jh = TheSchwartz::JobHandle->new_from_string($h);
$jh->client($c);
print join("|", $jh->failure_log), "\n", $jh->failures, "\n", $jh->exit_status, "\n";
'''
    out = perl(check, backend[0], backend[1], handle).decode().splitlines()
    assert out == ["perl says no|daemon says no", "2", "5"]
    assert c.cmd("status " + handle).startswith("STATUS 5 ")
