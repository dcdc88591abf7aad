/* hash: CRC-32, a fast 64-bit table hash, MD5 and the ketama continuum.
 * See hash.h for the contracts; this file holds no state. */
#include "common/hash.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- CRC-32 (IEEE, reflected 0xEDB88320), table built at compile time ---- */

#define CRC_POLY 0xEDB88320u
#define C1(c) (((c)&1) ? ((c) >> 1) ^ CRC_POLY : (c) >> 1)
#define C8(c) C1(C1(C1(C1(C1(C1(C1(C1(c))))))))
#define R4(i) C8((uint32_t)(i)), C8((uint32_t)(i) + 1), C8((uint32_t)(i) + 2), C8((uint32_t)(i) + 3)
#define R16(i) R4(i), R4((i) + 4), R4((i) + 8), R4((i) + 12)
#define R64(i) R16(i), R16((i) + 16), R16((i) + 32), R16((i) + 48)
static const uint32_t crc_table[256] = { R64(0), R64(64), R64(128), R64(192) };

uint32_t hash_crc32_update(uint32_t crc, const void *data, size_t len)
{
    const uint8_t *p = data;
    crc = ~crc;
    while (len--)
        crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

uint32_t hash_crc32(const void *data, size_t len) { return hash_crc32_update(0, data, len); }

/* ---- hash64: 128-bit multiply-fold over 16-byte blocks ----
 * Each step multiplies two 64-bit words (data xor secret, state xor secret)
 * into 128 bits and folds the halves, which diffuses every input bit over
 * the whole word in one multiply. Short keys (memcached keys are mostly
 * 10-60 bytes) take two to five multiplies. */

static const uint64_t S0 = 0xa0761d6478bd642full, S1 = 0xe7037ed1a0b428dbull, S2 = 0x8ebc6af09c88c6e3ull,
                      S3 = 0x589965cc75374cc3ull;

static inline uint64_t fold(uint64_t a, uint64_t b)
{
    __uint128_t r = (__uint128_t)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static inline uint64_t rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

uint64_t hash64(const void *data, size_t len, uint64_t seed)
{
    const uint8_t *p = data;
    size_t n = len;
    uint64_t h = seed ^ S0 ^ fold(seed ^ S1, (uint64_t)len ^ S2);
    while (n >= 16) {
        h = fold(rd64(p) ^ S1, rd64(p + 8) ^ h);
        p += 16;
        n -= 16;
    }
    uint64_t a = 0, b = 0;
    if (n >= 8) {
        a = rd64(p);
        b = rd64(p + n - 8); /* overlapping read covers 8..15 bytes */
    } else if (n >= 4) {
        uint32_t x, y;
        memcpy(&x, p, 4);
        memcpy(&y, p + n - 4, 4);
        a = x;
        b = y;
    } else if (n > 0) {
        a = ((uint64_t)p[0] << 16) | ((uint64_t)p[n >> 1] << 8) | p[n - 1];
    }
    h = fold(a ^ S2 ^ h, b ^ S3);
    return fold(h ^ S0, (uint64_t)len ^ S1);
}

/* ---- MD5 (RFC 1321) ---- */

static const uint32_t md5_k[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
};
static const uint8_t md5_r[64] = {
    7,  12, 17, 22, 7,  12, 17, 22, 7,  12, 17, 22, 7,  12, 17, 22, 5,  9,  14, 20, 5,  9,
    14, 20, 5,  9,  14, 20, 5,  9,  14, 20, 4,  11, 16, 23, 4,  11, 16, 23, 4,  11, 16, 23,
    4,  11, 16, 23, 6,  10, 15, 21, 6,  10, 15, 21, 6,  10, 15, 21, 6,  10, 15, 21,
};

static inline uint32_t rotl32(uint32_t x, int c) { return (x << c) | (x >> (32 - c)); }

static void md5_block(uint32_t st[4], const uint8_t *blk)
{
    uint32_t m[16];
    for (int i = 0; i < 16; i++)
        m[i] = (uint32_t)blk[i * 4] | ((uint32_t)blk[i * 4 + 1] << 8) | ((uint32_t)blk[i * 4 + 2] << 16) |
               ((uint32_t)blk[i * 4 + 3] << 24);
    uint32_t a = st[0], b = st[1], c = st[2], d = st[3];
    for (int i = 0; i < 64; i++) {
        uint32_t f;
        int g;
        if (i < 16) {
            f = (b & c) | (~b & d);
            g = i;
        } else if (i < 32) {
            f = (d & b) | (~d & c);
            g = (5 * i + 1) & 15;
        } else if (i < 48) {
            f = b ^ c ^ d;
            g = (3 * i + 5) & 15;
        } else {
            f = c ^ (b | ~d);
            g = (7 * i) & 15;
        }
        f += a + md5_k[i] + m[g];
        a = d;
        d = c;
        c = b;
        b += rotl32(f, md5_r[i]);
    }
    st[0] += a;
    st[1] += b;
    st[2] += c;
    st[3] += d;
}

void hash_md5(const void *data, size_t len, uint8_t out[16])
{
    uint32_t st[4] = { 0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476 };
    const uint8_t *p = data;
    size_t n = len;
    while (n >= 64) {
        md5_block(st, p);
        p += 64;
        n -= 64;
    }
    uint8_t tail[128];
    memset(tail, 0, sizeof tail);
    if (n)
        memcpy(tail, p, n);
    tail[n] = 0x80;
    size_t tl = (n < 56) ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++)
        tail[tl - 8 + i] = (uint8_t)(bits >> (8 * i));
    md5_block(st, tail);
    if (tl == 128)
        md5_block(st, tail + 64);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            out[i * 4 + j] = (uint8_t)(st[i] >> (8 * j));
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
