/* mc_async (libmc's event-loop client) against our memcached, started by
 * the test from the build tree on a unix socket, on the core's loop: every
 * call's answer, pipelining in order, a big value, a server that refuses
 * being marked dead, freeing with requests waiting, refused arguments. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "common/loop.h"
#include "memcached/client/mc_async.h"
#include "tests/unit/unit.h"

static struct core_loop *loop;
static char sock_path[100], servers[108];
static pid_t mc_pid;
static struct mc_async *A;
static int waiting;
static void (*after)(void *);

struct expect {
    int rc;
    const char *data;
    size_t len;
    uint32_t flags;
    uint64_t value;
    int calls;
    uint64_t cas;
};

static void done(const struct mc_async_result *r, void *arg)
{
    struct expect *e = arg;
    e->calls++;
    CHECK_EQ_INT(r->rc, e->rc);
    if (r->rc == MC_CLIENT_OK && e->data) {
        CHECK_EQ_INT(r->len, e->len);
        if (r->len == e->len)
            CHECK_MEM(r->data, e->data, e->len);
        CHECK_EQ_INT(r->flags, e->flags);
        CHECK(r->cas > 0);
        e->cas = r->cas;
    }
    if (e->value)
        CHECK_EQ_INT(r->value, e->value);
    if (--waiting == 0 && after)
        loop_call(loop, after, NULL); /* the next phase, outside the callback */
}

#define E(...) (&(struct expect){ __VA_ARGS__ })

static char big[512 * 1024];
static struct expect pipe_e[1000];
static struct expect tail_e[3];

static void phase_end(void *unused)
{
    (void)unused;
    loop_request_stop();
}

static void phase_free_with_waiting(void *unused)
{
    (void)unused;
    /* Requests queued and never answered: freeing answers them. */
    struct mc_async *a = mc_async_new(loop, servers, NULL, NULL, 0);
    CHECK(a != NULL);
    for (int i = 0; i < 3; i++) {
        tail_e[i] = (struct expect){ .rc = MC_CLIENT_CONNECTION };
        CHECK_EQ_INT(mc_async_get(a, "k", 1, done, &tail_e[i]), MC_CLIENT_OK);
    }
    CHECK_EQ_INT(mc_async_pending(a), 3);
    after = NULL;
    waiting = 3;
    mc_async_free(a);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(tail_e[i].calls, 1);
    loop_call(loop, phase_end, NULL);
}

static struct mc_async *dead_a;
static struct expect dead_e[2];
static int dead_round;

/* A port nothing listens on: each connection fails; after failure_limit
 * (2) failed connections the only server is dead and calls are refused. */
static void phase_dead(void *unused)
{
    (void)unused;
    if (!dead_a) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t sl = sizeof sin;
        CHECK(bind(fd, (struct sockaddr *)&sin, sl) == 0 && getsockname(fd, (struct sockaddr *)&sin, &sl) == 0);
        close(fd);
        char list[64];
        snprintf(list, sizeof list, "127.0.0.1:%d", ntohs(sin.sin_port));
        struct mc_async_options o = { .io_timeout_ms = 2000, .failure_limit = 2, .retry_interval_ms = 60000 };
        dead_a = mc_async_new(loop, list, &o, NULL, 0);
        CHECK(dead_a != NULL);
    }
    if (dead_round < 2) {
        dead_e[dead_round] = (struct expect){ .rc = MC_CLIENT_CONNECTION };
        waiting = 1;
        after = phase_dead;
        CHECK_EQ_INT(mc_async_get(dead_a, "k", 1, done, &dead_e[dead_round]), MC_CLIENT_OK);
        dead_round++;
        return;
    }
    CHECK_EQ_INT(dead_e[0].calls + dead_e[1].calls, 2);
    CHECK_EQ_INT(mc_async_get(dead_a, "k", 1, done, E(0)), MC_CLIENT_NO_SERVER);
    mc_async_free(dead_a);
    phase_free_with_waiting(NULL);
}

static void phase_pipeline_check(void *unused)
{
    (void)unused;
    for (int i = 0; i < 1000; i++)
        CHECK_EQ_INT(pipe_e[i].calls, 1);
    mc_async_free(A);
    A = NULL;
    phase_dead(NULL);
}

static char pipe_vals[1000][16];

/* 1000 requests queued at once on one connection: answered in order. */
static void phase_pipeline(void *unused)
{
    (void)unused;
    after = phase_pipeline_check;
    waiting = 1000;
    for (int i = 0; i < 1000; i++) {
        char key[32];
        int n = snprintf(key, sizeof key, "p:%d", i);
        snprintf(pipe_vals[i], sizeof pipe_vals[i], "v%d", i);
        if (i % 2 == 0) {
            pipe_e[i] = (struct expect){ .rc = MC_CLIENT_OK };
            CHECK_EQ_INT(mc_async_store(A, MC_ASYNC_SET, key, (size_t)n, pipe_vals[i], strlen(pipe_vals[i]), 0, 0, 0,
                                        done, &pipe_e[i]),
                         MC_CLIENT_OK);
        } else {
            snprintf(key, sizeof key, "p:%d", i - 1);
            pipe_e[i] =
                (struct expect){ .rc = MC_CLIENT_OK, .data = pipe_vals[i - 1], .len = strlen(pipe_vals[i - 1]) };
            CHECK_EQ_INT(mc_async_get(A, key, strlen(key), done, &pipe_e[i]), MC_CLIENT_OK);
        }
    }
    CHECK_EQ_INT(mc_async_pending(A), 1000);
}

static struct expect ops[20];
static int nops;

static void phase_ops(void *unused)
{
    (void)unused;
    char err[256] = "";
    A = mc_async_new(loop, servers, NULL, err, sizeof err);
    CHECK(A != NULL);
    /* refused at once, no callback */
    CHECK_EQ_INT(mc_async_get(A, "bad key", 7, done, E(0)), MC_CLIENT_BAD_ARGUMENT);
    CHECK_EQ_INT(mc_async_get(A, "", 0, done, E(0)), MC_CLIENT_BAD_ARGUMENT);
    CHECK(mc_async_new(loop, "host:notaport", NULL, err, sizeof err) == NULL && err[0]);
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)('a' + i % 26);
    int k = 0;
    ops[k] = (struct expect){ .rc = MC_CLIENT_OK };
    CHECK_EQ_INT(mc_async_store(A, MC_ASYNC_SET, "k1", 2, "hello", 5, 5, 0, 0, done, &ops[k++]), 0);
    ops[k] = (struct expect){ .rc = MC_CLIENT_OK, .data = "hello", .len = 5, .flags = 5 };
    CHECK_EQ_INT(mc_async_get(A, "k1", 2, done, &ops[k++]), 0);
    ops[k] = (struct expect){ .rc = MC_CLIENT_NOT_FOUND };
    CHECK_EQ_INT(mc_async_get(A, "missing", 7, done, &ops[k++]), 0);
    ops[k] = (struct expect){ .rc = MC_CLIENT_NOT_STORED };
    CHECK_EQ_INT(mc_async_store(A, MC_ASYNC_ADD, "k1", 2, "x", 1, 0, 0, 0, done, &ops[k++]), 0);
    ops[k] = (struct expect){ .rc = MC_CLIENT_EXISTS };
    CHECK_EQ_INT(mc_async_store(A, MC_ASYNC_CAS, "k1", 2, "x", 1, 0, 0, 99999999, done, &ops[k++]), 0);
    ops[k] = (struct expect){ .rc = MC_CLIENT_OK };
    CHECK_EQ_INT(mc_async_store(A, MC_ASYNC_APPEND, "k1", 2, "!", 1, 0, 0, 0, done, &ops[k++]), 0);
    ops[k] = (struct expect){ .rc = MC_CLIENT_OK, .data = "hello!", .len = 6, .flags = 5 };
    CHECK_EQ_INT(mc_async_get(A, "k1", 2, done, &ops[k++]), 0);
    ops[k] = (struct expect){ .rc = MC_CLIENT_OK };
    CHECK_EQ_INT(mc_async_store(A, MC_ASYNC_SET, "n", 1, "40", 2, 0, 0, 0, done, &ops[k++]), 0);
    ops[k] = (struct expect){ .rc = MC_CLIENT_OK, .value = 42 };
    CHECK_EQ_INT(mc_async_arith(A, true, "n", 1, 2, done, &ops[k++]), 0);
    ops[k] = (struct expect){ .rc = MC_CLIENT_OK, .value = 0 };
    CHECK_EQ_INT(mc_async_arith(A, false, "n", 1, 50, done, &ops[k++]), 0);
    ops[k] = (struct expect){ .rc = MC_CLIENT_NOT_FOUND };
    CHECK_EQ_INT(mc_async_arith(A, true, "nope", 4, 1, done, &ops[k++]), 0);
    ops[k] = (struct expect){ .rc = MC_CLIENT_SERVER_ERROR };
    CHECK_EQ_INT(mc_async_arith(A, true, "k1", 2, 1, done, &ops[k++]), 0); /* not a number */
    ops[k] = (struct expect){ .rc = MC_CLIENT_OK };
    CHECK_EQ_INT(mc_async_touch(A, "n", 1, 100, done, &ops[k++]), 0);
    ops[k] = (struct expect){ .rc = MC_CLIENT_NOT_FOUND };
    CHECK_EQ_INT(mc_async_touch(A, "nope", 4, 100, done, &ops[k++]), 0);
    ops[k] = (struct expect){ .rc = MC_CLIENT_OK };
    CHECK_EQ_INT(mc_async_delete(A, "n", 1, done, &ops[k++]), 0);
    ops[k] = (struct expect){ .rc = MC_CLIENT_NOT_FOUND };
    CHECK_EQ_INT(mc_async_delete(A, "n", 1, done, &ops[k++]), 0);
    ops[k] = (struct expect){ .rc = MC_CLIENT_OK };
    CHECK_EQ_INT(mc_async_store(A, MC_ASYNC_SET, "big", 3, big, sizeof big, 0, 0, 0, done, &ops[k++]), 0);
    ops[k] = (struct expect){ .rc = MC_CLIENT_OK, .data = big, .len = sizeof big };
    CHECK_EQ_INT(mc_async_get(A, "big", 3, done, &ops[k++]), 0);
    nops = k;
    waiting = k;
    after = phase_pipeline;
}

static void start_memcached(void)
{
    char exe[PATH_MAX], bin[PATH_MAX + 32];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    CHECK(n > 0);
    exe[n > 0 ? n : 0] = 0;
    /* BUILD/tests/unit/memcached/test_mc_async -> BUILD/bin/memcached */
    for (int up = 0; up < 4; up++) {
        char *slash = strrchr(exe, '/');
        if (slash)
            *slash = 0;
    }
    snprintf(bin, sizeof bin, "%s/bin/memcached", exe);
    char dir[] = "/tmp/mc_async_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    snprintf(sock_path, sizeof sock_path, "%s/mc.sock", dir);
    snprintf(servers, sizeof servers, "%s", sock_path);
    mc_pid = fork();
    if (mc_pid == 0) {
        execl(bin, bin, "-s", sock_path, "-t", "1", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 500; i++) { /* up to 5 s for the socket to answer */
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un sun = { .sun_family = AF_UNIX };
        snprintf(sun.sun_path, sizeof sun.sun_path, "%s", sock_path);
        int ok = connect(fd, (struct sockaddr *)&sun, sizeof sun) == 0;
        close(fd);
        if (ok)
            return;
        usleep(10000);
    }
    CHECK(!"memcached did not start");
}

static void test_async_client(void)
{
    start_memcached();
    alarm(60); /* a hang is a failure, not a stuck make test */
    CHECK(loop_init(1) == 0);
    loop = loop_get(0);
    loop_call(loop, phase_ops, NULL);
    loop_run();
    loop_free();
    CHECK_EQ_INT(nops, 18);
    for (int i = 0; i < nops; i++)
        CHECK_EQ_INT(ops[i].calls, 1);
    CHECK_EQ_INT(waiting, 0);
    kill(mc_pid, SIGTERM);
    waitpid(mc_pid, NULL, 0);
    unlink(sock_path);
    char *slash = strrchr(sock_path, '/');
    *slash = 0;
    rmdir(sock_path);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    RUN(test_async_client);
    return unit_done();
}
