/* session.h: one client connection of the memcached daemon (session.c) and
 * the per-thread counters the stats sources add up (memcached.c). */
#ifndef MC_SESSION_H
#define MC_SESSION_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "common/conn.h"
#include "memcached/mc.h"

/* Per-thread counters: written only by their thread (relaxed stores),
 * read by the stats sources from any thread. */
#define MC_THREAD_STATS(X) \
    X(cmd_get) X(cmd_set) X(cmd_touch) X(cmd_flush) X(cmd_meta) X(get_hits) X(get_misses) X(get_expired) \
    X(get_flushed) X(delete_hits) X(delete_misses) X(incr_hits) X(incr_misses) X(decr_hits) X(decr_misses) \
    X(cas_hits) X(cas_misses) X(cas_badval) X(touch_hits) X(touch_misses) X(store_too_large) \
    X(store_no_memory) X(auth_cmds) X(auth_errors) X(bytes_read) X(bytes_written) X(protocol_errors)

struct mc_thread_stats {
#define X(n) _Atomic uint64_t n;
    MC_THREAD_STATS(X)
#undef X
};

#define MC_STAT_ADD(th, field, v) \
    atomic_store_explicit(&(th)->field, atomic_load_explicit(&(th)->field, memory_order_relaxed) + (v), \
                          memory_order_relaxed)

struct session;
struct evbuffer;
struct mc_thread {
    struct mc_thread_stats st;
    /* This thread's sessions, for "stats conns". The lock is taken on
     * connect, close and by the stats reader, never per request. */
    pthread_mutex_t sessions_lock;
    struct session *sessions;
};
/* "stats conns": one block per client connection of every thread. */
void mc_session_stats_conns(struct evbuffer *out);

extern const struct conn_ops mc_conn_ops;
/* Accept callback for listen_open. */
void mc_session_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen, void *arg);
void mc_session_reject(int fd, void *arg);


void mc_stats_reset(void);
/* Sum of all threads' counters. */
void mc_stats_sum(struct mc_thread_stats *out);
/* SASL PLAIN check against the password file (-S). */
bool mc_sasl_check(const char *user, size_t ulen, const char *pass, size_t plen);
void mc_shutdown_request(bool graceful);

#endif
