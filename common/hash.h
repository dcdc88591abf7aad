/* hash: the hash functions the stack shares.
 *
 * - hash_crc32: IEEE CRC-32 (the zlib/ethernet polynomial, reflected), zlib's
 *   crc32(). Cache::Memcached picks a server by (crc32(key) >> 16) & 0x7fff.
 * - hash64: XXH3-64 with a seed (libxxhash), for in-memory tables
 *   (memcached's item table, gearmand's, djabberd's roster). Not meant to be
 *   stable across versions; never put it on the wire or on disk.
 * - hash_md5: RFC 1321 MD5 through OpenSSL's EVP, only because ketama is
 *   defined on it.
 * - hash_ketama_*: the ketama consistent-hash continuum, built exactly as
 *   libmemcached builds its weighted ketama continuum (MEMCACHED_BEHAVIOR_
 *   KETAMA_WEIGHTED, the libketama-compatible mode used by pylibmc, PHP
 *   memcached and spymemcached's KETAMA_HASH): per server 160 points scaled by
 *   weight, 40 MD5 digests of "host:port-N" ("host-N" when the port is
 *   11211), four points per digest; a key maps to the first point >= the
 *   first four bytes (little endian) of its MD5, wrapping to the first point.
 *   A server marked dead is left out, as libmemcached's auto-eject does.
 *
 * Pure functions, no global state (but OpenSSL's MD5 handle, fetched once);
 * safe from any thread. */
#ifndef CORE_HASH_H
#define CORE_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

uint32_t hash_crc32(const void *data, size_t len);
/* Continue a CRC: crc = hash_crc32_update(crc, more, n), starting from 0. */
uint32_t hash_crc32_update(uint32_t crc, const void *data, size_t len);

uint64_t hash64(const void *data, size_t len, uint64_t seed);

void hash_md5(const void *data, size_t len, uint8_t out[16]);

struct hash_ketama_server {
    const char *host; /* as the client was given it ("10.0.0.1", "cache1") */
    int port;
    uint32_t weight; /* 0 counts as 1 */
    bool dead;       /* left out of the continuum */
};

struct hash_ketama_point {
    uint32_t value;
    uint32_t server; /* index into the server array */
};

struct hash_ketama {
    struct hash_ketama_point *points;
    uint32_t npoints;
};

#define HASH_KETAMA_POINTS_PER_SERVER 160

/* (Re)build the continuum from servers[0..n). Returns 0, or -1 on allocation
 * failure or a host name too long (k is then left empty). With no live
 * server the continuum is empty and lookups return -1. */
int hash_ketama_build(struct hash_ketama *k, const struct hash_ketama_server *servers, size_t n);
void hash_ketama_free(struct hash_ketama *k);
/* The 32-bit ketama hash of a key (first 4 MD5 bytes, little endian). */
uint32_t hash_ketama_hash(const void *key, size_t len);
/* Server index for a hash value, or -1 if the continuum is empty. */
int hash_ketama_lookup(const struct hash_ketama *k, uint32_t hash);
static inline int hash_ketama_server_for(const struct hash_ketama *k, const void *key, size_t len)
{
    return hash_ketama_lookup(k, hash_ketama_hash(key, len));
}

#endif
