/* session: schwartzd's connection state machine — frames request lines and
 * data blocks (PROTOCOL.md) and hands complete requests to cmd_sw.c.
 * One enum of states (session.h), one driver: sess_drive(). Everything here
 * runs on loop 0; nothing blocks. */
#include "schwartz/session.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "common/conn.h"
#include "common/line.h"
#include "common/log.h"
#include "common/loop.h"

/* Input kept buffered while a request runs before reading pauses. */
#define SW_PIPELINE_BYTES (256 * 1024)

static struct sw_sess *sessions;

void sw_sess_reply(struct sw_sess *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_vprintf(conn_out(s->c), fmt, ap);
    va_end(ap);
}

void sw_sess_error(struct sw_sess *s, enum sw_err e, const char *msg)
{
    stats_counter_add(&sw.n.errors_sent, 1);
    evbuffer_add_printf(conn_out(s->c), "ERR %s %s\r\n", sw_err_code(e), msg && *msg ? msg : sw_err_code(e));
}

static void reset_request(struct sw_sess *s)
{
    for (int i = 0; i < s->njobs; i++)
        sw_jobspec_clear(&s->jobs[i]);
    free(s->jobs);
    s->jobs = NULL;
    s->njobs = 0;
    s->want = 0;
    s->bytes_total = 0;
    sw_jobspec_clear(&s->cur);
    s->cur_bytes = 0;
}

static void fatal(struct sw_sess *s, enum sw_err e, const char *msg)
{
    sw_sess_error(s, e, msg);
    reset_request(s);
    s->st = SW_SS_CLOSING;
    conn_close_after_write(s->c);
}

static char *dupn(const char *p) { return p ? strdup(p) : NULL; }

/* Copy a parsed job line (insert / job lines) into cur; its block follows. */
static int take_jobline(struct sw_sess *s, const struct sw_req *r)
{
    sw_jobspec_clear(&s->cur);
    s->cur.func = dupn(r->func);
    s->cur.uniqkey = dupn(r->uniqkey);
    s->cur.coalesce = dupn(r->coalesce);
    s->cur.priority = r->priority;
    s->cur.run_after = r->run_after;
    s->cur_bytes = r->bytes;
    if (!s->cur.func || (r->uniqkey && !s->cur.uniqkey) || (r->coalesce && !s->cur.coalesce))
        return -1;
    s->bytes_total += r->bytes;
    return 0;
}

static void start_request(struct sw_sess *s, struct sw_req *r)
{
    s->c->requests++;
    s->cmd = r->cmd;
    switch (r->cmd) {
    case SW_CMD_INSERT:
        if (take_jobline(s, r) < 0) {
            fatal(s, SW_E_DB_ERROR, "out of memory");
            return;
        }
        s->want = 1;
        s->st = SW_SS_BLOCK;
        return;
    case SW_CMD_INSERT_MANY:
    case SW_CMD_REPLACE_WITH:
        snprintf(s->handle, sizeof s->handle, "%s", r->handle ? r->handle : "");
        s->want = r->count;
        if (s->want == 0) { /* replace_with H 0: just complete the job */
            sw_cmd_dispatch(s, r, NULL, 0);
            return;
        }
        s->jobs = calloc(s->want, sizeof *s->jobs);
        if (!s->jobs) {
            fatal(s, SW_E_DB_ERROR, "out of memory");
            return;
        }
        s->st = SW_SS_JOBLINE;
        return;
    case SW_CMD_QUIT:
        s->st = SW_SS_CLOSING;
        conn_close_after_write(s->c);
        return;
    default: sw_cmd_dispatch(s, r, NULL, 0); return;
    }
}

/* A block arrived for cur: keep it, then read the next job line or run. */
static void block_done(struct sw_sess *s)
{
    if (s->cmd == SW_CMD_INSERT) {
        struct sw_req r;
        memset(&r, 0, sizeof r);
        r.cmd = SW_CMD_INSERT;
        struct sw_jobspec *j = calloc(1, sizeof *j);
        if (!j) {
            fatal(s, SW_E_DB_ERROR, "out of memory");
            return;
        }
        *j = s->cur;
        memset(&s->cur, 0, sizeof s->cur);
        s->jobs = j;
        s->njobs = 1;
        sw_cmd_dispatch(s, &r, s->jobs, s->njobs);
        return;
    }
    s->jobs[s->njobs++] = s->cur;
    memset(&s->cur, 0, sizeof s->cur);
    if ((uint64_t)s->njobs < s->want) {
        s->st = SW_SS_JOBLINE;
        return;
    }
    struct sw_req r;
    memset(&r, 0, sizeof r);
    r.cmd = s->cmd;
    r.handle = s->handle;
    r.count = s->want;
    sw_cmd_dispatch(s, &r, s->jobs, s->njobs);
}

/* The driver: consume whatever the current state can use. */
static void sess_drive(struct sw_sess *s)
{
    struct evbuffer *in = conn_in(s->c);
    /* Not conn_is_closing(): after a peer's half-close (EOF) the requests it
     * pipelined before still run; our own fatal errors set SW_SS_CLOSING. */
    for (;;) {
        switch (s->st) {
        case SW_SS_WAIT:
        case SW_SS_CLOSING: return;
        case SW_SS_LINE:
        case SW_SS_JOBLINE: {
            size_t len, consumed;
            enum line_status ls;
            char *line = line_peek(in, SW_MAX_LINE, &len, &consumed, &ls);
            if (ls == LINE_NEED_MORE)
                return;
            if (ls == LINE_TOO_LONG) {
                fatal(s, SW_E_LINE_TOO_LONG, "request line longer than 8192 bytes");
                return;
            }
            struct sw_req r;
            const char *why;
            bool jobline = s->st == SW_SS_JOBLINE;
            uint64_t room = sw.cfg.max_arg > s->bytes_total ? sw.cfg.max_arg - s->bytes_total : 0;
            enum sw_err e = sw_parse_line(line, len, jobline, room, &r, &why);
            if (e == SW_OK) {
                if (jobline) {
                    if (take_jobline(s, &r) < 0) {
                        evbuffer_drain(in, consumed);
                        fatal(s, SW_E_DB_ERROR, "out of memory");
                        return;
                    }
                    s->st = SW_SS_BLOCK;
                    evbuffer_drain(in, consumed);
                } else {
                    /* the request points into the line: run it before draining */
                    s->log_cmd_len = log_command_enabled() ? (len < sizeof s->log_cmd ? len : sizeof s->log_cmd) : 0;
                    memcpy(s->log_cmd, line, s->log_cmd_len);
                    start_request(s, &r);
                    evbuffer_drain(in, consumed);
                }
                continue;
            }
            s->log_cmd_len = log_command_enabled() ? (len < sizeof s->log_cmd ? len : sizeof s->log_cmd) : 0;
            memcpy(s->log_cmd, line, s->log_cmd_len); /* -vv: logged with the error below */
            evbuffer_drain(in, consumed);
            if (e == SW_E_ARG_TOO_BIG || jobline) {
                /* The block that follows can't be told from a request: close. */
                fatal(s, e, why);
                return;
            }
            if (len == 0 && e == SW_E_UNKNOWN_COMMAND)
                continue; /* empty line: ignore, as telnet users expect */
            sw_sess_error(s, e, why);
            if (s->log_cmd_len) {
                char who[80], res[240];
                int k = snprintf(res, sizeof res, "ERR %s %s", sw_err_code(e), why ? why : "");
                log_command(log_addr(&s->c->peer, who, sizeof who), s->log_cmd, s->log_cmd_len, false, res,
                            k > 0 ? (size_t)k : 0);
                s->log_cmd_len = 0;
            }
            continue;
        }
        case SW_SS_BLOCK: {
            size_t avail = evbuffer_get_length(in);
            if (avail < s->cur_bytes + 1)
                return;
            /* Terminator: CRLF, or a bare LF. */
            char t[2];
            size_t tn = avail >= s->cur_bytes + 2 ? 2 : 1;
            struct evbuffer_ptr pos;
            evbuffer_ptr_set(in, &pos, s->cur_bytes, EVBUFFER_PTR_SET);
            evbuffer_copyout_from(in, &pos, t, tn);
            size_t term;
            if (t[0] == '\n')
                term = 1;
            else if (tn == 2 && t[0] == '\r' && t[1] == '\n')
                term = 2;
            else if (tn == 1 && t[0] == '\r')
                return; /* wait for the LF */
            else {
                fatal(s, SW_E_BAD_DATA, "data block not followed by CRLF");
                return;
            }
            s->cur.arg = malloc(s->cur_bytes ? s->cur_bytes : 1);
            if (!s->cur.arg) {
                fatal(s, SW_E_DB_ERROR, "out of memory");
                return;
            }
            evbuffer_remove(in, s->cur.arg, s->cur_bytes);
            s->cur.arglen = s->cur_bytes;
            evbuffer_drain(in, term);
            block_done(s);
            continue;
        }
        }
    }
}

void sw_sess_wait(struct sw_sess *s)
{
    s->st = SW_SS_WAIT;
    conn_set_busy(s->c, true);
    if (!s->paused && evbuffer_get_length(conn_in(s->c)) > SW_PIPELINE_BYTES) {
        conn_pause_read(s->c);
        s->paused = true;
    }
}

/* -vv: the request with the last line of its answer ("OK ...", "END",
 * "ERR ..."): replies end in one such line. */
static void log_request(struct sw_sess *s)
{
    struct evbuffer *out = conn_out(s->c);
    size_t n = evbuffer_get_length(out), take = n < 200 ? n : 200;
    char tail[201], who[80];
    size_t e = line_copy_at(out, n - take, tail, take);
    while (e > 0 && (tail[e - 1] == '\n' || tail[e - 1] == '\r'))
        e--;
    size_t b = e;
    while (b > 0 && tail[b - 1] != '\n')
        b--;
    log_command(log_addr(&s->c->peer, who, sizeof who), s->log_cmd, s->log_cmd_len, false, tail + b, e - b);
    s->log_cmd_len = 0;
}

void sw_sess_ready(struct sw_sess *s)
{
    if (s->log_cmd_len && log_command_enabled())
        log_request(s);
    reset_request(s);
    if (s->st == SW_SS_CLOSING)
        return;
    bool was_waiting = s->st == SW_SS_WAIT;
    s->st = SW_SS_LINE;
    if (!was_waiting)
        return; /* called from inside sess_drive: it goes on by itself */
    if (s->paused) {
        s->paused = false;
        conn_resume_read(s->c);
    }
    /* Run what was pipelined behind this request before the conn is idle:
     * after the peer's EOF, an idle conn closes. */
    if (evbuffer_get_length(conn_in(s->c)))
        sess_drive(s);
    if (s->st != SW_SS_WAIT)
        conn_set_busy(s->c, false);
}

static int sw_on_read(struct core_conn *c)
{
    struct sw_sess *s = c->data;
    if (s)
        sess_drive(s);
    return 0;
}

static void sw_on_close(struct core_conn *c, enum conn_close_reason why)
{
    (void)why;
    struct sw_sess *s = c->data;
    if (!s)
        return;
    if (s->op)
        s->op->ctx = NULL; /* its reply has nowhere to go; done() frees it */
    reset_request(s);
    if (s->reply)
        evbuffer_free(s->reply);
    for (int i = 0; i < s->nq; i++)
        free(s->qrows[i].func);
    free(s->qrows);
    if (s->prev)
        s->prev->next = s->next;
    else
        sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    sw.sessions--;
    free(s);
    c->data = NULL;
}

static const struct conn_ops sw_conn_ops = {
    .name = "schwartz",
    .on_read = sw_on_read,
    .on_close = sw_on_close,
};

void sw_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen, void *arg)
{
    (void)arg;
    struct sw_sess *s = calloc(1, sizeof *s);
    if (!s) {
        close(fd);
        return;
    }
    struct core_conn *c = conn_new(loop, fd, sa, salen, &sw_conn_ops, s);
    if (!c) {
        free(s);
        return;
    }
    s->c = c;
    s->next = sessions;
    if (sessions)
        sessions->prev = s;
    sessions = s;
    sw.sessions++;
    /* A client that doesn't read its replies stops being read. */
    conn_set_output_limit(c, 4u << 20);
    if (sw.cfg.idle_timeout > 0)
        conn_set_timeouts(c, (uint32_t)sw.cfg.idle_timeout * 1000, 0);
}

void sw_sessions_admin_workers(struct evbuffer *out)
{
    double now = stats_wall_time();
    for (struct sw_sess *s = sessions; s; s = s->next) {
        if (!s->n_grabbed)
            continue;
        char peer[64];
        evbuffer_add_printf(out, "WORKER %s grabbed %llu finished %llu last_grab_ago %.0f funcs %s\r\n",
                            conn_peer_str(s->c, peer, sizeof peer), (unsigned long long)s->n_grabbed,
                            (unsigned long long)s->n_done, now - s->last_grab, s->last_funcs);
    }
}
