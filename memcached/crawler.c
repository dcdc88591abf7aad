/* crawler: the maintainer thread. Ticks the clock, grows the hash table a
 * batch of buckets at a time, and every few seconds walks each class's LRU
 * segments from the tail with a cursor item, reclaiming expired and
 * flushed items so their memory comes back without waiting for eviction.
 *
 * The walk holds a class lock for at most a few hundred steps and only
 * tries stripe locks, so it never stalls a worker for long. */
#include "memcached/mc.h"
#include "memcached/extstore.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

#include <event2/buffer.h>

static pthread_t thread;
static _Atomic bool running;
static _Atomic bool crawl_requested;
static _Atomic bool crawl_running;

void mc_crawl_request(void)
{
    atomic_store(&crawl_running, true); /* until the maintainer has walked every class */
    atomic_store(&crawl_requested, true);
}

bool mc_crawler_running(void) { return atomic_load(&crawl_running); }

static void cursor_remove(struct mc_class *c, mc_item *cur, int seg)
{
    if (c->head[seg] == cur)
        c->head[seg] = cur->next;
    if (c->tail[seg] == cur)
        c->tail[seg] = cur->prev;
    if (cur->next)
        cur->next->prev = cur->prev;
    if (cur->prev)
        cur->prev->next = cur->next;
    cur->prev = cur->next = NULL;
}

static void cursor_insert_tail(struct mc_class *c, mc_item *cur, int seg)
{
    cur->next = NULL;
    cur->prev = c->tail[seg];
    if (cur->prev)
        cur->prev->next = cur;
    else
        c->head[seg] = cur;
    c->tail[seg] = cur;
}

/* Move the cursor one place towards the head, past item it. */
static void cursor_step(struct mc_class *c, mc_item *cur, mc_item *it, int seg)
{
    cursor_remove(c, cur, seg);
    cur->next = it;
    cur->prev = it->prev;
    if (it->prev)
        it->prev->next = cur;
    else
        c->head[seg] = cur;
    it->prev = cur;
}

uint64_t mc_crawl_class(int id, uint64_t limit)
{
    struct mc_class *c = &mc_classes[id];
    uint64_t reclaimed = 0, seen = 0;
    mc_item cur;
    memset(&cur, 0, sizeof cur);
    cur.state = MC_ST_CRAWLER;
    for (int seg = 0; seg < MC_LRU_N && seen < limit; seg++) {
        pthread_mutex_lock(&c->lock);
        if (!c->tail[seg]) {
            pthread_mutex_unlock(&c->lock);
            continue;
        }
        cursor_insert_tail(c, &cur, seg);
        for (;;) {
            int steps = 0;
            mc_item *it;
            while ((it = cur.prev) != NULL && steps < 256 && seen < limit) {
                cursor_step(c, &cur, it, seg);
                steps++;
                if (it->state & MC_ST_CRAWLER)
                    continue;
                seen++;
                c->crawler_items_checked++;
                if (mc_item_live(it, mc_now()))
                    continue;
                uint64_t hv = mc_hash(it->data, it->nkey);
                if (!mc_key_trylock(hv))
                    continue;
                if (mc_item_is_ext(it))
                    mc_ext_release(it); /* its page loses the bytes */
                mc_assoc_delete(it->data, it->nkey, hv);
                /* lru_unlink is static in items.c; unlink by hand. */
                int s = MC_ST_SEG(it->state);
                if (c->head[s] == it)
                    c->head[s] = it->next;
                if (c->tail[s] == it)
                    c->tail[s] = it->prev;
                if (it->next)
                    it->next->prev = it->prev;
                if (it->prev)
                    it->prev->next = it->next;
                it->prev = it->next = NULL;
                c->count[s]--;
                c->bytes -= mc_item_total(it->nkey, it->nbytes);
                if (!(mc_bits(it) & MC_IT_FETCHED))
                    c->expired_unfetched++;
                it->state = 0;
                mc_slabs_free_locked(it);
                mc_key_unlock(hv);
                atomic_fetch_sub_explicit(&mc_sstats.curr_items, 1, memory_order_relaxed);
                atomic_fetch_add_explicit(&mc_sstats.crawler_reclaimed, 1, memory_order_relaxed);
                c->crawler_reclaimed++;
                reclaimed++;
            }
            if (!it || seen >= limit) {
                cursor_remove(c, &cur, seg);
                pthread_mutex_unlock(&c->lock);
                break;
            }
            pthread_mutex_unlock(&c->lock);
            sched_yield();
            pthread_mutex_lock(&c->lock);
        }
    }
    return reclaimed;
}

/* Move the cursor one place towards the tail, past item it (= cur->next). */
static void cursor_step_down(struct mc_class *c, mc_item *cur, mc_item *it, int seg)
{
    cursor_remove(c, cur, seg);
    cur->prev = it;
    cur->next = it->next;
    if (it->next)
        it->next->prev = cur;
    else
        c->tail[seg] = cur;
    it->next = cur;
}

void mc_dump_init(struct mc_dump *d)
{
    memset(d, 0, sizeof *d);
    d->cur.state = MC_ST_CRAWLER;
    d->id = 1;
    d->seg = 0;
}

bool mc_dump_step(struct mc_dump *d, struct evbuffer *out, unsigned max_items)
{
    unsigned done = 0;
    while (d->id <= mc_nclasses) {
        if (!d->want[d->id]) {
            d->id++;
            continue;
        }
        struct mc_class *c = &mc_classes[d->id];
        uint32_t now = mc_now();
        pthread_mutex_lock(&c->lock);
        if (!d->linked) {
            /* Start of a segment: the cursor goes in at its head. */
            d->cur.prev = NULL;
            d->cur.next = c->head[d->seg];
            if (c->head[d->seg])
                c->head[d->seg]->prev = &d->cur;
            else
                c->tail[d->seg] = &d->cur;
            c->head[d->seg] = &d->cur;
            d->linked = true;
        }
        mc_item *it;
        while ((it = d->cur.next) != NULL && done < max_items) {
            cursor_step_down(c, &d->cur, it, d->seg);
            if (it->state & MC_ST_CRAWLER)
                continue;
            done++;
            if (mc_item_live(it, now))
                mc_metadump_line(out, it, now);
        }
        if (!it) { /* segment finished */
            cursor_remove(c, &d->cur, d->seg);
            d->linked = false;
            if (++d->seg == MC_LRU_N) {
                d->seg = 0;
                d->id++;
            }
        }
        pthread_mutex_unlock(&c->lock);
        if (done >= max_items)
            return d->id > mc_nclasses;
    }
    return true;
}

void mc_dump_abort(struct mc_dump *d)
{
    if (!d->linked)
        return;
    struct mc_class *c = &mc_classes[d->id];
    pthread_mutex_lock(&c->lock);
    cursor_remove(c, &d->cur, d->seg);
    pthread_mutex_unlock(&c->lock);
    d->linked = false;
}

static void *maintainer(void *arg)
{
    (void)arg;
    uint64_t ticks = 0;
    while (atomic_load(&running)) {
        mc_clock_update();
        bool busy = mc_assoc_maintain(mc_curr_items());
        /* Crawl every 5 s (50 ticks of 100 ms). */
        ++ticks;
        atomic_fetch_add_explicit(&mc_sstats.maintainer_juggles, 1, memory_order_relaxed); /* passes */
        if (ticks % 10 == 0) {
            mc_slabs_decay_demand();
            /* The automover's other half, as memcached's: a class holding
             * more than 2.5 pages of free chunks gives pages back to the
             * global pool (its live items rescued into its free chunks),
             * where any class that grows takes them without a malloc. */
            /* Only while within -m: over it (first pages granted to many
             * classes) a pooled page could not be reused, and the
             * maintainer frees pooled pages instead. */
            if (mc_settings.slab_reassign && mc_settings.slab_automove > 0 && mc_slabs_malloced() <= mc_slabs_limit()) {
                for (int id = 1; id <= mc_nclasses; id++) {
                    struct mc_class *c = &mc_classes[id];
                    for (int moved = 0; moved < 16; moved++) {
                        uint64_t freec = __atomic_load_n(&c->free_count, __ATOMIC_RELAXED);
                        uint64_t pages = __atomic_load_n(&c->pages, __ATOMIC_RELAXED);
                        if (pages < 3 || freec * 2 < (uint64_t)c->perpage * 5)
                            break;
                        if (mc_slabs_reassign(id, 0) != MC_REASSIGN_OK)
                            break;
                    }
                }
            }
        }
        /* The LRU maintainer's juggle: keep each class's HOT and WARM within
         * their shares between allocations too (as memcached's background
         * thread does), a bounded number of moves per class per tick. */
        if (mc_settings.lru_maintainer) {
            for (int id = 1; id <= mc_nclasses; id++) {
                struct mc_class *c = &mc_classes[id];
                uint64_t any = 0;
                for (int seg = 0; seg < MC_LRU_N; seg++)
                    any |= __atomic_load_n(&c->count[seg], __ATOMIC_RELAXED);
                if (!any)
                    continue;
                pthread_mutex_lock(&c->lock);
                for (int n = 0; n < 16; n++)
                    mc_lru_pull(id, false, true);
                pthread_mutex_unlock(&c->lock);
            }
        }
        /* cache_memlimit lowered: give pages back, a few per tick. */
        if (mc_slabs_release_over_limit(16) > 0)
            busy = true;
        bool asked = atomic_exchange(&crawl_requested, false);
        if (mc_settings.lru_crawler && (asked || ticks % 50 == 0)) {
            atomic_fetch_add_explicit(&mc_sstats.lru_crawler_starts, 1, memory_order_relaxed);
            if (!asked)
                atomic_store(&crawl_running, true);
            for (int id = 1; id <= mc_nclasses && atomic_load(&running); id++)
                mc_crawl_class(id, 100000);
            if (!atomic_load(&crawl_requested))
                atomic_store(&crawl_running, false);
        }
        if (!busy) {
            struct timespec ts = { 0, 100 * 1000 * 1000 };
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

int mc_maintainer_start(void)
{
    atomic_store(&running, true);
    if (pthread_create(&thread, NULL, maintainer, NULL) != 0) {
        atomic_store(&running, false);
        return -1;
    }
    return 0;
}

void mc_maintainer_stop(void)
{
    if (!atomic_load(&running))
        return;
    atomic_store(&running, false);
    pthread_join(thread, NULL);
}
