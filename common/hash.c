/* hash: CRC-32, a fast 64-bit table hash, MD5 and the ketama continuum.
 * See hash.h for the contracts. The digests come from packaged libraries:
 * zlib's crc32, OpenSSL's MD5 (EVP) and libxxhash's XXH3; this file only
 * builds the ketama continuum on them. It holds no state but the MD5
 * algorithm handle fetched once. */
#include "common/hash.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <zlib.h>

/* Inlined: memcached's item table hashes every key on every request, and
 * short keys are where a call into libxxhash.so would cost as much as the
 * hash itself. The header is libxxhash-dev's; XXH_INLINE_ALL is its
 * documented way of using it without linking. */
#define XXH_INLINE_ALL
#include <xxhash.h>

uint32_t hash_crc32_update(uint32_t crc, const void *data, size_t len)
{
    const Bytef *p = data;
    uLong c = crc;
    /* zlib's length is a uInt; feed a longer buffer in pieces. */
    while (len > 0) {
        uInt n = len > 0x40000000u ? 0x40000000u : (uInt)len;
        c = crc32(c, p, n);
        p += n;
        len -= n;
    }
    return (uint32_t)c;
}

uint32_t hash_crc32(const void *data, size_t len) { return hash_crc32_update(0, data, len); }

uint64_t hash64(const void *data, size_t len, uint64_t seed) { return XXH3_64bits_withSeed(data, len, seed); }

/* OpenSSL 3 looks an algorithm up by name on every EVP_md5() digest unless
 * the caller fetches it once, and EVP_Digest allocates a context per call;
 * ketama hashes every key, so the handle is fetched once and each thread
 * keeps one context. */
static EVP_MD *md5_alg;
static pthread_once_t md5_once = PTHREAD_ONCE_INIT;
static pthread_key_t md5_ctx_key;
static void md5_ctx_free(void *ctx) { EVP_MD_CTX_free(ctx); }
static void md5_fetch(void)
{
    md5_alg = EVP_MD_fetch(NULL, "MD5", NULL);
    if (pthread_key_create(&md5_ctx_key, md5_ctx_free) != 0)
        abort();
}

void hash_md5(const void *data, size_t len, uint8_t out[16])
{
    pthread_once(&md5_once, md5_fetch);
    EVP_MD_CTX *ctx = pthread_getspecific(md5_ctx_key);
    if (!ctx && (ctx = EVP_MD_CTX_new()) != NULL && pthread_setspecific(md5_ctx_key, ctx) != 0) {
        EVP_MD_CTX_free(ctx);
        ctx = NULL;
    }
    unsigned int n = 0;
    /* MD5 missing from libcrypto (a FIPS-only build) or out of memory:
     * ketama cannot place a key at all. */
    if (!md5_alg || !ctx || EVP_DigestInit_ex2(ctx, md5_alg, NULL) != 1 || EVP_DigestUpdate(ctx, data, len) != 1 ||
        EVP_DigestFinal_ex(ctx, out, &n) != 1 || n != 16)
        abort();
}

/* ---- ketama ---- */

static uint32_t md5_word(const uint8_t d[16], int align)
{
    return ((uint32_t)d[3 + align * 4] << 24) | ((uint32_t)d[2 + align * 4] << 16) | ((uint32_t)d[1 + align * 4] << 8) |
           d[align * 4];
}

uint32_t hash_ketama_hash(const void *key, size_t len)
{
    uint8_t d[16];
    hash_md5(key, len, d);
    return md5_word(d, 0);
}

static int point_cmp(const void *a, const void *b)
{
    const struct hash_ketama_point *x = a, *y = b;
    if (x->value != y->value)
        return x->value < y->value ? -1 : 1;
    if (x->server != y->server)
        return x->server < y->server ? -1 : 1;
    return 0;
}

int hash_ketama_build(struct hash_ketama *k, const struct hash_ketama_server *servers, size_t n)
{
    hash_ketama_free(k);
    uint32_t live = 0;
    uint64_t total_weight = 0;
    for (size_t i = 0; i < n; i++) {
        if (servers[i].dead)
            continue;
        live++;
        total_weight += servers[i].weight ? servers[i].weight : 1;
    }
    if (live == 0)
        return 0;
    /* Upper bound on points: each server gets floor(pct*40*live)*4. */
    size_t cap = 0;
    for (size_t i = 0; i < n; i++) {
        if (servers[i].dead)
            continue;
        float pct = (float)(servers[i].weight ? servers[i].weight : 1) / (float)total_weight;
        cap += (size_t)floorf(pct * HASH_KETAMA_POINTS_PER_SERVER / 4 * (float)live + 0.0000000001F) * 4;
    }
    struct hash_ketama_point *pts = malloc((cap ? cap : 1) * sizeof *pts);
    if (!pts)
        return -1;
    uint32_t np = 0;
    for (size_t i = 0; i < n; i++) {
        if (servers[i].dead)
            continue;
        /* The same float arithmetic as libmemcached so rounding agrees. */
        float pct = (float)(servers[i].weight ? servers[i].weight : 1) / (float)total_weight;
        uint32_t per_server =
            (uint32_t)floorf(pct * HASH_KETAMA_POINTS_PER_SERVER / 4 * (float)live + 0.0000000001F) * 4;
        for (uint32_t idx = 0; idx < per_server / 4; idx++) {
            char name[600];
            int len = servers[i].port == 11211
                          ? snprintf(name, sizeof name, "%s-%u", servers[i].host, idx)
                          : snprintf(name, sizeof name, "%s:%u-%u", servers[i].host, (unsigned)servers[i].port, idx);
            if (len < 0 || (size_t)len >= sizeof name) {
                free(pts);
                return -1;
            }
            uint8_t d[16];
            hash_md5(name, (size_t)len, d);
            for (int a = 0; a < 4; a++) {
                pts[np].value = md5_word(d, a);
                pts[np].server = (uint32_t)i;
                np++;
            }
        }
    }
    qsort(pts, np, sizeof *pts, point_cmp);
    k->points = pts;
    k->npoints = np;
    return 0;
}

void hash_ketama_free(struct hash_ketama *k)
{
    free(k->points);
    k->points = NULL;
    k->npoints = 0;
}

int hash_ketama_lookup(const struct hash_ketama *k, uint32_t hash)
{
    if (k->npoints == 0)
        return -1;
    uint32_t lo = 0, hi = k->npoints;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (k->points[mid].value < hash)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == k->npoints)
        lo = 0;
    return (int)k->points[lo].server;
}
