"""gearmand driven by a C program on Debian's libgearman (the C client most
users link): a worker thread and a client in one process, compiled here with
`cc ... -lgearman`."""
import os
import subprocess
import textwrap

import pytest

PROGRAM = textwrap.dedent(r"""
    #include <libgearman-1.0/gearman.h>
    #include <pthread.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    #include <unistd.h>

    static in_port_t port;

    static gearman_return_t reverse(gearman_job_st *job, void *ctx)
    {
        (void)ctx;
        size_t n = gearman_job_workload_size(job);
        const char *w = gearman_job_workload(job);
        char *out = malloc(n + 1);
        for (size_t i = 0; i < n; i++) out[i] = w[n - 1 - i];
        gearman_job_send_status(job, 1, 2);
        gearman_return_t rc = gearman_job_send_data(job, out, n);
        free(out);
        return rc == GEARMAN_SUCCESS ? GEARMAN_SUCCESS : GEARMAN_ERROR;
    }

    static gearman_return_t fails(gearman_job_st *job, void *ctx)
    {
        (void)job; (void)ctx;
        return GEARMAN_FAIL;
    }

    static void *worker_main(void *arg)
    {
        (void)arg;
        gearman_worker_st *w = gearman_worker_create(NULL);
        gearman_worker_add_server(w, "127.0.0.1", port);
        gearman_function_t fr = gearman_function_create(reverse);
        gearman_function_t ff = gearman_function_create(fails);
        gearman_worker_define_function(w, "reverse", 7, fr, 0, NULL);
        gearman_worker_define_function(w, "fails", 5, ff, 0, NULL);
        for (;;) {
            gearman_return_t rc = gearman_worker_work(w);
            if (rc == GEARMAN_COULD_NOT_CONNECT || rc == GEARMAN_LOST_CONNECTION)
                sleep(1);
        }
        return NULL;
    }

    #define CHECK(c) do { if (!(c)) { fprintf(stderr, "FAILED %s at %d: %s\n", #c, __LINE__, \
        gearman_client_error(cl)); return 1; } } while (0)

    static int completed;
    static gearman_return_t on_complete(gearman_task_st *t)
    {
        /* the result came as WORK_DATA; WORK_COMPLETE itself is empty */
        if (gearman_task_return(t) == GEARMAN_SUCCESS) completed++;
        return GEARMAN_SUCCESS;
    }

    int main(int argc, char **argv)
    {
        port = (in_port_t)atoi(argv[1]);
        pthread_t th;
        pthread_create(&th, NULL, worker_main, NULL);
        gearman_client_st *cl = gearman_client_create(NULL);
        CHECK(gearman_client_add_server(cl, "127.0.0.1", port) == GEARMAN_SUCCESS);
        gearman_client_set_timeout(cl, 20000);
        CHECK(gearman_client_echo(cl, "ping", 4) == GEARMAN_SUCCESS);

        size_t n; gearman_return_t rc;
        char *r = gearman_client_do(cl, "reverse", NULL, "hello", 5, &n, &rc);
        CHECK(rc == GEARMAN_SUCCESS && n == 5 && !memcmp(r, "olleh", 5));
        free(r);
        r = gearman_client_do_high(cl, "reverse", "u-high", "abc", 3, &n, &rc);
        CHECK(rc == GEARMAN_SUCCESS && n == 3 && !memcmp(r, "cba", 3));
        free(r);
        r = gearman_client_do_low(cl, "reverse", NULL, "xy", 2, &n, &rc);
        CHECK(rc == GEARMAN_SUCCESS && n == 2 && !memcmp(r, "yx", 2));
        free(r);
        r = gearman_client_do(cl, "fails", NULL, "x", 1, &n, &rc);
        CHECK(rc == GEARMAN_WORK_FAIL);
        free(r);

        /* a background job, then its status until it is gone */
        gearman_job_handle_t h;
        CHECK(gearman_client_do_background(cl, "reverse", NULL, "bg", 2, h) == GEARMAN_SUCCESS);
        CHECK(strncmp(h, "H:", 2) == 0);
        bool known = true, running = false;
        uint32_t num, den;
        for (int i = 0; i < 200 && known; i++) {
            CHECK(gearman_client_job_status(cl, h, &known, &running, &num, &den) == GEARMAN_SUCCESS);
            if (known) usleep(10000);
        }
        CHECK(!known);

        /* 20 concurrent tasks on one client */
        gearman_client_set_complete_fn(cl, on_complete);
        for (int i = 0; i < 20; i++) {
            char u[16]; snprintf(u, sizeof u, "t%d", i);
            CHECK(gearman_client_add_task(cl, NULL, NULL, "reverse", u, "abc", 3, &rc) != NULL);
        }
        CHECK(gearman_client_run_tasks(cl) == GEARMAN_SUCCESS);
        CHECK(completed == 20);
        printf("libgearman ok\n");
        return 0;
    }
""")


def test_libgearman_c_program(daemon, tmp_path):
    src = tmp_path / "prog.c"
    src.write_text(PROGRAM)
    exe = str(tmp_path / "prog")
    r = subprocess.run(["cc", "-O0", "-o", exe, str(src), "-lgearman", "-pthread"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    d = daemon("gearmand", ["-p", "{port}", "-L", "127.0.0.1", "--log-level", "warn"])
    r = subprocess.run([exe, str(d.port)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "libgearman ok" in r.stdout, (r.stdout, r.stderr)
