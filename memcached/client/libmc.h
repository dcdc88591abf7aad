/* libmc: a memcached client library.
 *
 * One struct mc_client talks to a list of servers. Keys go to servers by
 * the ketama consistent hash, built exactly as libmemcached's weighted
 * ketama (MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED), so a key lands on the same
 * server from this library, libmemcached, pylibmc or PHP's memcached.
 *
 * Calls are blocking with timeouts (connect and per-call I/O). A server
 * that fails failure_limit calls in a row is marked dead and left out of the
 * continuum (its keys rehash to the others); after retry_interval_ms it is
 * put back and tried again. Multi-get sends to every server involved before
 * reading any reply, so servers work in parallel.
 *
 * Speaks the text protocol (default), the meta protocol or the binary
 * protocol (multi-get as quiet GETKQs closed by a NOOP).
 *
 * Compression, compatible with Perl's Cache::Memcached: with
 * compress_threshold > 0, a set/add/replace/cas value of that many bytes or
 * more is gzip'd (RFC 1952, as Compress::Zlib::memGzip) and stored with
 * flag bit MC_CLIENT_F_COMPRESS (2) when that saves at least 20% of its
 * size; otherwise it is stored as given. append/prepend are never
 * compressed. Fetched values carrying the bit are inflated (at most
 * MC_CLIENT_INFLATE_MAX bytes) and handed back with the bit cleared; one
 * that does not inflate is reported as a miss, as Cache::Memcached does
 * with a value it cannot decode. With compression on, flag bit 2 belongs
 * to the library. With compress_threshold 0 (the default) values and
 * flags pass untouched both ways.
 *
 * A reply announcing a value over 256 MiB is taken for a broken stream
 * (MC_CLIENT_PROTOCOL) rather than reserving that much on the server's
 * word; memcached's default item limit is 1 MiB (-I).
 *
 * An mc_client is not thread-safe: use one per thread. */
#ifndef LIBMC_H
#define LIBMC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum mc_client_rc {
    MC_CLIENT_OK = 0,
    MC_CLIENT_NOT_FOUND,    /* miss, NOT_FOUND, NF, EN */
    MC_CLIENT_NOT_STORED,   /* add/replace/append/prepend condition not met */
    MC_CLIENT_EXISTS,       /* cas mismatch */
    MC_CLIENT_SERVER_ERROR, /* the server answered ERROR, CLIENT_ERROR or SERVER_ERROR */
    MC_CLIENT_TIMEOUT,      /* connect or I/O took longer than allowed */
    MC_CLIENT_CONNECTION,   /* connect, read or write failed; server closed */
    MC_CLIENT_NO_SERVER,    /* no live server for the key */
    MC_CLIENT_BAD_ARGUMENT, /* key empty, too long, or with spaces/control chars */
    MC_CLIENT_NO_MEMORY,
    MC_CLIENT_PROTOCOL, /* a reply this library did not expect */
};

enum mc_client_protocol { MC_CLIENT_TEXT = 0, MC_CLIENT_META = 1, MC_CLIENT_BINARY = 2 };

#define MC_CLIENT_F_COMPRESS 2u           /* Cache::Memcached's F_COMPRESS */
#define MC_CLIENT_INFLATE_MAX (64u << 20) /* bound on an inflated value */

struct mc_client_options {
    int connect_timeout_ms; /* 0 = 1000 */
    int io_timeout_ms;      /* 0 = 1000; per call */
    int failure_limit;      /* 0 = 2: failures in a row before a server is dead */
    int retry_interval_ms;  /* 0 = 2000: a dead server is retried after this */
    enum mc_client_protocol protocol;
    int compress_threshold; /* 0 = no compression; else bytes (Cache::Memcached's compress_threshold) */
};

struct mc_client;

/* servers: "host[:port[:weight]]" separated by commas or spaces; port
 * defaults to 11211; "/path" is a unix socket. opts may be NULL. Returns
 * NULL with a message in err on a bad list. No connection is made yet. */
struct mc_client *mc_client_new(const char *servers, const struct mc_client_options *opts, char *err, size_t errlen);
void mc_client_free(struct mc_client *c);

/* A fetched value; data is malloc'd, NUL-terminated (not counted in len). */
struct mc_client_value {
    char *data;
    size_t len;
    uint32_t flags;
    uint64_t cas;
};
void mc_client_value_free(struct mc_client_value *v);

int mc_client_get(struct mc_client *c, const char *key, size_t nkey, struct mc_client_value *out);

/* Called once per hit of a multi-get; key and data are valid during the
 * call only. Misses are not reported. */
typedef void (*mc_client_value_fn)(const char *key, size_t nkey, const char *data, size_t len, uint32_t flags,
                                   uint64_t cas, void *arg);
/* Fetch n keys from all the servers they map to. Returns MC_CLIENT_OK if
 * every server involved answered, else the first error met (hits from the
 * servers that answered are still reported). */
int mc_client_get_multi(struct mc_client *c, const char *const *keys, const size_t *nkeys, size_t n,
                        mc_client_value_fn fn, void *arg);

int mc_client_set(struct mc_client *c, const char *key, size_t nkey, const void *data, size_t len, uint32_t flags,
                  int32_t exptime);
int mc_client_add(struct mc_client *c, const char *key, size_t nkey, const void *data, size_t len, uint32_t flags,
                  int32_t exptime);
int mc_client_replace(struct mc_client *c, const char *key, size_t nkey, const void *data, size_t len, uint32_t flags,
                      int32_t exptime);
int mc_client_append(struct mc_client *c, const char *key, size_t nkey, const void *data, size_t len);
int mc_client_prepend(struct mc_client *c, const char *key, size_t nkey, const void *data, size_t len);
int mc_client_cas(struct mc_client *c, const char *key, size_t nkey, const void *data, size_t len, uint32_t flags,
                  int32_t exptime, uint64_t cas);
int mc_client_delete(struct mc_client *c, const char *key, size_t nkey);
/* New value in *value (may be NULL). */
int mc_client_incr(struct mc_client *c, const char *key, size_t nkey, uint64_t delta, uint64_t *value);
int mc_client_decr(struct mc_client *c, const char *key, size_t nkey, uint64_t delta, uint64_t *value);
int mc_client_touch(struct mc_client *c, const char *key, size_t nkey, int32_t exptime);

/* Every live server; returns the first error met. */
int mc_client_flush_all(struct mc_client *c, int32_t delay);

/* Per-server calls (index 0..count-1). stats: group NULL or "" for plain. */
typedef void (*mc_client_stat_fn)(const char *name, const char *value, void *arg);
int mc_client_stats(struct mc_client *c, size_t server, const char *group, mc_client_stat_fn fn, void *arg);
int mc_client_version(struct mc_client *c, size_t server, char *buf, size_t len);

size_t mc_client_server_count(const struct mc_client *c);
/* "host:port" (or the socket path). */
const char *mc_client_server_name(const struct mc_client *c, size_t server);
bool mc_client_server_alive(const struct mc_client *c, size_t server);
/* The server a key maps to now, or -1 when none is alive. */
int mc_client_server_for_key(struct mc_client *c, const char *key, size_t nkey);

const char *mc_client_strerror(int rc);

#ifdef __cplusplus
}
#endif

#endif
