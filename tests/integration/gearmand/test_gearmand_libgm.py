"""libgm (gearmand/client) and its CLI, gearman-cli: the API from a C
program (sync, callback tasks, background + status, exceptions), and two
job servers with one killed (hash by unique key, fail over)."""
import os
import signal
import subprocess
import sys
import textwrap

from conftest import REPO, bin_path

sys.path.insert(0, os.path.dirname(__file__))
from test_gearmand_wire import admin, status, wait_for  # noqa: E402

PROGRAM = textwrap.dedent(r"""
    #include "libgm.h"
    #include <pthread.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>

    static const char *servers;

    static int up(struct gm_worker_job *j, void *arg, void **res, size_t *rlen)
    {
        (void)arg;
        size_t n;
        const char *d = gm_worker_job_data(j, &n);
        if (n == 4 && !memcmp(d, "fail", 4)) return GM_CLIENT_WORK_FAIL;
        if (n == 4 && !memcmp(d, "boom", 4)) { *res = strdup("kaput"); *rlen = 5; return GM_CLIENT_WORK_EXCEPTION; }
        gm_worker_job_send_status(j, 1, 2);
        gm_worker_job_send_data(j, "<", 1);
        char *o = malloc(n + 1);
        for (size_t i = 0; i < n; i++) o[i] = (char)(d[i] >= 'a' && d[i] <= 'z' ? d[i] - 32 : d[i]);
        *res = o; *rlen = n;
        return GM_CLIENT_OK;
    }

    static void *worker_main(void *arg)
    {
        (void)arg;
        char err[256];
        struct gm_worker *w = gm_worker_new(servers, NULL, err, sizeof err);
        gm_worker_register(w, "up", 0, up, NULL);
        gm_worker_set_id(w, "libgm-test-worker");
        for (;;) gm_worker_work(w);
        return NULL;
    }

    static int created, statuses, datas, done_ok;
    static void t_created(const char *h, void *a) { (void)a; if (!strncmp(h, "H:", 2)) created++; }
    static void t_status(uint32_t n, uint32_t d, void *a) { (void)a; if (n == 1 && d == 2) statuses++; }
    static void t_data(const void *p, size_t n, void *a) { (void)a; if (n == 1 && *(const char *)p == '<') datas++; }
    static void t_done(int rc, const void *p, size_t n, void *a)
    {
        char want[32]; snprintf(want, sizeof want, "TASK%d", (int)(long)a);
        if (rc == GM_CLIENT_OK && n == strlen(want) && !memcmp(p, want, n)) done_ok++;
    }

    #define CHECK(c) do { if (!(c)) { fprintf(stderr, "FAILED %s at %d: %s\n", #c, __LINE__, \
        gm_client_error(cl)); return 1; } } while (0)

    int main(int argc, char **argv)
    {
        (void)argc;
        servers = argv[1];
        pthread_t th;
        pthread_create(&th, NULL, worker_main, NULL);
        char err[256];
        struct gm_client_options o = { .timeout_ms = 20000 };
        struct gm_client *cl = gm_client_new(servers, &o, err, sizeof err);
        if (!cl) { fprintf(stderr, "%s\n", err); return 1; }
        CHECK(gm_client_new("", NULL, err, sizeof err) == NULL);
        CHECK(gm_client_echo(cl, "ping", 4) == GM_CLIENT_OK);

        void *res; size_t n;
        CHECK(gm_client_do(cl, "up", NULL, "hello", 5, GM_CLIENT_NORMAL, &res, &n) == GM_CLIENT_OK);
        CHECK(n == 6 && !memcmp(res, "<HELLO", 6));
        free(res);
        CHECK(gm_client_do(cl, "up", "k1", "hi", 2, GM_CLIENT_HIGH, &res, &n) == GM_CLIENT_OK);
        free(res);
        CHECK(gm_client_do(cl, "up", NULL, "fail", 4, GM_CLIENT_LOW, &res, &n) == GM_CLIENT_WORK_FAIL);
        CHECK(gm_client_do(cl, "up", NULL, "boom", 4, GM_CLIENT_NORMAL, &res, &n) == GM_CLIENT_WORK_EXCEPTION);
        CHECK(n == 5 && !memcmp(res, "kaput", 5));
        free(res);

        char h[GM_CLIENT_HANDLE_MAX];
        CHECK(gm_client_do_background(cl, "nobody_serves_this", "bg-1", "x", 1, GM_CLIENT_NORMAL, h) == GM_CLIENT_OK);
        struct gm_client_status st;
        CHECK(gm_client_status(cl, h, &st) == GM_CLIENT_OK && st.known && !st.running);
        CHECK(gm_client_status(cl, "H:none:1", &st) == GM_CLIENT_OK && !st.known);

        struct gm_client_task_fns fns = { .created = t_created, .status = t_status, .data = t_data, .done = t_done };
        for (long i = 0; i < 30; i++) {
            char d[32], u[32];
            snprintf(d, sizeof d, "task%ld", i);
            snprintf(u, sizeof u, "u%ld", i);
            CHECK(gm_client_add_task(cl, "up", u, d, strlen(d), GM_CLIENT_NORMAL, false, &fns, (void *)i) == 0);
        }
        CHECK(gm_client_run_tasks(cl) == GM_CLIENT_OK);
        CHECK(created == 30 && statuses == 30 && datas == 30);
        /* the result is "<" (WORK_DATA) then the complete payload: done() sees the payload */
        fprintf(stderr, "done_ok=%d\n", done_ok);
        gm_client_free(cl);
        printf("libgm ok\n");
        return 0;
    }
""")


def compile_prog(tmp_path):
    src = tmp_path / "prog.c"
    src.write_text(PROGRAM)
    exe = str(tmp_path / "prog")
    build = os.path.dirname(os.path.dirname(bin_path("x")))
    lib = os.path.join(build, "lib", "libgm.a")
    # a sanitizer build (make asan) needs the same flags to link
    nm = subprocess.run(["nm", lib], capture_output=True, text=True).stdout
    san = ["-fsanitize=address,undefined"] if "__asan_" in nm else []
    # the static library needs what libgm.pc's Requires.private names (zlib, libcrypto)
    pc = os.path.join(build, "lib", "pkgconfig", "libgm.pc")
    deps = subprocess.run(["pkg-config", "--static", "--libs-only-l", pc], capture_output=True, text=True,
                          check=True).stdout.split()
    r = subprocess.run(["cc", "-O0"] + san + ["-I", os.path.join(REPO, "gearmand", "client"), "-o", exe, str(src),
                        lib, "-pthread"] + [x for x in deps if x != "-lgm"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return exe


def gmd(daemon):
    return daemon("gearmand", ["-p", "{port}", "-L", "127.0.0.1", "--log-level", "warn"])


def test_libgm_api_from_c(daemon, tmp_path):
    exe = compile_prog(tmp_path)
    d = gmd(daemon)
    r = subprocess.run([exe, "127.0.0.1:%d" % d.port], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "libgm ok" in r.stdout, (r.stdout, r.stderr)
    assert "done_ok=30" in r.stderr, r.stderr


def test_libgm_shared_library_and_pkg_config(daemon, tmp_path):
    build = os.path.dirname(os.path.dirname(bin_path("x")))
    pc = os.path.join(build, "lib", "pkgconfig", "libgm.pc")
    r = subprocess.run(["pkg-config", "--libs", "--cflags", pc], capture_output=True, text=True)
    assert r.returncode == 0 and "-lgm" in r.stdout, (r.stdout, r.stderr)
    # the .so exports the API (and only gm_client_*/gm_worker_*)
    syms = subprocess.run(["nm", "-D", "--defined-only", os.path.join(build, "lib", "libgm.so")],
                          capture_output=True, text=True).stdout.split()
    exported = {s.split("@")[0] for s in syms if s.startswith(("gm_", "hash_"))}
    assert "gm_client_do" in exported and "gm_worker_work" in exported
    assert all(s.startswith(("gm_client_", "gm_worker_")) for s in exported), exported
    src = tmp_path / "echo.c"
    src.write_text('#include "libgm.h"\n#include <stdio.h>\n'
                   'int main(int c, char **v) { char e[128]; (void)c;'
                   ' struct gm_client *g = gm_client_new(v[1], NULL, e, sizeof e);'
                   ' int rc = gm_client_echo(g, "so", 2); gm_client_free(g);'
                   ' puts(gm_client_rc_name(rc)); return rc; }\n')
    exe = str(tmp_path / "echo")
    nm = subprocess.run(["nm", os.path.join(build, "lib", "libgm.a")], capture_output=True, text=True).stdout
    san = ["-fsanitize=address,undefined"] if "__asan_" in nm else []
    r = subprocess.run(["cc"] + san + ["-I", os.path.join(REPO, "gearmand", "client"), "-o", exe, str(src),
                                       "-L", os.path.join(build, "lib"), "-lgm"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    d = gmd(daemon)
    r = subprocess.run([exe, "127.0.0.1:%d" % d.port], capture_output=True, text=True, timeout=20,
                       env=dict(os.environ, LD_LIBRARY_PATH=os.path.join(build, "lib")))
    assert r.returncode == 0 and r.stdout.strip() == "OK", (r.stdout, r.stderr)


def cli(servers, *args, input=None, timeout=20):
    return subprocess.run([bin_path("gearman-cli"), "--servers", servers] + list(args), input=input, capture_output=True,
                          timeout=timeout)


def test_cli_against_stock_tools(daemon):
    d = gmd(daemon)
    srv = "127.0.0.1:%d" % d.port
    w = subprocess.Popen([bin_path("gearman-cli"), "-h", srv, "-w", "-f", "rev", "--id", "cli-worker", "--", "rev"])
    try:
        assert wait_for(lambda: status(d.port).get("rev", (0, 0, 0))[2] == 1)
        assert "cli-worker : rev" in admin(d.port, "workers")
        # our CLI as client, Debian's gearman as client of our worker
        assert cli(srv, "-f", "rev", input=b"abc").stdout == b"cba"
        r = subprocess.run(["gearman", "-h", "127.0.0.1", "-p", str(d.port), "-f", "rev"], input=b"xyz",
                           capture_output=True, timeout=20)
        assert r.stdout.strip() == b"zyx"
        r = cli(srv, "-v", "-b", "-f", "rev", "bgdata")
        assert r.returncode == 0 and r.stdout.startswith(b"Task created: H:"), r
        assert cli(srv, "-e", "hello").stdout == b"hello\n"
    finally:
        w.kill()
        w.wait()


def test_two_servers_hash_by_unique_and_fail_over(daemon):
    a, b = gmd(daemon), gmd(daemon)
    both = "127.0.0.1:%d,127.0.0.1:%d" % (a.port, b.port)
    # background jobs for a function nobody serves stay queued where they landed
    for i in range(40):
        r = cli(both, "-b", "-f", "spread", "-u", "key-%d" % i, "x")
        assert r.returncode == 0, r.stderr
    na, nb = status(a.port)["spread"][0], status(b.port)["spread"][0]
    assert na + nb == 40 and na > 5 and nb > 5, (na, nb)
    # the same unique key always lands on the same server (coalescing works across clients)
    for _ in range(3):
        assert cli(both, "-b", "-f", "spread", "-u", "key-0", "x").returncode == 0
    assert status(a.port)["spread"][0] + status(b.port)["spread"][0] == 40
    # a worker on both servers, then server a dies: every call still succeeds
    w = subprocess.Popen([bin_path("gearman-cli"), "-h", both, "-w", "-f", "rev", "--", "rev"])
    try:
        assert wait_for(lambda: status(a.port).get("rev", (0, 0, 0))[2] == 1 and
                        status(b.port).get("rev", (0, 0, 0))[2] == 1)
        a.kill9()
        for i in range(20):
            r = cli(both, "-f", "rev", "-u", "after-%d" % i, "abc%d" % i)
            assert r.returncode == 0 and r.stdout == ("abc%d" % i).encode()[::-1], r
        # a restarted server is used again once its retry interval passed
        a.start()
        assert wait_for(lambda: status(a.port).get("rev", (0, 0, 0))[2] == 1, timeout=15)
        for i in range(20):
            assert cli(both, "-b", "-f", "back", "-u", "k%d" % i, "x").returncode == 0
        assert status(a.port).get("back", (0,))[0] > 0 and status(b.port).get("back", (0,))[0] > 0
    finally:
        w.send_signal(signal.SIGKILL)
        w.wait()
