/* libschwartz: a blocking client/worker library for schwartzd
 * (schwartz/PROTOCOL.md). One sw_client is one connection; not thread-safe
 * (use one per thread). A lost connection is re-opened on the next call. */
#ifndef LIBSCHWARTZ_H
#define LIBSCHWARTZ_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct sw_client;

/* server: "host:port" (default port 7003). timeout_ms bounds connect and
 * each reply (0 = 30 s). Never fails to allocate a usable handle unless
 * out of memory; the connection is opened on first use. */
struct sw_client *sw_client_new(const char *server, int timeout_ms);
void sw_client_free(struct sw_client *c);
/* Text of the last error ("ERR CODE text" from the server, or a socket error). */
const char *sw_client_error(const struct sw_client *c);

struct sw_insert_opts {
    const char *uniqkey;  /* NULL = none */
    int priority;         /* < 0 = none */
    long long run_after;  /* 0 = now */
    const char *coalesce; /* NULL = none */
};

/* Insert one job; its handle goes to handle. 0 or -1. */
int sw_client_insert(struct sw_client *c, const char *func, const void *arg, size_t len,
                     const struct sw_insert_opts *opts, char *handle, size_t handle_len);

struct sw_client_job {
    char handle[64];
    char func[256];
    unsigned char *arg; /* arglen bytes (+ a NUL for convenience) */
    size_t arglen;
    long long failures;
};

/* Grab up to max jobs of these functions for grab_for seconds. Returns the
 * number grabbed (0 = none ready), -1 on error. Free with sw_client_jobs_free. */
int sw_client_grab(struct sw_client *c, const char *const *funcs, int nfuncs, int max, int grab_for,
                   struct sw_client_job **jobs);
void sw_client_jobs_free(struct sw_client_job *jobs, int n);

int sw_client_completed(struct sw_client *c, const char *handle);
/* Returns 1 if the job will be retried, 0 if it failed for good, -1 on error. */
int sw_client_failed(struct sw_client *c, const char *handle, const char *message, int exit_status, int permanent);
int sw_client_declined(struct sw_client *c, const char *handle, long long run_after);
/* Extend the lease of a job this worker holds to seconds from now. 0, or -1
 * (the job is gone or its lease already ran out: someone else may hold it). */
int sw_client_touch(struct sw_client *c, const char *handle, int seconds);

/* Send one command line and call fn for each reply line up to "END"
 * (queues, funcmap, stats). Returns 0 or -1. */
int sw_client_lines(struct sw_client *c, const char *command, void (*fn)(const char *line, void *arg), void *arg);

#ifdef __cplusplus
}
#endif
#endif
