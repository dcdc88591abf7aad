/* cmd_sw: runs schwartzd's commands — picks the database(s) for each
 * request, queues sw_ops on their stores and turns results into replies.
 * Runs on loop 0 only. Multi-database rules follow TheSchwartz: inserts
 * try the databases in a fresh random order and take the first that
 * accepts (a dead one is skipped at once, a duplicate uniqkey moves on);
 * grabs visit them in random order until MAX jobs are found; a handle's
 * own database serves everything about that job. */
#include "schwartz/session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/conn.h"
#include "common/log.h"
#include "common/loop.h"

/* ---- helpers ---------------------------------------------------------------- */

static struct sw_store *store_of_handle(const char *h, uint64_t *jobid)
{
    struct sw_store *st = sw_store_by_hash(h, 32);
    int64_t id = 0;
    if (st && sw_parse_i64(h + 33, 1, INT64_MAX, &id) == 0) {
        *jobid = (uint64_t)id;
        return st;
    }
    return NULL;
}

static char **dup_funcs(const char *const *f, int n)
{
    char **out = calloc((size_t)(n ? n : 1), sizeof *out);
    if (!out)
        return NULL;
    for (int i = 0; i < n; i++)
        if (!(out[i] = strdup(f[i]))) {
            for (int k = 0; k < i; k++)
                free(out[k]);
            free(out);
            return NULL;
        }
    return out;
}

static void finish(struct sw_sess *s)
{
    s->op = NULL;
    sw_sess_ready(s);
}

/* The next database in this request's order, or -1. */
static int next_db(struct sw_sess *s) { return s->oi < s->norder ? s->order[s->oi++] : -1; }

static void submit(struct sw_sess *s, struct sw_op *op, struct sw_store *st, void (*done)(struct sw_op *))
{
    op->ctx = s;
    op->done = done;
    s->op = op;
    sw_store_submit(st, op);
}

static bool detached(struct sw_op *op)
{
    if (op->ctx)
        return false;
    sw_op_free(op);
    return true;
}

/* ---- insert, insert_many ------------------------------------------------------- */

static void insert_done(struct sw_op *op)
{
    if (detached(op))
        return;
    struct sw_sess *s = op->ctx;
    if (op->err == SW_OK) {
        struct evbuffer *out = conn_out(s->c);
        evbuffer_add(out, "OK", 2);
        for (int i = 0; i < op->njobs; i++)
            evbuffer_add_printf(out, " %s-%llu", sw_store_hash(op->store), (unsigned long long)op->ids[i]);
        evbuffer_add(out, "\r\n", 2);
        stats_counter_add(&sw.n.inserts, (uint64_t)op->njobs);
        stats_hist_record(&sw.insert_latency, stats_now_usec() - s->t0);
        sw_op_free(op);
        finish(s);
        return;
    }
    s->last_err = op->err;
    snprintf(s->last_msg, sizeof s->last_msg, "%s", op->errmsg);
    if (op->err == SW_E_DUPLICATE)
        stats_counter_add(&sw.n.duplicates, 1);
    /* TheSchwartz: a dead database or a duplicate uniqkey -> try the next one. */
    int next = (op->db_dead || op->err == SW_E_DUPLICATE) ? next_db(s) : -1;
    if (next >= 0) {
        if (op->db_dead)
            stats_counter_add(&sw.n.db_failovers, 1);
        free(op->ids);
        op->ids = NULL;
        submit(s, op, sw_store_get(next), insert_done);
        return;
    }
    sw_sess_error(s, op->err, op->errmsg);
    sw_op_free(op);
    finish(s);
}

static void cmd_insert(struct sw_sess *s, struct sw_jobspec *jobs, int njobs)
{
    struct sw_op *op = sw_op_new(SW_OP_INSERT);
    if (!op) {
        sw_sess_error(s, SW_E_DB_ERROR, "out of memory");
        sw_sess_ready(s);
        return;
    }
    op->jobs = jobs; /* the op owns them now */
    op->njobs = njobs;
    s->jobs = NULL;
    s->njobs = 0;
    sw_store_order(s->order);
    s->norder = sw_store_count();
    s->oi = 0;
    s->t0 = stats_now_usec();
    sw_sess_wait(s);
    submit(s, op, sw_store_get(next_db(s)), insert_done);
}

/* ---- grab, list (every database, gathered) ---------------------------------------- */

static void gather_done(struct sw_op *op);

static void gather_next(struct sw_sess *s, struct sw_op *op)
{
    bool more = op->kind != SW_OP_GRAB || op->max > 0;
    int next = more ? next_db(s) : -1;
    if (next >= 0) {
        op->nfound = 0;
        if (op->out)
            evbuffer_drain(op->out, evbuffer_get_length(op->out));
        submit(s, op, sw_store_get(next), gather_done);
        return;
    }
    struct evbuffer *out = conn_out(s->c);
    if (s->answered == 0) {
        /* every database failed: say so rather than "no jobs" */
        sw_sess_error(s, s->last_err, s->last_msg);
    } else {
        evbuffer_add_buffer(out, s->reply);
        evbuffer_add(out, "END\r\n", 5);
    }
    sw_op_free(op);
    finish(s);
}

static void gather_done(struct sw_op *op)
{
    if (detached(op))
        return;
    struct sw_sess *s = op->ctx;
    if (op->err == SW_OK) {
        s->answered++;
        s->found += op->nfound;
        if (op->kind == SW_OP_GRAB) {
            op->max -= op->nfound;
            stats_counter_add(&sw.n.grabbed, (uint64_t)op->nfound);
            s->n_grabbed += (uint64_t)op->nfound;
        }
        if (op->out)
            evbuffer_add_buffer(s->reply, op->out);
    } else {
        s->last_err = op->err;
        snprintf(s->last_msg, sizeof s->last_msg, "database %d: %.180s", sw_store_index(op->store), op->errmsg);
        if (op->db_dead)
            stats_counter_add(&sw.n.db_failovers, 1);
    }
    gather_next(s, op);
}

static void cmd_gather(struct sw_sess *s, struct sw_op *op)
{
    if (!s->reply)
        s->reply = evbuffer_new();
    if (!s->reply) {
        sw_op_free(op);
        sw_sess_error(s, SW_E_DB_ERROR, "out of memory");
        sw_sess_ready(s);
        return;
    }
    evbuffer_drain(s->reply, evbuffer_get_length(s->reply));
    sw_store_order(s->order);
    s->norder = sw_store_count();
    s->oi = 0;
    s->found = 0;
    s->answered = 0;
    s->last_err = SW_OK;
    s->last_msg[0] = '\0';
    sw_sess_wait(s);
    submit(s, op, sw_store_get(next_db(s)), gather_done);
}

static void cmd_grab(struct sw_sess *s, const struct sw_req *r)
{
    struct sw_op *op = sw_op_new(SW_OP_GRAB);
    if (!op || !(op->funcs = dup_funcs(r->funcs, r->nfuncs)) ||
        (r->coalesce && !(op->coalesce = strdup(r->coalesce))) ||
        (r->coalesce_prefix && !(op->coalesce_prefix = strdup(r->coalesce_prefix)))) {
        sw_op_free(op);
        sw_sess_error(s, SW_E_DB_ERROR, "out of memory");
        sw_sess_ready(s);
        return;
    }
    op->nfuncs = r->nfuncs;
    op->max = (int)r->count;
    op->grab_for = (int64_t)r->grab_for;
    op->prioritize = r->prioritize;
    op->floor = r->floor;
    stats_counter_add(&sw.n.grabs, 1);
    s->last_grab = stats_wall_time();
    size_t o = 0;
    s->last_funcs[0] = '\0';
    for (int i = 0; i < r->nfuncs && o + strlen(r->funcs[i]) + 2 < sizeof s->last_funcs; i++)
        o += (size_t)snprintf(s->last_funcs + o, sizeof s->last_funcs - o, "%s%s", i ? "," : "", r->funcs[i]);
    cmd_gather(s, op);
}

static void cmd_list(struct sw_sess *s, const struct sw_req *r)
{
    struct sw_op *op = sw_op_new(SW_OP_LIST);
    const char *f[1] = { r->func };
    if (!op || !(op->funcs = dup_funcs(f, 1)) || (r->coalesce && !(op->coalesce = strdup(r->coalesce))) ||
        (r->coalesce_prefix && !(op->coalesce_prefix = strdup(r->coalesce_prefix)))) {
        sw_op_free(op);
        sw_sess_error(s, SW_E_DB_ERROR, "out of memory");
        sw_sess_ready(s);
        return;
    }
    op->nfuncs = 1;
    op->limit.set = true;
    op->limit.v = r->limit.set ? r->limit.v : sw.cfg.batch_size;
    cmd_gather(s, op);
}

/* ---- funcmap, queues ------------------------------------------------------------------ */

void sw_queues_merge(struct sw_qrow **into, int *n, const struct sw_qrow *rows, int nrows)
{
    for (int i = 0; i < nrows; i++) {
        int k;
        for (k = 0; k < *n; k++)
            if (!strcmp((*into)[k].func, rows[i].func))
                break;
        if (k == *n) {
            struct sw_qrow *q = realloc(*into, (size_t)(*n + 1) * sizeof *q);
            if (!q)
                return;
            *into = q;
            q[k].func = strdup(rows[i].func);
            if (!q[k].func)
                return;
            q[k].ready = q[k].running = q[k].failed = 0;
            (*n)++;
        }
        (*into)[k].ready += rows[i].ready;
        (*into)[k].running += rows[i].running;
        (*into)[k].failed += rows[i].failed;
    }
}

static void each_done(struct sw_op *op)
{
    if (detached(op))
        return;
    struct sw_sess *s = op->ctx;
    if (op->err == SW_OK) {
        if (op->out)
            evbuffer_add_buffer(s->reply, op->out);
        sw_queues_merge(&s->qrows, &s->nq, op->qrows, op->nq);
    }
    for (int i = 0; i < op->nq; i++)
        free(op->qrows[i].func);
    free(op->qrows);
    op->qrows = NULL;
    op->nq = 0;
    int next = s->oi < s->norder ? s->oi++ : -1;
    if (next >= 0) {
        submit(s, op, sw_store_get(next), each_done);
        return;
    }
    struct evbuffer *out = conn_out(s->c);
    if (op->kind == SW_OP_QUEUES)
        for (int i = 0; i < s->nq; i++) {
            evbuffer_add_printf(out, "QUEUE %s ready %llu running %llu failed %llu\r\n", s->qrows[i].func,
                                (unsigned long long)s->qrows[i].ready, (unsigned long long)s->qrows[i].running,
                                (unsigned long long)s->qrows[i].failed);
            free(s->qrows[i].func);
        }
    free(s->qrows);
    s->qrows = NULL;
    s->nq = 0;
    evbuffer_add_buffer(out, s->reply);
    evbuffer_add(out, "END\r\n", 5);
    sw_op_free(op);
    finish(s);
}

static void cmd_each(struct sw_sess *s, enum sw_op_kind kind)
{
    struct sw_op *op = sw_op_new(kind);
    if (!s->reply)
        s->reply = evbuffer_new();
    if (!op || !s->reply) {
        sw_op_free(op);
        sw_sess_error(s, SW_E_DB_ERROR, "out of memory");
        sw_sess_ready(s);
        return;
    }
    evbuffer_drain(s->reply, evbuffer_get_length(s->reply));
    s->norder = sw_store_count();
    s->oi = 1;
    sw_sess_wait(s);
    submit(s, op, sw_store_get(0), each_done);
}

/* ---- one job by handle -------------------------------------------------------------- */

static void job_done(struct sw_op *op)
{
    if (detached(op))
        return;
    struct sw_sess *s = op->ctx;
    if (op->err != SW_OK) {
        sw_sess_error(s, op->err, op->errmsg);
    } else {
        struct evbuffer *out = conn_out(s->c);
        switch (op->kind) {
        case SW_OP_COMPLETED:
            stats_counter_add(&sw.n.completed, 1);
            s->n_done++;
            evbuffer_add(out, "OK\r\n", 4);
            break;
        case SW_OP_FAILED:
            stats_counter_add(op->retried ? &sw.n.retried : &sw.n.failed, 1);
            s->n_done++;
            evbuffer_add_printf(out, "OK %s\r\n", op->retried ? "retry" : "failed");
            break;
        case SW_OP_DECLINED:
            stats_counter_add(&sw.n.declined, 1);
            s->n_done++;
            evbuffer_add(out, "OK\r\n", 4);
            break;
        case SW_OP_REPLACE:
            stats_counter_add(&sw.n.replaced, 1);
            s->n_done++;
            evbuffer_add(out, "OK", 2);
            for (int i = 0; i < op->njobs; i++)
                evbuffer_add_printf(out, " %s-%llu", sw_store_hash(op->store), (unsigned long long)op->ids[i]);
            evbuffer_add(out, "\r\n", 2);
            break;
        case SW_OP_INSPECT:
            evbuffer_add_buffer(out, op->out);
            evbuffer_add(out, "END\r\n", 5);
            break;
        case SW_OP_TOUCH: evbuffer_add(out, "OK\r\n", 4); break;
        case SW_OP_GRAB_JOB:
            stats_counter_add(&sw.n.grabbed, (uint64_t)op->nfound);
            s->n_grabbed += (uint64_t)op->nfound;
            evbuffer_add_buffer(out, op->out);
            evbuffer_add(out, "END\r\n", 5);
            break;
        default: evbuffer_add_buffer(out, op->out); break;
        }
    }
    sw_op_free(op);
    finish(s);
}

static void cmd_job(struct sw_sess *s, enum sw_op_kind kind, const struct sw_req *r, struct sw_jobspec *jobs, int njobs)
{
    uint64_t jobid;
    struct sw_store *st = store_of_handle(r->handle, &jobid);
    if (!st) {
        sw_sess_error(s, SW_E_NOT_FOUND, "handle names no configured database");
        sw_sess_ready(s);
        return;
    }
    struct sw_op *op = sw_op_new(kind);
    if (!op || (r->message && !(op->message = strdup(r->message)))) {
        sw_op_free(op);
        sw_sess_error(s, SW_E_DB_ERROR, "out of memory");
        sw_sess_ready(s);
        return;
    }
    op->jobid = jobid;
    op->jobs = jobs;
    op->njobs = njobs;
    s->jobs = NULL;
    s->njobs = 0;
    op->exit_status = r->exit_status;
    op->permanent = r->permanent;
    op->max_retries = r->max_retries;
    op->retry_delay = r->retry_delay;
    op->keep = r->keep;
    op->run_after = r->run_after;
    op->grab_for = (int64_t)r->grab_for;
    sw_sess_wait(s);
    submit(s, op, st, job_done);
}

/* ---- stats ------------------------------------------------------------------------------ */

static void stats_line(const char *name, const char *value, void *arg)
{
    evbuffer_add_printf(arg, "STAT %s %s\r\n", name, value);
}

void sw_cmd_dispatch(struct sw_sess *s, struct sw_req *r, struct sw_jobspec *jobs, int njobs)
{
    switch (r->cmd) {
    case SW_CMD_INSERT:
    case SW_CMD_INSERT_MANY: cmd_insert(s, jobs, njobs); return;
    case SW_CMD_REPLACE_WITH: cmd_job(s, SW_OP_REPLACE, r, jobs, njobs); return;
    case SW_CMD_GRAB: cmd_grab(s, r); return;
    case SW_CMD_COMPLETED: cmd_job(s, SW_OP_COMPLETED, r, NULL, 0); return;
    case SW_CMD_FAILED: cmd_job(s, SW_OP_FAILED, r, NULL, 0); return;
    case SW_CMD_DECLINED: cmd_job(s, SW_OP_DECLINED, r, NULL, 0); return;
    case SW_CMD_INSPECT: cmd_job(s, SW_OP_INSPECT, r, NULL, 0); return;
    case SW_CMD_STATUS: cmd_job(s, SW_OP_STATUS, r, NULL, 0); return;
    case SW_CMD_GRAB_JOB: cmd_job(s, SW_OP_GRAB_JOB, r, NULL, 0); return;
    case SW_CMD_TOUCH: cmd_job(s, SW_OP_TOUCH, r, NULL, 0); return;
    case SW_CMD_LIST: cmd_list(s, r); return;
    case SW_CMD_FUNCMAP: cmd_each(s, SW_OP_FUNCMAP); return;
    case SW_CMD_QUEUES: cmd_each(s, SW_OP_QUEUES); return;
    case SW_CMD_POLICY: {
        struct sw_policy p = { 0, 0, 0 };
        sw_policy_get(r->func, &p);
        if (r->max_retries.set)
            p.max_retries = r->max_retries.v;
        if (r->retry_delay.set)
            p.retry_delay = r->retry_delay.v;
        if (r->keep.set)
            p.keep_exit_status_for = r->keep.v;
        sw_policy_set(r->func, &p);
        sw_sess_reply(s, "OK\r\n");
        break;
    }
    case SW_CMD_STATS:
        stats_visit("", stats_line, conn_out(s->c));
        sw_sess_reply(s, "END\r\n");
        break;
    case SW_CMD_VERSION: sw_sess_reply(s, "VERSION %s\r\n", SW_VERSION); break;
    default: sw_sess_error(s, SW_E_UNKNOWN_COMMAND, "unknown command"); break;
    }
    sw_sess_ready(s);
}

/* ---- queue counts for the console and metrics (refreshed on a timer) ------------------- */

static struct event *refresh_ev;
static struct sw_qrow *refresh_rows;
static int refresh_n, refresh_i;
static bool refresh_busy;

static void refresh_done(struct sw_op *op)
{
    if (op->err == SW_OK)
        sw_queues_merge(&refresh_rows, &refresh_n, op->qrows, op->nq);
    sw_op_free(op);
    if (++refresh_i < sw_store_count() && !loop_stopping()) {
        struct sw_op *n = sw_op_new(SW_OP_QUEUES);
        if (n) {
            n->done = refresh_done;
            sw_store_submit(sw_store_get(refresh_i), n);
            return;
        }
    }
    for (int i = 0; i < sw.nqueues; i++)
        free(sw.queues[i].func);
    free(sw.queues);
    sw.queues = refresh_rows;
    sw.nqueues = refresh_n;
    refresh_rows = NULL;
    refresh_n = 0;
    refresh_busy = false;
}

static void refresh_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    if (refresh_busy || loop_stopping() || !sw_store_count())
        return;
    struct sw_op *op = sw_op_new(SW_OP_QUEUES);
    if (!op)
        return;
    refresh_busy = true;
    refresh_i = 0;
    op->done = refresh_done;
    sw_store_submit(sw_store_get(0), op);
}

void sw_queues_refresh_start(void)
{
    if (sw.cfg.queue_refresh <= 0)
        return;
    refresh_ev = event_new(loop_get(0)->base, -1, EV_PERSIST, refresh_tick, NULL);
    struct timeval tv = { sw.cfg.queue_refresh, 0 };
    if (refresh_ev)
        event_add(refresh_ev, &tv);
    refresh_tick(-1, 0, NULL);
}

void sw_queues_refresh_stop(void)
{
    if (refresh_ev) {
        event_free(refresh_ev);
        refresh_ev = NULL;
    }
}
