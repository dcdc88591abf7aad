/* loops + listeners + connections, end to end over loopback: a line echo
 * server on two loops, the max-connections gate, close after write,
 * outgoing connections, loop_call and the graceful stop. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <errno.h>
#include <stdio.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/conn.h"
#include "common/line.h"
#include "common/listen.h"
#include "common/loop.h"
#include "tests/unit/unit.h"

static atomic_int loops_seen_mask;
static atomic_int closes;
static atomic_int eofs, direct_bytes, client_failures;

static void later_reply(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct core_conn *c = arg;
    c->requests++;
    evbuffer_add_printf(conn_out(c), "LATER %d\r\n", (int)c->requests);
    if (c->requests == 1) { /* the first part drains before the second */
        struct timeval tv = { 0, 100000 };
        event_base_once(c->loop->base, -1, EV_TIMEOUT, later_reply, c, &tv);
        return;
    }
    conn_set_busy(c, false);
}

/* The conn a timer is working on, and whether it was freed under it. */
static struct core_conn *_Atomic in_timer;
static atomic_int freed_under_caller, timer_done;

/* From a timer (as from a loop_call or a work completion): clearing busy
 * and closing after write must not free c under us. */
static void close_later(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct core_conn *c = arg;
    atomic_store(&in_timer, c);
    conn_set_busy(c, false);   /* after the peer's EOF: this would close */
    conn_close_after_write(c); /* nothing queued: this would free */
    c->requests += 1;          /* still ours */
    evbuffer_get_length(conn_out(c));
    atomic_store(&in_timer, NULL);
    atomic_fetch_add(&timer_done, 1);
}

static int echo_read(struct core_conn *c)
{
    atomic_fetch_or(&loops_seen_mask, 1 << c->loop->index);
    for (;;) {
        size_t len, used;
        enum line_status st;
        char *line = line_peek(conn_in(c), 64, &len, &used, &st);
        if (st == LINE_NEED_MORE)
            return 0;
        if (st == LINE_TOO_LONG) {
            evbuffer_add_printf(conn_out(c), "TOO LONG\r\n");
            conn_close_after_write(c);
            return 0;
        }
        if (len == 4 && memcmp(line, "quit", 4) == 0) {
            evbuffer_add_printf(conn_out(c), "BYE\r\n");
            conn_close_after_write(c);
            return 0;
        }
        if (len == 4 && memcmp(line, "busy", 4) == 0) { /* a request waiting on something */
            c->data = c;
            conn_set_busy(c, true);
            evbuffer_drain(conn_in(c), used);
            continue;
        }
        if (len == 11 && memcmp(line, "close-later", 11) == 0) { /* close from a timer */
            conn_set_busy(c, true);
            struct timeval tv = { 0, 50000 };
            event_base_once(c->loop->base, -1, EV_TIMEOUT, close_later, c, &tv);
            evbuffer_drain(conn_in(c), used);
            continue;
        }
        if (len == 5 && memcmp(line, "later", 5) == 0) { /* reply from a timer */
            conn_set_busy(c, true);
            c->requests = 0;
            struct timeval tv = { 0, 100000 };
            event_base_once(c->loop->base, -1, EV_TIMEOUT, later_reply, c, &tv);
            evbuffer_drain(conn_in(c), used);
            continue;
        }
        if (len > 4 && memcmp(line, "big ", 4) == 0) { /* direct write, remainder queued */
            struct evbuffer *tmp = evbuffer_new();
            int n = atoi(line + 4);
            for (int i = 0; i < n; i++)
                evbuffer_add(tmp, "B", 1);
            evbuffer_add(tmp, "\r\n", 2);
            atomic_fetch_add(&direct_bytes, (int)conn_write_now(c, tmp));
            if (evbuffer_get_length(tmp) != 0)
                atomic_fetch_add(&client_failures, 1);
            evbuffer_free(tmp);
            evbuffer_drain(conn_in(c), used);
            continue;
        }
        evbuffer_add_printf(conn_out(c), "ECHO %.*s\r\n", (int)len, line);
        evbuffer_drain(conn_in(c), used);
        c->requests++;
    }
}

static void echo_close(struct core_conn *c, enum conn_close_reason why)
{
    (void)c;
    (void)why;
    if (atomic_load(&in_timer) == c)
        atomic_fetch_add(&freed_under_caller, 1);
    atomic_fetch_add(&closes, 1);
}

/* A busy conn whose peer left is closed at once (it would otherwise wait). */
static bool echo_eof(struct core_conn *c)
{
    atomic_fetch_add(&eofs, 1);
    return c->data != NULL;
}

static const struct conn_ops echo_ops = {
    .name = "echo", .on_read = echo_read, .on_eof = echo_eof, .on_close = echo_close
};

static void on_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t len, void *arg)
{
    (void)arg;
    conn_new(loop, fd, sa, len, &echo_ops, NULL);
}

static void on_reject(int fd, void *arg)
{
    (void)arg;
    ssize_t w = send(fd, "FULL\r\n", 6, MSG_NOSIGNAL);
    (void)w;
}

static int port;

static int dial(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
        close(fd);
        return -1;
    }
    struct timeval tv = { 5, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static int roundtrip(int fd, const char *send_text, char *reply, size_t cap)
{
    if (send(fd, send_text, strlen(send_text), 0) < 0)
        return -1;
    size_t got = 0;
    while (got < cap - 1) {
        ssize_t n = recv(fd, reply + got, cap - 1 - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
        reply[got] = '\0';
        if (got >= 2 && reply[got - 1] == '\n')
            break;
    }
    reply[got] = '\0';
    return (int)got;
}

/* Outgoing connection test, run on loop 1 via loop_call. */
static atomic_int outgoing_ok;
static int out_read(struct core_conn *c)
{
    size_t len, used;
    enum line_status st;
    char *line = line_peek(conn_in(c), 64, &len, &used, &st);
    if (st == LINE_OK) {
        if (len == 9 && memcmp(line, "ECHO ping", 9) == 0)
            atomic_store(&outgoing_ok, 1);
        evbuffer_drain(conn_in(c), used);
        conn_close(c);
    }
    return 0;
}
static void out_connect(struct core_conn *c, bool ok)
{
    if (ok)
        evbuffer_add_printf(conn_out(c), "ping\r\n");
}
static const struct conn_ops out_ops = { .name = "out", .on_read = out_read, .on_connect = out_connect };

static void start_outgoing(void *arg)
{
    (void)arg;
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    conn_connect(loop_current(), (struct sockaddr *)&sin, sizeof(sin), &out_ops, NULL);
}

static atomic_int call_ran_on;
static void mark_call(void *arg)
{
    (void)arg;
    atomic_store(&call_ran_on, loop_current()->index + 100);
}

static void *client_main(void *arg)
{
    (void)arg;
    char buf[256];
    /* Many short connections so both loops see some. */
    for (int i = 0; i < 40; i++) {
        int fd = dial();
        if (fd < 0 || roundtrip(fd, "hello\r\n", buf, sizeof(buf)) <= 0 || strcmp(buf, "ECHO hello\r\n") != 0) {
            fprintf(stderr, "client failure at line %d: [%s]\n", __LINE__, buf);
            atomic_fetch_add(&client_failures, 1);
        }
        /* pipelined + split across writes */
        if (roundtrip(fd, "a\r\nb\nc", buf, sizeof(buf)) <= 0 || strcmp(buf, "ECHO a\r\nECHO b\r\n") != 0) {
            /* the two replies may arrive separately */
            char more[64];
            if (strcmp(buf, "ECHO a\r\n") != 0 || roundtrip(fd, "", more, sizeof(more)) <= 0 ||
                strcmp(more, "ECHO b\r\n") != 0) {
                fprintf(stderr, "client failure at line %d: [%s]\n", __LINE__, buf);
                atomic_fetch_add(&client_failures, 1);
            }
        }
        if (roundtrip(fd, "\r\nquit\r\n", buf, sizeof(buf)) <= 0 || strcmp(buf, "ECHO c\r\nBYE\r\n") != 0) {
            char more[64];
            if (strcmp(buf, "ECHO c\r\n") != 0 || roundtrip(fd, "", more, sizeof(more)) <= 0 ||
                strcmp(more, "BYE\r\n") != 0) {
                fprintf(stderr, "client failure at line %d: [%s]\n", __LINE__, buf);
                atomic_fetch_add(&client_failures, 1);
            }
        }
        close(fd);
    }
    /* A line over the limit gets an error and a close. */
    int fd = dial();
    char big[200];
    memset(big, 'x', sizeof(big));
    big[199] = '\0';
    if (roundtrip(fd, big, buf, sizeof(buf)) <= 0 || strcmp(buf, "TOO LONG\r\n") != 0) {
        fprintf(stderr, "client failure at line %d: [%s]\n", __LINE__, buf);
        atomic_fetch_add(&client_failures, 1);
    }
    close(fd);

    /* on_eof: a busy conn whose client half-closes is closed at once. */
    fd = dial();
    send(fd, "busy\r\n", 6, 0);
    usleep(50000);
    shutdown(fd, SHUT_WR);
    if (recv(fd, buf, sizeof(buf), 0) != 0) {
        fprintf(stderr, "client failure at line %d: busy conn not closed on EOF\n", __LINE__);
        atomic_fetch_add(&client_failures, 1);
    }
    close(fd);

    /* A client that half-closes still gets the replies its busy request
     * makes later, even when the output drains between them; then the conn
     * closes. */
    fd = dial();
    send(fd, "later\r\n", 7, 0);
    shutdown(fd, SHUT_WR);
    size_t got = 0;
    ssize_t r;
    while (got < sizeof(buf) - 1 && (r = recv(fd, buf + got, sizeof(buf) - 1 - got, 0)) > 0)
        got += (size_t)r; /* until the server closes */
    buf[got] = '\0';
    if (strcmp(buf, "LATER 1\r\nLATER 2\r\n") != 0) {
        fprintf(stderr, "client failure at line %d: [%s]\n", __LINE__, buf);
        atomic_fetch_add(&client_failures, 1);
    }
    close(fd);

    /* Closing from a timer: the conn closes, but only after the timer's
     * callback has returned (twice: once with the peer's EOF first). */
    for (int half = 0; half < 2; half++) {
        fd = dial();
        send(fd, "close-later\r\n", 13, 0);
        if (half)
            shutdown(fd, SHUT_WR);
        if (recv(fd, buf, sizeof(buf), 0) != 0) {
            fprintf(stderr, "client failure at line %d: close-later not closed\n", __LINE__);
            atomic_fetch_add(&client_failures, 1);
        }
        close(fd);
    }

    /* conn_write_now: a reply larger than the socket buffer arrives whole. */
    static char bigbuf[300000];
    fd = dial();
    int nbig = roundtrip(fd, "big 250000\r\n", bigbuf, sizeof(bigbuf));
    if (nbig != 250002 || bigbuf[0] != 'B' || bigbuf[249999] != 'B') {
        fprintf(stderr, "client failure at line %d: big reply %d bytes\n", __LINE__, nbig);
        atomic_fetch_add(&client_failures, 1);
    }
    close(fd);

    /* The gate: with max 2 conns, a third connection is refused. The
     * connections above are closed by now on our side; wait until the
     * server has seen all of them go, so they do not count. */
    for (int i = 0; i < 200 && conn_total_current() > 0; i++)
        usleep(10000);
    listen_set_max_conns(2);
    int a = dial(), b = dial();
    roundtrip(a, "x\r\n", buf, sizeof(buf));
    roundtrip(b, "x\r\n", buf, sizeof(buf));
    int c = dial();
    if (roundtrip(c, "", buf, sizeof(buf)) <= 0 || strcmp(buf, "FULL\r\n") != 0) {
        fprintf(stderr, "client failure at line %d: [%s]\n", __LINE__, buf);
        atomic_fetch_add(&client_failures, 1);
    }
    close(a);
    close(b);
    close(c);
    usleep(100000);
    listen_set_max_conns(0);

    loop_call(loop_get(1), start_outgoing, NULL);
    loop_call(loop_get(1), mark_call, NULL);
    /* wait for both (bounded), not a fixed pause: under load the
     * outgoing round trip can take longer than any pause chosen here */
    for (int i = 0; i < 1000 && (atomic_load(&outgoing_ok) == 0 || atomic_load(&call_ran_on) == 0); i++)
        usleep(5000);

    /* An idle client is closed by the graceful stop. */
    int idle = dial();
    roundtrip(idle, "x\r\n", buf, sizeof(buf));
    loop_request_stop();
    ssize_t n = recv(idle, buf, sizeof(buf), 0);
    if (n != 0)
        fprintf(stderr, "idle recv n=%zd errno=%d\n", n, errno);
    if (n != 0) {
        fprintf(stderr, "client failure at line %d: [%s]\n", __LINE__, buf);
        atomic_fetch_add(&client_failures, 1);
    }
    close(idle);
    return NULL;
}

/* listen_foreach: what memcached's `stats conns` lists. */
struct seen_listeners {
    int tcp, unix_, admin, bad;
    int loops_mask;
    char tcp_addr[128];
};
static void see_listener(const struct listen_info *li, void *arg)
{
    struct seen_listeners *s = arg;
    if (li->fd < 0 || !li->l)
        s->bad++;
    if (li->is_unix) {
        s->unix_++;
        if (strncmp(li->addr, "unix:/tmp/test_loop_conn.", 25) != 0)
            s->bad++;
    } else {
        s->tcp++;
        snprintf(s->tcp_addr, sizeof s->tcp_addr, "%s", li->addr);
        s->loops_mask |= 1 << li->loop;
        if (li->on_accept != on_accept)
            s->bad++;
    }
    if (li->is_admin)
        s->admin++;
}

static void test_echo_server_two_loops(void)
{
    CHECK_EQ_INT(loop_init(2), 0);
    loop_set_grace(2);
    char err[256];
    struct core_listener *l = listen_open("127.0.0.1:0", 0, NULL, on_accept, on_reject, NULL, err, sizeof(err));
    CHECK(l != NULL);
    if (!l)
        return;
    port = listen_port(l);
    CHECK(port > 0);
    {
        char upath[64], uspec[80], want[64];
        snprintf(upath, sizeof upath, "/tmp/test_loop_conn.%d.sock", (int)getpid());
        snprintf(uspec, sizeof uspec, "unix:%s", upath);
        struct listen_opts uo = { .is_admin = true };
        struct core_listener *u = listen_open(uspec, 0, &uo, on_accept, on_reject, NULL, err, sizeof(err));
        CHECK(u != NULL);
        struct seen_listeners seen = { 0 };
        CHECK_EQ_INT(listen_foreach(see_listener, &seen), 3);
        CHECK_EQ_INT(seen.tcp, 2); /* one socket per loop */
        CHECK_EQ_INT(seen.loops_mask, 3);
        CHECK_EQ_INT(seen.unix_, 1);
        CHECK_EQ_INT(seen.admin, 1);
        CHECK_EQ_INT(seen.bad, 0);
        snprintf(want, sizeof want, "127.0.0.1:%d", port);
        CHECK_STR(seen.tcp_addr, want);
        listen_close(u); /* gone from the list at once */
        struct seen_listeners after = { 0 };
        CHECK_EQ_INT(listen_foreach(see_listener, &after), 2);
        CHECK_EQ_INT(after.unix_, 0);
    }
    pthread_t t;
    pthread_create(&t, NULL, client_main, NULL);
    CHECK_EQ_INT(loop_run(), 0);
    pthread_join(t, NULL);
    CHECK_EQ_INT(atomic_load(&client_failures), 0);
    CHECK_EQ_INT(atomic_load(&timer_done), 2);
    CHECK_EQ_INT(atomic_load(&freed_under_caller), 0);
    CHECK_EQ_INT(atomic_load(&outgoing_ok), 1);
    CHECK_EQ_INT(atomic_load(&call_ran_on), 101);
    CHECK_EQ_INT(conn_total_current(), 0);
    CHECK(atomic_load(&closes) >= 46);
    CHECK(atomic_load(&eofs) >= 1);
    CHECK(atomic_load(&direct_bytes) > 0);
    CHECK(listen_rejected_conns() >= 1);
    /* reuseport spreads connections; usually both loops see some, but the
     * kernel's hash may favour one, so only require loop activity. */
    CHECK(atomic_load(&loops_seen_mask) != 0);
    loop_free();
}

static void test_parse_addr(void)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char err[128];
    CHECK_EQ_INT(listen_parse_addr("127.0.0.1:80", 0, &ss, &len, err, sizeof(err)), 0);
    CHECK_EQ_INT(ntohs(((struct sockaddr_in *)&ss)->sin_port), 80);
    CHECK_EQ_INT(listen_parse_addr("8080", 0, &ss, &len, err, sizeof(err)), 0);
    CHECK_EQ_INT(ntohs(((struct sockaddr_in *)&ss)->sin_port), 8080);
    CHECK_EQ_INT(listen_parse_addr("[::1]:99", 0, &ss, &len, err, sizeof(err)), 0);
    CHECK_EQ_INT(ss.ss_family, AF_INET6);
    CHECK_EQ_INT(listen_parse_addr("127.0.0.1", 11211, &ss, &len, err, sizeof(err)), 0);
    CHECK_EQ_INT(ntohs(((struct sockaddr_in *)&ss)->sin_port), 11211);
    CHECK_EQ_INT(listen_parse_addr("unix:/tmp/x.sock", 0, &ss, &len, err, sizeof(err)), 0);
    CHECK_EQ_INT(ss.ss_family, AF_UNIX);
    CHECK_EQ_INT(listen_parse_addr("1.2.3.4:99999", 0, &ss, &len, err, sizeof(err)), -1);
    CHECK_EQ_INT(listen_parse_addr("[::1", 0, &ss, &len, err, sizeof(err)), -1);
}

int main(void)
{
    RUN(test_parse_addr);
    RUN(test_echo_server_two_loops);
    return unit_done();
}
