/* mc_async: libmc's event-loop client, for use inside our daemons.
 *
 * The same servers, ketama continuum and dead-server policy as the
 * blocking libmc (libmc.h), but non-blocking on the core's conn and loop:
 * each call queues a request and returns at once; its callback runs later,
 * exactly once, on the loop's thread. Text protocol; requests to one server
 * are pipelined on one connection, answered in order. An mc_async belongs
 * to one loop and is used only from that loop's thread.
 *
 * Bounds: at most max_pending requests waiting per server (a call beyond
 * that is refused with MC_CLIENT_NO_MEMORY and no callback), a reply line
 * of at most 2 KiB, a value of at most 1 GiB; a server that sends nothing
 * for io_timeout_ms while requests wait is dropped (MC_CLIENT_TIMEOUT for
 * each of them) and counts towards marking it dead.
 *
 * Built into the daemons that use it (memcached.mk's MC_ASYNC_SRCS), not
 * into libmc.so, which stays free of libevent. */
#ifndef MC_ASYNC_H
#define MC_ASYNC_H

#include <stddef.h>
#include <stdint.h>

#include "memcached/client/libmc.h" /* enum mc_client_rc */

struct core_loop;
struct mc_async;

struct mc_async_options {
    int io_timeout_ms;     /* 0 = 1000: silence (or unsent output) allowed while requests wait */
    int failure_limit;     /* 0 = 2 */
    int retry_interval_ms; /* 0 = 2000 */
    size_t max_pending;    /* 0 = 4096 per server */
};

/* What a request came back with. data/len/flags/cas for a hit (data valid
 * during the callback only); value for incr/decr. */
struct mc_async_result {
    int rc; /* enum mc_client_rc */
    const char *data;
    size_t len;
    uint32_t flags;
    uint64_t cas;
    uint64_t value;
};
typedef void (*mc_async_fn)(const struct mc_async_result *r, void *arg);

/* servers as for mc_client_new. NULL with a message in err on a bad list. */
struct mc_async *mc_async_new(struct core_loop *loop, const char *servers, const struct mc_async_options *opts,
                              char *err, size_t errlen);
/* Closes the connections; each waiting request's callback runs now with
 * MC_CLIENT_CONNECTION. Not from inside one of its callbacks. */
void mc_async_free(struct mc_async *a);

/* Each returns MC_CLIENT_OK when queued (fn runs once later), or an error
 * (bad key, no live server, queue full) and fn is not called. */
int mc_async_get(struct mc_async *a, const char *key, size_t nkey, mc_async_fn fn, void *arg);
enum mc_async_store { MC_ASYNC_SET, MC_ASYNC_ADD, MC_ASYNC_REPLACE, MC_ASYNC_APPEND, MC_ASYNC_PREPEND, MC_ASYNC_CAS };
int mc_async_store(struct mc_async *a, enum mc_async_store op, const char *key, size_t nkey, const void *data,
                   size_t len, uint32_t flags, int32_t exptime, uint64_t cas, mc_async_fn fn, void *arg);
int mc_async_delete(struct mc_async *a, const char *key, size_t nkey, mc_async_fn fn, void *arg);
/* incr (decr false) or decr; the new value in r->value. */
int mc_async_arith(struct mc_async *a, bool incr, const char *key, size_t nkey, uint64_t delta, mc_async_fn fn,
                   void *arg);
int mc_async_touch(struct mc_async *a, const char *key, size_t nkey, int32_t exptime, mc_async_fn fn, void *arg);

/* Requests queued and not yet answered, all servers. */
size_t mc_async_pending(const struct mc_async *a);

/* The reply reader, pure (exposed for its fuzz target): the reply to a
 * request of kind at the start of buf[0, len). 1: *r filled (r->data
 * points into buf), *consumed bytes used; 0: incomplete, at least *need
 * contiguous bytes are wanted; -1: not a reply to that request. */
enum mc_async_kind { MC_ASYNC_K_GET, MC_ASYNC_K_STORE, MC_ASYNC_K_DELETE, MC_ASYNC_K_ARITH, MC_ASYNC_K_TOUCH };
int mc_async_parse(enum mc_async_kind kind, const char *buf, size_t len, struct mc_async_result *r, size_t *consumed,
                   size_t *need);

#endif
