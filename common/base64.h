/* base64: RFC 4648's standard alphabet with '=' padding.
 *
 * b64_decode is strict by default (memcached's meta keys: whole quads, no
 * other byte, padding only at the very end); B64_LENIENT skips whitespace,
 * takes input without its padding and ignores leftover bits (SASL payloads,
 * which some XMPP clients wrap). */
#ifndef COMMON_BASE64_H
#define COMMON_BASE64_H

#include <stddef.h>

#define B64_LENIENT 1

/* Bytes that encoding n bytes makes (no NUL). */
static inline size_t b64_encoded_len(size_t n) { return (n + 2) / 3 * 4; }

/* Encode n bytes into out (no NUL written). The length, or -1 when cap is
 * too small. */
int b64_encode(const void *in, size_t n, char *out, size_t cap);

/* Decode n characters into out. The length, or -1 on bad input or when the
 * result does not fit in cap. */
int b64_decode(const char *in, size_t n, void *out, size_t cap, int flags);

#endif
