/* common/base64: RFC 4648 vectors, strict and lenient decoding, bounds. */
#include "common/base64.h"

#include "tests/unit/unit.h"

static void test_vectors(void)
{
    static const char *const plain[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
    static const char *const coded[] = { "", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy" };
    for (int i = 0; i < 7; i++) {
        char enc[16], dec[16];
        int n = b64_encode(plain[i], strlen(plain[i]), enc, sizeof enc);
        CHECK_EQ_INT(n, (int)strlen(coded[i]));
        enc[n > 0 ? n : 0] = 0;
        CHECK_STR(enc, coded[i]);
        for (int flags = 0; flags <= B64_LENIENT; flags++) {
            int m = b64_decode(coded[i], strlen(coded[i]), dec, sizeof dec, flags);
            CHECK_EQ_INT(m, (int)strlen(plain[i]));
            dec[m > 0 ? m : 0] = 0;
            CHECK_STR(dec, plain[i]);
        }
    }
}

static void test_strict_refuses(void)
{
    char out[16];
    CHECK_EQ_INT(b64_decode("Zg", 2, out, sizeof out, 0), -1);       /* not whole quads */
    CHECK_EQ_INT(b64_decode("Zg=a", 4, out, sizeof out, 0), -1);     /* data after padding */
    CHECK_EQ_INT(b64_decode("Z===", 4, out, sizeof out, 0), -1);     /* padding too early */
    CHECK_EQ_INT(b64_decode("Zm9v\n", 5, out, sizeof out, 0), -1);   /* whitespace */
    CHECK_EQ_INT(b64_decode("Zm9*", 4, out, sizeof out, 0), -1);     /* not in the alphabet */
    CHECK_EQ_INT(b64_decode("Zg==Zg==", 8, out, sizeof out, 0), -1); /* padding mid-way */
}

static void test_lenient_accepts_and_refuses(void)
{
    char out[16];
    CHECK_EQ_INT(b64_decode("Zm9v\r\nYmFy", 10, out, sizeof out, B64_LENIENT), 6);
    CHECK(memcmp(out, "foobar", 6) == 0);
    CHECK_EQ_INT(b64_decode("Zg", 2, out, sizeof out, B64_LENIENT), 1); /* padding left out */
    CHECK_EQ_INT(out[0], 'f');
    CHECK_EQ_INT(b64_decode("Zg===", 5, out, sizeof out, B64_LENIENT), -1); /* three pads */
    CHECK_EQ_INT(b64_decode("Zg=a", 4, out, sizeof out, B64_LENIENT), -1);
}

static void test_bounds(void)
{
    char out[8];
    CHECK_EQ_INT(b64_encode("foo", 3, out, 3), -1); /* needs 4 */
    CHECK_EQ_INT(b64_encode("foo", 3, out, 4), 4);
    CHECK_EQ_INT(b64_decode("Zm9vYmFy", 8, out, 5, 0), -1); /* 6 bytes into 5 */
    CHECK_EQ_INT(b64_decode("Zm9vYmFy", 8, out, 5, B64_LENIENT), -1);
    CHECK_EQ_INT(b64_encoded_len(0), 0);
    CHECK_EQ_INT(b64_encoded_len(4), 8);
}

int main(void)
{
    RUN(test_vectors);
    RUN(test_strict_refuses);
    RUN(test_lenient_accepts_and_refuses);
    RUN(test_bounds);
    return unit_done();
}
