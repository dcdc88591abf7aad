/* jobs: gearmand's state core — functions, jobs, workers, waiting clients —
 * and the binary packet handlers that drive it.
 *
 * Everything here runs on the one loop that owns the protocol port; nothing
 * blocks (the persistent queue hands its writes to the db thread, see
 * queue.c). Knows nothing of sockets or framing: gearmand.c parses packets
 * and calls gm_handle_packet(); replies go to gm_sess_out(). */
#include "gearmand/server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/conn.h"
#include "common/hash.h"
#include "common/log.h"

struct gm_server gm;

#define HASH_SEED 0x6765617275ULL

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p) {
        log_error("gearmand: out of memory");
        abort();
    }
    return p;
}

/* ---- output ------------------------------------------------------------ */

void gm_send_buf(struct evbuffer *out, uint32_t cmd, int argc, const void *const *args, const size_t *lens)
{
    size_t size = 0;
    for (int i = 0; i < argc; i++)
        size += lens[i] + (i < argc - 1);
    if (size <= 2048) {
        char buf[GM_HEADER_SIZE + 2048];
        size_t n = gm_encode(buf, sizeof buf, GM_RES, cmd, argc, args, lens);
        evbuffer_add(out, buf, n);
        return;
    }
    unsigned char h[GM_HEADER_SIZE];
    gm_encode_header(h, GM_RES, cmd, (uint32_t)size);
    evbuffer_add(out, h, sizeof h);
    for (int i = 0; i < argc; i++) {
        evbuffer_add(out, args[i], lens[i]);
        if (i < argc - 1)
            evbuffer_add(out, "", 1);
    }
}

struct evbuffer *gm_sess_out(struct gm_sess *s)
{
    if (!s->c)
        return NULL;
    if (!s->slot_tail)
        return conn_out(s->c);
    if (!s->slot_tail->ready) {
        /* Output after a held reply queues behind it. */
        struct gm_slot *open = xcalloc(1, sizeof *open);
        open->buf = evbuffer_new();
        open->ready = true;
        s->slot_tail->next = open;
        s->slot_tail = open;
    }
    return s->slot_tail->buf;
}

static void held_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gm_sess *s = arg;
    if (s->c && !s->held_paused) {
        conn_resume_read(s->c);
        conn_kick(s->c);  /* requests already buffered */
    }
    gm_sess_unref(s);
}

struct gm_slot *gm_sess_hold(struct gm_sess *s)
{
    if (++s->held >= (uint32_t)gm.cfg.max_held && s->c && !s->held_paused) {
        s->held_paused = true;
        gm.n.queue_paused++;
        conn_pause_read(s->c);
    }
    struct gm_slot *slot = xcalloc(1, sizeof *slot);
    slot->buf = evbuffer_new();
    if (s->slot_tail)
        s->slot_tail->next = slot;
    else
        s->slot_head = slot;
    s->slot_tail = slot;
    return slot;
}

static void slot_free(struct gm_slot *slot)
{
    evbuffer_free(slot->buf);
    free(slot);
}

void gm_sess_release(struct gm_sess *s, struct gm_slot *slot)
{
    slot->ready = true;
    s->held--;
    if (s->held_paused && s->held <= (uint32_t)gm.cfg.max_held / 2) {
        s->held_paused = false;
        /* From a fresh event: this may run inside the conn's own on_read. */
        gm_sess_ref(s);
        if (event_base_once(gm.base, -1, EV_TIMEOUT, held_resume, s, NULL) < 0)
            gm_sess_unref(s);
    }
    while (s->slot_head && s->slot_head->ready) {
        struct gm_slot *h = s->slot_head;
        s->slot_head = h->next;
        if (!s->slot_head)
            s->slot_tail = NULL;
        if (s->c)
            evbuffer_add_buffer(conn_out(s->c), h->buf);
        slot_free(h);
    }
}

void gm_send(struct gm_sess *s, uint32_t cmd, int argc, const void *const *args, const size_t *lens)
{
    struct evbuffer *out = gm_sess_out(s);
    if (out)
        gm_send_buf(out, cmd, argc, args, lens);
}

static void send0(struct gm_sess *s, uint32_t cmd) { gm_send(s, cmd, 0, NULL, NULL); }

static void send1(struct gm_sess *s, uint32_t cmd, const void *a, size_t alen)
{
    const void *args[1] = { a };
    size_t lens[1] = { alen };
    gm_send(s, cmd, 1, args, lens);
}

void gm_send_error(struct gm_sess *s, const char *code, const char *text)
{
    const void *args[2] = { code, text };
    size_t lens[2] = { strlen(code), strlen(text) };
    gm.n.errors_sent++;
    gm_send(s, GM_ERROR, 2, args, lens);
}

/* ---- sessions ---------------------------------------------------------- */

/* Busy matters only during a graceful stop: the core keeps a busy conn open
 * (so a client gets the result of its running job, a worker can hand it in)
 * and closes idle ones. A peer's EOF closes the conn at once either way
 * (gm_on_eof), so a worker that dies mid-job is noticed at once. */
static bool sess_in_flight(struct gm_sess *s)
{
    if (!gm_list_empty(&s->running))
        return true;
    struct gm_list *pos;
    gm_list_for_each(pos, &s->links)
    {
        struct gm_link *l = gm_container_of(pos, struct gm_link, slink);
        if (l->job->state == GM_JOB_RUNNING)
            return true;
    }
    return false;
}

static void busy_recheck(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gm_sess *s = arg;
    if (s->c)
        conn_set_busy(s->c, sess_in_flight(s));
    gm_sess_unref(s);
}

static void sess_update_busy(struct gm_sess *s)
{
    if (!s->c || !gm.stopping)
        return;
    if (sess_in_flight(s)) {
        conn_set_busy(s->c, true);
        return;
    }
    /* Clearing busy may close the conn at once; do it from a fresh event,
     * not from inside the job bookkeeping that got us here. */
    gm_sess_ref(s);
    if (event_base_once(gm.base, -1, EV_TIMEOUT, busy_recheck, s, NULL) < 0)
        gm_sess_unref(s);
}

void gm_stopping(void)
{
    gm.stopping = true;
    gm.shutting_down = true;
    struct gm_list *pos;
    gm_list_for_each(pos, &gm.sessions)
    {
        struct gm_sess *s = gm_container_of(pos, struct gm_sess, all_link);
        if (s->c && sess_in_flight(s))
            conn_set_busy(s->c, true);
    }
}

struct gm_sess *gm_sess_new(struct core_conn *c)
{
    struct gm_sess *s = xcalloc(1, sizeof *s);
    s->c = c;
    s->refs = 1;
    s->fd = c->fd;
    conn_peer_str(c, s->peer, sizeof s->peer);
    /* gearmand shows the bare address */
    char *colon = strrchr(s->peer, ':');
    if (colon && s->peer[0] != '[')
        *colon = '\0';
    else if (s->peer[0] == '[') {
        char *rb = strchr(s->peer, ']');
        if (rb) {
            memmove(s->peer, s->peer + 1, (size_t)(rb - s->peer - 1));
            s->peer[rb - s->peer - 1] = '\0';
        }
    }
    gm_list_init(&s->running);
    gm_list_init(&s->links);
    gm_list_add_tail(&gm.sessions, &s->all_link);
    gm.nsessions++;
    return s;
}

void gm_sess_ref(struct gm_sess *s) { s->refs++; }

void gm_sess_unref(struct gm_sess *s)
{
    if (--s->refs > 0)
        return;
    while (s->slot_head) {
        struct gm_slot *h = s->slot_head;
        s->slot_head = h->next;
        slot_free(h);
    }
    free(s->abilities);
    free(s);
}

/* ---- hash tables ------------------------------------------------------- */

static uint64_t hbytes(const void *p, size_t n) { return hash64(p, n, HASH_SEED); }

struct gm_func *gm_func_find(const char *name, size_t len)
{
    uint64_t h = hbytes(name, len);
    for (struct gm_func *f = gm.fbuckets[h & gm.fmask]; f; f = f->hnext)
        if (f->hash == h && f->len == len && !memcmp(f->name, name, len))
            return f;
    return NULL;
}

static void func_grow(void)
{
    size_t n = (gm.fmask + 1) * 2;
    struct gm_func **nb = xcalloc(n, sizeof *nb);
    for (size_t i = 0; i <= gm.fmask; i++)
        for (struct gm_func *f = gm.fbuckets[i], *next; f; f = next) {
            next = f->hnext;
            f->hnext = nb[f->hash & (n - 1)];
            nb[f->hash & (n - 1)] = f;
        }
    free(gm.fbuckets);
    gm.fbuckets = nb;
    gm.fmask = n - 1;
}

struct gm_func *gm_func_get(const char *name, size_t len)
{
    struct gm_func *f = gm_func_find(name, len);
    if (f)
        return f;
    if (gm.nfuncs + 1 > gm.fmask + 1)
        func_grow();
    f = xcalloc(1, sizeof *f);
    f->name = xcalloc(1, len + 1);
    memcpy(f->name, name, len);
    f->len = len;
    f->hash = hbytes(name, len);
    for (int p = 0; p < 3; p++)
        gm_list_init(&f->queue[p]);
    gm_list_init(&f->sleepers);
    gm_list_add_tail(&gm.funcs, &f->all_link);
    f->hnext = gm.fbuckets[f->hash & gm.fmask];
    gm.fbuckets[f->hash & gm.fmask] = f;
    gm.nfuncs++;
    return f;
}

void gm_func_drop(struct gm_func *f)
{
    struct gm_func **pp = &gm.fbuckets[f->hash & gm.fmask];
    while (*pp && *pp != f)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = f->hnext;
    gm_list_del(&f->all_link);
    gm.nfuncs--;
    free(f->name);
    free(f);
}

struct gm_job *gm_job_find(const char *handle, size_t len)
{
    uint64_t h = hbytes(handle, len);
    for (struct gm_job *j = gm.hbuckets[h & gm.jmask]; j; j = j->hnext_handle)
        if (j->handle_hash == h && j->handle_len == len && !memcmp(j->handle, handle, len))
            return j;
    return NULL;
}

/* Unique keys hash without the function so GET_STATUS_UNIQUE (which has no
 * function) can search the same table. */
static struct gm_job *unique_find(struct gm_func *f, const char *u, size_t len)
{
    uint64_t h = hbytes(u, len);
    for (struct gm_job *j = gm.ubuckets[h & gm.jmask]; j; j = j->hnext_unique)
        if (j->unique_hash == h && (!f || j->f == f) && j->unique_len == len && !memcmp(j->unique, u, len))
            return j;
    return NULL;
}

static void jobs_grow(void)
{
    size_t n = (gm.jmask + 1) * 2;
    struct gm_job **hb = xcalloc(n, sizeof *hb), **ub = xcalloc(n, sizeof *ub);
    for (size_t i = 0; i <= gm.jmask; i++) {
        for (struct gm_job *j = gm.hbuckets[i], *next; j; j = next) {
            next = j->hnext_handle;
            j->hnext_handle = hb[j->handle_hash & (n - 1)];
            hb[j->handle_hash & (n - 1)] = j;
        }
        for (struct gm_job *j = gm.ubuckets[i], *next; j; j = next) {
            next = j->hnext_unique;
            j->hnext_unique = ub[j->unique_hash & (n - 1)];
            ub[j->unique_hash & (n - 1)] = j;
        }
    }
    free(gm.hbuckets);
    free(gm.ubuckets);
    gm.hbuckets = hb;
    gm.ubuckets = ub;
    gm.jmask = n - 1;
}

/* ---- sleeping workers ---------------------------------------------------- */

static void sess_unsleep(struct gm_sess *s)
{
    if (!s->sleeping)
        return;
    s->sleeping = false;
    for (int i = 0; i < s->nabilities; i++)
        if (gm_list_linked(&s->abilities[i]->sleep_link))
            gm_list_del(&s->abilities[i]->sleep_link);
}

/* A job became runnable: wake one sleeping worker that can do it. Only one:
 * each queued job wakes at most one sleeper, so N jobs never wake more than
 * N workers (the "thundering herd" of waking every sleeper is avoided). */
static void wake_one(struct gm_func *f)
{
    if (gm_list_empty(&f->sleepers))
        return;
    struct gm_ability *a = gm_container_of(f->sleepers.next, struct gm_ability, sleep_link);
    struct gm_sess *w = a->s;
    sess_unsleep(w);
    gm.n.noops_sent++;
    send0(w, GM_NOOP);
}

/* ---- jobs ---------------------------------------------------------------- */

static int64_t now_epoch(void) { return (int64_t)time(NULL); }

static void job_enqueue(struct gm_job *j, bool at_head)
{
    j->state = GM_JOB_QUEUED;
    if (at_head)
        gm_list_add_head(&j->f->queue[j->prio], &j->qlink);
    else
        gm_list_add_tail(&j->f->queue[j->prio], &j->qlink);
    j->f->queued[j->prio]++;
    wake_one(j->f);
}

static void job_unqueue(struct gm_job *j)
{
    if (j->state == GM_JOB_QUEUED && gm_list_linked(&j->qlink)) {
        gm_list_del(&j->qlink);
        j->f->queued[j->prio]--;
    }
}

static void job_timer_off(struct gm_job *j)
{
    if (j->timer) {
        event_free(j->timer);
        j->timer = NULL;
    }
}

static void job_unrun(struct gm_job *j)
{
    if (j->state != GM_JOB_RUNNING)
        return;
    struct gm_sess *w = j->worker;
    gm_list_del(&j->wlink);
    j->f->running--;
    j->worker = NULL;
    job_timer_off(j);
    if (w)
        sess_update_busy(w);
}

static void link_free(struct gm_link *l)
{
    gm_list_del(&l->jlink);
    gm_list_del(&l->slink);
    l->job->client_count--;
    sess_update_busy(l->s);
    free(l);
}

/* Remove a job from every structure and free it. */
static void job_free(struct gm_job *j)
{
    job_unqueue(j);
    job_unrun(j);
    job_timer_off(j);
    while (!gm_list_empty(&j->clients))
        link_free(gm_container_of(j->clients.next, struct gm_link, jlink));
    if (j->db_id)
        gm_queue_done(j);
    struct gm_job **pp = &gm.hbuckets[j->handle_hash & gm.jmask];
    while (*pp && *pp != j)
        pp = &(*pp)->hnext_handle;
    if (*pp)
        *pp = j->hnext_handle;
    if (j->in_unique) {
        pp = &gm.ubuckets[j->unique_hash & gm.jmask];
        while (*pp && *pp != j)
            pp = &(*pp)->hnext_unique;
        if (*pp)
            *pp = j->hnext_unique;
    }
    j->f->total--;
    gm.njobs--;
    free(j);
}

static void job_attach(struct gm_job *j, struct gm_sess *s)
{
    struct gm_link *l = xcalloc(1, sizeof *l);
    l->job = j;
    l->s = s;
    gm_list_add_tail(&j->clients, &l->jlink);
    gm_list_add_tail(&s->links, &l->slink);
    j->client_count++;
    j->ignore = false;
    sess_update_busy(s);
}

/* Send a packet to every client waiting on j. */
static void job_forward(struct gm_job *j, uint32_t cmd, int argc, const void *const *args, const size_t *lens)
{
    struct gm_list *pos;
    gm_list_for_each(pos, &j->clients)
    {
        struct gm_link *l = gm_container_of(pos, struct gm_link, jlink);
        if (cmd == GM_WORK_EXCEPTION && !l->s->exceptions)
            gm_send(l->s, GM_WORK_FAIL, 1, args, lens);
        else
            gm_send(l->s, cmd, argc, args, lens);
    }
}

static void job_fail(struct gm_job *j)
{
    const void *args[1] = { j->handle };
    size_t lens[1] = { j->handle_len };
    job_forward(j, GM_WORK_FAIL, 1, args, lens);
    gm.n.jobs_failed++;
    job_free(j);
}

static void on_schedule(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gm_job *j = arg;
    job_timer_off(j);
    job_enqueue(j, false);
}

static void on_run_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gm_job *j = arg;
    gm.n.jobs_timeout++;
    log_info("gearmand: job %s timed out on its worker (CAN_DO_TIMEOUT)", j->handle);
    job_fail(j);
}

struct gm_job *gm_job_add(struct gm_func *f, const char *unique, size_t ulen, const char *data,
                          size_t dlen, int prio, bool bg, int64_t when, const char *reducer,
                          size_t rlen)
{
    if (gm.njobs + 1 > gm.jmask + 1)
        jobs_grow();
    struct gm_job *j = malloc(sizeof *j + ulen + 1 + (reducer ? rlen + 1 : 0) + dlen);
    if (!j)
        return NULL;
    memset(j, 0, sizeof *j);
    char *p = (char *)(j + 1);
    j->unique = p;
    memcpy(p, unique, ulen);
    p[ulen] = '\0';
    j->unique_len = ulen;
    p += ulen + 1;
    if (reducer) {
        j->reducer = p;
        memcpy(p, reducer, rlen);
        p[rlen] = '\0';
        j->reducer_len = rlen;
        p += rlen + 1;
    }
    j->data = p;
    if (dlen)
        memcpy(p, data, dlen);
    j->data_len = dlen;
    j->f = f;
    j->prio = (uint8_t)prio;
    j->bg = bg;
    j->when = when;
    gm_list_init(&j->qlink);
    gm_list_init(&j->wlink);
    gm_list_init(&j->clients);
    int n = snprintf(j->handle, sizeof j->handle, "%s:%llu", gm.handle_prefix,
                     (unsigned long long)++gm.handle_counter);
    j->handle_len = (size_t)n < sizeof j->handle ? (size_t)n : sizeof j->handle - 1;
    j->handle_hash = hbytes(j->handle, j->handle_len);
    j->hnext_handle = gm.hbuckets[j->handle_hash & gm.jmask];
    gm.hbuckets[j->handle_hash & gm.jmask] = j;
    if (ulen) {
        j->unique_hash = hbytes(j->unique, ulen);
        j->hnext_unique = gm.ubuckets[j->unique_hash & gm.jmask];
        gm.ubuckets[j->unique_hash & gm.jmask] = j;
        j->in_unique = true;
    }
    j->state = GM_JOB_SCHEDULED;  /* not runnable until gm_job_start */
    f->total++;
    gm.njobs++;
    return j;
}

void gm_job_start(struct gm_job *j)
{
    if (j->when > now_epoch()) {
        j->state = GM_JOB_SCHEDULED;
        j->timer = evtimer_new(gm.base, on_schedule, j);
        struct timeval tv = { .tv_sec = (time_t)(j->when - now_epoch()), .tv_usec = 0 };
        evtimer_add(j->timer, &tv);
        return;
    }
    job_enqueue(j, false);
}

int gm_job_cancel(struct gm_job *j)
{
    if (j->state == GM_JOB_RUNNING)
        return -1;
    job_fail(j);
    return 0;
}

/* ---- the worker side ------------------------------------------------------ */

static struct gm_ability *ability_find(struct gm_sess *s, struct gm_func *f, int *idx)
{
    for (int i = 0; i < s->nabilities; i++)
        if (s->abilities[i]->f == f) {
            if (idx)
                *idx = i;
            return s->abilities[i];
        }
    return NULL;
}

static void ability_add(struct gm_sess *s, const char *name, size_t len, uint32_t timeout_ms)
{
    if (len == 0 || len > GM_MAX_FUNCTION) {
        gm_send_error(s, "INVALID_FUNCTION_NAME", "Function name is empty or too long");
        return;
    }
    struct gm_func *f = gm_func_get(name, len);
    struct gm_ability *a = ability_find(s, f, NULL);
    if (a) {
        a->timeout_ms = timeout_ms;
        return;
    }
    if (s->nabilities == s->cap_abilities) {
        int cap = s->cap_abilities ? s->cap_abilities * 2 : 4;
        struct gm_ability **na = realloc(s->abilities, (size_t)cap * sizeof *na);
        if (!na)
            return;
        s->abilities = na;
        s->cap_abilities = cap;
    }
    a = xcalloc(1, sizeof *a);
    a->f = f;
    a->s = s;
    a->timeout_ms = timeout_ms;
    gm_list_init(&a->sleep_link);
    s->abilities[s->nabilities++] = a;
    f->workers++;
    if (s->sleeping)
        gm_list_add_tail(&f->sleepers, &a->sleep_link);
}

static void ability_remove(struct gm_sess *s, int i)
{
    struct gm_ability *a = s->abilities[i];
    if (gm_list_linked(&a->sleep_link))
        gm_list_del(&a->sleep_link);
    a->f->workers--;
    free(a);
    s->abilities[i] = s->abilities[--s->nabilities];
}

static bool has_runnable(struct gm_sess *s)
{
    for (int i = 0; i < s->nabilities; i++) {
        struct gm_func *f = s->abilities[i]->f;
        if (f->queued[0] | f->queued[1] | f->queued[2])
            return true;
    }
    return false;
}

/* Highest priority first across every function the worker can do (a high
 * job of any function goes before normal ones); among functions of equal
 * priority, round robin from where the last grab left off. */
static struct gm_job *take_job(struct gm_sess *s, struct gm_ability **ab)
{
    int n = s->nabilities;
    if (n == 0)
        return NULL;
    for (int p = 0; p < 3; p++) {
        for (int k = 0; k < n; k++) {
            int i = (s->rr + k) % n;
            struct gm_func *f = s->abilities[i]->f;
            if (f->queued[p]) {
                struct gm_job *j = gm_container_of(f->queue[p].next, struct gm_job, qlink);
                job_unqueue(j);
                s->rr = (i + 1) % n;
                *ab = s->abilities[i];
                return j;
            }
        }
    }
    return NULL;
}

static void handle_grab(struct gm_sess *s, uint32_t cmd)
{
    sess_unsleep(s);
    gm.n.grabs++;
    struct gm_ability *a = NULL;
    struct gm_job *j = take_job(s, &a);
    if (!j) {
        gm.n.no_jobs++;
        send0(s, GM_NO_JOB);
        return;
    }
    j->state = GM_JOB_RUNNING;
    j->worker = s;
    gm_list_add_tail(&s->running, &j->wlink);
    j->f->running++;
    sess_update_busy(s);
    if (a->timeout_ms) {
        j->timer = evtimer_new(gm.base, on_run_timeout, j);
        struct timeval tv = { .tv_sec = a->timeout_ms / 1000, .tv_usec = (a->timeout_ms % 1000) * 1000 };
        evtimer_add(j->timer, &tv);
    }
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
    if (has_runnable(s)) {
        /* A job arrived between NO_JOB and PRE_SLEEP. */
        gm.n.noops_sent++;
        send0(s, GM_NOOP);
        return;
    }
    if (s->sleeping)
        return;
    s->sleeping = true;
    for (int i = 0; i < s->nabilities; i++)
        gm_list_add_tail(&s->abilities[i]->f->sleepers, &s->abilities[i]->sleep_link);
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
        job_forward(j, p->cmd, p->argc, args, p->arg_len);
        break;
    case GM_WORK_DATA:
    case GM_WORK_WARNING:
        job_forward(j, p->cmd, p->argc, args, p->arg_len);
        break;
    case GM_WORK_COMPLETE:
    case GM_WORK_EXCEPTION:
    case GM_WORK_FAIL:
        job_forward(j, p->cmd, p->argc, args, p->arg_len);
        if (p->cmd == GM_WORK_COMPLETE)
            gm.n.jobs_completed++;
        else
            gm.n.jobs_failed++;
        job_free(j);
        break;
    }
}

/* ---- the client side ------------------------------------------------------ */

static void send_created(struct gm_sess *s, struct gm_job *j) { send1(s, GM_JOB_CREATED, j->handle, j->handle_len); }

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
    case GM_SUBMIT_JOB_HIGH_BG: prio = GM_PRIO_HIGH; bg = true; break;
    case GM_SUBMIT_JOB_LOW: prio = GM_PRIO_LOW; break;
    case GM_SUBMIT_JOB_LOW_BG: prio = GM_PRIO_LOW; bg = true; break;
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
        when = gm_sched_next(now_epoch(), fld[0], fld[1], fld[2], fld[3], fld[4]);
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
    if (ulen == 1 && unique[0] == '-') {
        /* "-": the workload is the unique key. */
        unique = data;
        ulen = dlen;
    }
    struct gm_func *f = gm_func_get(fname, flen);
    if (ulen) {
        struct gm_job *j = unique_find(f, unique, ulen);
        if (j) {
            /* Coalesce: attach to the queued or running job. */
            gm.n.jobs_coalesced++;
            if (!bg)
                job_attach(j, s);
            else if (!j->bg) {
                /* A background submit joined a foreground job: it must now
                 * run even if every waiting client leaves, and be as
                 * durable as any background job before JOB_CREATED. */
                j->bg = true;
                if (gm.db && !j->db_id) {
                    gm_queue_store(j, s, gm_sess_hold(s));
                    return;
                }
            }
            if (j->db_id && gm.db)
                gm_queue_barrier(j, s, gm_sess_hold(s));
            else
                send_created(s, j);
            return;
        }
    }
    if (gm.cfg.max_jobs && gm.njobs >= gm.cfg.max_jobs) {
        gm.n.queue_full++;
        gm_send_error(s, "QUEUE_ERROR", "Server holds its maximum number of jobs");
        return;
    }
    if (f->max_queue[prio] && f->queued[prio] >= f->max_queue[prio]) {
        gm.n.queue_full++;
        gm_send_error(s, "QUEUE_ERROR", "Job queue is full");
        return;
    }
    struct gm_job *j = gm_job_add(f, unique, ulen, data, dlen, prio, bg, when, reducer, rlen);
    if (!j) {
        gm_send_error(s, "MEMORY_ALLOCATION_FAILURE", "Out of memory");
        return;
    }
    gm.n.jobs_submitted++;
    if (!bg)
        job_attach(j, s);
    if (bg && gm.db)
        gm_queue_store(j, s, gm_sess_hold(s));  /* JOB_CREATED once durable */
    else
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
    struct gm_job *j = p->arg_len[0] ? unique_find(NULL, p->arg[0], p->arg_len[0]) : NULL;
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

int gm_handle_packet(struct gm_sess *s, const struct gm_packet *p)
{
    gm.n.packets_in++;
    if (p->magic != GM_REQ) {
        gm_send_error(s, "INVALID_COMMAND", "Command not expected");
        return 0;
    }
    switch (p->cmd) {
    case GM_CAN_DO:
        ability_add(s, p->arg[0], p->arg_len[0], 0);
        break;
    case GM_CAN_DO_TIMEOUT: {
        /* Seconds, as gearmand 1.1, libgearman and Perl Gearman::Worker
         * mean it (the PROTOCOL text gives no unit); 0 = no limit. */
        uint64_t secs = 0;
        if (gm_parse_u64(p->arg[1], p->arg_len[1], UINT32_MAX / 1000, &secs) < 0) {
            gm_send_error(s, "INVALID_ARGUMENT", "Bad timeout");
            break;
        }
        ability_add(s, p->arg[0], p->arg_len[0], (uint32_t)secs * 1000);
        break;
    }
    case GM_CANT_DO: {
        struct gm_func *f = gm_func_find(p->arg[0], p->arg_len[0]);
        int i;
        if (f && ability_find(s, f, &i))
            ability_remove(s, i);
        break;
    }
    case GM_RESET_ABILITIES:
        while (s->nabilities)
            ability_remove(s, s->nabilities - 1);
        break;
    case GM_PRE_SLEEP:
        handle_pre_sleep(s);
        break;
    case GM_GRAB_JOB:
    case GM_GRAB_JOB_UNIQ:
    case GM_GRAB_JOB_ALL:
        handle_grab(s, p->cmd);
        break;
    case GM_WORK_STATUS:
    case GM_WORK_DATA:
    case GM_WORK_WARNING:
    case GM_WORK_COMPLETE:
    case GM_WORK_FAIL:
    case GM_WORK_EXCEPTION:
        handle_work(s, p);
        break;
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
    case GM_GET_STATUS:
        handle_get_status(s, p);
        break;
    case GM_GET_STATUS_UNIQUE:
        handle_get_status_unique(s, p);
        break;
    case GM_ECHO_REQ:
        send1(s, GM_ECHO_RES, p->arg[0], p->arg_len[0]);
        break;
    case GM_OPTION_REQ:
        if (p->arg_len[0] == 10 && !strncasecmp(p->arg[0], "exceptions", 10)) {
            s->exceptions = true;
            send1(s, GM_OPTION_RES, p->arg[0], p->arg_len[0]);
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
    case GM_ALL_YOURS:
        break;  /* accepted and ignored, as gearmand does */
    default:
        gm_send_error(s, "INVALID_COMMAND", "Command not expected");
        break;
    }
    return 0;
}

/* ---- connection end ---------------------------------------------------- */

void gm_sess_closed(struct gm_sess *s)
{
    gm_list_del(&s->all_link);
    gm.nsessions--;
    sess_unsleep(s);
    while (s->nabilities)
        ability_remove(s, s->nabilities - 1);
    /* Jobs it was running go back to the front of their queue, or fail
     * after -j attempts. */
    while (!gm_list_empty(&s->running)) {
        struct gm_job *j = gm_container_of(s->running.next, struct gm_job, wlink);
        job_unrun(j);
        j->retries++;
        if (!j->bg && j->client_count == 0)
            job_free(j);
        else if (gm.cfg.job_retries > 0 && j->retries >= (uint32_t)gm.cfg.job_retries) {
            log_info("gearmand: job %s dropped after %u attempts", j->handle, j->retries);
            job_fail(j);
        } else {
            gm.n.jobs_retried++;
            job_enqueue(j, true);
        }
    }
    /* Waits it had: a foreground job nobody waits for any more is dropped
     * if queued, or its result ignored if running. */
    while (!gm_list_empty(&s->links)) {
        struct gm_link *l = gm_container_of(s->links.next, struct gm_link, slink);
        struct gm_job *j = l->job;
        link_free(l);
        if (!j->bg && j->client_count == 0) {
            if (j->state == GM_JOB_RUNNING)
                j->ignore = true;
            else
                job_free(j);
        }
    }
    s->c = NULL;
    gm_sess_unref(s);
}

/* ---- set-up ---------------------------------------------------------------- */

void gm_state_init(struct event_base *base)
{
    gm.base = base;
    gm.fmask = 63;
    gm.fbuckets = xcalloc(gm.fmask + 1, sizeof *gm.fbuckets);
    gm.jmask = 1023;
    gm.hbuckets = xcalloc(gm.jmask + 1, sizeof *gm.hbuckets);
    gm.ubuckets = xcalloc(gm.jmask + 1, sizeof *gm.ubuckets);
    gm_list_init(&gm.funcs);
    gm_list_init(&gm.sessions);
    if (gm.cfg.handle_prefix && *gm.cfg.handle_prefix)
        snprintf(gm.handle_prefix, sizeof gm.handle_prefix, "%s", gm.cfg.handle_prefix);
    else {
        char host[32] = "localhost";
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = '\0';
        char *dot = strchr(host, '.');
        if (dot)
            *dot = '\0';
        snprintf(gm.handle_prefix, sizeof gm.handle_prefix, "H:%s", host);
    }
}

void gm_state_free(void)
{
    /* Jobs first (they reference functions). */
    for (size_t i = 0; i <= gm.jmask; i++)
        while (gm.hbuckets[i]) {
            struct gm_job *j = gm.hbuckets[i];
            j->db_id = 0;  /* stays in the persistent queue */
            job_free(j);
        }
    while (!gm_list_empty(&gm.funcs))
        gm_func_drop(gm_container_of(gm.funcs.next, struct gm_func, all_link));
    free(gm.fbuckets);
    free(gm.hbuckets);
    free(gm.ubuckets);
    gm.fbuckets = NULL;
    gm.hbuckets = gm.ubuckets = NULL;
}
