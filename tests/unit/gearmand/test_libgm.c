/* Unit tests for libgm without a server: the server-list parser, argument
 * checks, and that a list of dead servers fails fast with NO_SERVER (a
 * refused connect marks the server dead for retry_interval_ms). The client
 * and worker against real servers are in tests/integration/test_gearmand_libgm.py. */
#include "gearmand/client/libgm.h"
#include "tests/unit/unit.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void test_server_lists(void)
{
    char err[256];
    static const char *good[] = { "127.0.0.1", "127.0.0.1:4730", "a:1, b:2 c", "[::1]:4730", "::1", "host:65535" };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        struct gm_client *c = gm_client_new(good[i], NULL, err, sizeof err);
        CHECK(c != NULL);
        gm_client_free(c);
    }
    static const char *bad[] = { "", " , ", "h:0", "h:65536", "h:12x", "[::1", NULL };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        CHECK(gm_client_new(bad[i], NULL, err, sizeof err) == NULL);
        CHECK(err[0] != '\0');
    }
    struct gm_worker *w = gm_worker_new("", NULL, err, sizeof err);
    CHECK(w == NULL);
}

/* A port nothing listens on: bind one, note it, close it. */
static int dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t sl = sizeof sa;
    bind(fd, (struct sockaddr *)&sa, sizeof sa);
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    close(fd);
    return ntohs(sa.sin_port);
}

static void test_dead_servers_fail_fast(void)
{
    char list[64], err[256];
    snprintf(list, sizeof list, "127.0.0.1:%d,127.0.0.1:%d", dead_port(), dead_port());
    struct gm_client *c = gm_client_new(list, NULL, err, sizeof err);
    CHECK(c != NULL);
    if (!c)
        return;
    time_t t0 = time(NULL);
    void *res = NULL;
    size_t n = 0;
    CHECK_EQ_INT(gm_client_do(c, "f", "u", "x", 1, GM_CLIENT_NORMAL, &res, &n), GM_CLIENT_NO_SERVER);
    CHECK(res == NULL);
    CHECK_EQ_INT(gm_client_do_background(c, "f", NULL, "x", 1, GM_CLIENT_HIGH, NULL), GM_CLIENT_NO_SERVER);
    CHECK_EQ_INT(gm_client_echo(c, "x", 1), GM_CLIENT_NO_SERVER);
    struct gm_client_status st;
    CHECK_EQ_INT(gm_client_status(c, "H:x:1", &st), GM_CLIENT_NO_SERVER);
    CHECK(time(NULL) - t0 < 5);
    CHECK(gm_client_error(c)[0] != '\0');
    /* bad arguments never reach the network */
    CHECK_EQ_INT(gm_client_do(c, "", NULL, "x", 1, GM_CLIENT_NORMAL, &res, &n), GM_CLIENT_BAD_ARGUMENT);
    char longu[80];
    memset(longu, 'u', sizeof longu - 1);
    longu[sizeof longu - 1] = '\0';
    CHECK_EQ_INT(gm_client_do(c, "f", longu, "x", 1, GM_CLIENT_NORMAL, &res, &n), GM_CLIENT_BAD_ARGUMENT);
    CHECK_STR(gm_client_rc_name(GM_CLIENT_LOST), "LOST");
    gm_client_free(c);

    struct gm_worker *w = gm_worker_new(list, NULL, err, sizeof err);
    CHECK(w != NULL);
    if (!w)
        return;
    CHECK_EQ_INT(gm_worker_register(w, "", 0, NULL, NULL), GM_CLIENT_BAD_ARGUMENT);
    CHECK_EQ_INT(gm_worker_work(w), GM_CLIENT_NO_SERVER);
    gm_worker_free(w);
}

int main(void)
{
    RUN(test_server_lists);
    RUN(test_dead_servers_fail_fast);
    return unit_done();
}
