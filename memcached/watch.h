/* watch.h: memcached's "watch" log streams (memcached 1.6.18's logger).
 *
 * A client that sends "watch [fetchers] [mutations] [evictions]
 * [connevents] ..." gets "OK" and from then on a stream of log lines,
 * one per event of the kinds it asked for, from every thread, in
 * memcached 1.6.18's formats ("ts=... gid=... type=item_get key=...").
 * Its connection takes no more commands.
 *
 * Cost when nobody watches: each hook is one test of mc_watch_flags (a
 * relaxed load of a word that only changes when a watcher comes or
 * goes), so the get/set path takes no lock and makes no call. With
 * watchers the event's line is formatted once on the thread where it
 * happened and copied into each interested watcher's bounded buffer
 * (-o watcher_logbuf_size, 256 KB by default) under that watcher's own
 * lock; the watcher's loop sends it. A watcher that does not read loses
 * lines (counted) and later gets memcached's "skipped=N" line before the
 * next line that fits: its memory never grows past its buffer. */
#ifndef MC_WATCH_H
#define MC_WATCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Event kinds (memcached's LOG_* bits, same values). */
#define MC_WATCH_SYSEVENTS (1u << 1)
#define MC_WATCH_FETCHERS (1u << 2)
#define MC_WATCH_MUTATIONS (1u << 3)
#define MC_WATCH_CONNEVENTS (1u << 5)
#define MC_WATCH_EVICTIONS (1u << 6)
#define MC_WATCH_RAWCMDS (1u << 9)
#define MC_WATCH_PROXYREQS (1u << 10)
#define MC_WATCH_PROXYEVENTS (1u << 11)
#define MC_WATCH_PROXYUSER (1u << 12)

#define MC_WATCH_MAX 20 /* watchers at once, as memcached's WATCHER_LIMIT */

/* The kinds some watcher wants (0 when nobody watches). */
extern _Atomic uint32_t mc_watch_flags;
static inline bool mc_watching(uint32_t kind)
{
    return __builtin_expect((atomic_load_explicit(&mc_watch_flags, memory_order_relaxed) & kind) != 0, 0);
}

/* The descriptor of the connection whose request the calling thread is
 * running (the lines' cfd=), set by the session when someone watches. */
extern _Thread_local int mc_watch_cfd;

/* Set around a lookup that is not a client's fetch (meta arithmetic's
 * re-read of the item for its return flags): no item_get line. */
extern _Thread_local bool mc_watch_mute;

/* Settings (-W, -o watcher_logbuf_size / worker_logbuf_size in KB). */
extern bool mc_watch_disabled;
extern uint32_t mc_watch_buf_kb;
extern uint32_t mc_watch_worker_buf_kb;

/* Hooks; call only after mc_watching(kind) said yes. */
/* status: 0 not_found, 1 found, 2 flushed, 3 expired (memcached's order). */
void mc_watch_item_get(const char *key, size_t nkey, int status, int clsid, uint32_t nbytes);
/* status: 0 not_stored, 1 stored, 2 exists, 3 not_found, 4 too_large,
 * 5 no_memory; cmd: 1 add, 2 set, 3 replace, 4 append, 5 prepend, 6 cas
 * (memcached's tables); exptime is rel time (0 = never). */
void mc_watch_item_store(const char *key, size_t nkey, int status, int cmd, uint32_t exptime, int clsid,
                         uint32_t nbytes, int cfd);
struct mc_item;
void mc_watch_eviction(const struct mc_item *it);
struct sockaddr;
/* transport: 0 local (unix), 1 tcp; reason (close): 0 error, 1 normal,
 * 2 idle_timeout, 3 shutdown. */
void mc_watch_conn_event(bool is_new, const struct sockaddr *peer, unsigned peer_len, int transport, int reason,
                         int cfd);
/* sysevents: the page mover moved a page (memcached's slab_move line). */
void mc_watch_slab_move(int src, int dst);

struct session;
enum mc_watch_add { MC_WATCH_ADD_OK = 0, MC_WATCH_ADD_TOO_MANY, MC_WATCH_ADD_FAILED };
/* Turn the session into a watcher of kinds (OK is sent by the caller
 * first). Runs on the session's loop. */
enum mc_watch_add mc_watch_start(struct session *s, uint32_t kinds);
/* At start-up: watchers are closed as soon as a stop begins. */
void mc_watch_init(void);
/* The session is closing: forget its watcher (session.c's on_close). */
void mc_watch_stop(struct session *s);

/* Counters for "stats" (log_worker_written, log_worker_dropped,
 * log_watcher_skipped, log_watcher_sent, log_watchers). */
/* The last gid handed out; -e restarts carry it over, as memcached. */
uint64_t mc_watch_gid(void);
void mc_watch_gid_restore(uint64_t gid);

struct mc_watch_stats {
    uint64_t written, dropped, skipped, sent, watchers;
};
void mc_watch_stats_get(struct mc_watch_stats *out);

#endif
