/* libFuzzer target: userdbd's whole client path — login, the session state
 * machine, routing, the directory, pools and backend error handling —
 * through a real core conn over a socketpair. The backends are unix sockets
 * that don't exist, so every routed statement meets a dead server (the
 * fail-fast path). Inputs with an even first byte start with a valid login
 * (empty password), so the fuzzer reaches the commands; odd ones fuzz the
 * login itself. Checks that nothing crashes, leaks or hangs. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/conn.h"
#include "common/log.h"
#include "common/loop.h"
#include "userdb/userdb.h"

/* What userdbd.c (not linked: it has main) gives the rest. */
struct ud_settings ud_cfg;
struct ud_counters ud_n;
char *ud_client_password;
char *ud_backend_password;
char ud_server_version[96] = UD_SERVER_VERSION;
uint64_t ud_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}
void ud_admin_install(void) {}
int ud_reload(char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    return 0;
}

int ud_stage_global(const char *v, char *err, size_t errlen);
int ud_stage_master(int c, const char *v, char *err, size_t errlen);
int ud_stage_replica(int c, const char *v, char *err, size_t errlen);
int ud_stage_defaults(const char *v, char *err, size_t errlen);

static struct core_loop *loop;

static void setup(void)
{
    log_init("fuzz", LOG_LEVEL_ERROR, false, NULL);
    ud_cfg.client_user = strdup("app");
    ud_cfg.backend_user = strdup("root");
    ud_client_password = strdup("");
    ud_cfg.max_lag = 5;
    ud_cfg.pool_max = 2;
    ud_cfg.max_waiters = 8;
    ud_cfg.directory_ttl = 1;
    ud_cfg.dead_retry = 0.001;
    ud_cfg.connect_timeout_ms = 100;
    ud_cfg.max_packet = 1 << 16;
    ud_cfg.dir_cache_max = 64;
    ud_cfg.login_timeout = 10;
    char err[256];
    if (loop_init(1) < 0 ||
        ud_stage_global("DBI:mysql:database=g;mysql_socket=/nonexistent/userdb-fuzz-g.sock", err, sizeof err) < 0 ||
        ud_stage_master(1, "DBI:mysql:database=c;mysql_socket=/nonexistent/userdb-fuzz-1.sock", err, sizeof err) < 0 ||
        ud_stage_replica(1, "DBI:mysql:database=c;mysql_socket=/nonexistent/userdb-fuzz-1r.sock", err, sizeof err) <
            0 ||
        ud_stage_defaults("1", err, sizeof err) < 0 || ud_topology_apply(err, sizeof err) < 0)
        abort();
    loop = loop_get(0);
}

static void drain(int fd)
{
    char buf[65536];
    while (read(fd, buf, sizeof buf) > 0) {
    }
}

/* HandshakeResponse41 for user "app" with an empty password. */
static const uint8_t login[] = {
    45,   0,    0,    1,    /* header: 45 bytes, seq 1 */
    0x0d, 0xa2, 0x0a, 0x00, /* caps: 41, secure, plugin auth, db */
    0,    0,    0,    1,    45,  0,   0,   0, 0, 0, 0, 0,   0,   0,   0, 0,
    0,    0,    0,    0,    0,   0,   0,   0, 0, 0, 0, 'a', 'p', 'p', 0, 0, /* empty auth response */
    'd',  'b',  0,    'n',  'o', 'n', 'e', 0, /* a plugin name: answered with an auth switch */
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        setup();
        ready = true;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    ud_accept(loop, sv[0], NULL, 0, NULL);
    uint8_t *buf = malloc(sizeof login + 4 + size);
    size_t n = 0;
    if (size == 0 || (data[0] & 1) == 0) {
        memcpy(buf, login, sizeof login);
        n = sizeof login;
        /* the answer to the auth switch: an empty response, seq 3 */
        static const uint8_t empty[4] = { 0, 0, 0, 3 };
        memcpy(buf + n, empty, 4);
        n += 4;
        if (size)
            data++, size--;
    }
    memcpy(buf + n, data, size);
    n += size;
    size_t off = 0;
    int spins = 0;
    while (off < n && spins++ < 10000) {
        ssize_t w = write(sv[1], buf + off, n - off);
        if (w > 0)
            off += (size_t)w;
        else if (w < 0 && errno != EAGAIN)
            break;
        event_base_loop(loop->base, EVLOOP_NONBLOCK);
        drain(sv[1]);
    }
    free(buf);
    shutdown(sv[1], SHUT_WR);
    for (spins = 0; conn_total_current() > 0 && spins < 10000; spins++) {
        event_base_loop(loop->base, EVLOOP_NONBLOCK);
        drain(sv[1]);
    }
    if (conn_total_current() != 0)
        abort(); /* the session did not finish after EOF */
    close(sv[1]);
    return 0;
}
