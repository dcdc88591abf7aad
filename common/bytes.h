/* bytes: byte-order reads and writes on unaligned buffers (wire protocols:
 * gearman's and MySQL's headers, memcached's binary protocol, XMPP/TLS
 * framing). Header-only; every function compiles to a load or store plus a
 * byte swap. Never casts a buffer to a wider pointer type (alignment, strict
 * aliasing): memcpy is what the compiler turns into a single move. */
#ifndef CORE_BYTES_H
#define CORE_BYTES_H

#include <stdint.h>
#include <string.h>

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define BYTES_LE_(x, bits) (x)
#define BYTES_BE_(x, bits) __builtin_bswap##bits(x)
#else
#define BYTES_LE_(x, bits) __builtin_bswap##bits(x)
#define BYTES_BE_(x, bits) (x)
#endif

static inline uint16_t get_be16(const void *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return BYTES_BE_(v, 16);
}
static inline uint32_t get_be32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return BYTES_BE_(v, 32);
}
static inline uint64_t get_be64(const void *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return BYTES_BE_(v, 64);
}
static inline uint16_t get_le16(const void *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return BYTES_LE_(v, 16);
}
static inline uint32_t get_le32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return BYTES_LE_(v, 32);
}
static inline uint64_t get_le64(const void *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return BYTES_LE_(v, 64);
}

static inline void put_be16(void *p, uint16_t v)
{
    v = BYTES_BE_(v, 16);
    memcpy(p, &v, 2);
}
static inline void put_be32(void *p, uint32_t v)
{
    v = BYTES_BE_(v, 32);
    memcpy(p, &v, 4);
}
static inline void put_be64(void *p, uint64_t v)
{
    v = BYTES_BE_(v, 64);
    memcpy(p, &v, 8);
}
static inline void put_le16(void *p, uint16_t v)
{
    v = BYTES_LE_(v, 16);
    memcpy(p, &v, 2);
}
static inline void put_le32(void *p, uint32_t v)
{
    v = BYTES_LE_(v, 32);
    memcpy(p, &v, 4);
}
static inline void put_le64(void *p, uint64_t v)
{
    v = BYTES_LE_(v, 64);
    memcpy(p, &v, 8);
}

/* 24-bit little-endian: MySQL packet lengths. */
static inline uint32_t get_le24(const void *p)
{
    const uint8_t *b = p;
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16;
}
static inline void put_le24(void *p, uint32_t v)
{
    uint8_t *b = p;
    b[0] = (uint8_t)v;
    b[1] = (uint8_t)(v >> 8);
    b[2] = (uint8_t)(v >> 16);
}

#endif
