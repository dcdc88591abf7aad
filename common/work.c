/* work: worker threads and the per-loop mailboxes; see work.h.
 *
 * Owns the pool's threads and queues and the process-wide list of
 * mailboxes. Must not know what the jobs do (db, disk, DNS are callers).
 *
 * Queues: one shared FIFO for "any thread" jobs and one FIFO per thread for
 * pinned jobs, all under the pool mutex. A thread takes its own pinned jobs
 * first, then shared ones. Each thread sleeps on its own condition variable
 * so a pinned job wakes exactly its thread.
 *
 * Mailboxes live for the whole process: a doorbell (loop_call) still queued
 * when the loops stop must not point at freed memory. loop_free() runs
 * doorbells still queued, so nothing posted before it is lost. */
#include "common/work.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/loop.h"

struct job {
    struct job *next;
    work_fn fn, done;
    void *arg;
    struct core_loop *loop;
    struct work_pool *pool;
    struct work_msg msg; /* carries done back to the loop */
};

struct job_queue {
    struct job *head, *tail;
};

struct worker {
    struct work_pool *pool;
    int index;
    pthread_t thread;
    bool started;
    pthread_cond_t cv;
    bool idle; /* waiting on cv */
    struct job_queue pinned;
};

struct work_pool {
    char name[16];
    pthread_mutex_t mu;
    struct job_queue shared;
    size_t queued, max_queued, running;
    bool closing;
    int nthreads;
    struct worker *w;
    uint64_t submitted, completed, rejected;
};

static __thread int thread_index = -1;

int work_thread_index(void) { return thread_index; }
int work_pool_threads(const struct work_pool *pool) { return pool->nthreads; }

/* ---- mailboxes ------------------------------------------------------------ */

struct mailbox {
    struct mailbox *next;
    struct core_loop *loop;
    pthread_mutex_t mu;
    struct work_msg *head, *tail;
    bool rung;
};

static pthread_mutex_t mailboxes_mu = PTHREAD_MUTEX_INITIALIZER;
static struct mailbox *mailboxes; /* never freed: see the file comment */

static struct mailbox *mailbox_for(struct core_loop *loop)
{
    pthread_mutex_lock(&mailboxes_mu);
    struct mailbox *m;
    for (m = mailboxes; m; m = m->next)
        if (m->loop == loop)
            break;
    if (!m) {
        m = calloc(1, sizeof *m);
        if (m) {
            m->loop = loop;
            pthread_mutex_init(&m->mu, NULL);
            m->next = mailboxes;
            mailboxes = m;
        }
    }
    pthread_mutex_unlock(&mailboxes_mu);
    return m;
}

static void mailbox_run(void *arg)
{
    struct mailbox *m = arg;
    pthread_mutex_lock(&m->mu);
    struct work_msg *msg = m->head;
    m->head = m->tail = NULL;
    m->rung = false;
    pthread_mutex_unlock(&m->mu);
    while (msg) {
        struct work_msg *next = msg->next;
        msg->run(msg); /* may free msg */
        msg = next;
    }
}

void work_post_msgs(struct core_loop *loop, struct work_msg *first, struct work_msg *last)
{
    last->next = NULL;
    struct mailbox *m = loop ? mailbox_for(loop) : NULL;
    if (!m) {
        /* no loop (or no memory for its mailbox): run here rather than lose them */
        for (struct work_msg *msg = first, *n; msg; msg = n) {
            n = msg->next;
            msg->run(msg);
        }
        return;
    }
    pthread_mutex_lock(&m->mu);
    if (m->tail)
        m->tail->next = first;
    else
        m->head = first;
    m->tail = last;
    bool ring = !m->rung;
    m->rung = true;
    pthread_mutex_unlock(&m->mu);
    if (ring && loop_call(loop, mailbox_run, m) < 0) {
        /* out of memory for the doorbell: the next post rings again */
        pthread_mutex_lock(&m->mu);
        m->rung = false;
        pthread_mutex_unlock(&m->mu);
        log_error("work: cannot wake loop %d (out of memory); messages wait for the next post", loop->index);
    }
}

void work_post_msg(struct core_loop *loop, struct work_msg *msg) { work_post_msgs(loop, msg, msg); }

struct plain_msg {
    struct work_msg msg;
    work_fn fn;
    void *arg;
};

static void plain_run(struct work_msg *msg)
{
    struct plain_msg *p = (struct plain_msg *)msg;
    work_fn fn = p->fn;
    void *arg = p->arg;
    free(p);
    fn(arg);
}

int work_post(struct core_loop *loop, work_fn fn, void *arg)
{
    struct plain_msg *p = malloc(sizeof *p);
    if (!p)
        return -1;
    p->msg.run = plain_run;
    p->msg.owner = NULL;
    p->fn = fn;
    p->arg = arg;
    work_post_msg(loop, &p->msg);
    return 0;
}

void work_mailbox_flush(const void *owner)
{
    if (!owner)
        return;
    pthread_mutex_lock(&mailboxes_mu);
    struct mailbox *list = mailboxes;
    pthread_mutex_unlock(&mailboxes_mu);
    /* Mailboxes are only ever prepended, so walking from a snapshot of the
     * head sees every mailbox that existed then. */
    for (struct mailbox *m = list; m; m = m->next) {
        pthread_mutex_lock(&m->mu);
        struct work_msg *mine = NULL, **mt = &mine, *keep = NULL, **kt = &keep, *last = NULL;
        for (struct work_msg *msg = m->head, *n; msg; msg = n) {
            n = msg->next;
            msg->next = NULL;
            if (msg->owner == owner) {
                *mt = msg;
                mt = &msg->next;
            } else {
                *kt = msg;
                kt = &msg->next;
                last = msg;
            }
        }
        m->head = keep;
        m->tail = last;
        pthread_mutex_unlock(&m->mu);
        for (struct work_msg *msg = mine, *n; msg; msg = n) {
            n = msg->next;
            msg->run(msg);
        }
    }
}

/* ---- the pool ---------------------------------------------------------------- */

static void queue_push(struct job_queue *q, struct job *j)
{
    j->next = NULL;
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
}

static struct job *queue_pop(struct job_queue *q)
{
    struct job *j = q->head;
    if (j) {
        q->head = j->next;
        if (!q->head)
            q->tail = NULL;
    }
    return j;
}

static void job_done_run(struct work_msg *msg)
{
    struct job *j = (struct job *)((char *)msg - offsetof(struct job, msg));
    work_fn done = j->done;
    void *arg = j->arg;
    free(j);
    done(arg);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct work_pool *p = w->pool;
    thread_index = w->index;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        struct job *j = queue_pop(&w->pinned);
        if (!j)
            j = queue_pop(&p->shared);
        if (!j) {
            if (p->closing)
                break;
            w->idle = true;
            pthread_cond_wait(&w->cv, &p->mu);
            w->idle = false;
            continue;
        }
        p->queued--;
        p->running++;
        pthread_mutex_unlock(&p->mu);
        j->fn(j->arg);
        /* Counted before the done callback runs or is posted: once every
         * done has run (here or on a loop), the counters already say every
         * job completed. */
        pthread_mutex_lock(&p->mu);
        p->running--;
        p->completed++;
        pthread_mutex_unlock(&p->mu);
        if (j->done && j->loop) {
            j->msg.run = job_done_run;
            j->msg.owner = p;
            work_post_msg(j->loop, &j->msg);
        } else {
            if (j->done)
                j->done(j->arg);
            free(j);
        }
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

struct work_pool *work_pool_new(const char *name, int threads, size_t max_queued)
{
    if (threads < 1)
        threads = 1;
    struct work_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    snprintf(p->name, sizeof p->name, "%s", name ? name : "work");
    p->max_queued = max_queued;
    pthread_mutex_init(&p->mu, NULL);
    p->w = calloc((size_t)threads, sizeof *p->w);
    if (!p->w) {
        free(p);
        errno = ENOMEM;
        return NULL;
    }
    p->nthreads = threads;
    for (int i = 0; i < threads; i++) {
        p->w[i].pool = p;
        p->w[i].index = i;
        pthread_cond_init(&p->w[i].cv, NULL);
    }
    for (int i = 0; i < threads; i++) {
        int rc = pthread_create(&p->w[i].thread, NULL, worker_main, &p->w[i]);
        if (rc != 0) {
            work_pool_free(p);
            errno = rc;
            return NULL;
        }
        p->w[i].started = true;
        pthread_setname_np(p->w[i].thread, p->name);
    }
    return p;
}

static int submit(struct work_pool *p, int thread, struct core_loop *loop, work_fn fn, work_fn done, void *arg)
{
    if (thread >= p->nthreads) {
        errno = EINVAL;
        return -1;
    }
    struct job *j = malloc(sizeof *j);
    if (!j) {
        errno = ENOMEM;
        return -1;
    }
    j->fn = fn;
    j->done = done;
    j->arg = arg;
    j->loop = loop;
    j->pool = p;
    pthread_mutex_lock(&p->mu);
    if (p->closing || (p->max_queued && p->queued >= p->max_queued)) {
        int e = p->closing ? ESHUTDOWN : EAGAIN;
        if (!p->closing)
            p->rejected++;
        pthread_mutex_unlock(&p->mu);
        free(j);
        errno = e;
        return -1;
    }
    p->queued++;
    p->submitted++;
    struct worker *wake = NULL;
    if (thread >= 0) {
        queue_push(&p->w[thread].pinned, j);
        wake = &p->w[thread];
    } else {
        queue_push(&p->shared, j);
        for (int i = 0; i < p->nthreads; i++)
            if (p->w[i].idle) {
                wake = &p->w[i];
                wake->idle = false; /* the next submit wakes another one */
                break;
            }
    }
    if (wake)
        pthread_cond_signal(&wake->cv);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

int work_submit(struct work_pool *p, struct core_loop *loop, work_fn fn, work_fn done, void *arg)
{
    return submit(p, -1, loop, fn, done, arg);
}

int work_submit_to(struct work_pool *p, int thread, struct core_loop *loop, work_fn fn, work_fn done, void *arg)
{
    if (thread < 0) {
        errno = EINVAL;
        return -1;
    }
    return submit(p, thread, loop, fn, done, arg);
}

void work_pool_free(struct work_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->closing = true;
    for (int i = 0; i < p->nthreads; i++)
        pthread_cond_signal(&p->w[i].cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++)
        if (p->w[i].started)
            pthread_join(p->w[i].thread, NULL);
    /* Threads that never started leave shared jobs behind only if none
     * started at all; run them here so no job is silently dropped. */
    struct job *j;
    while ((j = queue_pop(&p->shared)) || 0) {
        j->fn(j->arg);
        if (j->done)
            j->done(j->arg);
        free(j);
    }
    for (int i = 0; i < p->nthreads; i++) {
        while ((j = queue_pop(&p->w[i].pinned))) {
            j->fn(j->arg);
            if (j->done)
                j->done(j->arg);
            free(j);
        }
        pthread_cond_destroy(&p->w[i].cv);
    }
    work_mailbox_flush(p);
    pthread_mutex_destroy(&p->mu);
    free(p->w);
    free(p);
}

void work_get_counters(struct work_pool *p, struct work_counters *out)
{
    pthread_mutex_lock(&p->mu);
    out->submitted = p->submitted;
    out->completed = p->completed;
    out->rejected = p->rejected;
    out->queued = p->queued;
    out->running = p->running;
    out->threads = p->nthreads;
    pthread_mutex_unlock(&p->mu);
}
