/* Unit tests for common/hash: CRC-32 and MD5 against published vectors,
 * the wire-visible results its consumers depend on (Cache::Memcached's key
 * hash, libgm's server choice, a whole ketama continuum), hash64 spread,
 * the ketama continuum's shape and stability, and a micro-benchmark of
 * hash64 in a chained table shaped like memcached's (printed, never a
 * threshold). */
#include "common/hash.h"
#include "tests/unit/unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* Values computed before CRC-32/MD5 moved to zlib/OpenSSL (from the
 * hand-written code, checked against python3 zlib.crc32/hashlib.md5). */
#define CRC_FOO 0x8C736521u
#define BUCKET_FOO 0x0C73u
#define CRC_USER 0xEF60C9B7u
#define BUCKET_USER 0x6F60u
#define CRC_BIG 0xEDAD9CE2u
#define MD5_BIG "ebd2d6605dddd11db5eeadd734097ec9"
#define KETAMA_NPOINTS 628
#define KETAMA_FOLD 0x7D880048u
#define KETAMA_USER 0xF72B6854u

static void hex(const uint8_t *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static void test_crc32_vectors(void)
{
    CHECK_EQ_INT(hash_crc32("123456789", 9), 0xCBF43926u);
    CHECK_EQ_INT(hash_crc32("", 0), 0);
    uint32_t c = hash_crc32_update(0, "1234", 4);
    CHECK_EQ_INT(hash_crc32_update(c, "56789", 5), 0xCBF43926u);
}

static void test_md5_vectors(void)
{
    static const struct {
        const char *in, *hex;
    } v[] = {
        { "", "d41d8cd98f00b204e9800998ecf8427e" },
        { "a", "0cc175b9c0f1b6a831c399e269772661" },
        { "abc", "900150983cd24fb0d6963f7d28e17f72" },
        { "message digest", "f96b697d7cb7938d525a2f31aaf161d0" },
        { "abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b" },
        { "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
          "57edf4a22be3c955ac49da2e2107b67a" },
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint8_t d[16];
        char h[33];
        hash_md5(v[i].in, strlen(v[i].in), d);
        hex(d, 16, h);
        CHECK_STR(h, v[i].hex);
    }
    /* 55/56/64-byte boundaries of the padding. */
    char buf[130];
    memset(buf, 'x', sizeof buf);
    uint8_t d1[16], d2[16];
    hash_md5(buf, 56, d1);
    hash_md5(buf, 55, d2);
    CHECK(memcmp(d1, d2, 16) != 0);
}

static void test_hash64_spread(void)
{
    /* Sequential keys spread evenly over 1024 buckets. */
    static unsigned counts[1024];
    memset(counts, 0, sizeof counts);
    char key[32];
    for (int i = 0; i < 102400; i++) {
        int n = snprintf(key, sizeof key, "key:%08d", i);
        counts[hash64(key, (size_t)n, 0) & 1023]++;
    }
    unsigned mn = ~0u, mx = 0;
    for (int i = 0; i < 1024; i++) {
        if (counts[i] < mn)
            mn = counts[i];
        if (counts[i] > mx)
            mx = counts[i];
    }
    CHECK(mn > 50);
    CHECK(mx < 160);
    /* Every length from 0 to 40 gives a different value, seed matters. */
    memset(key, 'a', sizeof key);
    CHECK(hash64(key, 0, 0) != hash64(key, 1, 0));
    CHECK(hash64(key, 7, 0) != hash64(key, 8, 0));
    CHECK(hash64(key, 16, 0) != hash64(key, 16, 1));
    CHECK(hash64("ab", 2, 0) != hash64("ba", 2, 0));
}

static void test_ketama_shape(void)
{
    struct hash_ketama_server s[3] = {
        { "127.0.0.1", 11211, 1, false },
        { "127.0.0.1", 11212, 1, false },
        { "127.0.0.1", 11213, 1, false },
    };
    struct hash_ketama k = { 0 };
    CHECK_EQ_INT(hash_ketama_build(&k, s, 3), 0);
    CHECK_EQ_INT(k.npoints, 480);
    for (uint32_t i = 1; i < k.npoints; i++)
        CHECK(k.points[i - 1].value <= k.points[i].value);
    /* Past the last point wraps to the first. */
    CHECK_EQ_INT(hash_ketama_lookup(&k, 0xffffffffu), (int)k.points[0].server);
    CHECK_EQ_INT(hash_ketama_lookup(&k, k.points[5].value), (int)k.points[5].server);

    /* The first point of "127.0.0.1-0" (port 11211 drops the port) is the
     * little-endian first word of its MD5. */
    uint8_t d[16];
    hash_md5("127.0.0.1-0", 11, d);
    uint32_t w = (uint32_t)d[0] | ((uint32_t)d[1] << 8) | ((uint32_t)d[2] << 16) | ((uint32_t)d[3] << 24);
    int found = 0;
    for (uint32_t i = 0; i < k.npoints; i++)
        if (k.points[i].value == w && k.points[i].server == 0)
            found = 1;
    CHECK(found);

    /* Spread, and consistency: dropping server 1 moves only its keys. */
    int owner[3000], per[3] = { 0, 0, 0 };
    char key[32];
    for (int i = 0; i < 3000; i++) {
        int n = snprintf(key, sizeof key, "k%d", i);
        owner[i] = hash_ketama_server_for(&k, key, (size_t)n);
        CHECK(owner[i] >= 0 && owner[i] < 3);
        per[owner[i]]++;
    }
    for (int i = 0; i < 3; i++)
        CHECK(per[i] > 600);
    s[1].dead = true;
    CHECK_EQ_INT(hash_ketama_build(&k, s, 3), 0);
    CHECK_EQ_INT(k.npoints, 320);
    for (int i = 0; i < 3000; i++) {
        int n = snprintf(key, sizeof key, "k%d", i);
        int o = hash_ketama_server_for(&k, key, (size_t)n);
        CHECK(o != 1);
        if (owner[i] != 1)
            CHECK_EQ_INT(o, owner[i]);
    }
    /* Weights scale the points. */
    s[1].dead = false;
    s[0].weight = 2;
    CHECK_EQ_INT(hash_ketama_build(&k, s, 3), 0);
    CHECK_EQ_INT(k.npoints, 240 + 120 + 120);
    hash_ketama_free(&k);
    struct hash_ketama_server none[1] = { { "x", 1, 1, true } };
    CHECK_EQ_INT(hash_ketama_build(&k, none, 1), 0);
    CHECK_EQ_INT(hash_ketama_lookup(&k, 5), -1);
}

/* What clients see must not change when the implementation does. */
static void test_wire_visible_vectors(void)
{
    /* Cache::Memcached picks a server with (crc32(key) >> 16) & 0x7fff. */
    static const struct {
        const char *key;
        uint32_t crc, bucket;
    } v[] = {
        { "foo", CRC_FOO, BUCKET_FOO },
        { "user:1234:profile", CRC_USER, BUCKET_USER },
        { "The quick brown fox jumps over the lazy dog", 0x414FA339u, 0x414FA339u >> 16 & 0x7fff },
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint32_t c = hash_crc32(v[i].key, strlen(v[i].key));
        CHECK_EQ_INT(c, v[i].crc);
        CHECK_EQ_INT((c >> 16) & 0x7fff, v[i].bucket);
    }
    /* A long input in odd-sized pieces gives the one-shot value. */
    static char big[100000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)(i * 131 + 7);
    uint32_t whole = hash_crc32(big, sizeof big), part = 0;
    for (size_t off = 0, step = 1; off < sizeof big; off += step, step = step * 3 % 4099 + 1)
        part = hash_crc32_update(part, big + off, off + step > sizeof big ? sizeof big - off : step);
    CHECK_EQ_INT(part, whole);
    CHECK_EQ_INT(whole, CRC_BIG);

    /* MD5 of a long input (mogstored's side channel, Content-MD5 both hash
     * with OpenSSL directly; ketama with hash_md5). */
    uint8_t d[16];
    char h[33];
    hash_md5(big, sizeof big, d);
    hex(d, 16, h);
    CHECK_STR(h, MD5_BIG);

    /* A whole weighted continuum, folded into one CRC: the points libmc's
     * clients agreed on before must be the points they get now. */
    struct hash_ketama_server s[4] = {
        { "10.0.0.1", 11211, 1, false },
        { "10.0.0.2", 11212, 3, false },
        { "cache-a", 11211, 2, false },
        { "cache-b", 40000, 1, false },
    };
    struct hash_ketama k = { 0 };
    CHECK_EQ_INT(hash_ketama_build(&k, s, 4), 0);
    CHECK_EQ_INT(k.npoints, KETAMA_NPOINTS);
    uint32_t fold = 0;
    for (uint32_t i = 0; i < k.npoints; i++) {
        uint32_t pt[2] = { k.points[i].value, k.points[i].server };
        fold = hash_crc32_update(fold, pt, sizeof pt);
    }
    CHECK_EQ_INT(fold, KETAMA_FOLD);
    CHECK_EQ_INT(hash_ketama_hash("user:1234:profile", 17), KETAMA_USER);
    hash_ketama_free(&k);
}

/* hash64 in a chained table of 2^20 buckets, as memcached's assoc uses it:
 * 1M keys of memcached-like shape inserted, then each looked up. Prints
 * nanoseconds per hash and per lookup; the figures are for the README, not
 * a pass mark (this machine is shared). */
static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

struct bench_node {
    struct bench_node *next;
    uint8_t nkey;
    char key[47];
};

static void bench_hash64_table(void)
{
    enum { N = 1 << 20 };
    struct bench_node *nodes = calloc(N, sizeof *nodes);
    struct bench_node **tab = calloc(N, sizeof *tab);
    CHECK(nodes && tab);
    if (!nodes || !tab)
        return;
    for (int i = 0; i < N; i++)
        nodes[i].nkey = (uint8_t)snprintf(nodes[i].key, sizeof nodes[i].key, "user:%ld:%s", (long)i * 7919,
                                          i % 3 ? "profile" : "friends:page:1:recent");
    uint64_t sink = 0;
    double t0 = now_ns();
    for (int r = 0; r < 1024; r++) /* 4096 keys in cache: the hash alone */
        for (int i = 0; i < 4096; i++)
            sink += hash64(nodes[i].key, nodes[i].nkey, 0x6d656d6361636865ull);
    double t1 = now_ns();
    for (int i = 0; i < N; i++) {
        uint64_t b = hash64(nodes[i].key, nodes[i].nkey, 0x6d656d6361636865ull) & (N - 1);
        nodes[i].next = tab[b];
        tab[b] = &nodes[i];
    }
    double t2 = now_ns();
    int found = 0;
    for (int i = N - 1; i >= 0; i--) {
        uint64_t b = hash64(nodes[i].key, nodes[i].nkey, 0x6d656d6361636865ull) & (N - 1);
        for (struct bench_node *n = tab[b]; n; n = n->next)
            if (n->nkey == nodes[i].nkey && memcmp(n->key, nodes[i].key, n->nkey) == 0) {
                found++;
                break;
            }
    }
    double t3 = now_ns();
    CHECK_EQ_INT(found, N);
    printf("bench hash64: %.1f ns/hash (keys 14-40 B), table insert %.1f ns/key, lookup %.1f ns/key (%d keys, "
           "2^20 buckets; sink %llu)\n",
           (t1 - t0) / (4096.0 * 1024), (t2 - t1) / N, (t3 - t2) / N, N, (unsigned long long)(sink & 1));
    /* The client side: a key's ketama point (MD5) and its CRC-32. */
    uint32_t s32 = 0;
    double t4 = now_ns();
    for (int i = 0; i < N / 4; i++)
        s32 += hash_ketama_hash(nodes[i].key, nodes[i].nkey);
    double t5 = now_ns();
    for (int i = 0; i < N; i++)
        s32 += hash_crc32(nodes[i].key, nodes[i].nkey);
    double t6 = now_ns();
    printf("bench clients: ketama (MD5) %.1f ns/key, crc32 %.1f ns/key (sink %u)\n", (t5 - t4) / (N / 4), (t6 - t5) / N,
           s32 & 1);
    free(tab);
    free(nodes);
}

int main(void)
{
    RUN(test_crc32_vectors);
    RUN(test_md5_vectors);
    RUN(test_hash64_spread);
    RUN(test_ketama_shape);
    RUN(test_wire_visible_vectors);
    RUN(bench_hash64_table);
    return unit_done();
}
