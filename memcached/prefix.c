/* prefix: "stats detail": get/hit/set/delete counts per key prefix (the
 * part of a key before the -D delimiter, ':' by default), kept only while
 * "stats detail on". Keys without the delimiter are not counted, as in
 * memcached.
 *
 * One mutex-protected table: recording costs a lock per request, which is
 * why it is off by default and the hot path only tests a flag. The table
 * holds at most MC_PREFIX_MAX prefixes; a client inventing new prefixes
 * past that is not recorded (memcached has no such bound). */
#include "memcached/mc.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#define MC_PREFIX_MAX 4096
#define PREFIX_BUCKETS 256

struct prefix {
    struct prefix *next;  /* bucket chain */
    struct prefix *order; /* all prefixes, newest first (the dump's order) */
    uint64_t get, hit, set, del;
    size_t len;
    char name[];
};

_Atomic bool mc_detail_enabled;
char mc_prefix_delimiter = ':';
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct prefix *buckets[PREFIX_BUCKETS];
static struct prefix *all;
static unsigned count;

static struct prefix *find_or_add(const char *key, size_t nkey)
{
    const char *d = memchr(key, mc_prefix_delimiter, nkey);
    if (!d)
        return NULL;
    size_t len = (size_t)(d - key);
    uint32_t h = 2166136261u; /* FNV-1a: short names, a small table */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)key[i]) * 16777619u;
    struct prefix **b = &buckets[h % PREFIX_BUCKETS];
    for (struct prefix *p = *b; p; p = p->next)
        if (p->len == len && memcmp(p->name, key, len) == 0)
            return p;
    if (count >= MC_PREFIX_MAX)
        return NULL;
    struct prefix *p = calloc(1, sizeof *p + len + 1);
    if (!p)
        return NULL;
    memcpy(p->name, key, len);
    p->len = len;
    p->next = *b;
    *b = p;
    p->order = all;
    all = p;
    count++;
    return p;
}

void mc_prefix_record(const char *key, size_t nkey, enum mc_prefix_op op, bool hit)
{
    pthread_mutex_lock(&lock);
    struct prefix *p = find_or_add(key, nkey);
    if (p) {
        switch (op) {
        case MC_PREFIX_GET:
            p->get++;
            p->hit += hit;
            break;
        case MC_PREFIX_SET: p->set++; break;
        case MC_PREFIX_DEL: p->del++; break;
        }
    }
    pthread_mutex_unlock(&lock);
}

void mc_prefix_dump(struct evbuffer *out)
{
    pthread_mutex_lock(&lock);
    for (struct prefix *p = all; p; p = p->order)
        evbuffer_add_printf(out, "PREFIX %s get %" PRIu64 " hit %" PRIu64 " set %" PRIu64 " del %" PRIu64 "\r\n",
                            p->name, p->get, p->hit, p->set, p->del);
    pthread_mutex_unlock(&lock);
}

void mc_prefix_clear(void)
{
    pthread_mutex_lock(&lock);
    while (all) {
        struct prefix *n = all->order;
        free(all);
        all = n;
    }
    memset(buckets, 0, sizeof buckets);
    count = 0;
    pthread_mutex_unlock(&lock);
}
