/* watch: memcached's "watch" log streams: the watcher registry, the
 * events' lines in memcached 1.6.18's formats, each watcher's bounded
 * buffer and the pump that sends it from the watcher's own loop.
 *
 * Threads: an event is formatted on the thread where it happened (a loop
 * thread, or the maintainer thread for evictions), then copied into the
 * buffer of every watcher that wants it, under the registry's read lock
 * and that watcher's mutex (both leaves: nothing is called under them but
 * memcpy and loop_call). The watcher's loop moves the buffer to the
 * socket (pump), never more than PUMP_OUT_HIGH queued on the connection,
 * so a watcher's memory is its buffer plus that. Adding and removing a
 * watcher take the registry's write lock; both run on the watcher's loop.
 *
 * Nothing here runs when nobody watches: every hook is behind
 * mc_watching() (watch.h). */
#include "memcached/watch.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/conn.h"
#include "common/loop.h"
#include "memcached/mc.h"
#include "memcached/session.h"

_Atomic uint32_t mc_watch_flags;
_Thread_local int mc_watch_cfd;
_Thread_local bool mc_watch_mute;
bool mc_watch_disabled;
uint32_t mc_watch_buf_kb = 256;       /* memcached's LOGGER_WATCHER_BUF_SIZE */
uint32_t mc_watch_worker_buf_kb = 64; /* memcached's LOGGER_BUF_SIZE (shown only: no per-thread buffer here) */

#define PUMP_OUT_HIGH (64u << 10) /* bytes queued on the watcher's connection before the pump waits */
#define PUMP_PIECE (16u << 10)
#define PUMP_RETRY_US 10000 /* the socket was full: look again this soon */
#define LINE_MAX_LEN 2048   /* the longest line: a 250-byte key encoded is 750 */

struct watcher {
    pthread_mutex_t lock; /* ring, skipped, posted, dead */
    uint32_t kinds;
    uint64_t min_gid; /* lines of events older than the watcher are not its */
    char *ring;
    size_t cap, head, len;
    uint64_t skipped; /* lines lost since the last one that fitted */
    bool posted;      /* a pump is waiting in the loop's mailbox */
    bool dead;        /* the session closed while a pump was posted: the pump frees */
    struct session *s;
    struct core_loop *loop;
    struct event *retry;
    struct evbuffer *tmp;
};

static pthread_rwlock_t reg_lock = PTHREAD_RWLOCK_INITIALIZER;
static struct watcher *watchers[MC_WATCH_MAX];
static int nwatchers;
static _Atomic uint64_t next_gid;
static _Atomic uint64_t st_written, st_dropped, st_skipped, st_sent;

/* ------------------------------------------------------------------ */
/* the buffer */

static void ring_put(struct watcher *w, const char *p, size_t n)
{
    size_t tail = (w->head + w->len) % w->cap;
    size_t first = w->cap - tail < n ? w->cap - tail : n;
    memcpy(w->ring + tail, p, first);
    memcpy(w->ring, p + first, n - first);
    w->len += n;
}

static size_t ring_take(struct watcher *w, char *dst, size_t max)
{
    size_t n = w->len < max ? w->len : max;
    size_t first = w->cap - w->head < n ? w->cap - w->head : n;
    memcpy(dst, w->ring + w->head, first);
    memcpy(dst + first, w->ring, n - first);
    w->head = (w->head + n) % w->cap;
    w->len -= n;
    return n;
}

static void watcher_free(struct watcher *w)
{
    if (w->retry)
        event_free(w->retry);
    if (w->tmp)
        evbuffer_free(w->tmp);
    pthread_mutex_destroy(&w->lock);
    free(w->ring);
    free(w);
}

/* ------------------------------------------------------------------ */
/* the pump: on the watcher's loop */

static void pump(struct watcher *w)
{
    struct core_conn *c = w->s->c;
    if (conn_is_closing(c))
        return;
    char piece[PUMP_PIECE];
    for (int i = 0; i < 16; i++) {
        if (evbuffer_get_length(conn_out(c)) >= PUMP_OUT_HIGH)
            break;
        pthread_mutex_lock(&w->lock);
        size_t n = ring_take(w, piece, sizeof piece);
        pthread_mutex_unlock(&w->lock);
        if (n == 0)
            return; /* all out: the next line posts a pump again */
        evbuffer_add(w->tmp, piece, n);
        conn_write_now(c, w->tmp);
    }
    /* The client reads slower than lines come (or the socket is full):
     * look again shortly; meanwhile new lines fill the buffer, then skip. */
    struct timeval tv = { 0, PUMP_RETRY_US };
    evtimer_add(w->retry, &tv);
}

static void pump_cb(void *arg)
{
    struct watcher *w = arg;
    pthread_mutex_lock(&w->lock);
    w->posted = false;
    bool dead = w->dead;
    pthread_mutex_unlock(&w->lock);
    if (dead) {
        watcher_free(w);
        return;
    }
    if (!evtimer_pending(w->retry, NULL))
        pump(w);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pump(arg);
}

/* ------------------------------------------------------------------ */
/* delivering a line */

static void recompute_flags(void)
{
    uint32_t f = 0;
    for (int i = 0; i < MC_WATCH_MAX; i++)
        if (watchers[i])
            f |= watchers[i]->kinds;
    atomic_store_explicit(&mc_watch_flags, f, memory_order_relaxed);
}

/* "ts=<sec>.<usec> gid=<n> " as memcached writes it (usec not padded). */
static int line_head(char *buf, size_t cap, uint64_t *gid)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    *gid = atomic_fetch_add_explicit(&next_gid, 1, memory_order_relaxed) + 1;
    return snprintf(buf, cap, "ts=%lld.%d gid=%llu ", (long long)tv.tv_sec, (int)tv.tv_usec, (unsigned long long)*gid);
}

static void deliver(uint32_t kind, uint64_t gid, const char *line, int len)
{
    if (len <= 0 || len >= LINE_MAX_LEN) {
        atomic_fetch_add_explicit(&st_dropped, 1, memory_order_relaxed);
        return;
    }
    size_t n = (size_t)len;
    atomic_fetch_add_explicit(&st_written, 1, memory_order_relaxed);
    pthread_rwlock_rdlock(&reg_lock);
    for (int i = 0; i < MC_WATCH_MAX; i++) {
        struct watcher *w = watchers[i];
        if (!w || !(w->kinds & kind) || gid < w->min_gid)
            continue;
        pthread_mutex_lock(&w->lock);
        /* As memcached: room for the line and a "skipped" line, or the
         * line is lost and counted. */
        if (w->cap - w->len < n + 128) {
            w->skipped++;
            atomic_fetch_add_explicit(&st_skipped, 1, memory_order_relaxed);
        } else {
            if (w->skipped) {
                char sk[64];
                int k = snprintf(sk, sizeof sk, "skipped=%llu\n", (unsigned long long)w->skipped);
                ring_put(w, sk, (size_t)k);
                w->skipped = 0;
            }
            ring_put(w, line, n);
            atomic_fetch_add_explicit(&st_sent, 1, memory_order_relaxed);
        }
        if (!w->posted && w->len > 0 && loop_call(w->loop, pump_cb, w) == 0)
            w->posted = true;
        pthread_mutex_unlock(&w->lock);
    }
    pthread_rwlock_unlock(&reg_lock);
}

/* memcached's uriencode: letters, digits and -._~ as they are, every
 * other byte %XX. out holds 3 * n + 1. */
static void uri_key(const char *key, size_t n, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)key[i];
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
            ch == '.' || ch == '_' || ch == '~') {
            out[o++] = (char)ch;
        } else {
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    out[o] = '\0';
}

void mc_watch_item_get(const char *key, size_t nkey, int status, int clsid, uint32_t nbytes)
{
    static const char *const names[] = { "not_found", "found", "flushed", "expired" };
    if (mc_watch_mute)
        return;
    char k[3 * MC_KEY_MAX + 1], line[LINE_MAX_LEN];
    if (nkey > MC_KEY_MAX)
        nkey = MC_KEY_MAX;
    uri_key(key, nkey, k);
    uint64_t gid;
    int h = line_head(line, sizeof line, &gid);
    int n = snprintf(line + h, sizeof line - (size_t)h, "type=item_get key=%s status=%s clsid=%u cfd=%d size=%u\n", k,
                     names[status & 3], (unsigned)clsid, mc_watch_cfd, nbytes);
    deliver(MC_WATCH_FETCHERS, gid, line, h + n);
}

void mc_watch_item_store(const char *key, size_t nkey, int status, int cmd, uint32_t exptime, int clsid,
                         uint32_t nbytes, int cfd)
{
    static const char *const st_names[] = { "not_stored", "stored", "exists", "not_found", "too_large", "no_memory" };
    static const char *const cmd_names[] = { "null", "add", "set", "replace", "append", "prepend", "cas" };
    char k[3 * MC_KEY_MAX + 1], line[LINE_MAX_LEN];
    if (nkey > MC_KEY_MAX)
        nkey = MC_KEY_MAX;
    uri_key(key, nkey, k);
    /* The TTL left, as memcached computes it (an item already expired
     * wraps, as there). */
    uint32_t ttl = exptime ? exptime - mc_now() : 0;
    uint64_t gid;
    int h = line_head(line, sizeof line, &gid);
    int n = snprintf(line + h, sizeof line - (size_t)h,
                     "type=item_store key=%s status=%s cmd=%s ttl=%u clsid=%u cfd=%d size=%u\n", k,
                     status >= 0 && status <= 5 ? st_names[status] : "na", cmd >= 0 && cmd <= 6 ? cmd_names[cmd] : "na",
                     ttl, (unsigned)clsid, cfd, nbytes);
    deliver(MC_WATCH_MUTATIONS, gid, line, h + n);
}

void mc_watch_eviction(const struct mc_item *it)
{
    char k[3 * MC_KEY_MAX + 1], line[LINE_MAX_LEN];
    uri_key(it->data, it->nkey, k);
    uint32_t now = mc_now();
    long long ttl = it->exptime ? (long long)it->exptime - (long long)now : -1;
    uint64_t gid;
    int h = line_head(line, sizeof line, &gid);
    int n =
        snprintf(line + h, sizeof line - (size_t)h, "type=eviction key=%s fetch=%s ttl=%lld la=%d clsid=%u size=%u\n",
                 k, (__atomic_load_n(&it->bits, __ATOMIC_RELAXED) & MC_IT_FETCHED) ? "yes" : "no", ttl,
                 (int)(now - it->atime), (unsigned)it->clsid, it->nbytes);
    deliver(MC_WATCH_EVICTIONS, gid, line, h + n);
}

void mc_watch_conn_event(bool is_new, const struct sockaddr *peer, unsigned peer_len, int transport, int reason,
                         int cfd)
{
    static const char *const transports[] = { "local", "tcp", "udp" };
    static const char *const reasons[] = { "error", "normal", "idle_timeout", "shutdown" };
    char rip[64] = "unix";
    unsigned port = 0;
    if (peer && peer_len >= sizeof(struct sockaddr_in) && peer->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)(const void *)peer;
        inet_ntop(AF_INET, &a->sin_addr, rip, sizeof rip);
        port = ntohs(a->sin_port);
    } else if (peer && peer_len >= sizeof(struct sockaddr_in6) && peer->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)(const void *)peer;
        inet_ntop(AF_INET6, &a->sin6_addr, rip, sizeof rip);
        port = ntohs(a->sin6_port);
    }
    char line[LINE_MAX_LEN];
    uint64_t gid;
    int h = line_head(line, sizeof line, &gid);
    int n;
    if (is_new)
        n = snprintf(line + h, sizeof line - (size_t)h, "type=conn_new rip=%s rport=%u transport=%s cfd=%d\n", rip,
                     port, transports[transport & 1], cfd);
    else
        n = snprintf(line + h, sizeof line - (size_t)h,
                     "type=conn_close rip=%s rport=%u transport=%s reason=%s cfd=%d\n", rip, port,
                     transports[transport & 1], reasons[reason & 3], cfd);
    deliver(MC_WATCH_CONNEVENTS, gid, line, h + n);
}

void mc_watch_slab_move(int src, int dst)
{
    char line[LINE_MAX_LEN];
    uint64_t gid;
    int h = line_head(line, sizeof line, &gid);
    int n = snprintf(line + h, sizeof line - (size_t)h, "type=slab_move src=%d dst=%d\n", src, dst);
    deliver(MC_WATCH_SYSEVENTS, gid, line, h + n);
}

/* ------------------------------------------------------------------ */
/* watchers coming and going (on their own loops) */

enum mc_watch_add mc_watch_start(struct session *s, uint32_t kinds)
{
    struct watcher *w = calloc(1, sizeof *w);
    if (!w)
        return MC_WATCH_ADD_FAILED;
    pthread_mutex_init(&w->lock, NULL);
    w->kinds = kinds;
    w->s = s;
    w->loop = s->c->loop;
    w->cap = (size_t)mc_watch_buf_kb * 1024;
    w->ring = malloc(w->cap);
    w->tmp = evbuffer_new();
    w->retry = evtimer_new(w->loop->base, retry_cb, w);
    if (!w->ring || !w->tmp || !w->retry) {
        watcher_free(w);
        return MC_WATCH_ADD_FAILED;
    }
    pthread_rwlock_wrlock(&reg_lock);
    int slot = -1;
    for (int i = 0; i < MC_WATCH_MAX && slot < 0; i++)
        if (!watchers[i])
            slot = i;
    if (slot < 0) {
        pthread_rwlock_unlock(&reg_lock);
        watcher_free(w);
        return MC_WATCH_ADD_TOO_MANY;
    }
    w->min_gid = atomic_fetch_add_explicit(&next_gid, 1, memory_order_relaxed) + 1;
    watchers[slot] = w;
    nwatchers++;
    recompute_flags();
    pthread_rwlock_unlock(&reg_lock);
    return MC_WATCH_ADD_OK;
}

void mc_watch_stop(struct session *s)
{
    struct watcher *w = NULL;
    pthread_rwlock_wrlock(&reg_lock);
    for (int i = 0; i < MC_WATCH_MAX; i++)
        if (watchers[i] && watchers[i]->s == s) {
            w = watchers[i];
            watchers[i] = NULL;
            nwatchers--;
            break;
        }
    recompute_flags();
    pthread_rwlock_unlock(&reg_lock);
    if (!w)
        return;
    /* No thread can reach w any more; a pump may still be in this loop's
     * mailbox (it runs on this same thread, later): it frees w then. */
    evtimer_del(w->retry);
    pthread_mutex_lock(&w->lock);
    bool posted = w->posted;
    w->dead = true;
    w->s = NULL;
    pthread_mutex_unlock(&w->lock);
    if (!posted)
        watcher_free(w);
}

uint64_t mc_watch_gid(void) { return atomic_load(&next_gid); }
void mc_watch_gid_restore(uint64_t gid) { atomic_store(&next_gid, gid); }

/* A stop was asked for: a watcher is never done, and one that does not
 * read would hold the stop for the whole grace period, so the watchers of
 * this loop are closed at once (as memcached's logger thread just ends). */
static void watch_loop_stopping(struct core_loop *loop)
{
    struct core_conn *mine[MC_WATCH_MAX];
    int n = 0;
    pthread_rwlock_rdlock(&reg_lock);
    for (int i = 0; i < MC_WATCH_MAX; i++)
        if (watchers[i] && watchers[i]->loop == loop)
            mine[n++] = watchers[i]->s->c;
    pthread_rwlock_unlock(&reg_lock);
    for (int i = 0; i < n; i++)
        conn_close(mine[i]); /* on_close -> mc_watch_stop, on this thread */
}

void mc_watch_init(void)
{
    static const struct loop_layer layer = { .name = "memcached-watch", .loop_stopping = watch_loop_stopping };
    loop_add_layer(&layer);
}

void mc_watch_stats_get(struct mc_watch_stats *out)
{
    out->written = atomic_load_explicit(&st_written, memory_order_relaxed);
    out->dropped = atomic_load_explicit(&st_dropped, memory_order_relaxed);
    out->skipped = atomic_load_explicit(&st_skipped, memory_order_relaxed);
    out->sent = atomic_load_explicit(&st_sent, memory_order_relaxed);
    pthread_rwlock_rdlock(&reg_lock);
    out->watchers = (uint64_t)nwatchers;
    pthread_rwlock_unlock(&reg_lock);
}
