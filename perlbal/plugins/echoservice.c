/* plugins/echoservice.c: Perlbal's echoservice plugin — the `echo` service role: lines sent back after `echo_delay`
 * seconds. */
#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <regex.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/conn.h"
#include "common/line.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/tls.h"
#include "perlbal/perlbal.h"
#include "perlbal/plugin.h"

/* echoservice:
 *
 * Each line (LF, optional CR before it) comes back followed by CRLF, at once
 * or echo_delay seconds later on a timer, while later lines keep being read.
 * A line over ECHO_MAX_LINE closes the connection. Delayed echoes held in
 * memory are bounded: over ECHO_MAX_PENDING bytes reading pauses until
 * timers have fired. Pending echoes mark the conn busy, so a graceful stop
 * sends them before closing, and after the client half-closes the core keeps
 * the conn until they are out.
 * As in Perl Perlbal there is no idle timeout (SERVER max_connections bounds
 * the connections; over it a new one is closed at once). */

#define ECHO_MAX_LINE (16 * 1024)
#define ECHO_MAX_PENDING (256 * 1024)

struct echo_line { /* one delayed echo */
    struct echo_line *next;
    int64_t due_ms; /* pb_now_ms() when it goes out */
    size_t len;
    char data[]; /* the line and its CRLF */
};

/* Delayed lines wait in arrival order on one timer armed for the oldest:
 * libevent does not keep equal deadlines in order, and echoes must be. */
struct echo_conn {
    struct core_conn *c;
    struct pb_service *svc;
    struct event *timer; /* created on the first delayed line */
    struct echo_line *head, *tail;
    size_t pending_bytes;
    bool paused; /* reading stopped: too much pending */
};

static const char *const echo_tunables[] = { "echo_delay", NULL };

static int echo_set(struct pb_service *svc, const char *key, const char *val, char *err, size_t errlen)
{
    if (strcmp(key, "echo_delay")) {
        snprintf(err, errlen, "Unknown parameter '%s'", key);
        return -1;
    }
    if (svc->role != PB_ROLE_ECHO) {
        snprintf(err, errlen, "The 'echo_delay' option can only be set on a 'echo' service");
        return -1;
    }
    char *end;
    long n = strtol(val, &end, 10);
    if (!isdigit((unsigned char)*val) || *end || n > INT_MAX) {
        snprintf(err, errlen, "Expecting integer value for parameter 'echo_delay'");
        return -1;
    }
    svc->echo_delay = (int)n;
    return 0;
}

static void echo_arm(struct echo_conn *ec, int64_t now)
{
    int64_t ms = ec->head->due_ms - now;
    if (ms < 1)
        ms = 1;
    struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };
    evtimer_add(ec->timer, &tv);
}

static void echo_fire(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct echo_conn *ec = arg;
    struct core_conn *c = ec->c;
    int64_t now = pb_now_ms();
    while (ec->head && ec->head->due_ms <= now) {
        struct echo_line *l = ec->head;
        evbuffer_add(conn_out(c), l->data, l->len);
        ec->head = l->next;
        ec->pending_bytes -= l->len;
        free(l);
    }
    if (!ec->head)
        ec->tail = NULL;
    else
        echo_arm(ec, now);
    bool more = ec->head != NULL;
    if (ec->paused && ec->pending_bytes <= ECHO_MAX_PENDING / 2) {
        ec->paused = false;
        conn_resume_read(c);
        if (evbuffer_get_length(conn_in(c))) {
            /* input is buffered, so clearing busy cannot free c here */
            conn_set_busy(c, more);
            conn_kick(c); /* may free c */
            return;
        }
    }
    if (!more)
        conn_set_busy(c, false); /* may free c (graceful stop) */
}

static int echo_on_read(struct core_conn *c)
{
    struct echo_conn *ec = c->data;
    struct evbuffer *in = conn_in(c);
    int delay = ec->svc->echo_delay;
    for (;;) {
        if (ec->pending_bytes > ECHO_MAX_PENDING) {
            ec->paused = true;
            conn_pause_read(c);
            return 0;
        }
        size_t ll, consumed;
        enum line_status st;
        char *line = line_peek(in, ECHO_MAX_LINE, &ll, &consumed, &st);
        if (st == LINE_NEED_MORE)
            return 0;
        if (st == LINE_TOO_LONG)
            return -1;
        if (delay <= 0) {
            evbuffer_add(conn_out(c), line, ll);
            evbuffer_add(conn_out(c), "\r\n", 2);
            evbuffer_drain(in, consumed);
            continue;
        }
        if (!ec->timer && !(ec->timer = evtimer_new(c->loop->base, echo_fire, ec)))
            return -1;
        struct echo_line *l = malloc(sizeof *l + ll + 2);
        if (!l)
            return -1;
        memcpy(l->data, line, ll);
        memcpy(l->data + ll, "\r\n", 2);
        l->len = ll + 2;
        l->next = NULL;
        int64_t now = pb_now_ms();
        /* +1: the ms clock truncates, so a line read late in a millisecond
         * must not come back a fraction of a millisecond early */
        l->due_ms = now + (int64_t)delay * 1000 + (delay > 0 ? 1 : 0);
        evbuffer_drain(in, consumed);
        ec->pending_bytes += l->len;
        if (ec->tail) {
            ec->tail->next = l;
        } else {
            ec->head = l;
            echo_arm(ec, now);
        }
        ec->tail = l;
        conn_set_busy(c, true);
    }
}

static void echo_on_close(struct core_conn *c, enum conn_close_reason why)
{
    (void)why;
    struct echo_conn *ec = c->data;
    while (ec->head) {
        struct echo_line *l = ec->head;
        ec->head = l->next;
        free(l);
    }
    if (ec->timer)
        event_free(ec->timer);
    free(ec);
}

static const struct conn_ops echo_ops = {
    .name = "pb_echo",
    .on_read = echo_on_read,
    .on_close = echo_on_close,
};

void pb_echo_accept(struct pb_service *svc, struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen)
{
    struct echo_conn *ec = calloc(1, sizeof *ec);
    if (!ec) {
        close(fd);
        return;
    }
    ec->svc = svc;
    if (svc->enable_ssl && svc->tls_ctx) {
        struct bufferevent *bev = tls_accept_bev(svc->tls_ctx, loop->base, fd);
        ec->c = bev ? conn_new_bev(loop, bev, sa, salen, &echo_ops, ec) : NULL;
        if (!bev)
            close(fd);
    } else {
        ec->c = conn_new(loop, fd, sa, salen, &echo_ops, ec);
    }
    if (!ec->c) {
        free(ec);
        return;
    }
    conn_set_output_limit(ec->c, svc->buffer_size ? svc->buffer_size : 256 * 1024);
}

const struct pb_plugin pb_plugin_echoservice = { .name = "echoservice",
                                                 .set_param = echo_set,
                                                 .tunables = echo_tunables };
