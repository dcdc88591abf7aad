/* slabs: item memory. Pages of mc_page_size bytes are cut into equal chunks
 * of one slab class; classes grow by the factor -f from the smallest item
 * (-n) to half a page, plus one class of -I sized chunks for the biggest
 * items. Pages come from malloc until -m is reached; after that a class that
 * runs dry evicts from its own LRU, and a class that owns nothing to evict
 * takes a page from the class with the most pages (mc_slabs_steal_page).
 *
 * Each class's free chunks and LRU share the class lock (mc.h). This file
 * never looks at keys except through items.c's unlink when it moves a page. */
#include "memcached/mc.h"
#include "memcached/watch.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

struct mc_class mc_classes[MC_MAX_CLASSES];
int mc_nclasses;
uint64_t mc_page_size;
uint32_t mc_chunk_max = 1u << 30;

/* Classes whose lock this thread holds besides a chunked head's own class
 * while it frees the head's chunks (a page move holds its victim and maybe
 * the receiving class). */
static _Thread_local int held_a, held_b;

uint32_t mc_item_nchunks(size_t nkey, size_t nbytes)
{
    if (!mc_total_chunked(mc_item_total(nkey, nbytes)))
        return 0;
    size_t fixed = mc_round8(MC_ITEM_HDR + nkey);
    size_t head = mc_chunk_max - fixed;                          /* value bytes in the head, before pointers */
    size_t per = mc_chunk_max - MC_ITEM_HDR - sizeof(mc_item *); /* each chunk also costs a pointer */
    return (uint32_t)((nbytes - head + per - 1) / per);
}

size_t mc_value_seg(mc_item *it, size_t off, char **p)
{
    if (!mc_item_chunked(it)) {
        *p = it->data + it->nkey + off;
        return it->nbytes - off;
    }
    uint32_t n = mc_item_nchunks(it->nkey, it->nbytes);
    size_t fixed = mc_round8(MC_ITEM_HDR + it->nkey) + (size_t)n * sizeof(mc_item *);
    size_t headcap = mc_chunk_max - fixed;
    if (off < headcap) {
        *p = (char *)it + fixed + off;
        return headcap - off;
    }
    size_t cap = mc_chunk_max - MC_ITEM_HDR;
    size_t rest = off - headcap, i = rest / cap, o = rest % cap;
    *p = mc_item_chunks(it)[i]->data + o;
    size_t end = headcap + (i + 1) * cap;
    if (end > it->nbytes)
        end = it->nbytes;
    return end - off;
}

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic uint64_t malloced;
static _Atomic uint64_t mem_limit;

uint64_t mc_slabs_malloced(void) { return atomic_load(&malloced); }

/* The global page pool (memcached's class 0): pages no class owns, still
 * allocated, handed to the next class that grows. Fed by "slabs reassign
 * N 0"; emptied first when cache_memlimit shrinks. pool_lock. */
static char **pool_pages;
static uint64_t pool_n, pool_cap;

uint64_t mc_slabs_pool_pages(void)
{
    pthread_mutex_lock(&pool_lock);
    uint64_t n = pool_n;
    pthread_mutex_unlock(&pool_lock);
    return n;
}
/* -e: pages come from the memory file's mapping (restart.c) instead of
 * malloc: region_next pages handed out so far, freed ones kept on a stack
 * for reuse (region_lock, a leaf). */
static pthread_mutex_t region_lock = PTHREAD_MUTEX_INITIALIZER;
static char *region_base;
static uint64_t region_pages, region_next;
static char **region_free;
static uint64_t region_nfree;

void mc_slabs_set_region(char *base, uint64_t pages)
{
    region_base = base;
    region_pages = pages;
    region_free = calloc(pages ? pages : 1, sizeof *region_free);
}

static char *page_alloc(void)
{
    if (!region_base)
        return malloc(mc_page_size);
    char *page = NULL;
    pthread_mutex_lock(&region_lock);
    if (region_nfree)
        page = region_free[--region_nfree];
    else if (region_next < region_pages && region_free)
        page = region_base + region_next++ * mc_page_size;
    pthread_mutex_unlock(&region_lock);
    return page;
}

/* -L: pages are carved from one block reserved at start (hugepages.c),
 * under pool_lock; they are never given back to malloc. */
static char *arena;
static uint64_t arena_size, arena_used;
bool mc_slabs_preallocated(void) { return arena != NULL; }

static bool grow(int id);
static void free_page(char *page);

static char *page_new(void)
{
    if (!arena)
        return page_alloc();
    if (arena_size - arena_used < mc_page_size)
        return NULL;
    char *p = arena + arena_used;
    arena_used += mc_page_size;
    return p;
}

uint64_t mc_slabs_limit(void) { return atomic_load(&mem_limit); }
/* Set when cache_memlimit goes below what is allocated: only then do
 * classes give up pages to get under the limit. Memory over the limit for
 * another reason (a class's first page, which any class may always have,
 * as in memcached) stays. */
static atomic_bool limit_lowered;

void mc_slabs_set_limit(uint64_t bytes)
{
    atomic_store(&mem_limit, bytes);
    if (atomic_load(&malloced) > bytes)
        atomic_store(&limit_lowered, true);
}

int mc_slabs_init(void)
{
    uint64_t max = mc_settings.item_size_max;
    /* The largest class's chunk (memcached's slab_chunk_max, half a page by
     * default): items over it are chained chunks (mc.h), so pages stay
     * 1 MB whatever -I is, as in memcached 1.6. */
    uint64_t chunk_max = mc_settings.slab_chunk_max > 0 ? (uint64_t)mc_settings.slab_chunk_max : (512u << 10);
    if (chunk_max > max)
        chunk_max = max;
    mc_page_size = chunk_max > (1u << 20) ? chunk_max : (1u << 20);
    mc_chunk_max = (uint32_t)chunk_max;
    mem_limit = mc_settings.maxbytes;
    /* As memcached: T_MEMD_INITIAL_MALLOC sets where the count of
     * allocated bytes starts (its test suite fakes a 4 GB cache so). */
    const char *initial = getenv("T_MEMD_INITIAL_MALLOC");
    if (initial) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(initial, &end, 10);
        if (!errno && end != initial && !*end)
            malloced = v;
    }
    double factor = mc_settings.factor > 1.0 ? mc_settings.factor : 1.25;
    /* memcached 1.6.18's class sizes exactly, so class ids (stats items,
     * stats slabs, slabs reassign, lru_crawler) mean the same classes:
     * from its 48-byte item header + -n, times -f, each rounded up to 8
     * bytes (compounded), up to slab_chunk_max / f; then one class of
     * slab_chunk_max. Our items are a few bytes smaller than memcached's
     * (52-byte header with the CAS, no CRLF or key terminator stored), so
     * an item lands in the same class or one below. */
    uint32_t size = 48 + (uint32_t)(mc_settings.chunk_min > 0 ? mc_settings.chunk_min : 48);
    int id = 0;
    while (++id < MC_MAX_CLASSES - 1) {
        if ((double)size >= (double)chunk_max / factor)
            break;
        if (size % 8)
            size += 8 - size % 8;
        mc_classes[id].size = size;
        size = (uint32_t)(size * factor);
    }
    mc_classes[id].size = (uint32_t)chunk_max; /* the last class: slab_chunk_max */
    id++;
    mc_nclasses = id - 1;
    for (int i = 1; i <= mc_nclasses; i++) {
        struct mc_class *c = &mc_classes[i];
        pthread_mutex_init(&c->lock, NULL);
        c->perpage = (uint32_t)(mc_page_size / c->size);
        if (mc_settings.verbose > 1) /* memcached's line, on stderr as it prints it */
            fprintf(stderr, "slab class %3d: chunk size %9u perslab %7u\n", i, c->size, c->perpage);
    }
    if (mc_settings.large_pages && !region_base) { /* -e's memory file comes first */
        arena = mc_large_arena(mem_limit);
        if (!arena)
            log_warn("Failed to allocate requested memory in one large chunk. Will allocate in smaller chunks");
        arena_size = arena ? mem_limit : 0;
    }
    /* As memcached when it preallocates: a page for every class now. */
    for (int i = 1; arena && i <= mc_nclasses; i++) {
        if (!grow(i)) {
            log_error("Error while preallocating slab memory! If using -L or other prealloc options, max memory "
                      "must be at least %d megabytes.",
                      mc_nclasses);
            return -1;
        }
    }
    return 0;
}

void mc_slabs_decay_demand(void)
{
    for (int i = 1; i <= mc_nclasses; i++) {
        uint64_t d = atomic_load_explicit(&mc_classes[i].demand, memory_order_relaxed);
        if (d)
            atomic_store_explicit(&mc_classes[i].demand, d / 2, memory_order_relaxed);
    }
}

int mc_slabs_clsid(size_t total)
{
    if (total == 0 || mc_nclasses == 0 || total > mc_settings.item_size_max)
        return 0;
    if (total >= mc_classes[mc_nclasses].size)
        return mc_nclasses; /* fits exactly, or a chunked item's head */
    /* Binary search: the first class whose chunk fits. */
    int lo = 1, hi = mc_nclasses;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (mc_classes[mid].size >= total)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static void freelist_push(struct mc_class *c, mc_item *it)
{
    it->state = MC_ST_FREE;
    it->prev = NULL;
    it->next = c->free_head;
    if (c->free_head)
        c->free_head->prev = it;
    c->free_head = it;
    c->free_count++;
}

static void freelist_remove(struct mc_class *c, mc_item *it)
{
    if (it->prev)
        it->prev->next = it->next;
    else
        c->free_head = it->next;
    if (it->next)
        it->next->prev = it->prev;
    it->prev = it->next = NULL;
    c->free_count--;
}

static int page_list_add(struct mc_class *c, char *page)
{
    if (c->pages == c->page_cap) {
        uint64_t cap = c->page_cap ? c->page_cap * 2 : 16;
        char **n = realloc(c->page_list, cap * sizeof *n);
        if (!n)
            return -1;
        c->page_list = n;
        c->page_cap = cap;
    }
    c->page_list[c->pages++] = page;
    return 0;
}

/* Put every chunk of a fresh page on the class's free list. Walk backwards
 * so chunks come off the list in address order. */
static void split_page(struct mc_class *c, char *page)
{
    for (int64_t i = (int64_t)c->perpage - 1; i >= 0; i--) {
        mc_item *it = (mc_item *)(page + (uint64_t)i * c->size);
        it->bits = 0;
        freelist_push(c, it);
    }
}

static void free_page(char *page);

static bool grow(int id)
{
    struct mc_class *c = &mc_classes[id];
    pthread_mutex_lock(&pool_lock);
    uint64_t lim = atomic_load(&mem_limit);
    if (pool_n > 0 && atomic_load(&malloced) <= lim) {
        char *pooled = pool_pages[--pool_n];
        pthread_mutex_unlock(&pool_lock);
        if (page_list_add(c, pooled) < 0) {
            pthread_mutex_lock(&pool_lock);
            pool_pages[pool_n++] = pooled;
            pthread_mutex_unlock(&pool_lock);
            return false;
        }
        split_page(c, pooled);
        return true;
    }
    /* As memcached: a class with no page yet may always get its first one,
     * so that -m smaller than the class count still stores something. */
    if (atomic_load(&malloced) + mc_page_size > lim && c->pages > 0) {
        pthread_mutex_unlock(&pool_lock);
        return false;
    }
    char *page = page_new();
    if (!page) {
        atomic_fetch_add(&mc_sstats.malloc_fails, 1);
        pthread_mutex_unlock(&pool_lock);
        return false;
    }
    atomic_fetch_add(&malloced, mc_page_size);
    pthread_mutex_unlock(&pool_lock);
    if (page_list_add(c, page) < 0) {
        free_page(page);
        return false;
    }
    split_page(c, page);
    return true;
}

mc_item *mc_slabs_alloc_locked(int id)
{
    struct mc_class *c = &mc_classes[id];
    if (!c->free_head && !grow(id))
        return NULL;
    mc_item *it = c->free_head;
    freelist_remove(c, it);
    it->state = 0;
    it->bits = 0;
    it->clsid = (uint8_t)id;
    return it;
}

/* Give back the further chunks of a chunked head (whose class lock the
 * caller holds). Other classes' locks are taken here unless this thread
 * holds them already; only the holder of the largest class's lock ever
 * waits for another class's lock while holding one, so this cannot
 * deadlock (mc.h's order, extended). */
void mc_slabs_free_chunks(mc_item *head)
{
    uint32_t n = mc_item_nchunks(head->nkey, head->nbytes);
    mc_item **ch = mc_item_chunks(head);
    for (uint32_t i = 0; i < n; i++) {
        mc_item *k = ch[i];
        if (!k)
            continue;
        ch[i] = NULL;
        int id = k->clsid;
        bool held = id == head->clsid || id == held_a || id == held_b;
        struct mc_class *kc = &mc_classes[id];
        if (!held)
            pthread_mutex_lock(&kc->lock);
        k->hnext = NULL;
        k->bits = 0;
        freelist_push(kc, k);
        if (!held)
            pthread_mutex_unlock(&kc->lock);
    }
}

void mc_slabs_free_chunk(mc_item *chunk)
{
    struct mc_class *c = &mc_classes[chunk->clsid];
    pthread_mutex_lock(&c->lock);
    chunk->hnext = NULL;
    chunk->bits = 0;
    freelist_push(c, chunk);
    pthread_mutex_unlock(&c->lock);
}

void mc_slabs_free_locked(mc_item *it)
{
    struct mc_class *c = &mc_classes[it->clsid];
    if (mc_item_chunked(it))
        mc_slabs_free_chunks(it);
    it->bits = 0;
    freelist_push(c, it);
}

/* items.c: unlink a linked item whose class lock the caller holds, if its
 * stripe can be taken without waiting. */
bool mc_item_evict_for_move(mc_item *it);
/* items.c: the same for an expired item (counted as reclaimed, not evicted). */
bool mc_item_reclaim_for_move(mc_item *it);
/* items.c: copy a live linked item into dst (a chunk of the same class,
 * off the free list) and put the copy in its place; it is left unlinked
 * (state 0). False when its stripe is held. */
bool mc_item_rescue_for_move(mc_item *it, mc_item *dst);

/* A chunk on a page being emptied: evict the item it belongs to (its head
 * is in the largest class's LRU; that lock only tried, unless held). */
static bool evict_chunk_owner(struct mc_class *v, mc_item *chunk)
{
    struct mc_class *lc = &mc_classes[mc_nclasses];
    bool lheld = v == lc || held_b == mc_nclasses;
    if (!lheld && pthread_mutex_trylock(&lc->lock) != 0)
        return false;
    mc_item *owner = chunk->hnext;
    bool ok = owner && (owner->state & MC_ST_LINKED) && mc_item_evict_for_move(owner);
    if (!lheld)
        pthread_mutex_unlock(&lc->lock);
    return ok;
}

/* A chunk on a page being emptied, copied into dst (a free chunk of the
 * same class on another page) and put in its place in its item's chunk
 * list (memcached's chunk rescue). Needs the largest class's lock (for the
 * item's state; only tried) and the item's stripe (no reader is copying
 * the value meanwhile; only tried). */
static bool rescue_chunk(struct mc_class *v, mc_item *chunk, mc_item *dst)
{
    struct mc_class *lc = &mc_classes[mc_nclasses];
    bool lheld = v == lc || held_b == mc_nclasses;
    if (!lheld && pthread_mutex_trylock(&lc->lock) != 0)
        return false;
    bool ok = false;
    mc_item *owner = chunk->hnext;
    if (owner && (owner->state & MC_ST_LINKED)) {
        uint64_t hv = mc_hash(owner->data, owner->nkey);
        if (mc_key_trylock(hv)) {
            uint32_t n = mc_item_nchunks(owner->nkey, owner->nbytes);
            mc_item **ch = mc_item_chunks(owner);
            for (uint32_t i = 0; i < n; i++) {
                if (ch[i] != chunk)
                    continue;
                freelist_remove(v, dst);
                memcpy(dst, chunk, v->size);
                dst->state = MC_ST_CHUNK;
                dst->hnext = owner;
                ch[i] = dst;
                chunk->hnext = NULL;
                freelist_push(v, chunk); /* the old place: free, taken with the page */
                v->chunks_rescued++;
                ok = true;
                break;
            }
            mc_key_unlock(hv);
        }
    }
    if (!lheld)
        pthread_mutex_unlock(&lc->lock);
    return ok;
}

static bool on_page(const struct mc_class *v, const char *page, const mc_item *it)
{
    return (const char *)it >= page && (const char *)it < page + (uint64_t)v->perpage * v->size;
}

/* Empty the first (oldest) page of class v (caller holds v->lock), the
 * page memcached's mover takes (its items the oldest; the free chunks to
 * rescue into are on the newer pages): a live item is rescued into a free chunk of the class on
 * another page when there is one (slab_reassign_rescues), else evicted
 * (slab_reassign_evictions_nomem); an expired one is reclaimed. Then its
 * chunks come off the free list. Returns the page, now owned by the
 * caller, or NULL when a chunk on it is busy (being filled, or its key's
 * stripe is held): try again later. */
static char *take_first_page(struct mc_class *v)
{
    if (v->pages == 0)
        return NULL;
    held_a = (int)(v - mc_classes);
    char *page = v->page_list[0];
    /* Rescue targets: the free list walked once (for a chunk, from its
     * head again when the walk runs out: evicting chunked items frees
     * chunks meanwhile); chunks of this page itself are skipped. */
    mc_item *scan = v->free_head;
    uint32_t now = mc_now();
    for (uint32_t i = 0; i < v->perpage; i++) {
        mc_item *it = (mc_item *)(page + (uint64_t)i * v->size);
        if (it->state & MC_ST_FREE)
            continue;
        if (it->state & MC_ST_CHUNK) { /* part of a chunked item: copied elsewhere, or the item goes */
            if (!scan)
                scan = v->free_head; /* chunks freed by evictions meanwhile */
            while (scan && on_page(v, page, scan))
                scan = scan->next;
            if (scan) {
                mc_item *dst = scan;
                scan = scan->next;
                if (rescue_chunk(v, it, dst))
                    continue;
            }
            if (!evict_chunk_owner(v, it))
                return NULL;
            v->pages_evicted++;
            continue;
        }
        if (!(it->state & MC_ST_LINKED))
            return NULL; /* a chunk someone is filling */
        if (!mc_item_live(it, now)) {
            if (!mc_item_reclaim_for_move(it))
                return NULL;
            continue;
        }
        while (scan && on_page(v, page, scan))
            scan = scan->next;
        if (scan) { /* a chunked head too: its chunks follow it (as memcached copies its headers) */
            mc_item *dst = scan;
            scan = scan->next;
            freelist_remove(v, dst);
            dst->state = 0;
            if (!mc_item_rescue_for_move(it, dst)) {
                freelist_push(v, dst);
                return NULL;
            }
            freelist_push(v, it); /* the old chunk: free, taken below */
            v->pages_rescued++;
            continue;
        }
        if (!mc_item_evict_for_move(it))
            return NULL;
        v->pages_evicted++;
    }
    for (uint32_t i = 0; i < v->perpage; i++)
        freelist_remove(v, (mc_item *)(page + (uint64_t)i * v->size));
    memmove(v->page_list, v->page_list + 1, (size_t)(v->pages - 1) * sizeof *v->page_list);
    v->pages--;
    v->pages_moved_out++;
    return page;
}

/* Give a page taken by take_first_page to class d (caller holds d->lock). */
static bool give_page(struct mc_class *d, char *page)
{
    if (page_list_add(d, page) < 0)
        return false;
    d->pages_moved_in++;
    split_page(d, page);
    atomic_fetch_add(&mc_sstats.slabs_moved, 1);
    return true;
}

static void free_page(char *page)
{
    if (arena && page >= arena && page < arena + arena_size)
        return; /* -L: its memory stays reserved (counted as allocated) */
    if (region_base) {
        pthread_mutex_lock(&region_lock);
        region_free[region_nfree++] = page;
        pthread_mutex_unlock(&region_lock);
    } else {
        free(page);
    }
    atomic_fetch_sub(&malloced, mc_page_size);
}

bool mc_slabs_steal_page(int id)
{
    if (!mc_settings.slab_reassign || mc_settings.slab_automove == 0)
        return false; /* "slabs automove 0": pages stay where they are */
    /* Victim: the class with the most pages (at least two, or one when
     * the asking class has none at all). */
    int victim = 0;
    uint64_t best = 0;
    for (int i = 1; i <= mc_nclasses; i++) {
        if (i == id)
            continue;
        uint64_t p = __atomic_load_n(&mc_classes[i].pages, __ATOMIC_RELAXED);
        if (p > best) {
            best = p;
            victim = i;
        }
    }
    struct mc_class *dst = &mc_classes[id];
    if (!victim || best == 0 || (best < 2 && dst->pages > 0))
        return false;
    struct mc_class *v = &mc_classes[victim];
    if (pthread_mutex_trylock(&v->lock) != 0)
        return false;
    bool ok = false;
    held_b = id;
    char *page = take_first_page(v);
    held_a = held_b = 0;
    if (page) {
        ok = give_page(dst, page);
        if (!ok) { /* give it back rather than lose it */
            v->page_list[v->pages++] = page;
            split_page(v, page);
        }
    }
    pthread_mutex_unlock(&v->lock);
    if (ok && mc_watching(MC_WATCH_SYSEVENTS))
        mc_watch_slab_move(victim, id);
    return ok;
}

enum mc_reassign mc_slabs_reassign(int src, int dst)
{
    if (src == dst)
        return MC_REASSIGN_SAME;
    if (src == -1) { /* any class with a page to spare, the one with most pages */
        uint64_t best = 1;
        for (int i = 1; i <= mc_nclasses; i++) {
            uint64_t p = __atomic_load_n(&mc_classes[i].pages, __ATOMIC_RELAXED);
            if (i != dst && p > best) {
                best = p;
                src = i;
            }
        }
        if (src == -1)
            return MC_REASSIGN_NOSPARE;
    }
    if (src == 0 && dst >= 1 && dst <= mc_nclasses) {
        /* From memcached's global pool: NOSPARE once it is empty. */
        pthread_mutex_lock(&pool_lock);
        char *pg = pool_n ? pool_pages[--pool_n] : NULL;
        pthread_mutex_unlock(&pool_lock);
        if (!pg)
            return MC_REASSIGN_NOSPARE;
        struct mc_class *d = &mc_classes[dst];
        pthread_mutex_lock(&d->lock);
        bool ok = give_page(d, pg);
        pthread_mutex_unlock(&d->lock);
        if (!ok)
            free_page(pg);
        atomic_fetch_add(&mc_sstats.slabs_moved, 1);
        return MC_REASSIGN_OK;
    }
    if (src < 1 || src > mc_nclasses || dst < 0 || dst > mc_nclasses)
        return MC_REASSIGN_BADCLASS;
    struct mc_class *v = &mc_classes[src];
    /* One lock at a time: the page leaves src, then joins dst (or, for
     * dst 0, memcached's global pool, goes back to the allocator). */
    pthread_mutex_lock(&v->lock);
    if (v->pages < 2) {
        pthread_mutex_unlock(&v->lock);
        return MC_REASSIGN_NOSPARE;
    }
    char *page = take_first_page(v);
    held_a = 0;
    pthread_mutex_unlock(&v->lock);
    if (!page)
        return MC_REASSIGN_BUSY;
    if (dst == 0) { /* to the global pool (freed if the pool can't grow) */
        pthread_mutex_lock(&pool_lock);
        bool pooled = false;
        if (pool_n == pool_cap) {
            uint64_t cap = pool_cap ? pool_cap * 2 : 16;
            char **n = realloc(pool_pages, cap * sizeof *n);
            if (n) {
                pool_pages = n;
                pool_cap = cap;
            }
        }
        if (pool_n < pool_cap) {
            pool_pages[pool_n++] = page;
            pooled = true;
        }
        pthread_mutex_unlock(&pool_lock);
        if (!pooled)
            free_page(page);
        atomic_fetch_add(&mc_sstats.slabs_moved, 1);
        return MC_REASSIGN_OK;
    }
    struct mc_class *d = &mc_classes[dst];
    pthread_mutex_lock(&d->lock);
    bool ok = give_page(d, page);
    pthread_mutex_unlock(&d->lock);
    if (!ok)
        free_page(page);
    return MC_REASSIGN_OK;
}

uint64_t mc_slabs_release_over_limit(uint64_t max_pages)
{
    uint64_t freed = 0;
    /* The pool's pages go first: nothing is evicted for them. */
    pthread_mutex_lock(&pool_lock);
    while (freed < max_pages && pool_n > 0 && atomic_load(&malloced) > atomic_load(&mem_limit)) {
        free_page(pool_pages[--pool_n]);
        freed++;
    }
    pthread_mutex_unlock(&pool_lock);
    if (atomic_load(&malloced) <= atomic_load(&mem_limit))
        atomic_store(&limit_lowered, false);
    while (freed < max_pages && atomic_load(&limit_lowered) && atomic_load(&malloced) > atomic_load(&mem_limit)) {
        /* From the class whose LRU tail is oldest (its coldest items go),
         * the one with the most pages among equals; each keeps its last
         * one. Not simply the most pages: a class that just grew by taking
         * pages would lose its newest page, and with it its newest items. */
        int victim = 0;
        uint64_t best = 1;
        uint32_t best_age = 0;
        for (int i = 1; i <= mc_nclasses; i++) {
            uint64_t p = __atomic_load_n(&mc_classes[i].pages, __ATOMIC_RELAXED);
            if (p < 2)
                continue;
            uint32_t age = mc_lru_tail_age(i);
            if (!victim || age > best_age || (age == best_age && p > best)) {
                best = p;
                best_age = age;
                victim = i;
            }
        }
        if (!victim)
            break;
        struct mc_class *v = &mc_classes[victim];
        pthread_mutex_lock(&v->lock);
        char *page = v->pages > 1 ? take_first_page(v) : NULL;
        held_a = 0;
        pthread_mutex_unlock(&v->lock);
        if (!page)
            break; /* busy: the maintainer comes back next tick */
        free_page(page);
        freed++;
    }
    return freed;
}

/* ------------------------------------------------------------------ */
/* -e: the memory file's pages (restart.c), single-threaded (start-up
 * before the loops run, or after they stopped). */

/* What each page of the mapping holds: its class, 0 for the global pool,
 * -1 unused. out has region_pages entries. */
void mc_slabs_region_map(int16_t *out)
{
    for (uint64_t i = 0; i < region_pages; i++)
        out[i] = -1;
    for (int id = 1; id <= mc_nclasses; id++)
        for (uint64_t p = 0; p < mc_classes[id].pages; p++)
            out[(uint64_t)(mc_classes[id].page_list[p] - region_base) / mc_page_size] = (int16_t)id;
    for (uint64_t p = 0; p < pool_n; p++)
        out[(uint64_t)(pool_pages[p] - region_base) / mc_page_size] = 0;
}

/* Give page index i back to class id (0: the global pool), as it was
 * before a restart; its chunks are not on the free list yet
 * (mc_slabs_restore_free). */
int mc_slabs_adopt_page(uint64_t i, int id)
{
    if (i >= region_pages || id < 0 || id > mc_nclasses)
        return -1;
    char *page = region_base + i * mc_page_size;
    if (i >= region_next) {
        /* pages skipped over stay free for later */
        for (uint64_t k = region_next; k < i; k++)
            region_free[region_nfree++] = region_base + k * mc_page_size;
        region_next = i + 1;
    } else {
        /* taken back from the free stack */
        for (uint64_t k = 0; k < region_nfree; k++)
            if (region_free[k] == page) {
                region_free[k] = region_free[--region_nfree];
                break;
            }
    }
    atomic_fetch_add(&malloced, mc_page_size);
    if (id == 0) {
        if (pool_n == pool_cap) {
            uint64_t cap = pool_cap ? pool_cap * 2 : 16;
            char **n = realloc(pool_pages, cap * sizeof *n);
            if (!n)
                return -1;
            pool_pages = n;
            pool_cap = cap;
        }
        pool_pages[pool_n++] = page;
        return 0;
    }
    return page_list_add(&mc_classes[id], page);
}

void mc_slabs_restore_free(mc_item *it)
{
    it->bits = 0;
    freelist_push(&mc_classes[it->clsid], it);
}
