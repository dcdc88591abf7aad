/* Unit tests for common/hash: CRC-32 and MD5 against published vectors,
 * hash64 spread, and the ketama continuum's shape and stability. */
#include "common/hash.h"
#include "tests/unit/unit.h"

#include <stdio.h>
#include <stdlib.h>

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

int main(void)
{
    RUN(test_crc32_vectors);
    RUN(test_md5_vectors);
    RUN(test_hash64_spread);
    RUN(test_ketama_shape);
    return unit_done();
}
