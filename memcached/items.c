/* items: the item store on top of slabs (memory) and assoc (hash table):
 * allocation with eviction, link/unlink, the segmented LRU (HOT, WARM,
 * COLD per class), expiry and flush rules, and the storage commands every
 * protocol shares (store, delete, incr/decr, touch, flush).
 *
 * Reads never take a class lock: a hit only sets the FETCHED/ACTIVE bits
 * and the access time. Items move between segments when a class allocates
 * (mc_lru_pull_locked) and when the crawler walks; eviction takes from the
 * COLD tail, giving ACTIVE items a second chance in WARM. */
#include "memcached/mc.h"
#include "memcached/watch.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "common/log.h"
#include "memcached/extstore.h"

struct mc_store_stats mc_sstats;
_Atomic uint32_t mc_oldest_live;
_Atomic uint64_t mc_oldest_cas;
_Atomic uint32_t mc_current_time;
long mc_process_started;
static _Atomic uint64_t cas_counter;

void mc_clock_update(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (!mc_process_started)
        mc_process_started = (long)ts.tv_sec - 2;
    atomic_store_explicit(&mc_current_time, (uint32_t)(ts.tv_sec - mc_process_started), memory_order_relaxed);
}

uint32_t mc_realtime(int64_t exptime)
{
    if (exptime == 0)
        return 0;
    if (exptime < 0)
        return 1; /* in the past: expired at once */
    if (exptime > MC_REALTIME_MAXDELTA) {
        if (exptime <= mc_process_started)
            return 1;
        int64_t rel = exptime - mc_process_started;
        return rel > UINT32_MAX ? UINT32_MAX : (uint32_t)rel;
    }
    return (uint32_t)(exptime + mc_now());
}

uint64_t mc_next_cas(void) { return atomic_fetch_add_explicit(&cas_counter, 1, memory_order_relaxed) + 1; }
/* -e restarts (restart.c): the counter saved and restored. */
uint64_t mc_cas_current(void) { return atomic_load(&cas_counter); }
void mc_cas_restore(uint64_t v) { atomic_store(&cas_counter, v); }
uint64_t mc_curr_items(void) { return atomic_load(&mc_sstats.curr_items); }

bool mc_item_live(const mc_item *it, uint32_t now)
{
    if (it->exptime != 0 && it->exptime <= now)
        return false;
    uint32_t ol = atomic_load_explicit(&mc_oldest_live, memory_order_relaxed);
    if (ol != 0 && ol <= now && it->atime <= ol)
        return false;
    uint64_t oc = atomic_load_explicit(&mc_oldest_cas, memory_order_relaxed);
    if (oc != 0 && it->cas < oc)
        return false;
    return true;
}

/* ---- LRU lists (class lock held) ---- */

static void lru_link(struct mc_class *c, mc_item *it, int seg)
{
    it->state = MC_ST_WITH_SEG(it->state, seg);
    it->prev = NULL;
    it->next = c->head[seg];
    if (it->next)
        it->next->prev = it;
    c->head[seg] = it;
    if (!c->tail[seg])
        c->tail[seg] = it;
    c->count[seg]++;
}

static void lru_unlink(struct mc_class *c, mc_item *it)
{
    int seg = MC_ST_SEG(it->state);
    if (c->head[seg] == it)
        c->head[seg] = it->next;
    if (c->tail[seg] == it)
        c->tail[seg] = it->prev;
    if (it->next)
        it->next->prev = it->prev;
    if (it->prev)
        it->prev->next = it->next;
    it->prev = it->next = NULL;
    c->count[seg]--;
}

static void lru_move(struct mc_class *c, mc_item *it, int seg)
{
    lru_unlink(c, it);
    lru_link(c, it, seg);
}

/* Remove a linked item from hash and LRU. Caller holds its stripe and its
 * class lock; the chunk is returned to the caller (state 0). */
static void unlink_both(struct mc_class *c, mc_item *it, uint64_t hv)
{
    if (__builtin_expect(mc_item_is_ext(it), 0))
        mc_ext_release(it); /* its page loses the bytes */
    mc_assoc_delete(it->data, it->nkey, hv);
    lru_unlink(c, it);
    it->state = 0;
    c->bytes -= mc_item_total(it->nkey, it->nbytes);
    atomic_fetch_sub_explicit(&mc_sstats.curr_items, 1, memory_order_relaxed);
}

bool mc_item_evict_for_move(mc_item *it)
{
    uint64_t hv = mc_hash(it->data, it->nkey);
    if (!mc_key_trylock(hv))
        return false;
    struct mc_class *c = &mc_classes[it->clsid];
    unlink_both(c, it, hv);
    c->evicted++;
    mc_slabs_free_locked(it);
    mc_key_unlock(hv);
    atomic_fetch_add_explicit(&mc_sstats.evictions, 1, memory_order_relaxed);
    return true;
}

bool mc_item_reclaim_for_move(mc_item *it)
{
    uint64_t hv = mc_hash(it->data, it->nkey);
    if (!mc_key_trylock(hv))
        return false;
    struct mc_class *c = &mc_classes[it->clsid];
    unlink_both(c, it, hv);
    c->reclaimed++;
    mc_slabs_free_locked(it);
    mc_key_unlock(hv);
    atomic_fetch_add_explicit(&mc_sstats.reclaimed, 1, memory_order_relaxed);
    return true;
}

bool mc_item_rescue_for_move(mc_item *it, mc_item *dst)
{
    uint64_t hv = mc_hash(it->data, it->nkey);
    if (!mc_key_trylock(hv))
        return false;
    struct mc_class *c = &mc_classes[it->clsid];
    bool chunked = mc_item_chunked(it);
    /* A chunked item's head fills its chunk (the chunk list and the start
     * of the value); its chunks name their head: they follow it. */
    memcpy(dst, it, chunked ? (size_t)c->size : mc_item_total(it->nkey, it->nbytes));
    if (chunked) {
        uint32_t n = mc_item_nchunks(it->nkey, it->nbytes);
        mc_item **ch = mc_item_chunks(dst);
        for (uint32_t i = 0; i < n; i++)
            ch[i]->hnext = dst;
    }
    /* The same item at a new address: hash chain, then its LRU place
     * (neighbours, or the segment's head/tail; crawler cursors next to
     * it keep theirs). Counts and bytes do not change. */
    mc_assoc_delete(it->data, it->nkey, hv);
    dst->hnext = NULL;
    mc_assoc_insert(dst, hv);
    int seg = MC_ST_SEG(it->state);
    if (dst->prev)
        dst->prev->next = dst;
    else
        c->head[seg] = dst;
    if (dst->next)
        dst->next->prev = dst;
    else
        c->tail[seg] = dst;
    it->state = 0;
    it->prev = it->next = NULL;
    mc_key_unlock(hv);
    return true;
}

/* Try to take item it (linked, in class c) out for reuse or freeing.
 * Returns true with the chunk unlinked (state 0). */
static bool try_reclaim(struct mc_class *c, mc_item *it, bool *was_expired)
{
    uint64_t hv = mc_hash(it->data, it->nkey);
    if (!mc_key_trylock(hv))
        return false;
    *was_expired = !mc_item_live(it, mc_now());
    unlink_both(c, it, hv);
    mc_key_unlock(hv);
    return true;
}

mc_item *mc_lru_pull_locked(int id, bool need_space) { return mc_lru_pull(id, need_space, false); }

mc_item *mc_lru_pull(int id, bool need_space, bool from_maintainer)
{
    struct mc_class *c = &mc_classes[id];
    uint64_t total = c->count[MC_LRU_HOT] + c->count[MC_LRU_WARM] + c->count[MC_LRU_COLD];
    bool segmented = mc_settings.lru_segmented;
    /* Flat mode: HOT and WARM drain into COLD (left over from a switch). */
    int hot_pct = !segmented ? 0 : mc_settings.hot_pct > 0 ? mc_settings.hot_pct : 20;
    int warm_pct = !segmented ? 0 : mc_settings.warm_pct > 0 ? mc_settings.warm_pct : 40;
    /* Keep HOT and WARM within their shares: the maintainer thread does it
     * in the background (need_space false); a setter takes two steps when
     * a segment has run well over its share (many sets between ticks). */
    uint64_t slack = need_space || from_maintainer ? 0 : 64;
    for (int n = 0; n < 2 && c->count[MC_LRU_HOT] > total * (uint64_t)hot_pct / 100 + slack; n++) {
        mc_item *it = c->tail[MC_LRU_HOT];
        while (it && (it->state & MC_ST_CRAWLER)) /* a crawler or metadump cursor */
            it = it->prev;
        if (!it)
            break;
        if (segmented && (mc_bits(it) & MC_IT_ACTIVE)) {
            mc_bits_clear(it, MC_IT_ACTIVE);
            lru_move(c, it, MC_LRU_WARM);
            c->moves_to_warm++;
        } else {
            lru_move(c, it, MC_LRU_COLD);
            c->moves_to_cold++;
        }
    }
    for (int n = 0; n < 2 && c->count[MC_LRU_WARM] > total * (uint64_t)warm_pct / 100 + slack; n++) {
        mc_item *it = c->tail[MC_LRU_WARM];
        while (it && (it->state & MC_ST_CRAWLER)) /* a crawler or metadump cursor */
            it = it->prev;
        if (!it)
            break;
        if (segmented && (mc_bits(it) & MC_IT_ACTIVE)) {
            mc_bits_clear(it, MC_IT_ACTIVE);
            lru_move(c, it, MC_LRU_WARM);
            c->moves_within_lru++;
        } else {
            lru_move(c, it, MC_LRU_COLD);
            c->moves_to_cold++;
        }
    }
    /* The maintainer reclaims expired items at each segment's tail (as
     * memcached's juggle does; counted as reclaimed) ... */
    if (from_maintainer) {
        for (int seg = 0; seg < MC_LRU_N; seg++) {
            mc_item *it = c->tail[seg];
            for (int n = 0; it && n < 8; n++) {
                mc_item *prev = it->prev;
                bool expired = false;
                if (!(it->state & MC_ST_CRAWLER)) {
                    if (mc_item_live(it, mc_now()) || !try_reclaim(c, it, &expired))
                        break;
                    c->reclaimed++;
                    atomic_fetch_add_explicit(&mc_sstats.reclaimed, 1, memory_order_relaxed);
                    if (!(mc_bits(it) & MC_IT_FETCHED)) {
                        c->expired_unfetched++;
                        atomic_fetch_add_explicit(&mc_sstats.expired_unfetched, 1, memory_order_relaxed);
                    }
                    mc_slabs_free_locked(it);
                }
                it = prev;
            }
        }
    }
    /* ... and rescues what was read twice from COLD's tail
     * into WARM before it is evicted (memcached's juggle does the same). */
    if (from_maintainer && segmented) {
        mc_item *it = c->tail[MC_LRU_COLD];
        for (int n = 0; it && n < 5; n++) {
            mc_item *prev = it->prev;
            if (!(it->state & MC_ST_CRAWLER)) {
                if (!(mc_bits(it) & MC_IT_ACTIVE) || !mc_item_live(it, mc_now()))
                    break;
                mc_bits_clear(it, MC_IT_ACTIVE);
                lru_move(c, it, MC_LRU_WARM);
                c->moves_to_warm++;
            }
            it = prev;
        }
    }
    if (!need_space)
        return NULL;
    /* Evict: COLD tail first, then WARM, then HOT; from TEMP only what has
     * expired. */
    static const int order[4] = { MC_LRU_COLD, MC_LRU_WARM, MC_LRU_HOT, MC_LRU_TEMP };
    for (int s = 0; s < 4; s++) {
        int seg = order[s];
        mc_item *it = c->tail[seg];
        /* 8 candidates, not counting the items given a second chance (at
         * most 64 of those per call, then ACTIVE ones go too). */
        for (int tries = 0, chances = 0; it && tries < 8; tries++) {
            mc_item *prev = it->prev;
            if (it->state & MC_ST_CRAWLER) {
                it = prev;
                continue;
            }
            bool live = mc_item_live(it, mc_now());
            if (live && seg == MC_LRU_TEMP) {
                it = prev;
                continue;
            }
            if (live && seg == MC_LRU_COLD && (mc_bits(it) & MC_IT_ACTIVE) && chances < 64) {
                /* A second chance: to WARM, or in flat mode back to the
                 * head of the one LRU. */
                mc_bits_clear(it, MC_IT_ACTIVE);
                if (segmented) {
                    lru_move(c, it, MC_LRU_WARM);
                    c->moves_to_warm++;
                } else {
                    lru_move(c, it, MC_LRU_COLD);
                    c->moves_within_lru++;
                }
                it = prev;
                tries--;
                chances++;
                continue;
            }
            if (live && mc_settings.no_evict)
                return NULL;
            bool expired;
            if (!try_reclaim(c, it, &expired)) {
                it = prev;
                continue;
            }
            bool fetched = mc_bits(it) & MC_IT_FETCHED;
            if (expired) {
                c->reclaimed++;
                atomic_fetch_add_explicit(&mc_sstats.reclaimed, 1, memory_order_relaxed);
                if (!fetched) {
                    c->expired_unfetched++;
                    atomic_fetch_add_explicit(&mc_sstats.expired_unfetched, 1, memory_order_relaxed);
                }
            } else {
                if (mc_watching(MC_WATCH_EVICTIONS))
                    mc_watch_eviction(it);
                c->evicted++;
                if (it->exptime)
                    c->evicted_nonzero++;
                c->evicted_time = mc_now() - it->atime;
                if (mc_bits(it) & MC_IT_ACTIVE)
                    c->evicted_active++;
                atomic_fetch_add_explicit(&mc_sstats.evictions, 1, memory_order_relaxed);
                if (!fetched) {
                    c->evicted_unfetched++;
                    atomic_fetch_add_explicit(&mc_sstats.evicted_unfetched, 1, memory_order_relaxed);
                }
            }
            if (mc_item_chunked(it))
                mc_slabs_free_chunks(it);
            it->bits = 0;
            return it;
        }
    }
    return NULL;
}

/* Age of the oldest item of a class (its COLD tail, else WARM, else HOT);
 * read without the class lock, so only a hint. */
static uint32_t tail_age(int id, uint32_t now)
{
    struct mc_class *c = &mc_classes[id];
    for (int seg = MC_LRU_COLD; seg >= 0; seg--) {
        mc_item *t = __atomic_load_n(&c->tail[seg], __ATOMIC_RELAXED);
        if (t) {
            uint32_t a = __atomic_load_n(&t->atime, __ATOMIC_RELAXED);
            return now > a ? now - a : 0;
        }
    }
    return 0;
}

uint32_t mc_lru_tail_age(int id) { return tail_age(id, mc_now()); }

/* Should class id take a page from another class rather than evict its
 * own items? Yes when its share of recent allocations is well above its
 * share of pages (the size mix changed), or when some class with spare
 * pages holds items much older than ours, or has many times our pages. */
static bool slab_should_move(int id)
{
    uint32_t now = mc_now();
    uint32_t mine = tail_age(id, now);
    uint64_t my_pages = mc_classes[id].pages;
    uint64_t all_demand = 0, all_pages = 0;
    for (int i = 1; i <= mc_nclasses; i++) {
        all_demand += atomic_load_explicit(&mc_classes[i].demand, memory_order_relaxed);
        all_pages += __atomic_load_n(&mc_classes[i].pages, __ATOMIC_RELAXED);
    }
    uint64_t my_demand = atomic_load_explicit(&mc_classes[id].demand, memory_order_relaxed);
    /* its demand share is over twice its page share */
    if (all_demand && all_pages && (double)my_demand / (double)all_demand > 2.0 * (double)my_pages / (double)all_pages)
        return true;
    for (int i = 1; i <= mc_nclasses; i++) {
        if (i == id)
            continue;
        uint64_t p = __atomic_load_n(&mc_classes[i].pages, __ATOMIC_RELAXED);
        if (p < 2)
            continue;
        if (p > 4 * (my_pages + 1) || tail_age(i, now) > 2 * mine + 2)
            return true;
    }
    return false;
}

/* A chunk of class id, evicting or moving a page when memory is full. */
static mc_item *alloc_chunk(int id, uint8_t state, mc_item *owner, enum mc_alloc_err *err)
{
    struct mc_class *c = &mc_classes[id];
    atomic_fetch_add_explicit(&c->demand, c->size, memory_order_relaxed);
    pthread_mutex_lock(&c->lock);
    mc_item *it = mc_slabs_alloc_locked(id);
    if (it) {
        mc_lru_pull_locked(id, false);
    } else {
        /* Memory is full. Before evicting our own items, see whether
         * another class holds colder items or far more pages: then move a
         * page here (memcached's slab automover, done inline). */
        if ((++c->alloc_fail_ticks & 3) == 0 && slab_should_move(id) && mc_slabs_steal_page(id))
            it = mc_slabs_alloc_locked(id);
        if (!it && (it = mc_lru_pull_locked(id, true)) != NULL)
            c->direct_reclaims++; /* the setter made its own room */
    }
    if (!it && mc_slabs_steal_page(id))
        it = mc_slabs_alloc_locked(id);
    if (!it) {
        c->outofmemory++;
        pthread_mutex_unlock(&c->lock);
        atomic_fetch_add_explicit(&mc_sstats.outofmemory, 1, memory_order_relaxed);
        *err = MC_ALLOC_NO_MEMORY;
        return NULL;
    }
    it->state = state;
    it->hnext = owner; /* a page mover reads it under this lock */
    it->bits = 0;
    it->clsid = (uint8_t)id;
    it->nkey = 0;
    it->nbytes = 0;
    pthread_mutex_unlock(&c->lock);
    return it;
}

mc_item *mc_item_alloc(const char *key, size_t nkey, uint32_t flags, uint32_t exptime, size_t nbytes,
                       enum mc_alloc_err *err)
{
    size_t total = mc_item_total(nkey, nbytes);
    int id = mc_slabs_clsid(total);
    if (!id || nkey > MC_KEY_MAX || nbytes > UINT32_MAX) {
        *err = MC_ALLOC_TOO_LARGE;
        return NULL;
    }
    mc_item *it = alloc_chunk(id, 0, NULL, err);
    if (!it)
        return NULL;
    it->hnext = it->prev = it->next = NULL;
    it->nkey = (uint8_t)nkey;
    it->flags = flags;
    it->exptime = exptime;
    it->atime = mc_now();
    it->cas = 0;
    memcpy(it->data, key, nkey);
    if (mc_total_chunked(total)) {
        /* The rest of the value in full chunks of this class and a last
         * one of the smallest class it fits. */
        uint32_t n = mc_item_nchunks(nkey, nbytes);
        mc_item **ch = mc_item_chunks(it);
        size_t fixed = mc_round8(MC_ITEM_HDR + nkey) + (size_t)n * sizeof(mc_item *);
        size_t left = nbytes - (mc_chunk_max - fixed), cap = mc_chunk_max - MC_ITEM_HDR;
        for (uint32_t i = 0; i < n; i++) {
            size_t part = left < cap ? left : cap;
            left -= part;
            int cid = mc_slabs_clsid(MC_ITEM_HDR + part);
            ch[i] = alloc_chunk(cid, MC_ST_CHUNK, it, err);
            /* A tail class may hold only other items' tails (nothing in its
             * LRU to evict): then a full chunk, whose class can evict. */
            if (!ch[i] && cid != mc_nclasses)
                ch[i] = alloc_chunk(mc_nclasses, MC_ST_CHUNK, it, err);
            if (!ch[i]) {
                for (uint32_t j = 0; j < i; j++)
                    mc_slabs_free_chunk(ch[j]);
                it->nbytes = 0; /* not chunked: freed as one chunk */
                mc_item_free(it);
                return NULL;
            }
        }
    }
    it->nbytes = (uint32_t)nbytes;
    *err = MC_ALLOC_OK;
    return it;
}

void mc_value_read(mc_item *it, size_t off, char *dst, size_t n)
{
    while (n) {
        char *p;
        size_t k = mc_value_seg(it, off, &p);
        if (k > n)
            k = n;
        memcpy(dst, p, k);
        dst += k;
        off += k;
        n -= k;
    }
}

void mc_value_write(mc_item *it, size_t off, const char *src, size_t n)
{
    while (n) {
        char *p;
        size_t k = mc_value_seg(it, off, &p);
        if (k > n)
            k = n;
        memcpy(p, src, k);
        src += k;
        off += k;
        n -= k;
    }
}

void mc_value_copy_item(mc_item *dst, size_t off, mc_item *src)
{
    for (size_t o = 0; o < src->nbytes;) {
        char *p;
        size_t k = mc_value_seg(src, o, &p);
        mc_value_write(dst, off + o, p, k);
        o += k;
    }
}

void mc_item_free(mc_item *it)
{
    struct mc_class *c = &mc_classes[it->clsid];
    pthread_mutex_lock(&c->lock);
    mc_slabs_free_locked(it);
    pthread_mutex_unlock(&c->lock);
}

void mc_item_unlink_locked(mc_item *it, uint64_t hv)
{
    struct mc_class *c = &mc_classes[it->clsid];
    pthread_mutex_lock(&c->lock);
    unlink_both(c, it, hv);
    mc_slabs_free_locked(it);
    pthread_mutex_unlock(&c->lock);
}

_Thread_local uint8_t mc_find_miss;
_Thread_local uint8_t mc_hit_clsid;

mc_item *mc_item_find_locked(const char *key, size_t nkey, uint64_t hv)
{
    mc_find_miss = MC_MISS_NONE;
    mc_item *it = mc_assoc_find(key, nkey, hv);
    if (!it) {
        if (mc_watching(MC_WATCH_FETCHERS))
            mc_watch_item_get(key, nkey, 0, 0, 0);
        return NULL;
    }
    uint32_t now = mc_now();
    if (!mc_item_live(it, now)) {
        mc_find_miss = it->exptime != 0 && it->exptime <= now ? MC_MISS_EXPIRED : MC_MISS_FLUSHED;
        /* Expired or flushed: freed now, its memory reused ("reclaimed"). */
        struct mc_class *c = &mc_classes[it->clsid];
        pthread_mutex_lock(&c->lock);
        c->reclaimed++;
        if (!(mc_bits(it) & MC_IT_FETCHED))
            c->expired_unfetched++;
        pthread_mutex_unlock(&c->lock);
        atomic_fetch_add_explicit(&mc_sstats.reclaimed, 1, memory_order_relaxed);
        if (!(mc_bits(it) & MC_IT_FETCHED))
            atomic_fetch_add_explicit(&mc_sstats.expired_unfetched, 1, memory_order_relaxed);
        mc_item_unlink_locked(it, hv);
        if (mc_watching(MC_WATCH_FETCHERS))
            mc_watch_item_get(key, nkey, mc_find_miss == MC_MISS_EXPIRED ? 3 : 2, 0, 0);
        return NULL;
    }
    mc_hit_clsid = it->clsid;
    if (mc_watching(MC_WATCH_FETCHERS))
        mc_watch_item_get(key, nkey, 1, it->clsid, it->nbytes);
    return it;
}

void mc_item_bump(mc_item *it)
{
    uint8_t b = mc_bits(it);
    int seg = MC_ST_SEG(__atomic_load_n(&it->state, __ATOMIC_RELAXED));
    if (seg < MC_LRU_N)
        atomic_fetch_add_explicit(&mc_classes[it->clsid].hits_to[seg], 1, memory_order_relaxed);
    if (!(b & MC_IT_FETCHED))
        mc_bits_set(it, MC_IT_FETCHED);
    else if (!(b & MC_IT_ACTIVE))
        mc_bits_set(it, MC_IT_ACTIVE);
    uint32_t now = mc_now();
    if (it->atime != now)
        it->atime = now;
}

void mc_item_link_locked(mc_item *it, mc_item *old, uint64_t hv)
{
    if (old)
        mc_item_unlink_locked(old, hv);
    it->cas = mc_next_cas();
    it->atime = mc_now();
    mc_assoc_insert(it, hv);
    struct mc_class *c = &mc_classes[it->clsid];
    pthread_mutex_lock(&c->lock);
    it->state = MC_ST_LINKED;
    uint32_t now = it->atime;
    int seg = mc_settings.lru_segmented ? MC_LRU_HOT : MC_LRU_COLD;
    if (mc_settings.temp_lru && it->exptime != 0 && it->exptime >= now &&
        it->exptime - now <= (uint32_t)mc_settings.temporary_ttl)
        seg = MC_LRU_TEMP;
    lru_link(c, it, seg);
    c->bytes += mc_item_total(it->nkey, it->nbytes);
    pthread_mutex_unlock(&c->lock);
    atomic_fetch_add_explicit(&mc_sstats.curr_items, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&mc_sstats.total_items, 1, memory_order_relaxed);
}

void mc_item_swap_locked(mc_item *it, mc_item *old, uint64_t hv)
{
    uint64_t cas = old->cas;
    uint32_t atime = old->atime;
    uint8_t bits = mc_bits(old) & (MC_IT_FETCHED | MC_IT_ACTIVE);
    mc_item_unlink_locked(old, hv);
    it->cas = cas;
    it->atime = atime;
    mc_bits_set(it, bits);
    mc_assoc_insert(it, hv);
    struct mc_class *c = &mc_classes[it->clsid];
    pthread_mutex_lock(&c->lock);
    it->state = MC_ST_LINKED;
    lru_link(c, it, MC_LRU_COLD); /* it was at the cold end already */
    c->bytes += mc_item_total(it->nkey, it->nbytes);
    pthread_mutex_unlock(&c->lock);
    atomic_fetch_add_explicit(&mc_sstats.curr_items, 1, memory_order_relaxed);
}

enum mc_status mc_store(mc_item *it, enum mc_store_op op, uint64_t cas_in, uint64_t *cas_out)
{
    uint64_t hv = mc_hash(it->data, it->nkey);
    enum mc_status st = MC_NOT_STORED;
    mc_item *linked = NULL;
    mc_key_lock(hv);
    mc_item *old = mc_item_find_locked(it->data, it->nkey, hv);
    switch (op) {
    case MC_OP_SET:
        if (cas_in && (!old || old->cas != cas_in)) {
            st = old ? MC_EXISTS : MC_NOT_FOUND;
            break;
        }
        linked = it;
        break;
    case MC_OP_ADD:
        if (old) {
            mc_item_bump(old); /* as memcached: a failed add refreshes the old item */
            st = MC_NOT_STORED;
        } else {
            linked = it;
        }
        break;
    case MC_OP_REPLACE:
        if (!old)
            st = MC_NOT_STORED;
        else if (cas_in && old->cas != cas_in)
            st = MC_EXISTS;
        else
            linked = it;
        break;
    case MC_OP_CAS:
        if (!old)
            st = MC_NOT_FOUND;
        else if (old->cas != cas_in)
            st = MC_EXISTS;
        else
            linked = it;
        break;
    case MC_OP_APPEND:
    case MC_OP_PREPEND:
        if (!old || mc_item_is_ext(old)) { /* on disk: NOT_STORED, as memcached 1.6.18 */
            st = MC_NOT_STORED;
            break;
        }
        if (cas_in && old->cas != cas_in) {
            st = MC_EXISTS;
            break;
        }
        {
            enum mc_alloc_err err;
            mc_item *n =
                mc_item_alloc(old->data, old->nkey, old->flags, old->exptime, (size_t)old->nbytes + it->nbytes, &err);
            if (!n) {
                st = err == MC_ALLOC_TOO_LARGE ? MC_TOO_LARGE : MC_NO_MEMORY;
                break;
            }
            /* The allocation may have evicted old (only via trylock on
             * other stripes, so not ours): old is still valid here. */
            if (op == MC_OP_APPEND) {
                mc_value_copy_item(n, 0, old);
                mc_value_copy_item(n, old->nbytes, it);
            } else {
                mc_value_copy_item(n, 0, it);
                mc_value_copy_item(n, it->nbytes, old);
            }
            mc_item_free(it);
            it = NULL;
            linked = n;
        }
        break;
    }
    if (linked) {
        mc_item_link_locked(linked, old, hv);
        if (cas_out)
            *cas_out = linked->cas;
        st = MC_STORED;
    }
    if (mc_watching(MC_WATCH_MUTATIONS)) {
        /* memcached's item_store line: its status and command numbers */
        static const uint8_t cmds[] = { [MC_OP_SET] = 2,    [MC_OP_ADD] = 1,     [MC_OP_REPLACE] = 3,
                                        [MC_OP_APPEND] = 4, [MC_OP_PREPEND] = 5, [MC_OP_CAS] = 6 };
        const mc_item *x = linked ? linked : it;
        int status = st == MC_STORED ? 1 : st == MC_NOT_STORED ? 0 : (int)st;
        mc_watch_item_store(x->data, x->nkey, status, op == MC_OP_SET && cas_in ? 6 : cmds[op], x->exptime, x->clsid,
                            x->nbytes, mc_watch_cfd);
    }
    mc_key_unlock(hv);
    if (!linked && it)
        mc_item_free(it);
    return st;
}

enum mc_status mc_delete(const char *key, size_t nkey, uint64_t cas_in)
{
    uint64_t hv = mc_hash(key, nkey);
    enum mc_status st;
    mc_key_lock(hv);
    mc_item *it = mc_item_find_locked(key, nkey, hv);
    if (!it) {
        st = MC_NOT_FOUND;
    } else if (cas_in && it->cas != cas_in) {
        st = MC_EXISTS;
    } else {
        mc_item_unlink_locked(it, hv);
        st = MC_DELETED;
    }
    mc_key_unlock(hv);
    return st;
}

/* Decimal u64 of a value; false if not all digits or too long. Leading and
 * trailing spaces are tolerated (memcached pads decremented values). */
static bool parse_value_u64(const char *s, size_t n, uint64_t *out)
{
    size_t i = 0;
    while (i < n && s[i] == ' ')
        i++;
    if (i == n)
        return false;
    uint64_t v = 0;
    size_t digits = 0;
    for (; i < n && s[i] >= '0' && s[i] <= '9'; i++, digits++) {
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    while (i < n && (s[i] == ' ' || s[i] == '\r' || s[i] == '\n'))
        i++;
    if (i != n || digits == 0)
        return false;
    *out = v;
    return true;
}

enum mc_status mc_arith(const char *key, size_t nkey, bool incr, uint64_t delta, uint64_t cas_in, uint64_t *result,
                        uint64_t *cas_out)
{
    uint64_t hv = mc_hash(key, nkey);
    enum mc_status st;
    mc_key_lock(hv);
    mc_item *it = mc_item_find_locked(key, nkey, hv);
    uint64_t v;
    if (!it) {
        st = MC_NOT_FOUND;
    } else if (cas_in && it->cas != cas_in) {
        st = MC_EXISTS;
    } else if (mc_item_chunked(it) || mc_item_is_ext(it) || !parse_value_u64(mc_value(it), it->nbytes, &v)) {
        st = MC_NON_NUMERIC;
    } else {
        if (incr)
            v += delta; /* wraps at 2^64 */
        else
            v = delta > v ? 0 : v - delta;
        char buf[24];
        int len = snprintf(buf, sizeof buf, "%" PRIu64, v);
        if ((uint32_t)len <= it->nbytes) {
            /* As memcached: the new number fits, so it is written in place,
             * padded with spaces ("10" decremented reads "9 "); a new CAS,
             * no new item. Readers copy under the stripe we hold. */
            memcpy(mc_value(it), buf, (size_t)len);
            memset(mc_value(it) + len, ' ', it->nbytes - (uint32_t)len);
            it->cas = mc_next_cas();
            mc_item_bump(it);
            *result = v;
            if (cas_out)
                *cas_out = it->cas;
            mc_key_unlock(hv);
            return MC_OK;
        }
        enum mc_alloc_err err;
        mc_item *n = mc_item_alloc(key, nkey, it->flags, it->exptime, (size_t)len, &err);
        if (!n) {
            st = MC_NO_MEMORY;
        } else {
            memcpy(mc_value(n), buf, (size_t)len);
            mc_item_bump(it);
            mc_item_link_locked(n, it, hv);
            *result = v;
            if (cas_out)
                *cas_out = n->cas;
            st = MC_OK;
        }
    }
    mc_key_unlock(hv);
    return st;
}

enum mc_status mc_touch(const char *key, size_t nkey, uint32_t exptime)
{
    uint64_t hv = mc_hash(key, nkey);
    enum mc_status st = MC_NOT_FOUND;
    mc_key_lock(hv);
    mc_item *it = mc_item_find_locked(key, nkey, hv);
    if (it) {
        it->exptime = exptime;
        mc_item_bump(it);
        st = MC_TOUCHED;
    }
    mc_key_unlock(hv);
    return st;
}

void mc_flush(int64_t delay)
{
    if (delay > 0) {
        uint32_t t = mc_realtime(delay);
        atomic_store(&mc_oldest_live, t > 1 ? t - 1 : 1);
    } else if (mc_settings.no_cas) {
        /* -C: as memcached, by time alone, so what is set in the same
         * second as the flush is flushed too. */
        atomic_store(&mc_oldest_live, mc_now());
        atomic_store(&mc_oldest_cas, 0);
    } else {
        /* Everything stored so far: its CAS is below the next one. */
        atomic_store(&mc_oldest_cas, mc_next_cas());
        atomic_store(&mc_oldest_live, 0);
    }
}

void mc_cachedump(struct evbuffer *out, int id, uint32_t limit)
{
    struct mc_class *c = &mc_classes[id];
    size_t written = 0;
    uint32_t shown = 0;
    pthread_mutex_lock(&c->lock);
    for (int seg = MC_LRU_HOT; seg < MC_LRU_N; seg++) {
        for (mc_item *it = c->head[seg]; it; it = it->next) {
            if (it->state & MC_ST_CRAWLER)
                continue;
            if ((limit && shown >= limit) || written > (2u << 20))
                goto done;
            long exp = it->exptime == 0 ? 0 : (long)it->exptime + mc_process_started;
            int n = evbuffer_add_printf(out, "ITEM %.*s [%u b; %ld s]\r\n", (int)it->nkey, it->data, it->nbytes, exp);
            if (n > 0)
                written += (size_t)n;
            shown++;
        }
    }
done:
    pthread_mutex_unlock(&c->lock);
}

void mc_metadump_line(struct evbuffer *out, mc_item *it, uint32_t now)
{
    (void)now;
    long exp = it->exptime == 0 ? -1 : (long)it->exptime + mc_process_started;
    /* Keys are URL-encoded, as memcached does: binary-protocol keys may
     * hold spaces or line ends. */
    char key[3 * MC_KEY_MAX + 1];
    size_t kn = 0;
    for (size_t i = 0; i < it->nkey; i++) {
        unsigned char ch = (unsigned char)it->data[i];
        if (ch <= ' ' || ch >= 0x7f || ch == '%') {
            static const char hex[] = "0123456789ABCDEF";
            key[kn++] = '%';
            key[kn++] = hex[ch >> 4];
            key[kn++] = hex[ch & 15];
        } else {
            key[kn++] = (char)ch;
        }
    }
    evbuffer_add_printf(out, "key=%.*s exp=%ld la=%ld cas=%" PRIu64 " fetch=%s cls=%d size=%zu\n", (int)kn, key, exp,
                        (long)it->atime + mc_process_started, it->cas, (mc_bits(it) & MC_IT_FETCHED) ? "yes" : "no",
                        it->clsid, mc_item_total(it->nkey, it->nbytes));
}

/* -e restarts (restart.c): put an item found in the memory file back in
 * the hash table and its LRU segment, keeping its CAS and access time.
 * Start-up only (no other thread runs). */
void mc_item_restore_link(mc_item *it)
{
    struct mc_class *c = &mc_classes[it->clsid];
    int seg = MC_ST_SEG(it->state);
    mc_assoc_insert(it, mc_hash(it->data, it->nkey));
    pthread_mutex_lock(&c->lock);
    it->state = MC_ST_LINKED;
    lru_link(c, it, seg);
    c->bytes += mc_item_total(it->nkey, it->nbytes);
    pthread_mutex_unlock(&c->lock);
    atomic_fetch_add_explicit(&mc_sstats.curr_items, 1, memory_order_relaxed);
}
