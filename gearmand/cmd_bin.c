/* cmd_bin: what each binary Gearman packet does — submits, grabs, work
 * results, status, echo, options — on the job state in jobs.c. Packets
 * arrive parsed (proto_bin.c via session.c); replies go out through
 * gm_send*(). */
#include "gearmand/gearmand.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/log.h"

static void handle_grab(struct gm_sess *s, uint32_t cmd)
{
    gm_worker_unsleep(s);
    gm.n.grabs++;
    struct gm_ability *a = NULL;
    struct gm_job *j = gm_worker_take_job(s, &a);
    if (!j) {
        gm.n.no_jobs++;
        gm_send0(s, GM_NO_JOB);
        return;
    }
    gm_job_assign(j, s, a);
    if (cmd == GM_GRAB_JOB) {
        const void *args[3] = { j->handle, j->f->name, j->data };
        size_t lens[3] = { j->handle_len, j->f->len, j->data_len };
        gm_send(s, GM_JOB_ASSIGN, 3, args, lens);
    } else if (cmd == GM_GRAB_JOB_ALL && j->reducer) {
        const void *args[5] = { j->handle, j->f->name, j->unique, j->reducer, j->data };
        size_t lens[5] = { j->handle_len, j->f->len, j->unique_len, j->reducer_len, j->data_len };
        gm_send(s, GM_JOB_ASSIGN_ALL, 5, args, lens);
    } else {
        /* GRAB_JOB_UNIQ, and GRAB_JOB_ALL without a reducer (as gearmand). */
        const void *args[4] = { j->handle, j->f->name, j->unique, j->data };
        size_t lens[4] = { j->handle_len, j->f->len, j->unique_len, j->data_len };
        gm_send(s, GM_JOB_ASSIGN_UNIQ, 4, args, lens);
    }
}

static void handle_pre_sleep(struct gm_sess *s)
{
    if (!gm_worker_sleep(s)) {
        /* A job arrived between NO_JOB and PRE_SLEEP. */
        gm.n.noops_sent++;
        gm_send0(s, GM_NOOP);
    }
}

/* WORK_* from a worker: the job must be one it holds. */
static struct gm_job *worker_job(struct gm_sess *s, const struct gm_packet *p)
{
    struct gm_job *j = gm_job_find(p->arg[0], p->arg_len[0]);
    if (!j || j->worker != s) {
        gm_send_error(s, "JOB_NOT_FOUND", "Job given in work result not found");
        return NULL;
    }
    return j;
}

static uint32_t parse_u32(const char *s, size_t len)
{
    uint64_t v = 0;
    for (size_t i = 0; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
        v = v * 10 + (uint64_t)(s[i] - '0');
        if (v > UINT32_MAX)
            return UINT32_MAX;
    }
    return (uint32_t)v;
}

static void handle_work(struct gm_sess *s, const struct gm_packet *p)
{
    struct gm_job *j = worker_job(s, p);
    if (!j)
        return;
    const void *args[GM_MAX_ARGS];
    for (int i = 0; i < p->argc; i++)
        args[i] = p->arg[i];
    switch (p->cmd) {
    case GM_WORK_STATUS:
        j->numerator = parse_u32(p->arg[1], p->arg_len[1]);
        j->denominator = parse_u32(p->arg[2], p->arg_len[2]);
        gm_job_forward(j, p->cmd, p->argc, args, p->arg_len);
        break;
    case GM_WORK_DATA:
    case GM_WORK_WARNING: gm_job_forward(j, p->cmd, p->argc, args, p->arg_len); break;
    case GM_WORK_COMPLETE:
    case GM_WORK_EXCEPTION:
    case GM_WORK_FAIL:
        gm_job_forward(j, p->cmd, p->argc, args, p->arg_len);
        if (p->cmd == GM_WORK_COMPLETE)
            gm.n.jobs_completed++;
        else
            gm.n.jobs_failed++;
        gm_job_free(j);
        break;
    }
}

/* ---- the client side ------------------------------------------------------ */

static void send_created(struct gm_sess *s, struct gm_job *j) { gm_send1(s, GM_JOB_CREATED, j->handle, j->handle_len); }

static void handle_submit(struct gm_sess *s, const struct gm_packet *p)
{
    int prio = GM_PRIO_NORMAL;
    bool bg = false;
    int64_t when = 0;
    const char *reducer = NULL;
    size_t rlen = 0;
    int data_arg = 2;
    switch (p->cmd) {
    case GM_SUBMIT_JOB: break;
    case GM_SUBMIT_JOB_BG: bg = true; break;
    case GM_SUBMIT_JOB_HIGH: prio = GM_PRIO_HIGH; break;
    case GM_SUBMIT_JOB_HIGH_BG:
        prio = GM_PRIO_HIGH;
        bg = true;
        break;
    case GM_SUBMIT_JOB_LOW: prio = GM_PRIO_LOW; break;
    case GM_SUBMIT_JOB_LOW_BG:
        prio = GM_PRIO_LOW;
        bg = true;
        break;
    case GM_SUBMIT_REDUCE_JOB:
    case GM_SUBMIT_REDUCE_JOB_BG:
        bg = p->cmd == GM_SUBMIT_REDUCE_JOB_BG;
        reducer = p->arg[2];
        rlen = p->arg_len[2];
        data_arg = 4;
        break;
    case GM_SUBMIT_JOB_EPOCH: {
        uint64_t e;
        if (gm_parse_u64(p->arg[2], p->arg_len[2], INT64_MAX, &e) < 0) {
            gm_send_error(s, "INVALID_ARGUMENT", "Bad epoch");
            return;
        }
        bg = true;
        when = (int64_t)e;
        data_arg = 3;
        break;
    }
    case GM_SUBMIT_JOB_SCHED: {
        int fld[5];
        static const int maxv[5] = { 59, 23, 31, 12, 6 };
        for (int i = 0; i < 5; i++)
            if (gm_sched_field(p->arg[2 + i], p->arg_len[2 + i], maxv[i], &fld[i]) < 0) {
                gm_send_error(s, "INVALID_ARGUMENT", "Bad schedule field");
                return;
            }
        when = gm_sched_next(gm_now_epoch(), fld[0], fld[1], fld[2], fld[3], fld[4]);
        if (when < 0) {
            gm_send_error(s, "INVALID_ARGUMENT", "Schedule never matches");
            return;
        }
        bg = true;
        data_arg = 7;
        break;
    }
    }
    const char *fname = p->arg[0], *unique = p->arg[1], *data = p->arg[data_arg];
    size_t flen = p->arg_len[0], ulen = p->arg_len[1], dlen = p->arg_len[data_arg];
    if (flen == 0 || flen > GM_MAX_FUNCTION) {
        gm_send_error(s, "INVALID_FUNCTION_NAME", "Function name is empty or too long");
        return;
    }
    if (ulen > GM_MAX_UNIQUE) {
        gm_send_error(s, "ARGUMENT_TOO_LARGE", "Unique value too large");
        return;
    }
    /* "-": coalesce by the workload (the key itself stays "-", as gearmand). */
    bool dash = ulen == 1 && unique[0] == '-' && dlen > 0;
    struct gm_func *f = gm_func_get(fname, flen);
    if (!f) {
        gm.n.queue_full++;
        gm_send_error(s, "QUEUE_ERROR", "Server holds its maximum number of functions");
        return;
    }
    struct gm_job *j = NULL;
    if (dash)
        j = gm_unique_find_dash(f, data, dlen);
    else if (ulen)
        j = gm_unique_find(f, unique, ulen);
    if (j) {
        /* Coalesce: attach to the queued, running or storing job. */
        gm.n.jobs_coalesced++;
        if (!bg) {
            gm_job_attach(j, s);
            send_created(s, j);
        } else if (j->store_req) {
            gm_store_job(j, s); /* its INSERT is in flight: the same answer */
        } else if (j->bg || !gm.db) {
            j->bg = true;
            send_created(s, j); /* stored and committed, or memory only */
        } else {
            /* A background submit joined a foreground job: it must now run
             * even if every waiting client leaves, and be as durable as any
             * background job before JOB_CREATED. */
            j->bg = true;
            gm_store_job(j, s);
        }
        return;
    }
    const char *refused = NULL;
    if (gm.cfg.max_jobs && gm.njobs >= gm.cfg.max_jobs)
        refused = "Server holds its maximum number of jobs";
    else if (gm.cfg.max_job_bytes && gm.job_bytes + dlen > gm.cfg.max_job_bytes)
        refused = "Server holds its maximum bytes of job data";
    else if (f->max_queue[prio] && f->queued[prio] >= f->max_queue[prio])
        refused = "Job queue is full";
    if (refused) {
        gm.n.queue_full++;
        gm_send_error(s, "QUEUE_ERROR", refused);
        gm_func_release(f);
        return;
    }
    j = gm_job_add(f, unique, ulen, data, dlen, prio, bg, when, reducer, rlen);
    if (!j) {
        gm_send_error(s, "MEMORY_ALLOCATION_FAILURE", "Out of memory");
        gm_func_release(f);
        return;
    }
    gm.n.jobs_submitted++;
    if (bg && gm.db) {
        /* JOB_CREATED, and runnable, once durable (store.c). */
        gm_store_job(j, s);
        return;
    }
    if (!bg)
        gm_job_attach(j, s);
    send_created(s, j);
    gm_job_start(j);
}

static void handle_get_status(struct gm_sess *s, const struct gm_packet *p)
{
    struct gm_job *j = gm_job_find(p->arg[0], p->arg_len[0]);
    char num[16] = "0", den[16] = "0";
    const char *known = "0", *running = "0";
    if (j) {
        known = "1";
        running = j->state == GM_JOB_RUNNING ? "1" : "0";
        snprintf(num, sizeof num, "%u", j->numerator);
        snprintf(den, sizeof den, "%u", j->denominator);
    }
    const void *args[5] = { p->arg[0], known, running, num, den };
    size_t lens[5] = { p->arg_len[0], 1, 1, strlen(num), strlen(den) };
    gm_send(s, GM_STATUS_RES, 5, args, lens);
}

static void handle_get_status_unique(struct gm_sess *s, const struct gm_packet *p)
{
    /* As gearmand: a job submitted with unique "-" is not found this way. */
    struct gm_job *j = p->arg_len[0] ? gm_unique_find(NULL, p->arg[0], p->arg_len[0]) : NULL;
    char num[16] = "0", den[16] = "0", cnt[16] = "0";
    const char *known = "0", *running = "0";
    if (j) {
        known = "1";
        running = j->state == GM_JOB_RUNNING ? "1" : "0";
        snprintf(num, sizeof num, "%u", j->numerator);
        snprintf(den, sizeof den, "%u", j->denominator);
        snprintf(cnt, sizeof cnt, "%u", j->client_count);
    }
    const void *args[6] = { p->arg[0], known, running, num, den, cnt };
    size_t lens[6] = { p->arg_len[0], 1, 1, strlen(num), strlen(den), strlen(cnt) };
    gm_send(s, GM_STATUS_RES_UNIQUE, 6, args, lens);
}

/* ---- dispatch ------------------------------------------------------------- */

/* -vv (or --verbose DEBUG): one line per packet, `<fd NAME args`. Names,
 * handles and unique keys are shown (escaped, cut at 64 bytes); the
 * payload — the last argument of a packet with several, or an ECHO_REQ's
 * only one — only as its size: job data is the users' business. */
static void debug_packet(const struct gm_sess *s, const struct gm_packet *p)
{
    char line[1024];
    const size_t room = sizeof line - 40; /* kept for " [N bytes]" and the NUL */
    int r = snprintf(line, sizeof line, "gearmand: <%d %s", s->fd,
                     p->magic == GM_REQ ? gm_cmd_name(p->cmd) : "(response magic)");
    size_t n = r < 0 ? 0 : (size_t)r < room ? (size_t)r : room;
    int shown = p->argc > 1 ? p->argc - 1 : p->cmd == GM_ECHO_REQ ? 0 : p->argc;
    for (int i = 0; i < shown && n + 1 < room; i++) {
        line[n++] = ' ';
        size_t k = 0;
        for (; k < p->arg_len[i] && k < 64 && n + 4 < room; k++) {
            unsigned char ch = (unsigned char)p->arg[i][k];
            if (ch > 32 && ch < 127 && ch != '\\')
                line[n++] = (char)ch;
            else {
                snprintf(line + n, 5, "\\x%02x", ch);
                n += 4;
            }
        }
        if (k < p->arg_len[i] && n + 3 < room) {
            memcpy(line + n, "...", 3);
            n += 3;
        }
    }
    if (shown < p->argc)
        snprintf(line + n, sizeof line - n, " [%zu bytes]", p->arg_len[p->argc - 1]);
    else
        line[n] = '\0';
    log_debug("%s", line);
}

int gm_handle_packet(struct gm_sess *s, const struct gm_packet *p)
{
    gm.n.packets_in++;
    if (log_enabled(LOG_LEVEL_DEBUG))
        debug_packet(s, p);
    if (p->magic != GM_REQ) {
        gm_send_error(s, "INVALID_COMMAND", "Command not expected");
        return 0;
    }
    switch (p->cmd) {
    case GM_CAN_DO: gm_ability_add(s, p->arg[0], p->arg_len[0], 0); break;
    case GM_CAN_DO_TIMEOUT: {
        /* Seconds, as gearmand 1.1, libgearman and Perl Gearman::Worker
         * mean it (the PROTOCOL text gives no unit); 0 = no limit. */
        uint64_t secs = 0;
        if (gm_parse_u64(p->arg[1], p->arg_len[1], UINT32_MAX / 1000, &secs) < 0) {
            gm_send_error(s, "INVALID_ARGUMENT", "Bad timeout");
            break;
        }
        gm_ability_add(s, p->arg[0], p->arg_len[0], (uint32_t)secs * 1000);
        break;
    }
    case GM_CANT_DO: {
        struct gm_func *f = gm_func_find(p->arg[0], p->arg_len[0]);
        int i;
        if (f && gm_ability_find(s, f, &i))
            gm_ability_remove(s, i);
        break;
    }
    case GM_RESET_ABILITIES:
        while (s->nabilities)
            gm_ability_remove(s, s->nabilities - 1);
        break;
    case GM_PRE_SLEEP: handle_pre_sleep(s); break;
    case GM_GRAB_JOB:
    case GM_GRAB_JOB_UNIQ:
    case GM_GRAB_JOB_ALL: handle_grab(s, p->cmd); break;
    case GM_WORK_STATUS:
    case GM_WORK_DATA:
    case GM_WORK_WARNING:
    case GM_WORK_COMPLETE:
    case GM_WORK_FAIL:
    case GM_WORK_EXCEPTION: handle_work(s, p); break;
    case GM_SUBMIT_JOB:
    case GM_SUBMIT_JOB_BG:
    case GM_SUBMIT_JOB_HIGH:
    case GM_SUBMIT_JOB_HIGH_BG:
    case GM_SUBMIT_JOB_LOW:
    case GM_SUBMIT_JOB_LOW_BG:
    case GM_SUBMIT_JOB_EPOCH:
    case GM_SUBMIT_JOB_SCHED:
    case GM_SUBMIT_REDUCE_JOB:
    case GM_SUBMIT_REDUCE_JOB_BG:
        if (gm.shutting_down) {
            gm_send_error(s, "SHUTDOWN", "Server is shutting down");
            break;
        }
        handle_submit(s, p);
        break;
    case GM_GET_STATUS: handle_get_status(s, p); break;
    case GM_GET_STATUS_UNIQUE: handle_get_status_unique(s, p); break;
    case GM_ECHO_REQ: gm_send1(s, GM_ECHO_RES, p->arg[0], p->arg_len[0]); break;
    case GM_OPTION_REQ:
        if (p->arg_len[0] == 10 && !strncasecmp(p->arg[0], "exceptions", 10)) {
            s->exceptions = true;
            gm_send1(s, GM_OPTION_RES, p->arg[0], p->arg_len[0]);
        } else
            gm_send_error(s, "UNKNOWN_OPTION", "Server does not recognize given option");
        break;
    case GM_SET_CLIENT_ID: {
        size_t n = p->arg_len[0] > GM_MAX_CLIENT_ID ? GM_MAX_CLIENT_ID : p->arg_len[0];
        memcpy(s->client_id, p->arg[0], n);
        s->client_id[n] = '\0';
        /* keep the `workers` line parseable */
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)s->client_id[i] <= ' ')
                s->client_id[i] = '_';
        break;
    }
    case GM_ALL_YOURS: break; /* accepted and ignored, as gearmand does */
    default: gm_send_error(s, "INVALID_COMMAND", "Command not expected"); break;
    }
    return 0;
}
