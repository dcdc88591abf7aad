/* loop_call: calls from other threads all run, in order, on the loop's
 * thread; a burst posted while the mailbox is non-empty rings the loop's
 * wake-up fd once, not once per call. */
#include "common/loop.h"

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "tests/unit/unit.h"

#define BURST 1000

static atomic_int ran;
static atomic_int out_of_order;
static atomic_int wrong_thread;
static int next_expected;

static void count_call(void *arg)
{
    int i = (int)(intptr_t)arg;
    if (loop_current() != loop_get(0))
        atomic_fetch_add(&wrong_thread, 1);
    if (i != next_expected)
        atomic_fetch_add(&out_of_order, 1);
    next_expected = i + 1;
    atomic_fetch_add(&ran, 1);
}

static void stop_call(void *arg)
{
    (void)arg;
    loop_request_stop();
}

/* Before the loop runs: a burst of BURST calls queues up and rings once. */
static void test_burst_before_run_rings_once(void)
{
    CHECK_EQ_INT(loop_init(1), 0);
    loop_set_grace(1);
    atomic_store(&ran, 0);
    next_expected = 0;
    struct core_loop *l = loop_get(0);
    uint64_t before = loop_wakeups(l);
    for (int i = 0; i < BURST; i++)
        CHECK_EQ_INT(loop_call(l, count_call, (void *)(intptr_t)i), 0);
    CHECK_EQ_INT(loop_wakeups(l) - before, 1);
    CHECK_EQ_INT(loop_call(l, stop_call, NULL), 0);
    CHECK_EQ_INT(loop_wakeups(l) - before, 1);
    CHECK_EQ_INT(loop_run(), 0);
    CHECK_EQ_INT(atomic_load(&ran), BURST);
    CHECK_EQ_INT(atomic_load(&out_of_order), 0);
    CHECK_EQ_INT(atomic_load(&wrong_thread), 0);
    loop_free();
}

/* While the loop runs: another thread posts in bursts; every call runs in
 * order, and there are never more wake-ups than calls (far fewer when the
 * loop is slower than the poster). After the mailbox was drained, the next
 * call rings again (no call is left waiting without a wake-up). */
static void *poster(void *arg)
{
    (void)arg;
    struct core_loop *l = loop_get(0);
    for (int i = 0; i < BURST; i++)
        loop_call(l, count_call, (void *)(intptr_t)i);
    while (atomic_load(&ran) < BURST)
        usleep(1000);
    uint64_t w = loop_wakeups(l);
    loop_call(l, count_call, (void *)(intptr_t)BURST);
    if (loop_wakeups(l) != w + 1)
        atomic_fetch_add(&out_of_order, 1000);
    while (atomic_load(&ran) < BURST + 1)
        usleep(1000);
    loop_call(l, stop_call, NULL);
    return NULL;
}

static void test_posts_from_another_thread(void)
{
    CHECK_EQ_INT(loop_init(1), 0);
    loop_set_grace(1);
    atomic_store(&ran, 0);
    atomic_store(&out_of_order, 0);
    next_expected = 0;
    pthread_t t;
    pthread_create(&t, NULL, poster, NULL);
    CHECK_EQ_INT(loop_run(), 0);
    pthread_join(t, NULL);
    CHECK_EQ_INT(atomic_load(&ran), BURST + 1);
    CHECK_EQ_INT(atomic_load(&out_of_order), 0);
    CHECK_EQ_INT(atomic_load(&wrong_thread), 0);
    CHECK(loop_wakeups(loop_get(0)) <= BURST + 2);
    loop_free();
}

int main(void)
{
    RUN(test_burst_before_run_rings_once);
    RUN(test_posts_from_another_thread);
    return unit_done();
}
