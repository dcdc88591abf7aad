/* conn's on_drained: it follows every write that leaves the output empty,
 * whichever path wrote it — conn_write_now taking a whole reply at once
 * (from on_read and from a timer), the end-of-iteration write of output
 * appended to conn_out, and the socket's write event after a reply larger
 * than the socket buffer — once per drain, and never inside the call that
 * wrote. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/conn.h"
#include "common/line.h"
#include "common/listen.h"
#include "common/loop.h"
#include "tests/unit/unit.h"

static atomic_int drained, reentered, failures;
static atomic_int direct_whole, direct_partial;
static int in_write; /* loop thread only: inside a call that writes */
static int port;

static void write_now(struct core_conn *c, struct evbuffer *b, size_t len)
{
    in_write = 1;
    size_t n = conn_write_now(c, b);
    in_write = 0;
    if (n == len)
        atomic_fetch_add(&direct_whole, 1);
    else
        atomic_fetch_add(&direct_partial, 1);
}

static void timer_reply(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct core_conn *c = arg;
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, "TIMER\r\n", 7);
    write_now(c, b, 7);
    evbuffer_free(b);
    conn_set_busy(c, false);
}

static int srv_read(struct core_conn *c)
{
    for (;;) {
        size_t len, used;
        enum line_status st;
        char *line = line_peek(conn_in(c), 64, &len, &used, &st);
        if (st != LINE_OK)
            return st == LINE_NEED_MORE ? 0 : -1;
        if (len > 7 && memcmp(line, "direct ", 7) == 0) { /* conn_write_now */
            size_t n = (size_t)atol(line + 7);
            struct evbuffer *b = evbuffer_new();
            char *p = malloc(n + 2);
            memset(p, 'D', n);
            memcpy(p + n, "\r\n", 2);
            evbuffer_add(b, p, n + 2);
            free(p);
            write_now(c, b, n + 2);
            evbuffer_free(b);
        } else if (len == 6 && memcmp(line, "queued", 6) == 0) { /* end-of-iteration write */
            evbuffer_add(conn_out(c), "QUEUED\r\n", 8);
        } else if (len == 5 && memcmp(line, "timer", 5) == 0) { /* conn_write_now outside a callback */
            conn_set_busy(c, true);
            struct timeval tv = { 0, 10000 };
            event_base_once(c->loop->base, -1, EV_TIMEOUT, timer_reply, c, &tv);
        } else {
            atomic_fetch_add(&failures, 1);
        }
        evbuffer_drain(conn_in(c), used);
    }
}

static void srv_drained(struct core_conn *c)
{
    if (in_write)
        atomic_fetch_add(&reentered, 1);
    if (evbuffer_get_length(conn_out(c)) != 0)
        atomic_fetch_add(&failures, 1);
    atomic_fetch_add(&drained, 1);
}

static const struct conn_ops srv_ops = { .name = "drained", .on_read = srv_read, .on_drained = srv_drained };

static void on_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t len, void *arg)
{
    (void)arg;
    conn_new(loop, fd, sa, len, &srv_ops, NULL);
}

static int dial(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
        close(fd);
        return -1;
    }
    struct timeval tv = { 10, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

/* Read exactly n bytes (the reply); false on a short read. */
static bool read_n(int fd, size_t n)
{
    static char buf[65536];
    while (n > 0) {
        ssize_t r = recv(fd, buf, n < sizeof buf ? n : sizeof buf, 0);
        if (r <= 0)
            return false;
        n -= (size_t)r;
    }
    return true;
}

/* Wait (bounded) until on_drained has run want times in all. */
static bool wait_drained(int want)
{
    for (int i = 0; i < 1000 && atomic_load(&drained) < want; i++)
        usleep(5000);
    return atomic_load(&drained) >= want;
}

static void step(int fd, const char *req, size_t reply_len, int want, int line, bool read_late)
{
    if (send(fd, req, strlen(req), 0) < 0) {
        atomic_fetch_add(&failures, 1);
        return;
    }
    if (read_late)
        usleep(100000); /* the reply fills the socket buffer: the rest waits for the write event */
    if (!read_n(fd, reply_len) || !wait_drained(want)) {
        fprintf(stderr, "line %d: %s: drained %d, want %d\n", line, req, atomic_load(&drained), want);
        atomic_fetch_add(&failures, 1);
    }
}

static void *client_main(void *arg)
{
    (void)arg;
    int fd = dial();
    if (fd < 0) {
        atomic_fetch_add(&failures, 1);
        loop_request_stop();
        return NULL;
    }
    step(fd, "direct 10\r\n", 12, 1, __LINE__, false);               /* direct write took it all */
    step(fd, "queued\r\n", 8, 2, __LINE__, false);                   /* end-of-iteration write */
    step(fd, "timer\r\n", 7, 3, __LINE__, false);                    /* direct write from a timer */
    step(fd, "direct 8000000\r\n", 8000002, 4, __LINE__, true);      /* the rest by the write event */
    step(fd, "direct 100\r\ndirect 5\r\n", 109, 5, __LINE__, false); /* two writes, one iteration */
    /* Exactly once per drain: nothing more comes. (The two pipelined
     * writes may each drain before the next, so 5 or 6.) */
    usleep(100000);
    int d = atomic_load(&drained);
    if (d != 5 && d != 6) {
        fprintf(stderr, "drained %d times, want 5 or 6\n", d);
        atomic_fetch_add(&failures, 1);
    }
    close(fd);
    loop_request_stop();
    return NULL;
}

static void test_drained_every_path(void)
{
    CHECK_EQ_INT(loop_init(1), 0);
    loop_set_grace(2);
    char err[256];
    struct core_listener *l = listen_open("127.0.0.1:0", 0, NULL, on_accept, NULL, NULL, err, sizeof(err));
    CHECK(l != NULL);
    if (!l)
        return;
    port = listen_port(l);
    pthread_t t;
    pthread_create(&t, NULL, client_main, NULL);
    CHECK_EQ_INT(loop_run(), 0);
    pthread_join(t, NULL);
    CHECK_EQ_INT(atomic_load(&failures), 0);
    CHECK_EQ_INT(atomic_load(&reentered), 0);
    CHECK(atomic_load(&direct_whole) >= 3);   /* the direct path was taken */
    CHECK(atomic_load(&direct_partial) >= 1); /* and the write-event path */
    loop_free();
}

int main(void)
{
    RUN(test_drained_every_path);
    return unit_done();
}
