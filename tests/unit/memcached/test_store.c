/* Unit tests for the memcached item store: store semantics (set/add/
 * replace/append/prepend/cas), incr/decr wrap and floor, delete with CAS,
 * expiry rules, flush, chunked items, the TEMP and flat LRUs, eviction under
 * the memory limit, page moves between classes, the crawler, and hash table
 * growth. */
#include "memcached/mc.h"
#include "tests/unit/unit.h"

#include <stdio.h>
#include <stdlib.h>

struct mc_settings mc_settings;

static mc_item *mk(const char *key, const char *val, uint32_t exptime)
{
    enum mc_alloc_err err;
    mc_item *it = mc_item_alloc(key, strlen(key), 7, exptime, strlen(val), &err);
    if (it)
        memcpy(mc_value(it), val, strlen(val));
    return it;
}

static int get(const char *key, char *out, size_t cap)
{
    uint64_t hv = mc_hash(key, strlen(key));
    mc_key_lock(hv);
    mc_item *it = mc_item_find_locked(key, strlen(key), hv);
    int n = -1;
    if (it && it->nbytes < cap) {
        memcpy(out, mc_value(it), it->nbytes);
        out[it->nbytes] = 0;
        n = (int)it->nbytes;
    }
    mc_key_unlock(hv);
    return n;
}

static uint64_t cas_of(const char *key)
{
    uint64_t hv = mc_hash(key, strlen(key));
    mc_key_lock(hv);
    mc_item *it = mc_item_find_locked(key, strlen(key), hv);
    uint64_t c = it ? it->cas : 0;
    mc_key_unlock(hv);
    return c;
}

static void test_store_ops(void)
{
    char buf[100];
    uint64_t cas;
    CHECK_EQ_INT(mc_store(mk("a", "1", 0), MC_OP_SET, 0, &cas), MC_STORED);
    CHECK(get("a", buf, sizeof buf) == 1 && strcmp(buf, "1") == 0);
    CHECK_EQ_INT(mc_store(mk("a", "2", 0), MC_OP_ADD, 0, NULL), MC_NOT_STORED);
    CHECK_EQ_INT(mc_store(mk("b", "2", 0), MC_OP_REPLACE, 0, NULL), MC_NOT_STORED);
    CHECK_EQ_INT(mc_store(mk("a", "3", 0), MC_OP_REPLACE, 0, NULL), MC_STORED);
    CHECK_EQ_INT(mc_store(mk("a", "xy", 0), MC_OP_APPEND, 0, NULL), MC_STORED);
    CHECK_EQ_INT(mc_store(mk("a", "<", 0), MC_OP_PREPEND, 0, NULL), MC_STORED);
    get("a", buf, sizeof buf);
    CHECK_STR(buf, "<3xy");
    CHECK_EQ_INT(mc_store(mk("nope", "x", 0), MC_OP_APPEND, 0, NULL), MC_NOT_STORED);
    uint64_t c = cas_of("a");
    CHECK_EQ_INT(mc_store(mk("a", "z", 0), MC_OP_CAS, c + 100, NULL), MC_EXISTS);
    CHECK_EQ_INT(mc_store(mk("a", "z", 0), MC_OP_CAS, c, &cas), MC_STORED);
    CHECK(cas > c);
    CHECK_EQ_INT(mc_store(mk("zz", "z", 0), MC_OP_CAS, 5, NULL), MC_NOT_FOUND);
    CHECK_EQ_INT(mc_delete("a", 1, cas + 1), MC_EXISTS);
    CHECK_EQ_INT(mc_delete("a", 1, cas), MC_DELETED);
    CHECK_EQ_INT(mc_delete("a", 1, 0), MC_NOT_FOUND);
    CHECK_EQ_INT(get("a", buf, sizeof buf), -1);
}

static void test_arith(void)
{
    uint64_t v;
    CHECK_EQ_INT(mc_store(mk("n", "18446744073709551615", 0), MC_OP_SET, 0, NULL), MC_STORED);
    CHECK_EQ_INT(mc_arith("n", 1, true, 2, 0, &v, NULL), MC_OK);
    CHECK_EQ_INT(v, 1); /* wraps at 2^64 */
    CHECK_EQ_INT(mc_arith("n", 1, false, 5, 0, &v, NULL), MC_OK);
    CHECK_EQ_INT(v, 0); /* decr floors at 0 */
    CHECK_EQ_INT(mc_arith("none", 4, true, 1, 0, &v, NULL), MC_NOT_FOUND);
    CHECK_EQ_INT(mc_store(mk("s", "abc", 0), MC_OP_SET, 0, NULL), MC_STORED);
    CHECK_EQ_INT(mc_arith("s", 1, true, 1, 0, &v, NULL), MC_NON_NUMERIC);
    char buf[32];
    CHECK_EQ_INT(mc_store(mk("t", "99", 0), MC_OP_SET, 0, NULL), MC_STORED);
    CHECK_EQ_INT(mc_arith("t", 1, true, 1, 0, &v, NULL), MC_OK);
    get("t", buf, sizeof buf);
    CHECK_STR(buf, "100");
}

static void test_expiry_rules(void)
{
    uint32_t now = mc_now();
    CHECK_EQ_INT(mc_realtime(0), 0);
    CHECK_EQ_INT(mc_realtime(-1), 1);
    CHECK_EQ_INT(mc_realtime(100), now + 100);
    CHECK_EQ_INT(mc_realtime(60 * 60 * 24 * 30), now + 60 * 60 * 24 * 30);
    /* Beyond 30 days: absolute unix time. */
    int64_t abs_t = mc_process_started + 1000000000;
    CHECK_EQ_INT(mc_realtime(60 * 60 * 24 * 30 + 1), 1); /* 1970: long past */
    CHECK_EQ_INT(mc_realtime(abs_t), 1000000000);
    char buf[8];
    CHECK_EQ_INT(mc_store(mk("gone", "x", mc_realtime(-1)), MC_OP_SET, 0, NULL), MC_STORED);
    CHECK_EQ_INT(get("gone", buf, sizeof buf), -1);
    CHECK_EQ_INT(mc_store(mk("stay", "x", mc_realtime(1000)), MC_OP_SET, 0, NULL), MC_STORED);
    CHECK_EQ_INT(get("stay", buf, sizeof buf), 1);
    CHECK_EQ_INT(mc_touch("stay", 4, 1), MC_TOUCHED);
    CHECK_EQ_INT(get("stay", buf, sizeof buf), -1);
    CHECK_EQ_INT(mc_touch("stay", 4, 0), MC_NOT_FOUND);
}

static void test_flush(void)
{
    char buf[8];
    CHECK_EQ_INT(mc_store(mk("f1", "x", 0), MC_OP_SET, 0, NULL), MC_STORED);
    mc_flush(0);
    CHECK_EQ_INT(get("f1", buf, sizeof buf), -1);
    CHECK_EQ_INT(mc_store(mk("f2", "x", 0), MC_OP_SET, 0, NULL), MC_STORED);
    CHECK_EQ_INT(get("f2", buf, sizeof buf), 1);
}

static void test_eviction_bounded(void)
{
    /* 200k items of ~200 bytes into an 8 MB limit: memory stays at the
     * limit (plus first pages of classes), old items are evicted, new ones
     * readable. */
    char key[32], val[200];
    memset(val, 'v', sizeof val);
    val[sizeof val - 1] = 0;
    for (int i = 0; i < 200000; i++) {
        snprintf(key, sizeof key, "ev:%d", i);
        mc_item *it = mk(key, val + (i % 100), 0);
        CHECK(it != NULL);
        if (!it)
            break;
        CHECK_EQ_INT(mc_store(it, MC_OP_SET, 0, NULL), MC_STORED);
    }
    CHECK(mc_slabs_malloced() <= mc_slabs_limit() + (uint64_t)mc_nclasses * mc_page_size);
    CHECK(atomic_load(&mc_sstats.evictions) > 100000);
    char buf[256];
    CHECK(get("ev:199999", buf, sizeof buf) > 0);
    CHECK_EQ_INT(get("ev:0", buf, sizeof buf), -1);
}

static void test_page_move(void)
{
    /* Fill memory with small items, then store big ones: the big class
     * must get pages from the small class instead of failing. */
    char key[32];
    static char big[100000];
    memset(big, 'b', sizeof big - 1);
    /* The small items stored so far are now 100 s old: colder than the
     * new big ones, so their pages should move. */
    atomic_fetch_add(&mc_current_time, 100);
    int stored = 0;
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof key, "big:%d", i);
        enum mc_alloc_err err;
        mc_item *it = mc_item_alloc(key, strlen(key), 0, 0, 90000, &err);
        if (!it)
            continue;
        memset(mc_value(it), 'b', 90000);
        if (mc_store(it, MC_OP_SET, 0, NULL) == MC_STORED)
            stored++;
    }
    CHECK(stored == 200);
    CHECK(atomic_load(&mc_sstats.slabs_moved) > 0);
    CHECK(mc_slabs_malloced() <= mc_slabs_limit() + (uint64_t)mc_nclasses * mc_page_size);
}

static void test_crawler(void)
{
    mc_flush(0);
    char key[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof key, "cr:%d", i);
        CHECK_EQ_INT(mc_store(mk(key, "x", i % 2 ? 1 : 0), MC_OP_SET, 0, NULL), MC_STORED);
    }
    uint64_t before = mc_curr_items();
    uint64_t n = 0;
    for (int id = 1; id <= mc_nclasses; id++)
        n += mc_crawl_class(id, UINT64_MAX);
    CHECK(n >= 500);
    CHECK(mc_curr_items() <= before - 500);
}

static void test_hash_growth(void)
{
    mc_flush(0);
    for (int id = 1; id <= mc_nclasses; id++)
        mc_crawl_class(id, UINT64_MAX);
    mc_slabs_set_limit(64u << 20);
    unsigned hp = mc_assoc_hashpower();
    char key[32], buf[16];
    int n = (int)(3u << hp) / 2 + 1000;
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof key, "h%d", i);
        CHECK_EQ_INT(mc_store(mk(key, "v", 0), MC_OP_SET, 0, NULL), MC_STORED);
    }
    int rounds = 0;
    while (mc_assoc_maintain(mc_curr_items()) && rounds < 100000) {
        rounds++;
        /* Lookups stay right while buckets move. */
        if (rounds % 3 == 0) {
            snprintf(key, sizeof key, "h%d", rounds % n);
            CHECK_EQ_INT(get(key, buf, sizeof buf), 1);
        }
    }
    CHECK_EQ_INT(mc_assoc_hashpower(), hp + 1);
    int missing = 0;
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof key, "h%d", i);
        if (get(key, buf, sizeof buf) != 1)
            missing++;
    }
    CHECK_EQ_INT(missing, 0);
}

static uint64_t used_chunks(void)
{
    uint64_t used = 0;
    for (int i = 1; i <= mc_nclasses; i++) {
        struct mc_class *c = &mc_classes[i];
        pthread_mutex_lock(&c->lock);
        used += c->pages * c->perpage - c->free_count;
        pthread_mutex_unlock(&c->lock);
    }
    return used;
}

/* Items over slab_chunk_max are chained chunks: written and read piece by
 * piece, appended across pieces, and every chunk comes back on delete. */
static void test_chunked(void)
{
    CHECK_EQ_INT((int)mc_chunk_max, 512 * 1024);
    CHECK_EQ_INT((int)mc_classes[mc_nclasses].size, 512 * 1024);
    static char val[1048576], back[1048576];
    for (size_t i = 0; i < sizeof val; i++)
        val[i] = (char)(i * 2654435761u >> 13);
    uint64_t before = used_chunks();
    const size_t sizes[] = { 524288 - 60, 524288, 600000, 1000000, 1048576 - 100 };
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k];
        enum mc_alloc_err err;
        mc_item *it = mc_item_alloc("big", 3, 0, 0, n, &err);
        CHECK(it != NULL);
        if (!it)
            continue;
        CHECK(mc_item_chunked(it) == (mc_item_total(3, n) > mc_chunk_max));
        for (size_t off = 0; off < n; off += 7919) /* odd pieces across chunk ends */
            mc_value_write(it, off, val + off, n - off < 7919 ? n - off : 7919);
        CHECK_EQ_INT(mc_store(it, MC_OP_SET, 0, NULL), MC_STORED);
        uint64_t hv = mc_hash("big", 3);
        mc_key_lock(hv);
        mc_item *f = mc_item_find_locked("big", 3, hv);
        CHECK(f != NULL && f->nbytes == n);
        if (f) {
            memset(back, 0, n);
            mc_value_out(f, back);
            CHECK(memcmp(back, val, n) == 0);
            CHECK(f->clsid == (mc_item_chunked(f) ? mc_nclasses : f->clsid));
        }
        mc_key_unlock(hv);
    }
    /* append across the chunk boundary */
    enum mc_alloc_err err;
    mc_item *a = mc_item_alloc("big", 3, 0, 0, 30000, &err);
    CHECK(a != NULL);
    if (a) {
        mc_value_write(a, 0, val, 30000);
        CHECK_EQ_INT(mc_store(a, MC_OP_APPEND, 0, NULL), MC_TOO_LARGE); /* past -I */
    }
    CHECK_EQ_INT(mc_delete("big", 3, 0), MC_DELETED);
    mc_item *b = mc_item_alloc("big", 3, 0, 0, 520000, &err);
    mc_value_write(b, 0, val, 520000);
    CHECK_EQ_INT(mc_store(b, MC_OP_SET, 0, NULL), MC_STORED);
    a = mc_item_alloc("big", 3, 0, 0, 30000, &err);
    mc_value_write(a, 0, val + 520000, 30000);
    CHECK_EQ_INT(mc_store(a, MC_OP_APPEND, 0, NULL), MC_STORED);
    uint64_t hv = mc_hash("big", 3);
    mc_key_lock(hv);
    mc_item *f = mc_item_find_locked("big", 3, hv);
    CHECK(f != NULL && f->nbytes == 550000 && mc_item_chunked(f));
    if (f) {
        mc_value_out(f, back);
        CHECK(memcmp(back, val, 550000) == 0);
    }
    mc_key_unlock(hv);
    CHECK_EQ_INT(mc_delete("big", 3, 0), MC_DELETED);
    CHECK(used_chunks() == before); /* every chunk back on its free list */
}

/* Short TTLs go to the TEMP LRU when it is on; flat mode puts new items in
 * COLD. */
static void test_lru_segments(void)
{
    struct mc_class *c = &mc_classes[1];
    uint64_t temp = c->count[MC_LRU_TEMP], cold = c->count[MC_LRU_COLD];
    mc_settings.temp_lru = true;
    mc_settings.temporary_ttl = 61;
    mc_settings.lru_segmented = true;
    CHECK_EQ_INT(mc_store(mk("t1", "x", mc_realtime(30)), MC_OP_SET, 0, NULL), MC_STORED);
    CHECK_EQ_INT(mc_store(mk("t2", "x", mc_realtime(61)), MC_OP_SET, 0, NULL), MC_STORED);
    CHECK_EQ_INT(mc_store(mk("t3", "x", mc_realtime(62)), MC_OP_SET, 0, NULL), MC_STORED);
    CHECK(c->count[MC_LRU_TEMP] == temp + 2);
    mc_settings.temp_lru = false;
    mc_settings.lru_segmented = false;
    CHECK_EQ_INT(mc_store(mk("f1", "x", 0), MC_OP_SET, 0, NULL), MC_STORED);
    CHECK(c->count[MC_LRU_COLD] >= cold + 1);
    mc_settings.lru_segmented = true;
    mc_delete("t1", 2, 0), mc_delete("t2", 2, 0), mc_delete("t3", 2, 0), mc_delete("f1", 2, 0);
    CHECK(c->count[MC_LRU_TEMP] == temp);
}

int main(void)
{
    mc_settings.maxbytes = 8u << 20;
    mc_settings.item_size_max = 1u << 20;
    mc_settings.factor = 1.25;
    mc_settings.chunk_min = 48;
    mc_settings.hot_pct = 20;
    mc_settings.warm_pct = 40;
    mc_settings.slab_reassign = true; /* the daemon's defaults */
    mc_settings.slab_automove = 1;
    mc_settings.lru_segmented = true;
    mc_clock_update();
    CHECK(mc_slabs_init() == 0);
    CHECK(mc_assoc_init(16) == 0);
    RUN(test_store_ops);
    RUN(test_arith);
    RUN(test_expiry_rules);
    RUN(test_flush);
    RUN(test_chunked);
    RUN(test_lru_segments);
    RUN(test_crawler);
    RUN(test_eviction_bounded);
    RUN(test_page_move);
    RUN(test_hash_growth);
    return unit_done();
}
