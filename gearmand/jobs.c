/* jobs: gearmand's job state — functions, jobs, the unique and handle
 * tables, priority queues, workers' abilities and sleeping workers, the
 * clients waiting on each job.
 *
 * Everything here runs on the one loop that owns the protocol port; nothing
 * blocks (the durable store hands its writes to the db thread, see
 * store.c). Knows nothing of sockets, framing or packet layouts: cmd_bin.c
 * and cmd_text.c call in, replies go out through session.c. */
#include "gearmand/gearmand.h"

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
#include "common/loop.h"
#include "common/work.h"

struct gm_server gm = { .lock = PTHREAD_MUTEX_INITIALIZER };

#define HASH_SEED 0x6765617275ULL

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
    struct gm_func **nb = gm_xcalloc(n, sizeof *nb);
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
    if (gm.cfg.max_functions && gm.nfuncs >= gm.cfg.max_functions) {
        gm.n.functions_refused++;
        return NULL;
    }
    if (gm.nfuncs + 1 > gm.fmask + 1)
        func_grow();
    f = gm_xcalloc(1, sizeof *f);
    f->name = gm_xcalloc(1, len + 1);
    memcpy(f->name, name, len);
    f->len = len;
    f->hash = hbytes(name, len);
    for (int p = 0; p < 3; p++)
        list_init(&f->queue[p]);
    list_init(&f->sleepers);
    list_init(&f->abilities);
    list_add_tail(&gm.funcs, &f->all_link);
    f->hnext = gm.fbuckets[f->hash & gm.fmask];
    gm.fbuckets[f->hash & gm.fmask] = f;
    gm.nfuncs++;
    return f;
}

/* Free f once nothing refers to it: no job, no worker, no maxqueue limit,
 * not made by `create function`. Function names a client invents don't
 * pile up (gearmand 1.1 keeps them until `drop function`). */
void gm_func_release(struct gm_func *f)
{
    if (f->total || f->workers || f->pinned || f->max_queue[0] || f->max_queue[1] || f->max_queue[2])
        return;
    gm_func_drop(f);
}

void gm_func_drop(struct gm_func *f)
{
    struct gm_func **pp = &gm.fbuckets[f->hash & gm.fmask];
    while (*pp && *pp != f)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = f->hnext;
    list_del(&f->all_link);
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
struct gm_job *gm_unique_find(struct gm_func *f, const char *u, size_t len)
{
    uint64_t h = hbytes(u, len);
    for (struct gm_job *j = gm.ubuckets[h & gm.jmask]; j; j = j->hnext_unique)
        if (j->unique_hash == h && !j->unique_is_data && (!f || j->f == f) && j->unique_len == len &&
            !memcmp(j->unique, u, len))
            return j;
    return NULL;
}

/* Jobs submitted with unique "-" coalesce by their workload; they sit in
 * the same table under the workload's hash, salted apart from keys. */
#define DASH_SALT 0x2d2d2d2d2d2d2d2dULL

struct gm_job *gm_unique_find_dash(struct gm_func *f, const char *data, size_t len)
{
    uint64_t h = hbytes(data, len) ^ DASH_SALT;
    for (struct gm_job *j = gm.ubuckets[h & gm.jmask]; j; j = j->hnext_unique)
        if (j->unique_hash == h && j->unique_is_data && j->f == f && j->data_len == len && !memcmp(j->data, data, len))
            return j;
    return NULL;
}

static void jobs_grow(void)
{
    size_t n = (gm.jmask + 1) * 2;
    struct gm_job **hb = gm_xcalloc(n, sizeof *hb), **ub = gm_xcalloc(n, sizeof *ub);
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

void gm_worker_unsleep(struct gm_sess *s)
{
    if (!s->sleeping)
        return;
    s->sleeping = false;
    for (int i = 0; i < s->nabilities; i++)
        if (list_linked(&s->abilities[i]->sleep_link))
            list_del(&s->abilities[i]->sleep_link);
}

/* A job became runnable: wake sleeping workers that can do it, -w of them
 * (0 = every sleeper, gearmand 1.1's default). Ours is 1: each queued job
 * wakes at most one sleeper, so N jobs never wake more than N workers and
 * the "thundering herd" of every sleeper racing for one job is avoided. */
static void wake_sleepers(struct gm_func *f)
{
    for (int woken = 0; !list_empty(&f->sleepers) && (gm.cfg.wakeup <= 0 || woken < gm.cfg.wakeup); woken++) {
        struct gm_ability *a = container_of(f->sleepers.next, struct gm_ability, sleep_link);
        struct gm_sess *w = a->s;
        gm_worker_unsleep(w);
        gm.n.noops_sent++;
        gm_send0(w, GM_NOOP);
    }
}

/* ---- jobs ---------------------------------------------------------------- */

int64_t gm_now_epoch(void) { return (int64_t)time(NULL); }

static uint32_t func_queued(const struct gm_func *f) { return f->queued[0] + f->queued[1] + f->queued[2]; }

/* f got its first queued job, or lost its last: every worker that can do
 * it gains or loses it on its ready list, so a grab looks only at functions
 * with work (O(functions with work), not O(abilities)). */
static void func_set_ready(struct gm_func *f, bool ready)
{
    struct list_node *pos;
    list_for_each(pos, &f->abilities)
    {
        struct gm_ability *a = container_of(pos, struct gm_ability, f_link);
        if (ready)
            list_add_tail(&a->s->ready, &a->ready_link);
        else
            list_del(&a->ready_link);
    }
}

static void job_enqueue(struct gm_job *j, bool at_head)
{
    j->state = GM_JOB_QUEUED;
    if (at_head)
        list_add_head(&j->f->queue[j->prio], &j->qlink);
    else
        list_add_tail(&j->f->queue[j->prio], &j->qlink);
    if (func_queued(j->f) == 0)
        func_set_ready(j->f, true);
    j->f->queued[j->prio]++;
    wake_sleepers(j->f);
}

static void job_unqueue(struct gm_job *j)
{
    if (j->state == GM_JOB_QUEUED && list_linked(&j->qlink)) {
        list_del(&j->qlink);
        j->f->queued[j->prio]--;
        if (func_queued(j->f) == 0)
            func_set_ready(j->f, false);
    }
}

/* A job's timer lives on the loop that armed it; only that loop may free
 * its event. A job freed from another loop detaches it (j = NULL, so a
 * firing that already waits for the lock does nothing) and asks the
 * timer's loop to free it. */
struct gm_timer {
    struct event *ev;
    struct core_loop *loop;
    struct gm_job *j;
    void (*fire)(struct gm_job *j);
};

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gm_timer *t = arg;
    gm_lock();
    if (t->j)
        t->fire(t->j); /* frees t through job_timer_off */
    /* else: detached by another loop, whose message frees it */
    gm_unlock();
}

static void timer_free_here(void *arg)
{
    struct gm_timer *t = arg;
    event_free(t->ev);
    free(t);
}

static void job_timer_on(struct gm_job *j, void (*fire)(struct gm_job *), const struct timeval *tv)
{
    struct core_loop *loop = loop_current() ? loop_current() : loop_get(0);
    struct gm_timer *t = gm_xcalloc(1, sizeof *t);
    t->loop = loop;
    t->j = j;
    t->fire = fire;
    t->ev = evtimer_new(loop->base, timer_cb, t);
    if (!t->ev) {
        log_error("gearmand: out of memory");
        abort();
    }
    evtimer_add(t->ev, tv);
    j->timer = t;
}

static void job_timer_off(struct gm_job *j)
{
    struct gm_timer *t = j->timer;
    if (!t)
        return;
    j->timer = NULL;
    t->j = NULL;
    if (loop_current() == t->loop || !loop_current())
        timer_free_here(t);
    else if (work_post(t->loop, timer_free_here, t) < 0)
        log_error("gearmand: a job timer could not be freed (out of memory)");
}

static void job_unrun(struct gm_job *j)
{
    if (j->state != GM_JOB_RUNNING)
        return;
    struct gm_sess *w = j->worker;
    list_del(&j->wlink);
    j->f->running--;
    j->worker = NULL;
    job_timer_off(j);
    if (w) {
        gm_sess_unthrottle(w); /* whatever held it back was this job's */
        gm_sess_update_busy(w);
    }
}

static void link_free(struct gm_link *l)
{
    list_del(&l->jlink);
    list_del(&l->slink);
    l->job->client_count--;
    gm_sess_update_busy(l->s);
    free(l);
}

/* Remove a job from every structure and free it. */
void gm_job_free(struct gm_job *j)
{
    job_unqueue(j);
    job_unrun(j);
    job_timer_off(j);
    while (!list_empty(&j->clients))
        link_free(container_of(j->clients.next, struct gm_link, jlink));
    gm_store_forget(j);
    if (j->db_id)
        gm_store_done(j);
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
    gm.job_bytes -= j->data_len;
    struct gm_func *f = j->f;
    free(j);
    gm_func_release(f);
}

/* The job's row could not be stored: its background submitters were told
 * QUEUE_ERROR. It goes on only for foreground clients still waiting. */
void gm_job_store_failed(struct gm_job *j)
{
    j->db_id = 0;
    j->bg = false;
    if (j->client_count > 0) {
        if (j->state == GM_JOB_STORING)
            gm_job_start(j);
        return;
    }
    if (j->state == GM_JOB_RUNNING) {
        j->ignore = true; /* nobody waits for its result any more */
        return;
    }
    gm_job_free(j);
}

void gm_job_attach(struct gm_job *j, struct gm_sess *s)
{
    struct gm_link *l = gm_xcalloc(1, sizeof *l);
    l->job = j;
    l->s = s;
    list_add_tail(&j->clients, &l->jlink);
    list_add_tail(&s->links, &l->slink);
    j->client_count++;
    j->ignore = false;
    gm_sess_update_busy(s);
}

/* Send a packet to every client waiting on j. The last argument (the
 * worker's data) is copied once and shared by every client's output when
 * it is large and several clients wait, so N clients of a streaming job
 * cost one copy, not N. A client whose unread replies pass
 * --max-client-output holds the worker back: the worker is not read again
 * until that client drained (or was closed for stalling), so what a job
 * streams is bounded by the limit, not by the slowest client's patience. */
void gm_job_forward(struct gm_job *j, uint32_t cmd, int argc, const void *const *args, const size_t *lens)
{
    struct gm_blob *shared = NULL;
    if (argc > 1 && lens[argc - 1] >= 4096 && j->client_count > 1)
        shared = gm_blob_new(args[argc - 1], lens[argc - 1]);
    bool full = false;
    struct list_node *pos;
    list_for_each(pos, &j->clients)
    {
        struct gm_link *l = container_of(pos, struct gm_link, jlink);
        if (cmd == GM_WORK_EXCEPTION && !l->s->exceptions)
            gm_send(l->s, GM_WORK_FAIL, 1, args, lens);
        else if (shared)
            gm_send_shared(l->s, cmd, argc, args, lens, shared);
        else
            gm_send(l->s, cmd, argc, args, lens);
        if (gm_sess_over_limit(l->s))
            full = true;
    }
    if (shared)
        gm_blob_unref(shared);
    if (full && j->worker && (cmd == GM_WORK_DATA || cmd == GM_WORK_WARNING || cmd == GM_WORK_STATUS))
        gm_sess_throttle(j->worker);
}

/* The worker of j may go on once none of j's clients is over its limit. */
static void job_maybe_unthrottle(struct gm_job *j)
{
    struct gm_sess *w = j->worker;
    if (!w || !w->throttled)
        return;
    struct list_node *pos;
    list_for_each(pos, &j->clients)
    {
        struct gm_link *l = container_of(pos, struct gm_link, jlink);
        if (l->s->over_limit)
            return;
    }
    gm_sess_unthrottle(w);
}

void gm_jobs_client_drained(struct gm_sess *s)
{
    struct list_node *pos;
    list_for_each(pos, &s->links)
    {
        struct gm_link *l = container_of(pos, struct gm_link, slink);
        job_maybe_unthrottle(l->job);
    }
}

void gm_job_fail(struct gm_job *j)
{
    const void *args[1] = { j->handle };
    size_t lens[1] = { j->handle_len };
    gm_job_forward(j, GM_WORK_FAIL, 1, args, lens);
    gm.n.jobs_failed++;
    gm_job_free(j);
}

static void on_schedule(struct gm_job *j)
{
    job_timer_off(j);
    job_enqueue(j, false);
}

static void on_run_timeout(struct gm_job *j)
{
    gm.n.jobs_timeout++;
    log_info("gearmand: job %s timed out on its worker (CAN_DO_TIMEOUT)", j->handle);
    gm_job_fail(j);
}

struct gm_job *gm_job_add(struct gm_func *f, const char *unique, size_t ulen, const char *data, size_t dlen, int prio,
                          bool bg, int64_t when, const char *reducer, size_t rlen)
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
    list_init(&j->qlink);
    list_init(&j->wlink);
    list_init(&j->clients);
    int n = snprintf(j->handle, sizeof j->handle, "%s:%llu", gm.handle_prefix, (unsigned long long)++gm.handle_counter);
    j->handle_len = (size_t)n < sizeof j->handle ? (size_t)n : sizeof j->handle - 1;
    j->handle_hash = hbytes(j->handle, j->handle_len);
    j->hnext_handle = gm.hbuckets[j->handle_hash & gm.jmask];
    gm.hbuckets[j->handle_hash & gm.jmask] = j;
    if (ulen == 1 && unique[0] == '-' && dlen > 0) {
        j->unique_is_data = true;
        j->unique_hash = hbytes(j->data, dlen) ^ DASH_SALT;
        j->hnext_unique = gm.ubuckets[j->unique_hash & gm.jmask];
        gm.ubuckets[j->unique_hash & gm.jmask] = j;
        j->in_unique = true;
    } else if (ulen) {
        j->unique_hash = hbytes(j->unique, ulen);
        j->hnext_unique = gm.ubuckets[j->unique_hash & gm.jmask];
        gm.ubuckets[j->unique_hash & gm.jmask] = j;
        j->in_unique = true;
    }
    j->state = GM_JOB_STORING; /* not runnable until gm_job_start */
    f->total++;
    gm.njobs++;
    gm.job_bytes += dlen;
    return j;
}

void gm_job_start(struct gm_job *j)
{
    if (j->when > gm_now_epoch()) {
        j->state = GM_JOB_SCHEDULED;
        struct timeval tv = { .tv_sec = (time_t)(j->when - gm_now_epoch()), .tv_usec = 0 };
        job_timer_on(j, on_schedule, &tv);
        return;
    }
    job_enqueue(j, false);
}

int gm_job_cancel(struct gm_job *j)
{
    if (j->state == GM_JOB_RUNNING)
        return -1;
    gm_job_fail(j);
    return 0;
}

/* ---- the worker side ------------------------------------------------------ */

/* A worker's abilities: an array (round robin, iteration) and a small
 * hash table by function for CAN_DO/CANT_DO in O(1). */
static size_t ability_slot(const struct gm_sess *s, const struct gm_func *f)
{
    return (size_t)(((uint64_t)(uintptr_t)f * 0x9E3779B97F4A7C15ULL) >> 20) & s->amask;
}

struct gm_ability *gm_ability_find(struct gm_sess *s, struct gm_func *f, int *idx)
{
    if (!s->abuckets)
        return NULL;
    for (struct gm_ability *a = s->abuckets[ability_slot(s, f)]; a; a = a->hnext)
        if (a->f == f) {
            if (idx)
                *idx = a->idx;
            return a;
        }
    return NULL;
}

static void abilities_rehash(struct gm_sess *s, size_t nbuckets)
{
    free(s->abuckets);
    s->abuckets = gm_xcalloc(nbuckets, sizeof *s->abuckets);
    s->amask = nbuckets - 1;
    for (int i = 0; i < s->nabilities; i++) {
        struct gm_ability *a = s->abilities[i];
        size_t k = ability_slot(s, a->f);
        a->hnext = s->abuckets[k];
        s->abuckets[k] = a;
    }
}

void gm_ability_add(struct gm_sess *s, const char *name, size_t len, uint32_t timeout_ms)
{
    if (len == 0 || len > GM_MAX_FUNCTION) {
        gm_send_error(s, "INVALID_FUNCTION_NAME", "Function name is empty or too long");
        return;
    }
    struct gm_func *f = gm_func_get(name, len);
    if (!f) {
        gm_send_error(s, "QUEUE_ERROR", "Server holds its maximum number of functions");
        return;
    }
    struct gm_ability *a = gm_ability_find(s, f, NULL);
    if (a) {
        a->timeout_ms = timeout_ms;
        return;
    }
    if (s->nabilities == s->cap_abilities) {
        int cap = s->cap_abilities ? s->cap_abilities * 2 : 4;
        struct gm_ability **na = realloc(s->abilities, (size_t)cap * sizeof *na);
        if (!na) {
            gm_send_error(s, "MEMORY_ALLOCATION_FAILURE", "Out of memory");
            gm_func_release(f);
            return;
        }
        s->abilities = na;
        s->cap_abilities = cap;
    }
    a = gm_xcalloc(1, sizeof *a);
    a->f = f;
    a->s = s;
    a->timeout_ms = timeout_ms;
    list_init(&a->sleep_link);
    list_add_tail(&f->abilities, &a->f_link);
    list_init(&a->ready_link);
    if (func_queued(f))
        list_add_tail(&s->ready, &a->ready_link);
    a->idx = s->nabilities;
    s->abilities[s->nabilities++] = a;
    if (!s->abuckets || (size_t)s->nabilities > s->amask + 1)
        abilities_rehash(s, s->abuckets ? (s->amask + 1) * 2 : 8);
    else {
        size_t k = ability_slot(s, f);
        a->hnext = s->abuckets[k];
        s->abuckets[k] = a;
    }
    f->workers++;
    if (s->sleeping)
        list_add_tail(&f->sleepers, &a->sleep_link);
}

void gm_ability_remove(struct gm_sess *s, int i)
{
    struct gm_ability *a = s->abilities[i];
    struct gm_ability **pp = &s->abuckets[ability_slot(s, a->f)];
    while (*pp != a)
        pp = &(*pp)->hnext;
    *pp = a->hnext;
    if (list_linked(&a->sleep_link))
        list_del(&a->sleep_link);
    list_del(&a->f_link);
    list_del(&a->ready_link);
    struct gm_func *f = a->f;
    f->workers--;
    free(a);
    s->abilities[i] = s->abilities[--s->nabilities];
    if (i < s->nabilities)
        s->abilities[i]->idx = i;
    gm_func_release(f);
}

bool gm_worker_has_runnable(struct gm_sess *s) { return !list_empty(&s->ready); }

/* Highest priority first across every function the worker can do (a high
 * job of any function goes before normal ones); among functions of equal
 * priority, round robin: the function served goes to the back of the
 * worker's ready list. */
struct gm_job *gm_worker_take_job(struct gm_sess *s, struct gm_ability **ab)
{
    for (int p = 0; p < 3; p++) {
        struct list_node *pos;
        list_for_each(pos, &s->ready)
        {
            struct gm_ability *a = container_of(pos, struct gm_ability, ready_link);
            struct gm_func *f = a->f;
            if (f->queued[p]) {
                struct gm_job *j = container_of(f->queue[p].next, struct gm_job, qlink);
                list_del(&a->ready_link);
                list_add_tail(&s->ready, &a->ready_link);
                job_unqueue(j); /* may take f off every ready list */
                *ab = a;
                return j;
            }
        }
    }
    return NULL;
}

/* A worker takes j (found by gm_worker_take_job through ability a). */
void gm_job_assign(struct gm_job *j, struct gm_sess *s, struct gm_ability *a)
{
    j->state = GM_JOB_RUNNING;
    j->worker = s;
    list_add_tail(&s->running, &j->wlink);
    j->f->running++;
    gm_sess_update_busy(s);
    if (a->timeout_ms) {
        struct timeval tv = { .tv_sec = a->timeout_ms / 1000, .tv_usec = (a->timeout_ms % 1000) * 1000 };
        job_timer_on(j, on_run_timeout, &tv);
    }
}

/* PRE_SLEEP: false if a job it can do is already queued (wake it now). */
bool gm_worker_sleep(struct gm_sess *s)
{
    if (gm_worker_has_runnable(s))
        return false;
    if (s->sleeping)
        return true;
    s->sleeping = true;
    for (int i = 0; i < s->nabilities; i++)
        list_add_tail(&s->abilities[i]->f->sleepers, &s->abilities[i]->sleep_link);
    return true;
}

/* ---- connection end ---------------------------------------------------- */

/* s's connection closed: drop its abilities, requeue the jobs it was
 * running, detach it from the jobs it waited on. */
void gm_jobs_forget_sess(struct gm_sess *s)
{
    gm_worker_unsleep(s);
    while (s->nabilities)
        gm_ability_remove(s, s->nabilities - 1);
    /* Jobs it was running go back to the front of their queue, or fail
     * after -j attempts. */
    while (!list_empty(&s->running)) {
        struct gm_job *j = container_of(s->running.next, struct gm_job, wlink);
        job_unrun(j);
        j->retries++;
        if (!j->bg && j->client_count == 0)
            gm_job_free(j);
        else if (gm.cfg.job_retries > 0 && j->retries >= (uint32_t)gm.cfg.job_retries) {
            log_info("gearmand: job %s dropped after %u attempts", j->handle, j->retries);
            gm_job_fail(j);
        } else {
            gm.n.jobs_retried++;
            job_enqueue(j, true);
        }
    }
    /* Waits it had: a foreground job nobody waits for any more is dropped
     * if queued, or its result ignored if running. */
    while (!list_empty(&s->links)) {
        struct gm_link *l = container_of(s->links.next, struct gm_link, slink);
        struct gm_job *j = l->job;
        link_free(l);
        s->over_limit = false;
        job_maybe_unthrottle(j);
        if (!j->bg && j->client_count == 0) {
            if (j->state == GM_JOB_RUNNING)
                j->ignore = true;
            else
                gm_job_free(j);
        }
    }
}

/* ---- set-up ---------------------------------------------------------------- */

void gm_state_init(void)
{
    gm.fmask = 63;
    gm.fbuckets = gm_xcalloc(gm.fmask + 1, sizeof *gm.fbuckets);
    gm.jmask = 1023;
    gm.hbuckets = gm_xcalloc(gm.jmask + 1, sizeof *gm.hbuckets);
    gm.ubuckets = gm_xcalloc(gm.jmask + 1, sizeof *gm.ubuckets);
    list_init(&gm.funcs);
    list_init(&gm.sessions);
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
            j->db_id = 0; /* stays in the persistent queue */
            gm_job_free(j);
        }
    while (!list_empty(&gm.funcs))
        gm_func_drop(container_of(gm.funcs.next, struct gm_func, all_link));
    free(gm.fbuckets);
    free(gm.hbuckets);
    free(gm.ubuckets);
    gm.fbuckets = NULL;
    gm.hbuckets = gm.ubuckets = NULL;
}
