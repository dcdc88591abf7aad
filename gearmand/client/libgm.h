/* libgm: a Gearman client and worker library (binary protocol, works with
 * this project's gearmand and with gearmand 1.1).
 *
 * Several job servers: a job goes to the server picked by the CRC-32 of its
 * unique key (round robin when it has none), so identical submits meet on
 * one server and coalesce. A server that cannot be reached is marked dead
 * for retry_interval_ms and its jobs go to the next live server in order
 * (fail over); a job whose server dies before JOB_CREATED is resubmitted
 * elsewhere, one whose server dies after it fails with GM_CLIENT_LOST.
 *
 * Client: gm_client_do (synchronous), gm_client_do_background, and
 * callback-based tasks (gm_client_add_task + gm_client_run_tasks, every
 * task in flight at once over all servers). gm_client_status asks for a
 * background job's progress.
 *
 * Worker: register functions, then gm_worker_work() takes and runs one job:
 * GRAB_JOB_UNIQ on each server; when none has work, PRE_SLEEP on all and
 * wait for a NOOP. A worker may send WORK_DATA/WORK_STATUS while it runs.
 *
 * Blocking calls with timeouts; one struct per thread (not thread-safe). */
#ifndef LIBGM_H
#define LIBGM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum gm_client_rc {
    GM_CLIENT_OK = 0,
    GM_CLIENT_WORK_FAIL,      /* the worker failed the job (or it ran out of retries) */
    GM_CLIENT_WORK_EXCEPTION, /* the worker raised an exception (text in the result) */
    GM_CLIENT_SERVER_ERROR,   /* the server answered ERROR (code and text in gm_client_error) */
    GM_CLIENT_TIMEOUT,
    GM_CLIENT_NO_SERVER, /* no server could be reached */
    GM_CLIENT_LOST,      /* the server went away while the job ran */
    GM_CLIENT_BAD_ARGUMENT,
    GM_CLIENT_NO_MEMORY,
    GM_CLIENT_PROTOCOL, /* a reply this library did not expect */
};

enum gm_client_prio { GM_CLIENT_NORMAL = 0, GM_CLIENT_HIGH = 1, GM_CLIENT_LOW = 2 };

#define GM_CLIENT_HANDLE_MAX 64 /* handle bytes + NUL */

struct gm_client_options {
    int connect_timeout_ms; /* 0 = 1000 */
    int timeout_ms;         /* 0 = none: a call waits until its job is done */
    int retry_interval_ms;  /* 0 = 2000: a dead server is tried again after this */
};

struct gm_client;

/* servers: "host[:port]" separated by commas or spaces (port 4730 by
 * default). opts may be NULL. Returns NULL with a message in err. */
struct gm_client *gm_client_new(const char *servers, const struct gm_client_options *opts, char *err, size_t errlen);
void gm_client_free(struct gm_client *c);
/* Text of the last error (server's ERROR code and text, or errno text). */
const char *gm_client_error(const struct gm_client *c);
const char *gm_client_rc_name(int rc);

/* Run a job and wait for its result (malloc'd, NUL-terminated, free() it;
 * WORK_DATA chunks and WORK_COMPLETE are concatenated). unique may be NULL. */
int gm_client_do(struct gm_client *c, const char *function, const char *unique, const void *data, size_t len,
                 enum gm_client_prio prio, void **result, size_t *result_len);
/* Queue a background job; handle (GM_CLIENT_HANDLE_MAX bytes) may be NULL. */
int gm_client_do_background(struct gm_client *c, const char *function, const char *unique, const void *data, size_t len,
                            enum gm_client_prio prio, char *handle);

struct gm_client_status {
    bool known, running;
    uint32_t numerator, denominator;
};
/* Ask every live server about handle; the first that knows it answers. */
int gm_client_status(struct gm_client *c, const char *handle, struct gm_client_status *st);
/* ECHO_REQ round trip to every live server; OK if at least one answered. */
int gm_client_echo(struct gm_client *c, const void *data, size_t len);

/* Callback-based tasks. Pointers passed to callbacks are valid during the
 * call only. Every callback may be NULL. */
struct gm_client_task_fns {
    void (*created)(const char *handle, void *arg);
    void (*data)(const void *data, size_t len, void *arg);    /* WORK_DATA */
    void (*warning)(const void *data, size_t len, void *arg); /* WORK_WARNING */
    void (*status)(uint32_t numerator, uint32_t denominator, void *arg);
    /* The end: rc OK (data = WORK_COMPLETE payload), WORK_FAIL,
     * WORK_EXCEPTION (data = its text), or an error. Background tasks end
     * with OK at JOB_CREATED. */
    void (*done)(int rc, const void *data, size_t len, void *arg);
};
/* Add a task (copied); nothing is sent until gm_client_run_tasks. */
int gm_client_add_task(struct gm_client *c, const char *function, const char *unique, const void *data, size_t len,
                       enum gm_client_prio prio, bool background, const struct gm_client_task_fns *fns, void *arg);
/* Send every added task and run until all have ended. Returns OK, or the
 * first error of a task (each task's own outcome went to its done()). */
int gm_client_run_tasks(struct gm_client *c);

/* ---- worker ------------------------------------------------------------ */

struct gm_worker;
struct gm_worker_job;

/* Return GM_CLIENT_OK to complete the job with *result (malloc'd by the
 * function, freed by the library; may stay NULL), GM_CLIENT_WORK_FAIL to
 * fail it, GM_CLIENT_WORK_EXCEPTION to raise *result as the exception. */
typedef int (*gm_worker_fn)(struct gm_worker_job *job, void *arg, void **result, size_t *result_len);

struct gm_worker *gm_worker_new(const char *servers, const struct gm_client_options *opts, char *err, size_t errlen);
void gm_worker_free(struct gm_worker *w);
const char *gm_worker_error(const struct gm_worker *w);
/* timeout_s > 0 registers with CAN_DO_TIMEOUT. */
int gm_worker_register(struct gm_worker *w, const char *function, uint32_t timeout_s, gm_worker_fn fn, void *arg);
int gm_worker_set_id(struct gm_worker *w, const char *id);
/* Take one job from any server and run it. Waits (PRE_SLEEP) while no
 * server has work, up to the timeout if one is set (GM_CLIENT_TIMEOUT). */
int gm_worker_work(struct gm_worker *w);

const char *gm_worker_job_handle(const struct gm_worker_job *j);
const char *gm_worker_job_function(const struct gm_worker_job *j);
const char *gm_worker_job_unique(const struct gm_worker_job *j);
const void *gm_worker_job_data(const struct gm_worker_job *j, size_t *len);
int gm_worker_job_send_status(struct gm_worker_job *j, uint32_t numerator, uint32_t denominator);
int gm_worker_job_send_data(struct gm_worker_job *j, const void *data, size_t len);

#ifdef __cplusplus
}
#endif

#endif
