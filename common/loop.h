/* loop: the event loops and the process's signals.
 *
 * N loops, each an event_base owned by one thread. Loop 0 runs on the thread
 * that calls loop_run(); loops 1..N-1 get their own threads. Nothing may
 * block a loop: disk and database work goes to a worker thread and comes back
 * with loop_call().
 *
 * Signals (handled on loop 0): TERM/INT = graceful stop, HUP = reload config
 * and reopen logs, USR1 = dump stats to the log. A second TERM stops at once.
 *
 * The bottom layer: it knows nothing of connections, listeners, stats or
 * the daemon; those register a struct loop_layer. */
#ifndef CORE_LOOP_H
#define CORE_LOOP_H

#include <stdbool.h>
#include <stdint.h>
#include <pthread.h>

struct event_base;

struct core_loop {
    struct event_base *base;
    int index;
    pthread_t thread;
    void *data; /* the daemon's per-thread state */
    /* private */
    struct loop_private *priv;
};

struct loop_hooks {
    /* Graceful stop requested: close listeners etc. Loops end when every
     * connection is closed or after the grace period. May be NULL. */
    void (*on_stop)(void);
    void (*on_reload)(void);                         /* SIGHUP, after config reload + log reopen */
    void (*on_thread_start)(struct core_loop *loop); /* on each loop's own thread, before it runs */
    void (*on_thread_exit)(struct core_loop *loop);
};

/* The modules above the loop (conn, listen, stats, daemon) take part in
 * its life through a layer each, registered once (from a constructor or at
 * start-up): the loop calls down into nothing and up into only these. All
 * members may be NULL. */
struct loop_layer {
    const char *name;
    /* A graceful stop begins (once; on the thread that asked): stop taking
     * new work, e.g. close listeners, tell systemd. */
    void (*stop_requested)(void);
    /* On each loop's thread: start finishing (close what is idle). */
    void (*loop_stopping)(struct core_loop *loop);
    /* On each loop's thread: work still under way there; the loop ends when
     * every layer says 0, or when the grace period is over. */
    uint64_t (*loop_busy)(const struct core_loop *loop);
    /* On each loop's thread: end everything now (grace over, second signal). */
    void (*loop_abort)(struct core_loop *loop);
    /* loop_free, per loop, after loop_abort: release per-loop resources. */
    void (*loop_release)(struct core_loop *loop);
    /* SIGUSR1: write a dump to the log. */
    void (*dump)(void);
};
/* At most 8 layers; registering one twice is a no-op. */
void loop_add_layer(const struct loop_layer *layer);

/* Create n >= 1 loops (does not start them). Returns 0 or -1. */
int loop_init(int n);
int loop_count(void);
struct core_loop *loop_get(int index);
/* The loop of the calling thread, or NULL for a non-loop thread. */
struct core_loop *loop_current(void);

void loop_set_hooks(const struct loop_hooks *hooks);
/* Seconds a graceful stop waits for connections to finish (default 10). */
void loop_set_grace(double seconds);

/* Runs all loops; returns when they have all exited. 0 on clean stop. */
int loop_run(void);

/* Thread-safe: ask for a graceful stop (as SIGTERM does). */
void loop_request_stop(void);
/* True once a stop was requested. */
bool loop_stopping(void);

/* Thread-safe: run fn(arg) on that loop's thread soon. Returns 0 or -1. */
int loop_call(struct core_loop *loop, void (*fn)(void *arg), void *arg);
/* How many times loop_call rang the loop's wake-up fd: calls made while
 * the mailbox is still non-empty share one wake-up (stats and tests). */
uint64_t loop_wakeups(struct core_loop *loop);

/* Free the loops after loop_run returned. Calls still queued run first, on
 * the caller's thread with loop_current() set to their loop. */
void loop_free(void);

#endif
