/* extstore: item values kept in pages of files instead of memory, as
 * memcached 1.6's external storage (see extstore.h for who does what).
 *
 * On disk a page is a run of records, each
 *     struct ext_rec (32 bytes: CRC-32, lengths, CAS, flags) | key | value
 * padded to 8 bytes. The CRC covers everything after its own field, so a
 * torn or foreign record is never served: a read checks the CRC, the key,
 * the CAS and the page's version (pages are reused under a new version;
 * every header item still naming the old one then misses).
 *
 * Threads: one write thread (moving values out, compacting, freeing
 * pages) and an IO pool of ext_threads on common/work for reads. Neither
 * ever blocks an event loop; the loops only queue reads. */
#include "memcached/extstore.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "common/hash.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/stats.h"
#include "common/work.h"
#include "memcached/session.h"

struct mc_ext_settings mc_ext = {
    .page_size = 64ull << 20,
    .wbuf_size = 4ull << 20,
    .threads = 1,
    .io_depth = 1,
    .item_size = 512,
    .item_age = UINT32_MAX,
    .recache_rate = 2000,
    .max_sleep = 1000000,
    .max_frag = 0.8,
};

/* ---- records ---- */

struct ext_rec {
    uint32_t crc; /* of the rest of the record */
    uint32_t nbytes;
    uint64_t cas;
    uint32_t flags;
    uint32_t exptime;
    uint8_t nkey;
    uint8_t pad[7];
};
#define REC_HDR sizeof(struct ext_rec)

static uint32_t rec_len(size_t nkey, size_t nbytes) { return (uint32_t)mc_round8(REC_HDR + nkey + nbytes); }

static uint32_t rec_crc(const char *rec, uint32_t reclen)
{
    return hash_crc32(rec + sizeof(uint32_t), reclen - sizeof(uint32_t));
}

/* A record at rec of at most avail bytes: its length when whole and its
 * CRC holds, else 0. Reads nothing past avail (fuzzed: fuzz_mc_ext). */
uint32_t mc_ext_rec_check(const char *rec, uint64_t avail)
{
    if (avail < REC_HDR)
        return 0;
    struct ext_rec h;
    memcpy(&h, rec, REC_HDR);
    if (h.nkey == 0)
        return 0;
    uint64_t len = mc_round8(REC_HDR + h.nkey + (uint64_t)h.nbytes);
    if (len > avail)
        return 0;
    if (rec_crc(rec, (uint32_t)len) != h.crc)
        return 0;
    return (uint32_t)len;
}

/* ---- pages ---- */

struct ext_page {
    int fd;
    uint64_t foff;    /* where the page starts in its file */
    uint64_t version; /* 0 = free */
    uint64_t used;    /* bytes written */
    uint64_t live_bytes, live_objs;
    bool active;     /* the write page */
    uint8_t bucket;  /* 0, or 1 for low-TTL items */
    bool compacting; /* being read back: not to be evicted */
};

static pthread_mutex_t ext_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ext_page *pages;
static uint32_t npages;
/* Page versions start from the clock at start-up, so headers of another
 * run (items brought back by -e) never match a page of this one: they
 * miss and go. Shown in "stats extstore" from 0 (version_base). */
static uint64_t version_seq, version_base;
/* The write page of each bucket (0: default, 1: items whose TTL is under
 * ext_low_ttl, kept apart so their pages empty together, as memcached's
 * PAGE_BUCKET_LOWTTL); wbucket is the one being written (write thread). */
static int64_t cur_pages[2] = { -1, -1 };
static int wbucket;
static int fds[8];
static uint64_t limit_bytes;

static struct {
    _Atomic uint64_t compact_lost, compact_rescues, compact_skipped, page_allocs, page_evictions, page_reclaims,
        objects_evicted, objects_read, objects_written, bytes_evicted, bytes_written, bytes_read, io_queue;
    _Atomic uint64_t get_extstore, get_aborted, get_oom, recache, miss, badcrc, write_errors, read_errors;
} xs;

static void page_free_locked(struct ext_page *p)
{
    p->version = 0;
    p->used = 0;
    p->live_bytes = p->live_objs = 0;
    p->active = false;
}

static void page_open_locked(uint32_t i)
{
    struct ext_page *p = &pages[i];
    p->version = ++version_seq;
    p->used = 0;
    p->live_bytes = p->live_objs = 0;
    p->active = true;
    p->bucket = (uint8_t)wbucket;
    cur_pages[wbucket] = i;
}

/* Evict the oldest page that is neither written nor being compacted:
 * every item on it misses from now on. */
static bool evict_oldest_locked(void)
{
    int64_t oldest = -1;
    for (uint32_t i = 0; i < npages; i++) {
        struct ext_page *p = &pages[i];
        if (p->version && !p->active && !p->compacting && (oldest < 0 || p->version < pages[oldest].version))
            oldest = i;
    }
    if (oldest < 0)
        return false;
    struct ext_page *p = &pages[oldest];
    atomic_fetch_add(&xs.page_evictions, 1);
    atomic_fetch_add(&xs.objects_evicted, p->live_objs);
    atomic_fetch_add(&xs.bytes_evicted, p->live_bytes);
    page_free_locked(p);
    return true;
}

/* Make the write page have room for need bytes: close a full one, take a
 * free page, or evict the oldest one (its items then miss). Returns the
 * page, or -1 when none can be had. ext_lock held. */
static int64_t write_page_locked(uint64_t need)
{
    if (need > mc_ext.page_size)
        return -1;
    if (cur_pages[wbucket] >= 0) {
        struct ext_page *p = &pages[cur_pages[wbucket]];
        if (p->used + need <= mc_ext.page_size)
            return cur_pages[wbucket];
        p->active = false;
        if (p->live_objs == 0) {
            page_free_locked(p);
            atomic_fetch_add(&xs.page_reclaims, 1);
        }
        cur_pages[wbucket] = -1;
    }
    int64_t fresh = -1;
    uint32_t nfree = 0;
    for (uint32_t i = 0; i < npages; i++) {
        if (pages[i].version == 0 && nfree++ == 0)
            fresh = i;
    }
    if (fresh < 0 && !evict_oldest_locked())
        return -1;
    if (fresh < 0) { /* none was free: take the one just evicted */
        for (uint32_t i = 0; i < npages && fresh < 0; i++)
            if (pages[i].version == 0)
                fresh = i;
        nfree = 1;
    }
    page_open_locked((uint32_t)fresh);
    atomic_fetch_add(&xs.page_allocs, 1);
    /* As memcached: one page is always kept free, so the oldest page goes
     * as soon as the last free one is taken. */
    if (nfree == 1)
        evict_oldest_locked();
    return cur_pages[wbucket];
}

static struct mc_ext_loc item_loc(mc_item *it)
{
    struct mc_ext_loc l;
    memcpy(&l, mc_value(it), sizeof l);
    return l;
}

uint32_t mc_ext_nbytes(mc_item *it) { return item_loc(it).nbytes; }

void mc_ext_release(mc_item *it)
{
    struct mc_ext_loc l = item_loc(it);
    if (l.page >= npages)
        return;
    pthread_mutex_lock(&ext_lock);
    struct ext_page *p = &pages[l.page];
    if (p->version == l.version && p->live_objs) {
        p->live_objs--;
        p->live_bytes -= l.reclen <= p->live_bytes ? l.reclen : p->live_bytes;
        if (p->live_objs == 0 && !p->active && !p->compacting) {
            page_free_locked(p);
            atomic_fetch_add(&xs.page_reclaims, 1);
        }
    }
    pthread_mutex_unlock(&ext_lock);
}

static bool loc_current(const struct mc_ext_loc *l)
{
    pthread_mutex_lock(&ext_lock);
    bool ok = l->page < npages && pages[l->page].version == l->version;
    pthread_mutex_unlock(&ext_lock);
    return ok;
}

/* ---- options ---- */

static bool ext_path_seen;

static int parse_u(const char *val, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!val || !*val || *val == '-')
        return -1;
    unsigned long long v = strtoull(val, &end, 10);
    if (errno || *end || v > max)
        return -1;
    *out = v;
    return 0;
}

/* FILE:SIZE with SIZE in bytes or with a k/m/g/t suffix (memcached: M, G,
 * T, P). */
static int parse_path(const char *val, char *err, size_t errlen)
{
    const char *colon = val ? strrchr(val, ':') : NULL;
    if (!colon || colon == val) {
        snprintf(err, errlen, "must supply size to ext_path, ie: ext_path=/f/e:64m (M|G|T|P supported)");
        return -1;
    }
    char *end;
    errno = 0;
    unsigned long long n = strtoull(colon + 1, &end, 10);
    uint64_t mult = 1;
    switch (*end) {
    case 'k':
    case 'K':
        mult = 1ull << 10;
        end++;
        break;
    case 'm':
    case 'M':
        mult = 1ull << 20;
        end++;
        break;
    case 'g':
    case 'G':
        mult = 1ull << 30;
        end++;
        break;
    case 't':
    case 'T':
        mult = 1ull << 40;
        end++;
        break;
    case 'p':
    case 'P':
        mult = 1ull << 50;
        end++;
        break;
    default: break;
    }
    if (errno || end == colon + 1 || *end || n == 0 || n > (1ull << 62) / mult) {
        snprintf(err, errlen, "failed to parse ext_path argument");
        return -1;
    }
    if (mc_ext.npaths == (int)(sizeof mc_ext.paths / sizeof mc_ext.paths[0])) {
        snprintf(err, errlen, "too many ext_path arguments (at most 8)");
        return -1;
    }
    mc_ext.paths[mc_ext.npaths] = strndup(val, (size_t)(colon - val));
    mc_ext.sizes[mc_ext.npaths] = n * mult;
    mc_ext.npaths++;
    mc_ext.enabled = true;
    return 0;
}

int mc_ext_option(const char *name, const char *val, char *err, size_t errlen)
{
    if (strncmp(name, "ext_", 4) != 0)
        return 0;
    static const struct {
        const char *name;
        uint64_t max;
        void *where; /* unsigned (or uint64_t MB for the two sizes) */
    } nums[] = {
        { "ext_threads", 64, &mc_ext.threads },
        { "ext_io_depth", 64, &mc_ext.io_depth },
        { "ext_item_size", UINT32_MAX, &mc_ext.item_size },
        { "ext_item_age", UINT32_MAX, &mc_ext.item_age },
        { "ext_low_ttl", UINT32_MAX, &mc_ext.low_ttl },
        { "ext_recache_rate", UINT32_MAX, &mc_ext.recache_rate },
        { "ext_compact_under", UINT32_MAX, &mc_ext.compact_under },
        { "ext_drop_under", UINT32_MAX, &mc_ext.drop_under },
        { "ext_max_sleep", UINT32_MAX, &mc_ext.max_sleep },
    };
    if (strcmp(name, "ext_drop_unread") == 0) {
        mc_ext.drop_unread = true;
        return 1;
    }
    if (!val || !*val) {
        snprintf(err, errlen, "Missing %s argument", name);
        return -1;
    }
    if (strcmp(name, "ext_path") == 0) {
        ext_path_seen = true;
        return parse_path(val, err, errlen) < 0 ? -1 : 1;
    }
    uint64_t v;
    if (strcmp(name, "ext_page_size") == 0 || strcmp(name, "ext_wbuf_size") == 0) {
        bool page = name[4] == 'p';
        if (page && ext_path_seen) {
            snprintf(err, errlen, "Must specify ext_page_size before any ext_path arguments");
            return -1;
        }
        if (parse_u(val, 4096, &v) < 0 || v == 0) {
            snprintf(err, errlen, "could not parse argument to %s", name);
            return -1;
        }
        *(page ? &mc_ext.page_size : &mc_ext.wbuf_size) = v << 20;
        return 1;
    }
    if (strcmp(name, "ext_max_frag") == 0) {
        char *end;
        errno = 0;
        double d = strtod(val, &end);
        if (errno || end == val || *end || d < 0 || d > 1) {
            snprintf(err, errlen, "could not parse argument to ext_max_frag");
            return -1;
        }
        mc_ext.max_frag = d;
        return 1;
    }
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        if (strcmp(name, nums[i].name) != 0)
            continue;
        if (parse_u(val, nums[i].max, &v) < 0) {
            snprintf(err, errlen, "could not parse argument to %s", name);
            return -1;
        }
        *(unsigned *)nums[i].where = (unsigned)v;
        return 1;
    }
    return 0; /* not ours: the caller says "Illegal suboption" */
}

/* ---- the write thread ---- */

static pthread_t writer;
static bool writer_started;
static pthread_mutex_t writer_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t writer_cv = PTHREAD_COND_INITIALIZER;
static bool writer_stop;
static char *wbuf;
static struct work_pool *io_pool;

struct batch_ent {
    mc_item *it;
    uint64_t cas;
    uint64_t hv;
    uint32_t off; /* in wbuf */
    uint32_t reclen;
};
#define BATCH_MAX 4096
static struct batch_ent batch[BATCH_MAX];

/* Copy a linked item into wbuf at off as a record (caller holds its stripe). */
static void rec_fill(char *dst, mc_item *it, uint32_t reclen)
{
    struct ext_rec h = { 0 };
    h.nbytes = it->nbytes;
    h.cas = it->cas;
    h.flags = it->flags;
    h.exptime = it->exptime;
    h.nkey = it->nkey;
    memcpy(dst, &h, REC_HDR);
    memcpy(dst + REC_HDR, mc_key(it), it->nkey);
    mc_value_read(it, 0, dst + REC_HDR + it->nkey, it->nbytes);
    size_t used = REC_HDR + it->nkey + it->nbytes;
    memset(dst + used, 0, reclen - used);
    h.crc = rec_crc(dst, reclen);
    memcpy(dst, &h.crc, sizeof h.crc);
}

static int pwrite_all(int fd, const char *p, size_t n, uint64_t off)
{
    while (n) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

/* Is class id short of memory: the -m limit reached (no page to be had)
 * and fewer than 3 pages' worth of free chunks (memcached's
 * MIN_PAGES_FREE)? Then its cold items go out whatever their age. */
static bool class_pressed(int id)
{
    if (mc_slabs_malloced() + mc_page_size <= mc_slabs_limit() || mc_slabs_pool_pages() > 0)
        return false;
    struct mc_class *c = &mc_classes[id];
    pthread_mutex_lock(&c->lock);
    bool low = c->free_count + c->carve_left < (uint64_t)c->perpage * 3;
    pthread_mutex_unlock(&c->lock);
    return low;
}

/* Move the values of class id's coldest eligible items to the write page:
 * one buffer's worth. Returns the items moved. */
static int write_class(int id, int bucket)
{
    uint32_t age = class_pressed(id) ? 0 : mc_ext.item_age;
    if (age == UINT32_MAX)
        return 0;
    wbucket = bucket;
    /* A bucket's first page is taken once it has something to write. */
    pthread_mutex_lock(&ext_lock);
    int64_t pg = cur_pages[wbucket];
    if (pg >= 0 && mc_ext.page_size - pages[pg].used < REC_HDR + 256)
        pg = write_page_locked(REC_HDR + 256);
    uint64_t room = pg < 0 ? mc_ext.page_size : mc_ext.page_size - pages[pg].used;
    pthread_mutex_unlock(&ext_lock);
    if (room > mc_ext.wbuf_size)
        room = mc_ext.wbuf_size;
    struct mc_class *c = &mc_classes[id];
    uint32_t now = mc_now();
    uint32_t len = 0;
    int n = 0;
    bool page_full = false;
    pthread_mutex_lock(&c->lock);
    /* COLD first, as memcached; then the tails of WARM and HOT, since
     * our HOT and WARM keep item-count shares without memcached's age
     * limits: an idle item may sit there for good. */
    static const int segs[] = { MC_LRU_COLD, MC_LRU_WARM, MC_LRU_HOT };
    bool stop = false;
    for (int si = 0; si < 3 && !stop; si++) {
        mc_item *it = c->tail[segs[si]];
        for (int looked = 0; it && looked < 1000 && n < BATCH_MAX; looked++) {
            mc_item *prev = it->prev;
            if ((it->state & MC_ST_CRAWLER) || mc_item_is_ext(it) || it->nkey + it->nbytes < mc_ext.item_size ||
                rec_len(it->nkey, it->nbytes) > mc_ext.wbuf_size) { /* a record must fit one write buffer */
                it = prev;
                continue;
            }
            bool low = mc_ext.low_ttl && it->exptime && it->exptime - now < mc_ext.low_ttl;
            if (low != (bucket == 1)) {
                it = prev;
                continue;
            }
            if (age && now - it->atime <= age)
                break; /* newer from here on */
            uint32_t rl = rec_len(it->nkey, it->nbytes);
            if (len + rl > room) {
                page_full = n == 0 && pg >= 0;
                stop = true;
                break;
            }
            uint64_t hv = mc_hash(mc_key(it), it->nkey);
            if (mc_key_trylock(hv)) {
                if (mc_item_live(it, now)) {
                    rec_fill(wbuf + len, it, rl);
                    batch[n++] = (struct batch_ent){ it, it->cas, hv, len, rl };
                    len += rl;
                }
                mc_key_unlock(hv);
            }
            it = prev;
        }
    }
    pthread_mutex_unlock(&c->lock);
    if (n == 0) {
        if (page_full) { /* the next item does not fit: start a new page */
            pthread_mutex_lock(&ext_lock);
            write_page_locked(mc_ext.page_size);
            pthread_mutex_unlock(&ext_lock);
        }
        return 0;
    }
    if (pg < 0) {
        pthread_mutex_lock(&ext_lock);
        pg = write_page_locked(len);
        pthread_mutex_unlock(&ext_lock);
        if (pg < 0)
            return 0;
    }
    struct ext_page *p = &pages[pg];
    uint64_t base = p->used; /* only this thread moves used of the write page */
    if (pwrite_all(p->fd, wbuf, len, p->foff + base) < 0) {
        /* Full disk or I/O error: the items stay in memory. */
        atomic_fetch_add(&xs.write_errors, 1);
        log_warn("extstore: write failed: %s", strerror(errno));
        return 0;
    }
    pthread_mutex_lock(&ext_lock);
    p->used += len;
    uint64_t version = p->version;
    pthread_mutex_unlock(&ext_lock);
    atomic_fetch_add(&xs.bytes_written, len);
    atomic_fetch_add(&xs.objects_written, (uint64_t)n);
    int moved = 0;
    for (int i = 0; i < n; i++) {
        struct batch_ent *b = &batch[i];
        const struct ext_rec *h = (const struct ext_rec *)(wbuf + b->off);
        const char *key = wbuf + b->off + REC_HDR;
        mc_key_lock(b->hv);
        mc_item *cur = mc_assoc_find(key, h->nkey, b->hv);
        if (cur == b->it && cur->cas == b->cas && !mc_item_is_ext(cur) && cur->nbytes == h->nbytes &&
            mc_item_live(cur, mc_now())) {
            enum mc_alloc_err err;
            mc_item *hdr = mc_item_alloc(key, h->nkey, cur->flags, cur->exptime, sizeof(struct mc_ext_loc), &err);
            if (hdr) {
                struct mc_ext_loc l = { version, (uint32_t)pg, (uint32_t)(base + b->off), h->nbytes, b->reclen };
                memcpy(mc_value(hdr), &l, sizeof l);
                mc_bits_set(hdr, MC_IT_EXT);
                pthread_mutex_lock(&ext_lock);
                p->live_objs++;
                p->live_bytes += b->reclen;
                pthread_mutex_unlock(&ext_lock);
                mc_item_swap_locked(hdr, cur, b->hv);
                moved++;
            }
        }
        mc_key_unlock(b->hv);
    }
    return moved;
}

/* Write one record (already checked) to the write page; *l gets where.
 * Caller holds the record's stripe. */
static bool write_record(const char *rec, uint32_t reclen, struct mc_ext_loc *l)
{
    wbucket = 0;
    pthread_mutex_lock(&ext_lock);
    int64_t pg = write_page_locked(reclen);
    if (pg < 0) {
        pthread_mutex_unlock(&ext_lock);
        return false;
    }
    struct ext_page *p = &pages[pg];
    uint64_t off = p->used;
    p->used += reclen; /* reserved; a failed write leaves a hole */
    int fd = p->fd;
    uint64_t foff = p->foff;
    l->version = p->version;
    pthread_mutex_unlock(&ext_lock);
    if (pwrite_all(fd, rec, reclen, foff + off) < 0) {
        atomic_fetch_add(&xs.write_errors, 1);
        return false;
    }
    l->page = (uint32_t)pg;
    l->offset = (uint32_t)off;
    l->reclen = reclen;
    atomic_fetch_add(&xs.bytes_written, reclen);
    atomic_fetch_add(&xs.objects_written, 1);
    return true;
}

/* Compaction (memcached's storage_compact_check/readback): when few pages
 * are free, read back the oldest page whose live bytes are under the
 * fragmentation limit, rewrite what is still referenced (or, with
 * drop_unread, leave unread COLD items behind) and free the page. */
static bool compact_step(void)
{
    pthread_mutex_lock(&ext_lock);
    uint32_t free_pages = 0, used_pages = 0;
    for (uint32_t i = 0; i < npages; i++) {
        if (pages[i].version == 0)
            free_pages++;
        else
            used_pages++;
    }
    if (used_pages == 0 || free_pages > mc_ext.compact_under) {
        pthread_mutex_unlock(&ext_lock);
        return false;
    }
    double rate = (1.0 - (double)free_pages / npages) * mc_ext.max_frag;
    uint64_t frag_limit = (uint64_t)((double)mc_ext.page_size * rate);
    int64_t low = -1, lowest = -1;
    for (uint32_t i = 0; i < npages; i++) {
        struct ext_page *p = &pages[i];
        if (p->version == 0 || p->active || p->bucket == 1) /* low-TTL pages empty by themselves */
            continue;
        if (lowest < 0 || p->version < pages[lowest].version)
            lowest = i;
        if (p->live_bytes < frag_limit && (low < 0 || p->version < pages[low].version))
            low = i;
    }
    bool drop = false;
    if (low < 0 && lowest >= 0 && mc_ext.drop_unread && free_pages <= mc_ext.drop_under) {
        low = lowest;
        drop = true;
    }
    if (low < 0) {
        pthread_mutex_unlock(&ext_lock);
        return false;
    }
    struct ext_page *p = &pages[low];
    p->compacting = true;
    uint64_t version = p->version, used = p->used;
    int fd = p->fd;
    uint64_t foff = p->foff;
    pthread_mutex_unlock(&ext_lock);

    char *buf = used ? malloc(used) : NULL;
    ssize_t got = 0;
    if (buf) {
        while ((uint64_t)got < used) {
            ssize_t r = pread(fd, buf + got, used - (uint64_t)got, (off_t)(foff + (uint64_t)got));
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            got += r;
        }
    }
    uint64_t rescues = 0, lost = 0, skipped = 0;
    for (uint64_t off = 0; buf && off < (uint64_t)got;) {
        uint32_t rl = mc_ext_rec_check(buf + off, (uint64_t)got - off);
        if (rl == 0) {
            off += 8; /* a hole left by a failed write: look further */
            continue;
        }
        const char *rec = buf + off;
        struct ext_rec h;
        memcpy(&h, rec, REC_HDR);
        const char *key = rec + REC_HDR;
        uint64_t hv = mc_hash(key, h.nkey);
        mc_key_lock(hv);
        mc_item *it = mc_assoc_find(key, h.nkey, hv);
        if (it && mc_item_is_ext(it) && mc_item_live(it, mc_now())) {
            struct mc_ext_loc l = item_loc(it);
            if (l.page == (uint32_t)low && l.version == version && l.offset == off) {
                uint8_t seg = MC_ST_SEG(__atomic_load_n(&it->state, __ATOMIC_RELAXED));
                if (drop && seg == MC_LRU_COLD && !(mc_bits(it) & MC_IT_ACTIVE)) {
                    skipped++;
                } else {
                    struct mc_ext_loc nl = l;
                    if (write_record(rec, rl, &nl)) {
                        pthread_mutex_lock(&ext_lock);
                        struct ext_page *np = &pages[nl.page];
                        if (np->version == nl.version) {
                            np->live_objs++;
                            np->live_bytes += rl;
                        }
                        if (p->live_objs) {
                            p->live_objs--;
                            p->live_bytes -= rl <= p->live_bytes ? rl : p->live_bytes;
                        }
                        pthread_mutex_unlock(&ext_lock);
                        memcpy(mc_value(it), &nl, sizeof nl);
                        rescues++;
                    } else {
                        lost++;
                    }
                }
            }
        }
        mc_key_unlock(hv);
        off += rl;
    }
    free(buf);
    pthread_mutex_lock(&ext_lock);
    p->compacting = false;
    if (p->version == version) {
        page_free_locked(p);
        atomic_fetch_add(&xs.page_reclaims, 1);
    }
    pthread_mutex_unlock(&ext_lock);
    atomic_fetch_add(&xs.compact_rescues, rescues);
    atomic_fetch_add(&xs.compact_lost, lost);
    atomic_fetch_add(&xs.compact_skipped, skipped);
    return true;
}

static void *writer_main(void *arg)
{
    (void)arg;
    long sleep_us = 500;
    for (;;) {
        pthread_mutex_lock(&writer_mu);
        bool stop = writer_stop;
        pthread_mutex_unlock(&writer_mu);
        if (stop)
            break;
        int moved = 0;
        int min_class = mc_slabs_clsid(mc_ext.item_size < MC_ITEM_HDR ? MC_ITEM_HDR : mc_ext.item_size);
        if (min_class == 0)
            min_class = mc_nclasses + 1;
        for (int id = min_class; id <= mc_nclasses; id++)
            moved += write_class(id, 0) + (mc_ext.low_ttl ? write_class(id, 1) : 0);
        bool compacted = compact_step();
        if (moved || compacted)
            sleep_us = 500;
        else if (sleep_us < (long)mc_ext.max_sleep)
            sleep_us = sleep_us * 2 > (long)mc_ext.max_sleep ? (long)mc_ext.max_sleep : sleep_us * 2;
        if (moved || compacted)
            continue;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (sleep_us % 1000000) * 1000;
        ts.tv_sec += sleep_us / 1000000 + ts.tv_nsec / 1000000000;
        ts.tv_nsec %= 1000000000;
        pthread_mutex_lock(&writer_mu);
        if (!writer_stop)
            pthread_cond_timedwait(&writer_cv, &writer_mu, &ts);
        pthread_mutex_unlock(&writer_mu);
    }
    return NULL;
}

int mc_ext_init(void)
{
    if (!mc_ext.enabled)
        return 0;
    /* memcached's start-up checks, in its words. */
    const char *bad = NULL;
    uint64_t total_pages = 0;
    for (int i = 0; i < mc_ext.npaths; i++)
        total_pages += mc_ext.sizes[i] / mc_ext.page_size;
    if (mc_ext.page_size % mc_ext.wbuf_size != 0)
        bad = "page_size must be divisible by wbuf_size";
    else if (mc_ext.page_size % (2u << 20) != 0 || mc_ext.wbuf_size % (2u << 20) != 0)
        bad = "page_size and wbuf_size must be divisible by 1024*1024*2";
    else if (total_pages >= 65536)
        bad = "page_count must total to < 65536. Increase page_size or lower path sizes";
    else if (total_pages == 0)
        bad = "each ext_path must hold at least one page of ext_page_size";
    if (bad) {
        log_error("Failed to initialize external storage: %s", bad);
        return -1;
    }
    pages = calloc(total_pages, sizeof *pages);
    wbuf = malloc(mc_ext.wbuf_size);
    if (!pages || !wbuf)
        return -1;
    for (int i = 0; i < mc_ext.npaths; i++) {
        int fd = open(mc_ext.paths[i], O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0) {
            log_error("extstore: cannot open %s: %s", mc_ext.paths[i], strerror(errno));
            return -1;
        }
        /* One daemon per file: a second one would overwrite our pages. */
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
            log_error("extstore: %s is in use by another process", mc_ext.paths[i]);
            close(fd);
            return -1;
        }
        fds[i] = fd;
        uint64_t n = mc_ext.sizes[i] / mc_ext.page_size;
        for (uint64_t j = 0; j < n; j++) {
            pages[npages].fd = fd;
            pages[npages].foff = j * mc_ext.page_size;
            npages++;
        }
        limit_bytes += n * mc_ext.page_size;
    }
    if (mc_ext.compact_under == 0) {
        /* As 1.6.18: both default to a quarter of the first file's pages,
         * and only when compact_under is 0 (drop_under given alone is
         * replaced too). */
        mc_ext.compact_under = (unsigned)(mc_ext.sizes[0] / mc_ext.page_size / 4);
        mc_ext.drop_under = mc_ext.compact_under;
    }
    pthread_mutex_lock(&ext_lock);
    version_seq = version_base = (uint64_t)time(NULL) << 20;
    page_open_locked(0); /* memcached opens its first write page at start (not counted) */
    pthread_mutex_unlock(&ext_lock);
    io_pool = work_pool_new("mc-ext-io", mc_ext.threads ? (int)mc_ext.threads : 1, 65536);
    if (!io_pool)
        return -1;
    if (pthread_create(&writer, NULL, writer_main, NULL) != 0)
        return -1;
    writer_started = true;
    return 0;
}

void mc_ext_stop(void)
{
    if (writer_started) {
        pthread_mutex_lock(&writer_mu);
        writer_stop = true;
        pthread_cond_signal(&writer_cv);
        pthread_mutex_unlock(&writer_mu);
        pthread_join(writer, NULL);
        writer_started = false;
    }
    if (io_pool) {
        work_pool_free(io_pool);
        io_pool = NULL;
    }
}

/* ---- reads ---- */

enum fetch_status { FS_PENDING = 0, FS_OK, FS_MISS, FS_BADCRC, FS_FAILED };

struct ext_fetch {
    struct mc_ext_loc loc;
    uint64_t cas;
    uint8_t nkey;
    char key[MC_KEY_MAX];
    uint8_t status;
    char *buf; /* the record */
};

struct mc_ext_req {
    struct session *s; /* NULL once the session closed with reads in flight */
    bool inflight;
    int rounds;
    int n, cap, npending;
    size_t counted; /* leading keys of a multi-get already counted (cmd_text.c) */
    struct ext_fetch *f;
};

#define FETCH_MAX 4096 /* on-disk values one request may wait for */

static void req_free(struct mc_ext_req *r)
{
    for (int i = 0; i < r->n; i++)
        free(r->f[i].buf);
    free(r->f);
    free(r);
}

const char *mc_ext_value(struct session *s, mc_item *it, uint64_t hv, uint32_t *n, bool *miss)
{
    struct mc_ext_loc l = item_loc(it);
    struct mc_ext_req *r = s->ext;
    *miss = false;
    if (r) {
        for (int i = 0; i < r->n; i++) {
            struct ext_fetch *f = &r->f[i];
            if (f->loc.page != l.page || f->loc.version != l.version || f->loc.offset != l.offset ||
                f->nkey != it->nkey || memcmp(f->key, mc_key(it), it->nkey) != 0)
                continue;
            if (f->status == FS_OK && f->cas == it->cas) {
                *n = l.nbytes;
                return f->buf + REC_HDR + f->nkey;
            }
            if (f->status == FS_PENDING)
                return NULL;
            *miss = true;
            if (f->status != FS_FAILED)
                mc_item_unlink_locked(it, hv); /* the value is gone for good */
            return NULL;
        }
    }
    if (!loc_current(&l)) {
        /* Its page was evicted or reused: a miss, and the header goes. */
        atomic_fetch_add(&xs.miss, 1);
        mc_item_unlink_locked(it, hv);
        *miss = true;
        return NULL;
    }
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) {
            atomic_fetch_add(&xs.get_oom, 1);
            *miss = true;
            return NULL;
        }
        r->s = s;
        s->ext = r;
    }
    if (r->rounds >= 3 || r->n >= FETCH_MAX) {
        /* It moved again while we read it twice, or too many values in one
         * request: answered as a miss (memcached's get_aborted_extstore). */
        atomic_fetch_add(&xs.get_aborted, 1);
        *miss = true;
        return NULL;
    }
    if (r->n == r->cap) {
        int cap = r->cap ? r->cap * 2 : 8;
        struct ext_fetch *nf = realloc(r->f, (size_t)cap * sizeof *nf);
        if (!nf) {
            atomic_fetch_add(&xs.get_oom, 1);
            *miss = true;
            return NULL;
        }
        r->f = nf;
        r->cap = cap;
    }
    struct ext_fetch *f = &r->f[r->n++];
    memset(f, 0, sizeof *f);
    f->loc = l;
    f->cas = it->cas;
    f->nkey = it->nkey;
    memcpy(f->key, mc_key(it), it->nkey);
    r->npending++;
    return NULL;
}

/* IO thread: read and check every pending record. */
static void read_job(void *arg)
{
    struct mc_ext_req *r = arg;
    for (int i = 0; i < r->n; i++) {
        struct ext_fetch *f = &r->f[i];
        if (f->status != FS_PENDING)
            continue;
        pthread_mutex_lock(&ext_lock);
        bool cur = f->loc.page < npages && pages[f->loc.page].version == f->loc.version;
        int fd = cur ? pages[f->loc.page].fd : -1;
        uint64_t foff = cur ? pages[f->loc.page].foff : 0;
        pthread_mutex_unlock(&ext_lock);
        if (!cur) {
            f->status = FS_MISS;
            atomic_fetch_add(&xs.miss, 1);
            continue;
        }
        f->buf = malloc(f->loc.reclen);
        if (!f->buf) {
            f->status = FS_FAILED;
            atomic_fetch_add(&xs.get_oom, 1);
            continue;
        }
        ssize_t got = 0;
        while ((uint32_t)got < f->loc.reclen) {
            ssize_t k = pread(fd, f->buf + got, f->loc.reclen - (uint32_t)got, (off_t)(foff + f->loc.offset + got));
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0)
                break;
            got += k;
        }
        if ((uint32_t)got < f->loc.reclen) {
            /* Truncated file or I/O error: a miss, never a wrong value. */
            f->status = FS_MISS;
            atomic_fetch_add(&xs.read_errors, 1);
            atomic_fetch_add(&xs.miss, 1);
            continue;
        }
        atomic_fetch_add(&xs.objects_read, 1);
        atomic_fetch_add(&xs.bytes_read, f->loc.reclen);
        struct ext_rec h;
        memcpy(&h, f->buf, REC_HDR);
        if (mc_ext_rec_check(f->buf, f->loc.reclen) != f->loc.reclen) {
            f->status = FS_BADCRC;
            atomic_fetch_add(&xs.badcrc, 1);
            continue;
        }
        pthread_mutex_lock(&ext_lock);
        cur = pages[f->loc.page].version == f->loc.version;
        pthread_mutex_unlock(&ext_lock);
        if (!cur || h.nkey != f->nkey || memcmp(f->buf + REC_HDR, f->key, f->nkey) != 0 || h.cas != f->cas ||
            h.nbytes != f->loc.nbytes) {
            f->status = FS_MISS; /* the page was reused meanwhile */
            atomic_fetch_add(&xs.miss, 1);
            continue;
        }
        f->status = FS_OK;
        atomic_fetch_add(&xs.get_extstore, 1);
    }
}

/* Every recache_rate-th value read goes back into memory (memcached's
 * recache: a value read often should not be read from disk each time). */
static void maybe_recache(struct ext_fetch *f)
{
    static _Atomic uint64_t reads;
    if (mc_ext.recache_rate == 0 || atomic_fetch_add(&reads, 1) % mc_ext.recache_rate != mc_ext.recache_rate - 1)
        return;
    uint64_t hv = mc_hash(f->key, f->nkey);
    mc_key_lock(hv);
    mc_item *it = mc_assoc_find(f->key, f->nkey, hv);
    if (it && mc_item_is_ext(it) && it->cas == f->cas && mc_item_live(it, mc_now())) {
        struct mc_ext_loc l = item_loc(it);
        if (l.page == f->loc.page && l.version == f->loc.version && l.offset == f->loc.offset) {
            enum mc_alloc_err err;
            mc_item *n = mc_item_alloc(f->key, f->nkey, it->flags, it->exptime, f->loc.nbytes, &err);
            if (n) {
                mc_value_write(n, 0, f->buf + REC_HDR + f->nkey, f->loc.nbytes);
                mc_item_swap_locked(n, it, hv);
                atomic_fetch_add(&xs.recache, 1);
            }
        }
    }
    mc_key_unlock(hv);
}

/* Back on the session's loop: run the request again. */
static void read_done(void *arg)
{
    struct mc_ext_req *r = arg;
    atomic_fetch_sub(&xs.io_queue, 1);
    r->inflight = false;
    struct session *s = r->s;
    if (!s) {
        req_free(r);
        return;
    }
    for (int i = 0; i < r->n; i++)
        if (r->f[i].status == FS_OK && r->f[i].buf)
            maybe_recache(&r->f[i]);
    s->state = MC_SESS_CMD;
    if (!s->c->ops) { /* a UDP socket's session: its datagram goes on (udp.c) */
        if (mc_ext_stream_less_resume)
            mc_ext_stream_less_resume(s);
        return;
    }
    conn_set_busy(s->c, false);
    conn_kick(s->c);
}

void (*mc_ext_stream_less_resume)(struct session *s);

void mc_ext_count_aborted(void) { atomic_fetch_add(&xs.get_aborted, 1); }

bool mc_ext_waiting(struct session *s) { return s->ext && s->ext->npending > 0; }

size_t mc_ext_counted(struct session *s) { return s->ext ? s->ext->counted : 0; }

void mc_ext_set_counted(struct session *s, size_t n)
{
    if (s->ext && n > s->ext->counted)
        s->ext->counted = n;
}

int mc_ext_after_cmd(struct session *s, size_t mark)
{
    struct mc_ext_req *r = s->ext;
    if (!r->npending) {
        s->ext = NULL;
        req_free(r);
        return 0;
    }
    if (s->olen > mark)
        s->olen = mark; /* the reply is built again once the values are in */
    s->out_oom = false;
    r->npending = 0;
    r->rounds++;
    /* The reads go to the IO pool; the request runs again on this loop
     * once they are in. A UDP socket's session waits the same way: udp.c
     * keeps the datagram (its rest, sender and request id) and stops
     * reading that socket meanwhile; the loop serves everything else. */
    r->inflight = true;
    atomic_fetch_add(&xs.io_queue, 1);
    if (!io_pool || work_submit(io_pool, s->c->loop, read_job, read_done, r) < 0) {
        /* The IO queue is full: these values are misses this time. */
        atomic_fetch_sub(&xs.io_queue, 1);
        r->inflight = false;
        for (int i = 0; i < r->n; i++) {
            if (r->f[i].status == FS_PENDING) {
                r->f[i].status = FS_FAILED;
                atomic_fetch_add(&xs.get_oom, 1);
            }
        }
        return 1; /* run again now: they answer as misses */
    }
    s->state = MC_SESS_EXT;
    if (s->c->ops)
        conn_set_busy(s->c, true);
    return 1;
}

void mc_ext_session_gone(struct session *s)
{
    struct mc_ext_req *r = s->ext;
    if (!r)
        return;
    s->ext = NULL;
    if (r->inflight)
        r->s = NULL; /* read_done frees it */
    else
        req_free(r);
}

/* ---- commands and stats ---- */

const char *mc_ext_command(const char *args, size_t len)
{
    char buf[128];
    if (len >= sizeof buf)
        len = sizeof buf - 1;
    memcpy(buf, args, len);
    buf[len] = 0;
    char *w[4] = { 0 }, *save = NULL;
    int n = 0;
    for (char *t = strtok_r(buf, " ", &save); t && n < 4; t = strtok_r(NULL, " ", &save))
        w[n++] = t;
    if (n && strcmp(w[n - 1], "noreply") == 0)
        n--;
    bool ok = n >= 2;
    uint64_t v = 0;
    if (ok && strcmp(w[0], "free_memchunks") == 0) {
        uint64_t id, lim; /* deprecated and ignored, as 1.6.18 */
        ok = n >= 3 && parse_u(w[1], UINT32_MAX, &id) == 0 && parse_u(w[2], UINT32_MAX, &lim) == 0 &&
             id < MC_MAX_CLASSES;
    } else if (ok && strcmp(w[0], "max_frag") == 0) {
        char *end;
        double d = strtod(w[1], &end);
        ok = end != w[1] && !*end;
        if (ok)
            mc_ext.max_frag = d;
    } else if (ok && parse_u(w[1], UINT32_MAX, &v) == 0) {
        if (strcmp(w[0], "item_size") == 0)
            mc_ext.item_size = (unsigned)v;
        else if (strcmp(w[0], "item_age") == 0)
            mc_ext.item_age = (unsigned)v;
        else if (strcmp(w[0], "low_ttl") == 0)
            mc_ext.low_ttl = (unsigned)v;
        else if (strcmp(w[0], "recache_rate") == 0)
            mc_ext.recache_rate = (unsigned)v;
        else if (strcmp(w[0], "compact_under") == 0)
            mc_ext.compact_under = (unsigned)v;
        else if (strcmp(w[0], "drop_under") == 0)
            mc_ext.drop_under = (unsigned)v;
        else if (strcmp(w[0], "max_sleep") == 0)
            mc_ext.max_sleep = (unsigned)v;
        else if (strcmp(w[0], "drop_unread") == 0)
            mc_ext.drop_unread = v != 0;
        else
            ok = false;
    } else {
        ok = false;
    }
    if (ok) {
        pthread_mutex_lock(&writer_mu);
        pthread_cond_signal(&writer_cv); /* new rules: look again now */
        pthread_mutex_unlock(&writer_mu);
    }
    return ok ? "OK" : "ERROR";
}

void mc_ext_stats_gets(struct stats_sink *k)
{
    if (!mc_ext.enabled)
        return;
    stats_u64(k, "get_extstore", atomic_load(&xs.get_extstore));
    stats_u64(k, "get_aborted_extstore", atomic_load(&xs.get_aborted));
    stats_u64(k, "get_oom_extstore", atomic_load(&xs.get_oom));
    stats_u64(k, "recache_from_extstore", atomic_load(&xs.recache));
    stats_u64(k, "miss_from_extstore", atomic_load(&xs.miss));
    stats_u64(k, "badcrc_from_extstore", atomic_load(&xs.badcrc));
}

void mc_ext_stats_store(struct stats_sink *k)
{
    if (!mc_ext.enabled)
        return;
    uint64_t free_pages = 0, used_pages = 0, objs = 0, bytes = 0;
    pthread_mutex_lock(&ext_lock);
    for (uint32_t i = 0; i < npages; i++) {
        if (pages[i].version == 0) {
            free_pages++;
            continue;
        }
        used_pages++;
        objs += pages[i].live_objs;
        bytes += pages[i].live_bytes;
    }
    pthread_mutex_unlock(&ext_lock);
    stats_u64(k, "extstore_compact_lost", atomic_load(&xs.compact_lost));
    stats_u64(k, "extstore_compact_rescues", atomic_load(&xs.compact_rescues));
    stats_u64(k, "extstore_compact_skipped", atomic_load(&xs.compact_skipped));
    stats_u64(k, "extstore_page_allocs", atomic_load(&xs.page_allocs));
    stats_u64(k, "extstore_page_evictions", atomic_load(&xs.page_evictions));
    stats_u64(k, "extstore_page_reclaims", atomic_load(&xs.page_reclaims));
    stats_u64(k, "extstore_pages_free", free_pages);
    stats_u64(k, "extstore_pages_used", used_pages);
    stats_u64(k, "extstore_objects_evicted", atomic_load(&xs.objects_evicted));
    stats_u64(k, "extstore_objects_read", atomic_load(&xs.objects_read));
    stats_u64(k, "extstore_objects_written", atomic_load(&xs.objects_written));
    stats_u64(k, "extstore_objects_used", objs);
    stats_u64(k, "extstore_bytes_evicted", atomic_load(&xs.bytes_evicted));
    stats_u64(k, "extstore_bytes_written", atomic_load(&xs.bytes_written));
    stats_u64(k, "extstore_bytes_read", atomic_load(&xs.bytes_read));
    stats_u64(k, "extstore_bytes_used", bytes);
    stats_u64(k, "extstore_bytes_fragmented", used_pages * mc_ext.page_size - bytes);
    stats_u64(k, "extstore_limit_maxbytes", limit_bytes);
    stats_u64(k, "extstore_io_queue", atomic_load(&xs.io_queue));
}

void mc_ext_stats_settings(struct stats_sink *k)
{
    stats_u64(k, "ext_item_size", mc_ext.item_size);
    stats_u64(k, "ext_item_age", mc_ext.item_age);
    stats_u64(k, "ext_low_ttl", mc_ext.low_ttl);
    stats_u64(k, "ext_recache_rate", mc_ext.recache_rate);
    stats_u64(k, "ext_wbuf_size", mc_ext.wbuf_size);
    stats_u64(k, "ext_compact_under", mc_ext.compact_under);
    stats_u64(k, "ext_drop_under", mc_ext.drop_under);
    stats_u64(k, "ext_max_sleep", mc_ext.max_sleep);
}

/* "stats extstore": each page's version, live bytes and bucket. */
static void page_stats(struct stats_sink *k, void *arg)
{
    (void)arg;
    pthread_mutex_lock(&ext_lock);
    for (uint32_t i = 0; i < npages; i++) {
        stats_u64f(k, pages[i].version ? pages[i].version - version_base - 1 : 0, "%u:version", i);
        stats_u64f(k, pages[i].live_bytes, "%u:bytes", i);
        stats_u64f(k, pages[i].version ? pages[i].bucket : 0, "%u:bucket", i);
        stats_u64f(k, 0, "%u:free_bucket", i);
    }
    pthread_mutex_unlock(&ext_lock);
}

void mc_ext_register_stats(void) { stats_add_source("extstore", page_stats, NULL); }
