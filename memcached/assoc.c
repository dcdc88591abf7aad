/* assoc: the item hash table and the key stripe locks.
 *
 * Chained buckets, 2^hashpower of them. A key's stripe lock is chosen by the
 * low bits of its hash, and there are never more stripes than buckets, so
 * all keys of one bucket share one stripe: the stripe protects the bucket's
 * chain. When items exceed 1.5 x buckets the maintainer thread doubles the
 * table: it swaps in the new array with every stripe held (rare, short),
 * then moves the old buckets over one at a time under their own stripe,
 * while lookups pick the old or new array by comparing their old bucket
 * index with expand_bucket (memcached's scheme, with stripes). */
#include "memcached/mc.h"

#include <stdlib.h>
#include <string.h>

#include "common/hash.h"
#include "common/log.h"

#define STRIPE_BITS 12
#define NSTRIPES (1u << STRIPE_BITS)

/* Padded so two hot stripes don't share a cache line. */
struct stripe {
    pthread_mutex_t m;
    char pad[64 - sizeof(pthread_mutex_t) % 64];
};
static struct stripe stripes[NSTRIPES];

static mc_item **primary, **old_table;
static unsigned hashpower;
static bool expanding;
static _Atomic uint64_t expand_bucket;

uint64_t mc_hash(const char *key, size_t nkey) { return hash64(key, nkey, 0x6d656d6361636865ull); }
void mc_key_lock(uint64_t hv) { pthread_mutex_lock(&stripes[hv & (NSTRIPES - 1)].m); }
void mc_key_unlock(uint64_t hv) { pthread_mutex_unlock(&stripes[hv & (NSTRIPES - 1)].m); }
bool mc_key_trylock(uint64_t hv) { return pthread_mutex_trylock(&stripes[hv & (NSTRIPES - 1)].m) == 0; }

static void lock_all(void)
{
    for (unsigned i = 0; i < NSTRIPES; i++)
        pthread_mutex_lock(&stripes[i].m);
}

static void unlock_all(void)
{
    for (unsigned i = NSTRIPES; i-- > 0;)
        pthread_mutex_unlock(&stripes[i].m);
}

int mc_assoc_init(int hp)
{
    if (hp < 16)
        hp = 16;
    if (hp > 32)
        hp = 32;
    for (unsigned i = 0; i < NSTRIPES; i++)
        pthread_mutex_init(&stripes[i].m, NULL);
    hashpower = (unsigned)hp;
    primary = calloc((size_t)1 << hashpower, sizeof *primary);
    return primary ? 0 : -1;
}

/* Caller holds the stripe of hv. */
static mc_item **bucket(uint64_t hv)
{
    if (expanding) {
        uint64_t ob = hv & (((uint64_t)1 << (hashpower - 1)) - 1);
        if (ob >= atomic_load_explicit(&expand_bucket, memory_order_acquire))
            return &old_table[ob];
    }
    return &primary[hv & (((uint64_t)1 << hashpower) - 1)];
}

mc_item *mc_assoc_find(const char *key, size_t nkey, uint64_t hv)
{
    for (mc_item *it = *bucket(hv); it; it = it->hnext)
        if (it->nkey == nkey && memcmp(it->data, key, nkey) == 0)
            return it;
    return NULL;
}

void mc_assoc_insert(mc_item *it, uint64_t hv)
{
    mc_item **b = bucket(hv);
    it->hnext = *b;
    *b = it;
}

void mc_assoc_delete(const char *key, size_t nkey, uint64_t hv)
{
    for (mc_item **p = bucket(hv); *p; p = &(*p)->hnext) {
        mc_item *it = *p;
        if (it->nkey == nkey && memcmp(it->data, key, nkey) == 0) {
            *p = it->hnext;
            it->hnext = NULL;
            return;
        }
    }
}

unsigned mc_assoc_hashpower(void) { return hashpower; }
bool mc_assoc_expanding(void) { return expanding; }
uint64_t mc_assoc_bytes(void)
{
    uint64_t b = ((uint64_t)1 << hashpower) * sizeof(mc_item *);
    if (expanding)
        b += ((uint64_t)1 << (hashpower - 1)) * sizeof(mc_item *);
    return b;
}

/* Called only from the maintainer thread, so expanding/hashpower/tables
 * change on one thread (always with every stripe held). */
bool mc_assoc_maintain(uint64_t items)
{
    if (!expanding) {
        if (items <= ((uint64_t)3 << hashpower) / 2 || hashpower >= 32)
            return false;
        mc_item **n = calloc((size_t)1 << (hashpower + 1), sizeof *n);
        if (!n)
            return false;
        lock_all();
        old_table = primary;
        primary = n;
        hashpower++;
        atomic_store(&expand_bucket, 0);
        expanding = true;
        unlock_all();
        atomic_fetch_add(&mc_sstats.hash_expansions, 1);
        log_info("hash table growing to 2^%u buckets", hashpower);
    }
    uint64_t oldsize = (uint64_t)1 << (hashpower - 1);
    uint64_t newmask = ((uint64_t)1 << hashpower) - 1;
    /* Move a batch of old buckets. */
    for (int n = 0; n < 4096; n++) {
        uint64_t b = atomic_load(&expand_bucket);
        if (b >= oldsize)
            break;
        mc_key_lock(b);
        mc_item *it = old_table[b];
        while (it) {
            mc_item *next = it->hnext;
            uint64_t nb = mc_hash(it->data, it->nkey) & newmask;
            it->hnext = primary[nb];
            primary[nb] = it;
            it = next;
        }
        old_table[b] = NULL;
        atomic_store_explicit(&expand_bucket, b + 1, memory_order_release);
        mc_key_unlock(b);
    }
    if (atomic_load(&expand_bucket) >= oldsize) {
        lock_all();
        free(old_table);
        old_table = NULL;
        expanding = false;
        unlock_all();
        return false;
    }
    return true;
}
