/* mc.h: what the memcached daemon's files share: settings, the clock, the
 * item layout and the store API (items.c, slabs.c, assoc.c, crawler.c).
 *
 * The store knows nothing of protocols. Locking, in the only order allowed:
 *   key stripe (assoc.c, by key hash) -> slab class (LRU + free chunks)
 *   -> page pool.
 * Whoever holds a class lock may only *try* a stripe lock (eviction, the
 * crawler, page moves); that is what makes eviction deadlock-free while a
 * setter holds its key's stripe. Readers copy values out while holding the
 * stripe, so items need no reference counts. */
#ifndef MC_H
#define MC_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MC_VERSION "1.6.18"
#define MC_KEY_MAX 250
#define MC_MAX_CLASSES 64 /* as memcached: ids 1..63 */
#define MC_REALTIME_MAXDELTA (60 * 60 * 24 * 30)

struct mc_settings {
    int port;
    char *listen;           /* -l, comma list */
    char *unix_path;        /* -s */
    int unix_mask;          /* -a (octal text parsed by custom) */
    int maxconns;           /* -c */
    int threads;            /* -t */
    uint64_t maxbytes;      /* -m (bytes) */
    uint64_t item_size_max; /* -I */
    double factor;          /* -f */
    int chunk_min;          /* -n */
    int verbose;            /* -v */
    int udp_port;           /* -U */
    int backlog;            /* -b */
    bool no_cas;            /* -C */
    bool no_evict;          /* -M */
    bool flush_disabled;    /* -F */
    bool dump_disabled;     /* -X */
    long auth_delay_us;     /* first SASL failure's pause (100 ms; doubles); not an option: tests set it */
    bool shutdown_enabled;  /* -A */
    bool sasl;              /* -S */
    char *sasl_pwdb;        /* user:password file for SASL PLAIN */
    char *auth_file;        /* -Y: user:password file for the text protocol's login */
    bool lock_memory;       /* -k */
    bool large_pages;       /* -L */
    char *ext_opts;         /* -o */
    /* from -o */
    int hashpower;
    bool lru_crawler;
    int hot_pct, warm_pct;
    int idle_timeout;       /* seconds, 0 = none */
    uint64_t out_mem_limit; /* -o read_buf_mem_limit: bytes of all reply buffers, 0 = none */
    bool out_mem_limit_given; /* given with -o: memcached's response-object bound applies too */
    uint32_t resp_obj_cap;    /* response objects a loop's TCP sessions may hold unsent; 0 = no bound */
    enum { MC_BIND_AUTO = 0, MC_BIND_ASCII, MC_BIND_BINARY } protocol; /* -B */
    int reqs_per_event;                                                /* -R */
    bool maxconns_fast;
    int tail_repair_time;
    char *hash_algorithm; /* accepted names; the table hash is ours (stats shows it) */
    int lru_crawler_sleep, lru_crawler_tocrawl;
    bool lru_maintainer;
    double hot_max_factor, warm_max_factor;
    int temporary_ttl;
    bool temp_lru;      /* items whose TTL is at most temporary_ttl go to the TEMP LRU */
    bool lru_segmented; /* HOT/WARM/COLD; off: one LRU per class (flat, items in COLD) */
    bool slab_reassign;
    int slab_automove;
    double slab_automove_ratio, slab_automove_freeratio;
    int slab_automove_window;
    int slab_chunk_max;
    bool track_sizes;
    bool hash_expand;
    /* TLS (-Z and -o ssl_*) */
    bool ssl_enabled;
    char *ssl_chain_cert, *ssl_key, *ssl_ciphers, *ssl_ca_cert;
    int ssl_verify_mode; /* 0..3 as given; the rest of -o ssl_* is tls.c's */
};
extern struct mc_settings mc_settings;

/* ---- clock: seconds since process start (rel time), like memcached ---- */
extern _Atomic uint32_t mc_current_time;
extern long mc_process_started; /* unix time of rel time 0 */
static inline uint32_t mc_now(void) { return atomic_load_explicit(&mc_current_time, memory_order_relaxed); }
void mc_clock_update(void);
/* Protocol exptime -> rel time: 0 = never; negative = already expired;
 * <= 30 days relative; larger = absolute unix time. */
uint32_t mc_realtime(int64_t exptime);

/* ---- items ---- */
/* TEMP: items with a short TTL (-o temporary_ttl); never bumped, never
 * evicted while live (only reclaimed once expired), as memcached's. */
enum { MC_LRU_HOT = 0, MC_LRU_WARM = 1, MC_LRU_COLD = 2, MC_LRU_TEMP = 3, MC_LRU_N = 4 };

/* state byte: changed only with the class lock held. */
#define MC_ST_FREE 1                    /* on the class free list */
#define MC_ST_LINKED 2                  /* in the hash table and an LRU */
#define MC_ST_CRAWLER 4                 /* the crawler's cursor, not an item */
#define MC_ST_CHUNK 8                   /* a piece of a chunked item's value (hnext = its head) */
#define MC_ST_SEG(st) (((st) >> 4) & 3) /* LRU segment of a linked item */
#define MC_ST_WITH_SEG(st, seg) (uint8_t)(((st)&0x0f) | ((seg) << 4))
/* bits byte: touched by readers with atomics. */
#define MC_IT_FETCHED 1
#define MC_IT_ACTIVE 2
#define MC_IT_STALE 4 /* meta: invalidated, serve as stale */
#define MC_IT_TOKEN 8 /* meta: recache token handed out */

typedef struct mc_item {
    struct mc_item *hnext;       /* hash chain */
    struct mc_item *prev, *next; /* LRU (prev = newer) */
    uint64_t cas;
    uint32_t exptime; /* rel time; 0 = never */
    uint32_t atime;   /* rel time of last access */
    uint32_t flags;   /* client flags */
    uint32_t nbytes;  /* value length, without CRLF */
    uint8_t nkey;
    uint8_t clsid;
    uint8_t state;
    uint8_t bits;
    char data[]; /* key, then value */
} mc_item;

#define MC_ITEM_HDR offsetof(mc_item, data)
static inline char *mc_key(mc_item *it) { return it->data; }
static inline char *mc_value(mc_item *it) { return it->data + it->nkey; }
static inline size_t mc_item_total(size_t nkey, size_t nbytes) { return MC_ITEM_HDR + nkey + nbytes; }
/* Chunked items (memcached 1.6's large items): an item whose total size is
 * over the largest class's chunk (mc_chunk_max, -o slab_chunk_max) is a
 * head chunk of that class holding the header, the key, an array of
 * pointers to its further chunks and the first part of the value; the
 * rest of the value follows in full chunks of the largest class and one
 * last chunk of the smallest class it fits in. Those chunks have state
 * MC_ST_CHUNK, hnext pointing at the head, and data after MC_ITEM_HDR.
 * Only the head is in the hash table and an LRU (the largest class's). */
extern uint32_t mc_chunk_max;
static inline size_t mc_round8(size_t n) { return (n + 7) & ~(size_t)7; }
static inline bool mc_total_chunked(size_t total) { return total > mc_chunk_max; }
static inline bool mc_item_chunked(const mc_item *it) { return mc_total_chunked(mc_item_total(it->nkey, it->nbytes)); }
/* Further chunks a chunked item of nkey/nbytes needs (0 if not chunked). */
uint32_t mc_item_nchunks(size_t nkey, size_t nbytes);
static inline mc_item **mc_item_chunks(mc_item *it)
{
    return (mc_item **)(void *)((char *)it + mc_round8(MC_ITEM_HDR + it->nkey));
}
/* The contiguous piece of the value at off: *p and its length (> 0 while
 * off < nbytes). Works for every item. */
size_t mc_value_seg(mc_item *it, size_t off, char **p);
void mc_value_read(mc_item *it, size_t off, char *dst, size_t n);
void mc_value_write(mc_item *it, size_t off, const char *src, size_t n);
/* The whole value into dst (the common case inline). */
static inline void mc_value_out(mc_item *it, char *dst)
{
    if (__builtin_expect(!mc_item_chunked(it), 1))
        memcpy(dst, it->data + it->nkey, it->nbytes);
    else
        mc_value_read(it, 0, dst, it->nbytes);
}
/* Copy all of src's value into dst's at off. */
void mc_value_copy_item(mc_item *dst, size_t off, mc_item *src);
static inline uint8_t mc_bits(const mc_item *it) { return __atomic_load_n(&it->bits, __ATOMIC_RELAXED); }
static inline void mc_bits_set(mc_item *it, uint8_t b) { __atomic_fetch_or(&it->bits, b, __ATOMIC_RELAXED); }
static inline void mc_bits_clear(mc_item *it, uint8_t b)
{
    __atomic_fetch_and(&it->bits, (uint8_t)~b, __ATOMIC_RELAXED);
}

/* ---- slabs.c ---- */
struct mc_class {
    pthread_mutex_t lock;
    uint32_t size; /* chunk size */
    uint32_t perpage;
    mc_item *free_head; /* doubly linked through prev/next */
    uint64_t free_count;
    uint64_t pages;
    char **page_list; /* pages owned, for rebalancing */
    uint64_t page_cap;
    char *carve;         /* unused rest of the newest page */
    uint32_t carve_left; /* chunks left in it */
    /* LRU */
    mc_item *head[MC_LRU_N], *tail[MC_LRU_N];
    uint64_t count[MC_LRU_N];
    uint64_t bytes; /* item bytes (mc_item_total) linked */
    /* stats (class lock) */
    uint64_t evicted, evicted_nonzero, reclaimed, expired_unfetched, evicted_unfetched, outofmemory, crawler_reclaimed,
        moves_to_cold, moves_to_warm, moves_within_lru, pages_moved_in, pages_moved_out, pages_evicted, pages_rescued,
        chunks_rescued, crawler_items_checked, evicted_active, direct_reclaims;
    uint32_t evicted_time;
    uint32_t alloc_fail_ticks;
    /* Bytes allocated lately (halved every second by the maintainer):
     * what the clients currently ask this class for. */
    _Atomic uint64_t demand;
    /* Hits by the segment the item was in (stats items hits_to_*). */
    _Atomic uint64_t hits_to[MC_LRU_N];
};
/* Maintainer, once a second: age the classes' demand counters. */
void mc_slabs_decay_demand(void);
extern struct mc_class mc_classes[MC_MAX_CLASSES];
extern int mc_nclasses; /* valid ids 1..mc_nclasses */
extern uint64_t mc_page_size;

int mc_slabs_init(void);
/* Class for a total item size, 0 if too large (over -I); a chunked item's
 * head is in the largest class. */
int mc_slabs_clsid(size_t total);
/* Caller holds c->lock. Returns a chunk or NULL when the class has no free
 * chunk and no new page could be had. */
mc_item *mc_slabs_alloc_locked(int id);
void mc_slabs_free_locked(mc_item *it); /* a chunked head's chunks too */
/* A chunked head's further chunks back to their classes (caller holds the
 * head's class lock). */
void mc_slabs_free_chunks(mc_item *head);
/* One chunk back to its class (no lock held). */
void mc_slabs_free_chunk(mc_item *chunk);
uint64_t mc_slabs_malloced(void);
uint64_t mc_slabs_limit(void);
void mc_slabs_set_limit(uint64_t bytes);
/* Take a page from another class for class id (its items are evicted).
 * Caller holds class id's lock. Returns true if a page was moved. */
bool mc_slabs_steal_page(int id);
/* "slabs reassign src dst": move one page now (src -1: any class with a
 * spare page; dst 0: memcached's global pool, reused by the next class that
 * grows). */
enum mc_reassign { MC_REASSIGN_OK = 0, MC_REASSIGN_BUSY, MC_REASSIGN_BADCLASS, MC_REASSIGN_NOSPARE, MC_REASSIGN_SAME };
enum mc_reassign mc_slabs_reassign(int src, int dst);
/* After cache_memlimit lowered the limit: free up to max_pages pages (their
 * items evicted) while more than the limit is allocated. Returns pages freed. */
uint64_t mc_slabs_release_over_limit(uint64_t max_pages);
/* Seconds since the oldest item of class id's LRU was last used (0: empty). */
uint32_t mc_lru_tail_age(int id);
/* Pages in the global pool (slab_global_page_pool). */
uint64_t mc_slabs_pool_pages(void);
/* -L: the memory was reserved at start (the limit cannot change). */
bool mc_slabs_preallocated(void);

/* ---- hugepages.c: -L and -k ---- */
int mc_large_pages_check(char *err, size_t errlen);
void *mc_large_arena(uint64_t bytes); /* NULL (after a warning): none */
void mc_lock_memory(void);

/* ---- assoc.c: the item hash table ---- */
int mc_assoc_init(int hashpower);
uint64_t mc_hash(const char *key, size_t nkey);
void mc_key_lock(uint64_t hv);
void mc_key_unlock(uint64_t hv);
bool mc_key_trylock(uint64_t hv);
mc_item *mc_assoc_find(const char *key, size_t nkey, uint64_t hv);
void mc_assoc_insert(mc_item *it, uint64_t hv);
void mc_assoc_delete(const char *key, size_t nkey, uint64_t hv);
/* Maintainer: grow when items > 1.5 x buckets; moves some buckets per call.
 * Returns true while an expansion is in progress. */
bool mc_assoc_maintain(uint64_t items);
unsigned mc_assoc_hashpower(void);
uint64_t mc_assoc_bytes(void);
bool mc_assoc_expanding(void);

/* ---- items.c ---- */
enum mc_alloc_err { MC_ALLOC_OK = 0, MC_ALLOC_TOO_LARGE, MC_ALLOC_NO_MEMORY };
/* A private item (not linked) with key, flags, exptime filled; value space
 * of nbytes for the caller to fill. */
mc_item *mc_item_alloc(const char *key, size_t nkey, uint32_t flags, uint32_t exptime, size_t nbytes,
                       enum mc_alloc_err *err);
void mc_item_free(mc_item *it); /* a private item */

/* Find a live item; caller holds the key's stripe. Expired or flushed items
 * are unlinked on the way. Does not bump. */
mc_item *mc_item_find_locked(const char *key, size_t nkey, uint64_t hv);
/* Why the calling thread's last mc_item_find_locked found nothing although
 * the key was there (get_expired / get_flushed). */
enum { MC_MISS_NONE = 0, MC_MISS_EXPIRED, MC_MISS_FLUSHED };
extern _Thread_local uint8_t mc_find_miss;
/* The class of the item the calling thread's last mc_item_find_locked
 * found (per-class hit counters). */
extern _Thread_local uint8_t mc_hit_clsid;
/* Record a fetch (for the segmented LRU). */
void mc_item_bump(mc_item *it);
/* Caller holds the stripe; it is private; old (may be NULL) is replaced. */
void mc_item_link_locked(mc_item *it, mc_item *old, uint64_t hv);
void mc_item_unlink_locked(mc_item *it, uint64_t hv);
/* extstore: put the private item it where old is (caller holds the
 * stripe), keeping old's CAS, access time and fetched bits: the same item
 * with its value moved (to disk, or back into memory). */
void mc_item_swap_locked(mc_item *it, mc_item *old, uint64_t hv);
uint64_t mc_next_cas(void);
bool mc_item_live(const mc_item *it, uint32_t now);

enum mc_store_op { MC_OP_SET, MC_OP_ADD, MC_OP_REPLACE, MC_OP_APPEND, MC_OP_PREPEND, MC_OP_CAS };
enum mc_status {
    MC_STORED = 0,
    MC_NOT_STORED,
    MC_EXISTS,
    MC_NOT_FOUND,
    MC_TOO_LARGE,
    MC_NO_MEMORY,
    MC_DELETED,
    MC_TOUCHED,
    MC_NON_NUMERIC,
    MC_OK,
};
/* Store a private item (ownership passes in). cas_in for MC_OP_CAS (and
 * for the meta C flag on other ops when nonzero). *cas_out gets the new
 * item's CAS on success. */
enum mc_status mc_store(mc_item *it, enum mc_store_op op, uint64_t cas_in, uint64_t *cas_out);
enum mc_status mc_delete(const char *key, size_t nkey, uint64_t cas_in);
/* incr/decr: value must be decimal; decr floors at 0, incr wraps. */
enum mc_status mc_arith(const char *key, size_t nkey, bool incr, uint64_t delta, uint64_t cas_in, uint64_t *result,
                        uint64_t *cas_out);
enum mc_status mc_touch(const char *key, size_t nkey, uint32_t exptime);
void mc_flush(int64_t delay);
/* "stats cachedump": up to limit (0 = all, output capped at 2 MB) lines
 * "ITEM <key> [<bytes> b; <exptime> s]" of class id, newest first. */
struct evbuffer;
void mc_cachedump(struct evbuffer *out, int id, uint32_t limit);
/* "lru_crawler metadump": the line (LF only, as memcached) "key=<key> exp=<unix|-1> la=<unix>
 * cas=<n> fetch=<yes|no> cls=<id> size=<bytes>" of one live item (caller
 * holds its class lock). */
void mc_metadump_line(struct evbuffer *out, mc_item *it, uint32_t now);

/* A metadump in bounded pieces (crawler.c): a cursor item walks each chosen
 * class's LRU segments from the head, mc_dump_step writing the lines of at
 * most max_items items per call under the class lock; between calls the
 * lock is free and the cursor keeps the place (items moved or removed
 * meanwhile are simply seen or not, as in memcached's crawler dump). */
struct mc_dump {
    bool want[MC_MAX_CLASSES]; /* classes to dump */
    int id, seg;
    bool linked; /* cur is in class id's segment seg */
    mc_item cur; /* the cursor (state MC_ST_CRAWLER); last: mc_item ends in data[] */
};
void mc_dump_init(struct mc_dump *d);
/* Returns true when every chosen class has been dumped. */
bool mc_dump_step(struct mc_dump *d, struct evbuffer *out, unsigned max_items);
/* Take the cursor out (a dump abandoned half way: the client left). */
void mc_dump_abort(struct mc_dump *d);
/* Ask the maintainer thread to crawl every class soon (lru_crawler crawl). */
void mc_crawl_request(void);
/* A crawl asked for (or the periodic one) has not finished yet. */
bool mc_crawler_running(void);
/* Copy the items that matter to stats. */
uint64_t mc_curr_items(void);

/* Crawler / maintainer (crawler.c). */
int mc_maintainer_start(void);
void mc_maintainer_stop(void);
/* Reclaim expired items of one class segment; bounded; used by the crawler
 * thread and tests. Returns items reclaimed. */
uint64_t mc_crawl_class(int id, uint64_t limit);

/* LRU step on the class (caller holds lock): keep HOT/WARM within their
 * share and pull one item from the COLD tail for reuse if need_space.
 * Returns a freed chunk when need_space and one could be evicted. */
mc_item *mc_lru_pull_locked(int id, bool need_space);
/* The same; from_maintainer: the background juggle, exact shares (a
 * setter lets a segment run 64 items over its share first). */
mc_item *mc_lru_pull(int id, bool need_space, bool from_maintainer);

/* "stats detail" (prefix.c): per-prefix counts while mc_detail_enabled. */
enum mc_prefix_op { MC_PREFIX_GET, MC_PREFIX_SET, MC_PREFIX_DEL };
extern _Atomic bool mc_detail_enabled;
extern char mc_prefix_delimiter; /* -D */
void mc_prefix_record(const char *key, size_t nkey, enum mc_prefix_op op, bool hit);
void mc_prefix_dump(struct evbuffer *out); /* "PREFIX <p> get N hit N set N del N" lines */
void mc_prefix_clear(void);
static inline bool mc_detail_on(void) { return atomic_load_explicit(&mc_detail_enabled, memory_order_relaxed); }

/* Global counters kept by the store (relaxed atomics; not on the get path). */
struct mc_store_stats {
    _Atomic uint64_t curr_items, total_items, evictions, reclaimed, expired_unfetched, evicted_unfetched, outofmemory,
        crawler_reclaimed, slabs_moved, hash_expansions, lru_crawler_starts, malloc_fails, maintainer_juggles;
};
extern struct mc_store_stats mc_sstats;

/* Flush state. */
extern _Atomic uint32_t mc_oldest_live; /* rel time; 0 = none */
extern _Atomic uint64_t mc_oldest_cas;

#endif
