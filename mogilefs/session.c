/* session: a tracker client connection and the query threads.
 *
 * States of a connection (one request in flight at a time, as the original:
 * replies stay in order and a pipelined line waits its turn):
 *   READING  - lines are framed from the input; "!" admin lines are answered
 *              here on the loop; a command line becomes a job -> RUNNING
 *   RUNNING  - a query thread runs the command (blocking DB/HTTP there);
 *              reading is suspended; the reply comes back with loop_call()
 *              and the state returns to READING (buffered lines continue)
 *   CLOSED   - the peer left while RUNNING: the job's return frees it.
 * The jobs queue is bounded (max_queue); past it a command gets ERR. */
#include "mogilefs/mogilefs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <event2/buffer.h>

#include "common/conn.h"
#include "common/line.h"
#include "common/log.h"
#include "common/loop.h"

enum sess_state { SESS_READING = 0, SESS_RUNNING, SESS_CLOSED };

struct mog_sess {
    struct core_conn *c;
    enum sess_state state;
    bool watching;      /* "!watch": gets a line per finished command */
    bool in_done, gone; /* job_done running / the conn was freed meanwhile */
    struct mog_sess *wnext, *wprev;
    char ip[64];
};

/* Sessions in "!watch" mode (the tracker runs one loop, so no lock). */
static struct mog_sess *watchers;

static void watch_remove(struct mog_sess *s)
{
    if (!s->watching)
        return;
    if (s->wprev)
        s->wprev->wnext = s->wnext;
    else
        watchers = s->wnext;
    if (s->wnext)
        s->wnext->wprev = s->wprev;
    s->watching = false;
    s->wnext = s->wprev = NULL;
}

static void watch_toggle(struct mog_sess *s, struct evbuffer *out)
{
    if (s->watching) {
        watch_remove(s);
        evbuffer_add_printf(out, "Removed you from watcher list\r\n.\r\n");
        return;
    }
    s->watching = true;
    s->wprev = NULL;
    s->wnext = watchers;
    if (watchers)
        watchers->wprev = s;
    watchers = s;
    evbuffer_add_printf(out, "Added you to watcher list\r\n.\r\n");
}

/* One line per finished command to every watcher: time, run time, client,
 * the command word and its outcome (arguments are not shown: keys may be
 * private). */
static void watch_broadcast(const struct mog_sess *from, const char *line, size_t len, double secs,
                            struct evbuffer *reply)
{
    if (!watchers)
        return;
    size_t wl = 0;
    while (wl < len && wl < 64 && line[wl] != ' ')
        wl++;
    char outcome[80];
    size_t rl = evbuffer_get_length(reply);
    size_t take = rl < sizeof outcome - 1 ? rl : sizeof outcome - 1;
    evbuffer_copyout(reply, outcome, take);
    outcome[take] = '\0';
    char *sp = strchr(outcome, ' ');
    if (sp && !strncmp(outcome, "ERR", 3))
        sp = strchr(sp + 1, ' ');
    if (sp)
        *sp = '\0';
    outcome[strcspn(outcome, "\r\n")] = '\0';
    for (struct mog_sess *w = watchers; w; w = w->wnext)
        if (w->c && !conn_is_closing(w->c))
            evbuffer_add_printf(conn_out(w->c), "%.3f %.4f %s %.*s %s\r\n", stats_wall_time(), secs, from->ip, (int)wl,
                                line, outcome);
}

struct mog_job {
    struct mog_sess *s;
    struct core_loop *loop;
    char *line;
    size_t len;
    struct evbuffer *out;
    uint64_t t0;
    bool is_error;
    struct mog_job *next;
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct mog_job *head, *tail;
    int queued;
    int idle;
    bool stop;
    pthread_t *threads;
    int nthreads;
} q = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

static void job_free(struct mog_job *j)
{
    if (j->out)
        evbuffer_free(j->out);
    free(j->line);
    free(j);
}

static void sess_drive(struct mog_sess *s);

/* Back on the connection's loop with the reply. */
static void job_done(void *arg)
{
    struct mog_job *j = arg;
    struct mog_sess *s = j->s;
    double secs = (double)(stats_now_usec() - j->t0) / 1e6;
    mog_recent_add(j->line, j->len, secs);
    if (j->is_error)
        stats_counter_add(&mog.n.errors, 1);
    watch_broadcast(s, j->line, j->len, secs, j->out);
    if (log_command_enabled()) {
        size_t rl = evbuffer_get_length(j->out);
        log_command(s->ip, j->line, j->len, false, (const char *)evbuffer_pullup(j->out, rl < 256 ? rl : 256),
                    rl < 256 ? rl : 256);
    }
    if (s->state == SESS_CLOSED) {
        free(s);
        job_free(j);
        return;
    }
    struct core_conn *c = s->c;
    s->state = SESS_READING;
    conn_write_now(c, j->out);
    job_free(j);
    /* Outside a conn callback the core frees a conn at once (closing, or
     * idle during a graceful stop): on_close then only marks s gone while
     * this runs, and c is not touched after that. */
    s->in_done = true;
    conn_resume_read(c);
    conn_kick(c); /* buffered lines, inside the core's callback guard */
    if (!s->gone && s->state == SESS_READING)
        conn_set_busy(c, false);
    s->in_done = false;
    if (s->gone)
        free(s);
}

static void *query_thread(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&q.mu);
        q.idle++;
        while (!q.head && !q.stop)
            pthread_cond_wait(&q.cv, &q.mu);
        q.idle--;
        struct mog_job *j = q.head;
        if (!j) {
            pthread_mutex_unlock(&q.mu);
            return NULL;
        }
        q.head = j->next;
        if (!q.head)
            q.tail = NULL;
        q.queued--;
        mog.pending--;
        pthread_mutex_unlock(&q.mu);

        mog.processing++;
        struct mog_req req;
        struct mog_reply r;
        enum mog_parse_status st = mog_parse_request(j->line, j->len, &req);
        if (st == MOG_PARSE_OK) {
            mog_reply_init(&r, j->out, mog_arg(&req, "callid"));
            mog_cmd_run(&req, j->s->ip, &r);
        } else {
            mog_reply_init(&r, j->out, NULL);
            mog_err(&r, st == MOG_PARSE_TOO_MANY ? "too_many_args" : "unknown_command",
                    st == MOG_PARSE_TOO_MANY ? "Too many arguments" : NULL);
        }
        j->is_error = evbuffer_get_length(j->out) >= 3 && !memcmp(evbuffer_pullup(j->out, 3), "ERR", 3);
        mog_req_free(&req);
        mog.processing--;
        if (loop_call(j->loop, job_done, j) < 0) {
            /* The loop is gone (shutdown): nothing to answer to. */
            job_free(j);
        }
    }
}

int mog_sessions_start(int nthreads)
{
    q.nthreads = nthreads < 1 ? 1 : nthreads;
    q.threads = calloc((size_t)q.nthreads, sizeof *q.threads);
    if (!q.threads)
        return -1;
    for (int i = 0; i < q.nthreads; i++)
        if (pthread_create(&q.threads[i], NULL, query_thread, NULL) != 0) {
            q.nthreads = i;
            return -1;
        }
    return 0;
}

void mog_sessions_stop(void)
{
    pthread_mutex_lock(&q.mu);
    q.stop = true;
    pthread_cond_broadcast(&q.cv);
    pthread_mutex_unlock(&q.mu);
    for (int i = 0; i < q.nthreads; i++)
        pthread_join(q.threads[i], NULL);
    free(q.threads);
    q.threads = NULL;
    q.nthreads = 0;
}

static int submit(struct mog_sess *s, const char *line, size_t len)
{
    struct mog_job *j = calloc(1, sizeof *j);
    if (!j)
        return -1;
    j->s = s;
    j->loop = s->c->loop;
    j->line = malloc(len + 1);
    j->out = evbuffer_new();
    if (!j->line || !j->out) {
        job_free(j);
        return -1;
    }
    memcpy(j->line, line, len);
    j->line[len] = '\0';
    j->len = len;
    j->t0 = stats_now_usec();
    pthread_mutex_lock(&q.mu);
    if (q.queued >= mog.cfg.max_queue) {
        pthread_mutex_unlock(&q.mu);
        stats_counter_add(&mog.n.queue_full, 1);
        job_free(j);
        return -1;
    }
    if (q.idle == 0)
        stats_counter_add(&mog.n.times_out_of_qworkers, 1);
    if (q.tail)
        q.tail->next = j;
    else
        q.head = j;
    q.tail = j;
    q.queued++;
    mog.pending++;
    pthread_cond_signal(&q.cv);
    pthread_mutex_unlock(&q.mu);
    return 0;
}

/* READING: frame lines until one becomes a job or the input runs dry. */
static void sess_drive(struct mog_sess *s)
{
    struct core_conn *c = s->c;
    struct evbuffer *in = conn_in(c);
    while (s->state == SESS_READING && !conn_is_closing(c) && evbuffer_get_length(in) > 0) {
        size_t len, consumed;
        enum line_status ls;
        char *line = line_peek(in, MOG_MAX_LINE, &len, &consumed, &ls);
        if (ls == LINE_NEED_MORE)
            return;
        if (ls == LINE_TOO_LONG) {
            evbuffer_add_printf(conn_out(c), "ERR line_too_long Request+line+too+long\r\n");
            stats_counter_add(&mog.n.errors, 1);
            conn_close_after_write(c);
            return;
        }
        c->requests++;
        size_t i = 0;
        while (i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r'))
            i++;
        if (i == len) {
            evbuffer_drain(in, consumed);
            continue; /* blank lines are ignored */
        }
        if (line[i] == '!' && len - i >= 6 && !strncmp(line + i, "!watch", 6) &&
            (len - i == 6 || line[i + 6] == ' ' || line[i + 6] == '\r')) {
            watch_toggle(s, conn_out(c));
            evbuffer_drain(in, consumed);
            continue;
        }
        if (line[i] == '!') {
            mog_bang_command(line + i, len - i, conn_out(c));
            evbuffer_drain(in, consumed);
            continue;
        }
        if (submit(s, line, len) < 0) {
            evbuffer_add_printf(conn_out(c), "ERR busy Too+many+queued+requests\r\n");
            stats_counter_add(&mog.n.errors, 1);
            evbuffer_drain(in, consumed);
            continue;
        }
        evbuffer_drain(in, consumed);
        s->state = SESS_RUNNING;
        conn_set_busy(c, true);
        conn_pause_read(c);
    }
}

static int sess_on_read(struct core_conn *c)
{
    sess_drive(c->data);
    return 0;
}

static void sess_on_close(struct core_conn *c, enum conn_close_reason why)
{
    (void)why;
    struct mog_sess *s = c->data;
    c->data = NULL;
    if (!s)
        return;
    watch_remove(s);
    if (s->in_done) {
        s->gone = true; /* job_done frees it */
        s->c = NULL;
        return;
    }
    if (s->state == SESS_RUNNING) {
        s->state = SESS_CLOSED; /* job_done frees it */
        s->c = NULL;
    } else {
        free(s);
    }
}

static const struct conn_ops sess_ops = {
    .name = "mogilefs",
    .on_read = sess_on_read,
    .on_close = sess_on_close,
};

void mog_tracker_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen, void *arg)
{
    (void)arg;
    struct mog_sess *s = calloc(1, sizeof *s);
    if (!s) {
        close(fd);
        return;
    }
    struct core_conn *c = conn_new(loop, fd, sa, salen, &sess_ops, s);
    if (!c) {
        free(s);
        return;
    }
    s->c = c;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, s->ip, sizeof s->ip);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, s->ip, sizeof s->ip);
    conn_set_output_limit(c, 4u << 20);
    if (mog.cfg.idle_timeout > 0)
        conn_set_timeouts(c, (uint32_t)mog.cfg.idle_timeout * 1000, 30000);
}

void mog_tracker_reject(int fd, void *arg)
{
    (void)arg;
    static const char msg[] = "ERR too_many_connections Too+many+connections\r\n";
    ssize_t r = send(fd, msg, sizeof msg - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)r;
}
