/* cmd_text: gearmand's admin text protocol — workers, status,
 * prioritystatus, maxqueue, version, getpid, verbose, show jobs, show
 * unique jobs, cancel job, create/drop function — with gearmand 1.1's exact
 * output, for lines on the protocol port (classified by proto_text.c) and
 * for the same words on the core console (admin.c). */
#include "gearmand/gearmand.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "common/admin.h"
#include "common/config.h"
#include "common/daemon.h"
#include "common/log.h"
#include "common/loop.h"

/* gearmand 1.1 lists the newest connection first, and a worker's
 * functions newest first (compared side by side). */
static void text_workers(struct evbuffer *out)
{
    for (struct list_node *pos = gm.sessions.prev; pos != &gm.sessions; pos = pos->prev) {
        struct gm_sess *s = container_of(pos, struct gm_sess, all_link);
        evbuffer_add_printf(out, "%d %s %s :", s->fd, s->peer, s->client_id[0] ? s->client_id : "-");
        for (int i = s->nabilities - 1; i >= 0; i--) {
            evbuffer_add(out, " ", 1);
            evbuffer_add(out, s->abilities[i]->f->name, s->abilities[i]->f->len);
        }
        evbuffer_add(out, "\n", 1);
    }
    evbuffer_add(out, ".\n", 2);
}

/* In creation order (gearmand 1.1 walks its function hash table). */
static void text_status(struct evbuffer *out, bool by_priority)
{
    struct list_node *pos;
    list_for_each(pos, &gm.funcs)
    {
        struct gm_func *f = container_of(pos, struct gm_func, all_link);
        evbuffer_add(out, f->name, f->len);
        if (by_priority)
            evbuffer_add_printf(out, "\t%u\t%u\t%u\t%u\n", f->queued[0], f->queued[1], f->queued[2], f->workers);
        else
            evbuffer_add_printf(out, "\t%u\t%u\t%u\n", f->total, f->running, f->workers);
    }
    evbuffer_add(out, ".\n", 2);
}

#define NAME_TOO_LONG "ERR INVALID_FUNCTION_NAME Function+name+longer+than+512+bytes\r\n"

static void text_maxqueue(struct evbuffer *out, const struct gm_text *t)
{
    if (strlen(t->arg[0]) > GM_MAX_FUNCTION) {
        evbuffer_add_printf(out, NAME_TOO_LONG);
        return;
    }
    struct gm_func *f = gm_func_get(t->arg[0], strlen(t->arg[0]));
    if (!f) {
        evbuffer_add_printf(out, "ERR QUEUE_ERROR Server+holds+its+maximum+number+of+functions\r\n");
        return;
    }
    long v[3] = { 0, 0, 0 };
    if (t->argc == 2)
        v[0] = v[1] = v[2] = strtol(t->arg[1], NULL, 10);
    else if (t->argc >= 4)
        for (int i = 0; i < 3; i++)
            v[i] = strtol(t->arg[1 + i], NULL, 10);
    for (int i = 0; i < 3; i++)
        f->max_queue[i] = v[i] <= 0 ? 0 : (v[i] > (long)UINT32_MAX ? UINT32_MAX : (uint32_t)v[i]);
    gm_func_release(f); /* a limit of 0 on an unused name keeps nothing */
    evbuffer_add(out, "OK\r\n", 4);
}

static const char *verbose_name(void)
{
    switch (log_get_level()) {
    case LOG_LEVEL_ERROR: return "ERROR";
    case LOG_LEVEL_WARN: return "WARNING";
    case LOG_LEVEL_INFO: return "INFO";
    default: return "DEBUG";
    }
}

static void text_show_jobs(struct evbuffer *out, bool unique_only)
{
    for (size_t i = 0; i <= gm.jmask; i++)
        for (struct gm_job *j = gm.hbuckets[i]; j; j = j->hnext_handle) {
            if (unique_only) { /* a job without a key is an empty line, as gearmand */
                evbuffer_add(out, j->unique, j->unique_len);
                evbuffer_add(out, "\n", 1);
            } else
                evbuffer_add_printf(out, "%s\t%u\t%u\t%u\n", j->handle, j->retries, j->ignore ? 1u : 0u,
                                    j->state == GM_JOB_RUNNING ? 0u : 1u);
        }
    evbuffer_add(out, ".\n", 2);
}

void gm_text_unknown(struct evbuffer *out, const char *word)
{
    /* gearmand's text, '+' for spaces and no space before the word (sic). */
    evbuffer_add_printf(out, "ERR UNKNOWN_COMMAND Unknown+server+command%.64s\r\n", word);
}

/* Runs a classified gearmand command. Returns false if it is not one. */
bool gm_text_run(struct evbuffer *out, const struct gm_text *t, int ntok, char **tok)
{
    switch (t->cmd) {
    case GM_TEXT_NONE: return true;
    case GM_TEXT_WORKERS: text_workers(out); return true;
    case GM_TEXT_STATUS: text_status(out, false); return true;
    case GM_TEXT_PRIORITYSTATUS: text_status(out, true); return true;
    case GM_TEXT_MAXQUEUE: text_maxqueue(out, t); return true;
    case GM_TEXT_VERSION: evbuffer_add_printf(out, "OK %s\n", GM_VERSION); return true;
    case GM_TEXT_GETPID: evbuffer_add_printf(out, "OK %d\n", (int)getpid()); return true;
    case GM_TEXT_VERBOSE: evbuffer_add_printf(out, "OK %s\n", verbose_name()); return true;
    case GM_TEXT_SHOW_JOBS: text_show_jobs(out, false); return true;
    case GM_TEXT_SHOW_UNIQUE_JOBS: text_show_jobs(out, true); return true;
    case GM_TEXT_SHOW_UNKNOWN: evbuffer_add_printf(out, "ERR UNKNOWN_SHOW_ARGUMENTS\r\n"); return true;
    case GM_TEXT_CANCEL_JOB: {
        if (t->argc != 1) {
            evbuffer_add_printf(out, "ERR UNKNOWN_ERROR\r\n");
            return true;
        }
        struct gm_job *j = gm_job_find(t->arg[0], strlen(t->arg[0]));
        if (j && gm_job_cancel(j) == 0)
            evbuffer_add_printf(out, "OK\r\n");
        else
            evbuffer_add_printf(out, "ERR UNKNOWN_JOB\r\n");
        return true;
    }
    case GM_TEXT_CREATE_FUNCTION: {
        if (strlen(t->arg[0]) > GM_MAX_FUNCTION) {
            evbuffer_add_printf(out, NAME_TOO_LONG);
            return true;
        }
        struct gm_func *f = gm_func_get(t->arg[0], strlen(t->arg[0]));
        if (!f) {
            evbuffer_add_printf(out, "ERR QUEUE_ERROR Server+holds+its+maximum+number+of+functions\r\n");
            return true;
        }
        f->pinned = true;
        evbuffer_add_printf(out, "OK\r\n");
        return true;
    }
    case GM_TEXT_DROP_FUNCTION: {
        struct gm_func *f = gm_func_find(t->arg[0], strlen(t->arg[0]));
        if (!f)
            evbuffer_add_printf(out, "ERR function not found\r\n");
        else if (f->workers || f->total)
            evbuffer_add_printf(out, "ERR there are still connected workers or executing clients\r\n");
        else {
            gm_func_drop(f);
            evbuffer_add_printf(out, "OK\r\n");
        }
        return true;
    }
    case GM_TEXT_SHUTDOWN:
        if (t->argc > 0 && !t->graceful) {
            gm_text_unknown(out, "shutdown"); /* as gearmand */
            return true;
        }
        evbuffer_add_printf(out, "OK\r\n");
        log_info("gearmand: shutdown%s requested from the admin protocol", t->graceful ? " graceful" : "");
        /* graceful: refuse new jobs, let running ones finish (the core waits
         * for busy connections up to --grace); plain: stop at once. */
        gm.shutting_down = true;
        loop_request_stop();
        if (!t->graceful)
            loop_request_stop();
        return true;
    case GM_TEXT_BAD_ARGS:
        evbuffer_add_printf(out, "ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+%s\r\n",
                            ntok > 0 ? tok[0] : "");
        return true;
    case GM_TEXT_OTHER: return false;
    }
    return false;
}

/* What the job port lets through (--job-port-admin). gearmand 1.1.20
 * answers its own commands there, nothing else: no console `set`,
 * `shutdown` or `show settings` (verified side by side); `stats` is ours,
 * read-only. "read-only" also refuses the commands that change state. */
static bool job_port_allows(const struct gm_text *t, int ntok, char **tok, const char **why)
{
    const char *mode = gm.cfg.job_port_admin ? gm.cfg.job_port_admin : "gearmand";
    if (!strcmp(mode, "off")) {
        *why = "ERR PERMISSION_DENIED Text+commands+are+disabled+on+this+port\r\n";
        return false;
    }
    bool changes = t->cmd == GM_TEXT_MAXQUEUE || t->cmd == GM_TEXT_CANCEL_JOB || t->cmd == GM_TEXT_CREATE_FUNCTION ||
                   t->cmd == GM_TEXT_DROP_FUNCTION;
    if (changes && !strcmp(mode, "read-only")) {
        *why = "ERR PERMISSION_DENIED Command+changes+state:+disabled+on+this+port\r\n";
        return false;
    }
    (void)ntok;
    (void)tok;
    *why = NULL;
    return true;
}

int gm_text_line(struct gm_sess *s, char *line, size_t len)
{
    if (log_enabled(LOG_LEVEL_DEBUG)) { /* -vv: the line, control bytes as '?' */
        char shown[201];
        size_t n = len < sizeof shown - 1 ? len : sizeof shown - 1;
        for (size_t i = 0; i < n; i++)
            shown[i] = (unsigned char)line[i] < 32 || line[i] == 127 ? '?' : line[i];
        shown[n] = '\0';
        log_debug("gearmand: <%d text %s", s->fd, shown);
    }
    char *tok[GM_TEXT_MAX_TOKENS];
    int ntok = gm_text_split(line, len, tok, GM_TEXT_MAX_TOKENS);
    struct gm_text t;
    gm_text_classify(ntok, tok, &t);
    struct evbuffer *out = gm_sess_out(s);
    if (!out)
        return -1;
    const char *why;
    if (!job_port_allows(&t, ntok, tok, &why)) {
        gm.n.admin_refused++;
        evbuffer_add(out, why, strlen(why));
        return 0;
    }
    if (t.cmd == GM_TEXT_SHUTDOWN) {
        /* gone from gearmand in 1.1.15; here only on the console */
        gm_text_unknown(out, "shutdown");
        return 0;
    }
    if (gm_text_run(out, &t, ntok, tok))
        return 0;
    if (ntok == 1 && !strcasecmp(tok[0], "stats")) {
        /* The core's counters (read-only; an extension of ours). */
        char cmd[] = "stats";
        struct admin_ctx ctx = { .out = out, .conn = s->c, .session = s };
        admin_exec(&ctx, cmd, sizeof cmd - 1);
        return 0;
    }
    gm_text_unknown(out, ntok > 0 ? tok[0] : "");
    return 0;
}
