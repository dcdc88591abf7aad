/* base64 encode/decode (see base64.h). */
#include "common/base64.h"

#include <stdbool.h>
#include <stdint.h>

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int b64_encode(const void *in, size_t n, char *out, size_t cap)
{
    if (b64_encoded_len(n) > cap)
        return -1;
    const unsigned char *s = in;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t w = (uint32_t)s[i] << 16;
        if (i + 1 < n)
            w |= (uint32_t)s[i + 1] << 8;
        if (i + 2 < n)
            w |= s[i + 2];
        out[o++] = alphabet[(w >> 18) & 63];
        out[o++] = alphabet[(w >> 12) & 63];
        out[o++] = i + 1 < n ? alphabet[(w >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? alphabet[w & 63] : '=';
    }
    return (int)o;
}

static int value_of(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int b64_decode(const char *in, size_t n, void *outv, size_t cap, int flags)
{
    bool lenient = (flags & B64_LENIENT) != 0;
    if (!lenient && n % 4 != 0)
        return -1;
    unsigned char *out = outv;
    size_t o = 0;
    uint32_t v = 0;
    int bits = 0, pad = 0;
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        if (lenient && (c == '\r' || c == '\n' || c == ' ' || c == '\t'))
            continue;
        if (c == '=') {
            if (!lenient && i + 2 < n)
                return -1; /* strict: padding only in the last two places */
            pad++;
            continue;
        }
        if (pad)
            return -1; /* nothing but padding after padding */
        int x = value_of(c);
        if (x < 0)
            return -1;
        v = v << 6 | (uint32_t)x;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= cap)
                return -1;
            out[o++] = (unsigned char)(v >> bits);
        }
    }
    if (pad > 2)
        return -1;
    return (int)o;
}
