/* work: a pool of worker threads for everything that can block (disk
 * opens, stats and fsyncs, database queries, DNS, password hashing), and a
 * mailbox per event loop that carries results back.
 *
 * A job is fn(arg) run on a pool thread, then done(arg) run back on the
 * loop that submitted it (or on the pool thread when loop is NULL). The
 * submitting loop never blocks: work_submit only takes a mutex to queue.
 *
 * Ordering: jobs submitted to one thread (work_submit_to) run one after the
 * other in submission order; jobs for "any thread" run in submission order
 * with one thread, and concurrently with several. done callbacks of one
 * loop run in the order the jobs finished.
 *
 * Bounds: the pool holds at most max_queued jobs waiting (not counting the
 * ones running); past that work_submit fails with errno EAGAIN and the
 * `rejected` counter grows. The caller turns that into its protocol's
 * "server busy" error.
 *
 * Mailbox: work_post(loop, fn, arg) runs fn(arg) on that loop's thread;
 * messages posted in a burst ring the loop once (one loop_call), and the
 * loop runs every message waiting in one go. Thread-safe from anywhere. */
#ifndef CORE_WORK_H
#define CORE_WORK_H

#include <stddef.h>
#include <stdint.h>

struct core_loop;
struct work_pool;

typedef void (*work_fn)(void *arg);

/* Start `threads` (>= 1) worker threads. max_queued 0 = unbounded (only
 * for pools whose callers bound themselves, like db). name shows in logs
 * and in the thread name (at most 15 bytes are kept). NULL + errno on
 * failure. */
struct work_pool *work_pool_new(const char *name, int threads, size_t max_queued);
/* Stop taking jobs, run every job already queued, join the threads, then
 * run the done callbacks of this pool's jobs not yet delivered, on the
 * caller's thread (their loops have stopped: call it after loop_run). */
void work_pool_free(struct work_pool *pool);
int work_pool_threads(const struct work_pool *pool);

/* Queue fn(arg) on any thread; done(arg) (may be NULL) then runs on loop.
 * Returns 0, or -1 with errno EAGAIN (queue full), ESHUTDOWN (pool being
 * freed) or ENOMEM; then neither fn nor done will run. Thread-safe.
 * Hands work to a thread: fn must not touch loop-owned state. */
int work_submit(struct work_pool *pool, struct core_loop *loop, work_fn fn, work_fn done, void *arg);
/* The same on one given thread (0 .. threads-1): jobs for one thread run in
 * order, on one thread (connection affinity, per-thread state). */
int work_submit_to(struct work_pool *pool, int thread, struct core_loop *loop, work_fn fn, work_fn done, void *arg);

/* Inside fn: the index of the pool thread running it (0 .. threads-1);
 * -1 on any thread that is not a pool thread. */
int work_thread_index(void);

struct work_counters {
    uint64_t submitted; /* accepted by work_submit */
    uint64_t completed; /* fn returned */
    uint64_t rejected;  /* refused: queue full */
    uint64_t queued;    /* waiting now */
    uint64_t running;   /* in fn now */
    int threads;
};
void work_get_counters(struct work_pool *pool, struct work_counters *out);

/* ---- the per-loop mailbox ------------------------------------------------- */

/* An intrusive message for callers that post often and must not fail (db
 * embeds one in each request): fill run (and owner, for
 * work_mailbox_flush), then post. The message belongs to the mailbox until
 * run is called; run may free it. */
struct work_msg {
    struct work_msg *next;
    void (*run)(struct work_msg *msg);
    const void *owner;
};
/* Run msg->run(msg) on loop's thread soon; loop NULL runs it right here. */
void work_post_msg(struct core_loop *loop, struct work_msg *msg);
/* The same for a chain first..last already linked through next (run in
 * that order): one lock and at most one wake-up for all of them, where a
 * post each could wake the loop once per message while it keeps up. */
void work_post_msgs(struct core_loop *loop, struct work_msg *first, struct work_msg *last);
/* Run fn(arg) on loop's thread soon (allocates a message). 0, or -1 on
 * out of memory. */
int work_post(struct core_loop *loop, work_fn fn, void *arg);
/* Run, on the caller's thread, every message still waiting in any mailbox
 * whose owner is `owner` (a subsystem shutting down after its loops have
 * stopped). */
void work_mailbox_flush(const void *owner);

#endif
