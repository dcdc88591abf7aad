/* libmogile: a blocking C client for MogileFS trackers and storage nodes.
 *
 * Speaks the tracker protocol as MogileFS::Client does (one request per
 * connection at a time, URL-encoded arguments, OK/ERR replies), with
 * failover: trackers are tried in random order and one that fails is left
 * alone for dead_retry_ms; reads try every path get_paths returned.
 *
 * A client is not thread-safe: use one per thread. Every call returns 0 on
 * success or -1, with the tracker's error code (e.g. "unknown_key") or a
 * local one ("connect", "timeout", "http") in mog_client_error(). */
#ifndef LIBMOGILE_H
#define LIBMOGILE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct mog_client;

struct mog_client_options {
    int connect_timeout_ms; /* 0 = 1000 */
    int timeout_ms;         /* reply timeout; 0 = 3000 (MogileFS::Client's 3 s) */
    int dead_retry_ms;      /* 0 = 5000 */
};

/* trackers: "host:port,host:port". domain may be NULL for admin use. */
struct mog_client *mog_client_new(const char *trackers, const char *domain, const struct mog_client_options *opts);
void mog_client_free(struct mog_client *c);
/* "code" of the last failure and its text. */
const char *mog_client_error(const struct mog_client *c);
const char *mog_client_error_text(const struct mog_client *c);

/* A tracker reply: key/value pairs. */
struct mog_client_res;
/* Send any command: kv is NULL-terminated {key, value, key, value, ..., NULL}.
 * The domain is added when set and kv has none. *res is freed by the caller. */
int mog_client_request(struct mog_client *c, const char *cmd, const char *const *kv, struct mog_client_res **res);
const char *mog_client_res_get(const struct mog_client_res *res, const char *key);
int mog_client_res_count(const struct mog_client_res *res);
const char *mog_client_res_key(const struct mog_client_res *res, int i);
const char *mog_client_res_value(const struct mog_client_res *res, int i);
void mog_client_res_free(struct mog_client_res *res);

/* Files (MogileFS::Client's store_content / get_file_data / delete ...). */
int mog_client_store(struct mog_client *c, const char *key, const char *cls, const void *data, size_t len);
int mog_client_store_file(struct mog_client *c, const char *key, const char *cls, const char *path);
/* *data is malloc'd (NUL-terminated for convenience). */
int mog_client_fetch(struct mog_client *c, const char *key, void **data, size_t *len);
int mog_client_delete(struct mog_client *c, const char *key);
int mog_client_rename(struct mog_client *c, const char *from, const char *to);
/* paths: up to max URLs, each malloc'd; returns the count or -1. */
int mog_client_get_paths(struct mog_client *c, const char *key, int noverify, char **paths, int max);
/* Keys after `after` (NULL = start) with prefix; keys malloc'd. Returns the
 * count (0 at the end) or -1. */
int mog_client_list_keys(struct mog_client *c, const char *prefix, const char *after, int limit, char **keys);

#ifdef __cplusplus
}
#endif
#endif
