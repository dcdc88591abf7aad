/* Unit tests for common/work: jobs run on pool threads and their done
 * callbacks come back on the submitting loop; pinned jobs keep their order
 * on their one thread; the queue bound refuses with EAGAIN and counts it;
 * freeing a pool runs what is queued; work_post reaches a loop from any
 * thread; work_mailbox_flush runs an owner's undelivered messages; a
 * chain posted with work_post_msgs runs in order after one wake-up. */
#include "common/work.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/loop.h"
#include "tests/unit/unit.h"

enum { NJOBS = 200 };

struct job_rec {
    pthread_t ran_on;
    int thread_index;
    struct core_loop *done_on;
    bool done_on_loop_thread;
};

static struct job_rec recs[NJOBS];
static struct work_pool *pool;
static atomic_int dones;
static pthread_t loop1_thread;

static void job_fn(void *arg)
{
    struct job_rec *r = arg;
    r->ran_on = pthread_self();
    r->thread_index = work_thread_index();
}

static void job_done(void *arg)
{
    struct job_rec *r = arg;
    r->done_on = loop_current();
    r->done_on_loop_thread = pthread_equal(pthread_self(), loop1_thread);
    if (atomic_fetch_add(&dones, 1) + 1 == NJOBS)
        loop_request_stop();
}

static void submit_all(void *arg)
{
    (void)arg;
    loop1_thread = pthread_self();
    for (int i = 0; i < NJOBS; i++)
        if (work_submit(pool, loop_current(), job_fn, job_done, &recs[i]) != 0)
            fprintf(stderr, "submit %d failed\n", i);
}

static void *kick(void *arg)
{
    (void)arg;
    usleep(20000);
    loop_call(loop_get(1), submit_all, NULL);
    return NULL;
}

static void test_done_runs_on_submitting_loop(void)
{
    pool = work_pool_new("test", 3, 0);
    CHECK(pool != NULL);
    CHECK_EQ_INT(work_pool_threads(pool), 3);
    CHECK_EQ_INT(loop_init(2), 0);
    loop_set_grace(1);
    pthread_t t;
    pthread_create(&t, NULL, kick, NULL);
    CHECK_EQ_INT(loop_run(), 0);
    pthread_join(t, NULL);
    CHECK_EQ_INT(atomic_load(&dones), NJOBS);
    int bad_loop = 0, bad_thread = 0, on_loop_thread = 0;
    for (int i = 0; i < NJOBS; i++) {
        if (recs[i].done_on != loop_get(1) || !recs[i].done_on_loop_thread)
            bad_loop++;
        if (recs[i].thread_index < 0 || recs[i].thread_index > 2)
            bad_thread++;
        if (pthread_equal(recs[i].ran_on, loop1_thread))
            on_loop_thread++;
    }
    CHECK_EQ_INT(bad_loop, 0);
    CHECK_EQ_INT(bad_thread, 0);
    CHECK_EQ_INT(on_loop_thread, 0); /* fn never ran on the loop */
    struct work_counters c;
    work_get_counters(pool, &c);
    CHECK_EQ_INT(c.submitted, NJOBS);
    CHECK_EQ_INT(c.completed, NJOBS);
    CHECK_EQ_INT(c.queued, 0);
    CHECK_EQ_INT(c.threads, 3);
    work_pool_free(pool);
    loop_free();
    CHECK_EQ_INT(work_thread_index(), -1);
}

/* ---- pinned order ---- */

static pthread_mutex_t order_mu = PTHREAD_MUTEX_INITIALIZER;
static int order[100], norder, wrong_thread;

struct pinned {
    int i;
};

static void pinned_fn(void *arg)
{
    struct pinned *p = arg;
    if (work_thread_index() != 2)
        wrong_thread++;
    pthread_mutex_lock(&order_mu);
    order[norder++] = p->i;
    pthread_mutex_unlock(&order_mu);
    free(p);
}

static void test_pinned_order(void)
{
    struct work_pool *p = work_pool_new("pin", 3, 0);
    CHECK(p != NULL);
    norder = 0;
    for (int i = 0; i < 100; i++) {
        struct pinned *x = malloc(sizeof *x);
        x->i = i;
        CHECK_EQ_INT(work_submit_to(p, 2, NULL, pinned_fn, NULL, x), 0);
    }
    errno = 0;
    CHECK_EQ_INT(work_submit_to(p, 3, NULL, pinned_fn, NULL, NULL), -1); /* no such thread */
    CHECK_EQ_INT(errno, EINVAL);
    work_pool_free(p); /* runs everything queued */
    CHECK_EQ_INT(norder, 100);
    for (int i = 0; i < norder; i++)
        CHECK_EQ_INT(order[i], i);
    CHECK_EQ_INT(wrong_thread, 0);
}

/* ---- the bound ---- */

static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static bool gate_open, gate_entered;
static atomic_int ran;

static void blocker(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&gate_mu);
    gate_entered = true;
    pthread_cond_broadcast(&gate_cv);
    while (!gate_open)
        pthread_cond_wait(&gate_cv, &gate_mu);
    pthread_mutex_unlock(&gate_mu);
    atomic_fetch_add(&ran, 1);
}

static void count_fn(void *arg)
{
    (void)arg;
    atomic_fetch_add(&ran, 1);
}

static atomic_int done_here;
static pthread_t done_thread;

static void count_done(void *arg)
{
    (void)arg;
    done_thread = pthread_self();
    atomic_fetch_add(&done_here, 1);
}

static void test_bound_and_free(void)
{
    struct work_pool *p = work_pool_new("bound", 1, 2);
    CHECK(p != NULL);
    CHECK_EQ_INT(work_submit(p, NULL, blocker, NULL, NULL), 0);
    pthread_mutex_lock(&gate_mu);
    while (!gate_entered)
        pthread_cond_wait(&gate_cv, &gate_mu);
    pthread_mutex_unlock(&gate_mu);
    /* the one thread is busy: two may wait, the third is refused */
    CHECK_EQ_INT(work_submit(p, NULL, count_fn, count_done, NULL), 0);
    CHECK_EQ_INT(work_submit(p, NULL, count_fn, count_done, NULL), 0);
    errno = 0;
    CHECK_EQ_INT(work_submit(p, NULL, count_fn, count_done, NULL), -1);
    CHECK_EQ_INT(errno, EAGAIN);
    struct work_counters c;
    work_get_counters(p, &c);
    CHECK_EQ_INT(c.rejected, 1);
    CHECK_EQ_INT(c.queued, 2);
    CHECK_EQ_INT(c.running, 1);
    pthread_mutex_lock(&gate_mu);
    gate_open = true;
    pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate_mu);
    /* once both dones ran (on the pool thread), the counters say so: the
     * pool counts a job before its done runs */
    for (int i = 0; i < 2000 && atomic_load(&done_here) < 2; i++)
        usleep(1000);
    work_get_counters(p, &c);
    CHECK_EQ_INT(c.completed, 3);
    CHECK_EQ_INT(c.running, 0);
    work_pool_free(p);
    CHECK_EQ_INT(atomic_load(&ran), 3);
    /* no loop: done ran on the pool thread, not here */
    CHECK_EQ_INT(atomic_load(&done_here), 2);
    CHECK(!pthread_equal(done_thread, pthread_self()));
}

/* ---- mailbox ---- */

static atomic_int posted_ran;
static pthread_t posted_thread;

static void posted(void *arg)
{
    (void)arg;
    posted_thread = pthread_self();
    if (atomic_fetch_add(&posted_ran, 1) + 1 == 50)
        loop_request_stop();
}

static void *poster(void *arg)
{
    (void)arg;
    usleep(20000);
    for (int i = 0; i < 50; i++)
        work_post(loop_get(0), posted, NULL);
    return NULL;
}

static int owner_tag;
static int flushed;

static void flushed_run(struct work_msg *m)
{
    (void)m;
    flushed++;
}

static void test_post_and_flush(void)
{
    CHECK_EQ_INT(loop_init(1), 0);
    loop_set_grace(1);
    pthread_t t;
    pthread_create(&t, NULL, poster, NULL);
    CHECK_EQ_INT(loop_run(), 0);
    pthread_join(t, NULL);
    CHECK_EQ_INT(atomic_load(&posted_ran), 50);
    CHECK(pthread_equal(posted_thread, pthread_self())); /* loop 0 runs on this thread */
    /* messages left in a mailbox of a stopped loop run on flush, only the owner's */
    struct work_msg a = { .run = flushed_run, .owner = &owner_tag }, b = { .run = flushed_run, .owner = &flushed };
    work_post_msg(loop_get(0), &a);
    work_post_msg(loop_get(0), &b);
    work_mailbox_flush(&owner_tag);
    CHECK_EQ_INT(flushed, 1);
    loop_free(); /* runs the queued doorbell: b */
    CHECK_EQ_INT(flushed, 2);
}

struct chain_msg {
    struct work_msg msg;
    int n;
};
static int chain_seen[10], chain_ran;

static void chain_run(struct work_msg *m)
{
    struct chain_msg *c = (struct chain_msg *)m;
    chain_seen[chain_ran++] = c->n;
    if (chain_ran == 10)
        loop_request_stop();
}

static void test_post_chain(void)
{
    CHECK_EQ_INT(loop_init(1), 0);
    loop_set_grace(1);
    static struct chain_msg m[10];
    for (int i = 0; i < 10; i++) {
        m[i] = (struct chain_msg){ .msg = { .run = chain_run }, .n = i };
        if (i)
            m[i - 1].msg.next = &m[i].msg;
    }
    uint64_t w0 = loop_wakeups(loop_get(0));
    work_post_msgs(loop_get(0), &m[0].msg, &m[9].msg);
    CHECK_EQ_INT(loop_wakeups(loop_get(0)) - w0, 1); /* one doorbell for the chain */
    CHECK_EQ_INT(loop_run(), 0);
    CHECK_EQ_INT(chain_ran, 10);
    for (int i = 0; i < 10; i++)
        CHECK_EQ_INT(chain_seen[i], i);
    loop_free();
}

int main(void)
{
    RUN(test_done_runs_on_submitting_loop);
    RUN(test_pinned_order);
    RUN(test_bound_and_free);
    RUN(test_post_and_flush);
    RUN(test_post_chain);
    return unit_done();
}
