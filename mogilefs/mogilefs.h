/* mogilefs: shared types of the MogileFS tracker (mogilefsd) and storage
 * node (mogstored).
 *
 * Tracker threads and their order:
 *   - loop 0 owns the client connections (session.c); it never touches the
 *     database or the network beyond its own sockets;
 *   - loop 1 runs the tracker's HTTP to storage nodes (nodehttp.c, on
 *     common/httpc) for the threads below, and follows the nodes' side
 *     channel "watch" streams (iostat.c);
 *   - query threads (query_jobs) run one command each (cmd_tracker.c) with
 *     blocking database calls (through common/db's worker) and HTTP to
 *     storage nodes (handed to loop 1, waited for), then hand the reply
 *     back to loop 0;
 *   - job threads (jobs.c): monitor, replicate, delete, reaper/drain, fsck.
 * Lock order: mog_cache.lock (rwlock) is a leaf: hold it only to copy
 * fields out, never across a database call or HTTP request. */
#ifndef MOG_MOGILEFS_H
#define MOG_MOGILEFS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/stats.h"

#define MOG_VERSION "2.73-c1"
#define MOG_SCHEMA_VERSION 17
#define MOG_MAX_LINE 65536 /* longest request line accepted */
#define MOG_MAX_ARGS 256   /* most k=v pairs in one request */
#define MOG_MAX_KEY 255    /* dkey column */
#define MOG_DEFAULT_PORT 7001

struct evbuffer;
struct db;
struct core_loop;

/* ---- proto_tracker.c: the line protocol (pure) --------------------------- */

struct mog_req {
    char cmd[64]; /* lowercased command word ("!" commands keep the '!') */
    int nargs;
    char *key[MOG_MAX_ARGS];
    char *val[MOG_MAX_ARGS];      /* NULL when the pair had no '=' */
    size_t val_len[MOG_MAX_ARGS]; /* decoded values may hold NUL bytes */
    char *buf;                    /* owns the decoded strings */
};

enum mog_parse_status {
    MOG_PARSE_OK = 0,
    MOG_PARSE_EMPTY = 1,     /* blank line: ignored, as the original does */
    MOG_PARSE_BAD = -1,      /* no command word / bad characters */
    MOG_PARSE_TOO_MANY = -2, /* more than MOG_MAX_ARGS pairs */
};

/* Parse one request line (without its terminator). On OK, req owns heap
 * memory: release it with mog_req_free (also safe after an error). */
enum mog_parse_status mog_parse_request(const char *line, size_t len, struct mog_req *req);
void mog_req_free(struct mog_req *req);
/* Last value for key (duplicate keys: last wins), or NULL. */
const char *mog_arg(const struct mog_req *req, const char *key);
const char *mog_arg_len(const struct mog_req *req, const char *key, size_t *len);

/* URL coding. Decoding: '+' is a space, %XX a byte; returns the output
 * length (out may equal in). Encoding escapes what MogileFS's eurl escapes;
 * returns bytes written (out needs 3*len+1). */
size_t mog_url_decode(const char *in, size_t len, char *out);
size_t mog_url_encode(const char *in, size_t len, char *out);
void mog_url_encode_buf(struct evbuffer *out, const char *s, size_t len);

/* Reply builder: "OK k=v&k=v\r\n" or "ERR code text[ callid]\r\n". */
struct mog_reply {
    struct evbuffer *out;
    int nargs;
    bool done;
    const char *callid;
    size_t start; /* where this reply begins in out */
};
void mog_reply_init(struct mog_reply *r, struct evbuffer *out, const char *callid);
void mog_reply_kv(struct mog_reply *r, const char *key, const char *val);
void mog_reply_kvn(struct mog_reply *r, const char *key, const char *val, size_t len);
void mog_reply_kvi(struct mog_reply *r, const char *key, int64_t v);
void mog_reply_kvf(struct mog_reply *r, const char *val, const char *keyfmt, ...) __attribute__((format(printf, 3, 4)));
void mog_reply_kvif(struct mog_reply *r, int64_t v, const char *keyfmt, ...) __attribute__((format(printf, 3, 4)));
/* Finish as OK (the pairs added so far) or as ERR (drops them). text NULL =
 * the original's canned text for code. Return 0 / -1 so commands can
 * `return mog_err(...)`. */
int mog_ok(struct mog_reply *r);
int mog_err(struct mog_reply *r, const char *code, const char *text);
const char *mog_err_text(const char *code);

/* Storage path of a fid on a device: "/dev<devid>/d/mmm/ttt/<fid10>.fid". */
int mog_fid_path(char *out, size_t len, int64_t devid, int64_t fid);
/* Parse "/dev<N>/..." and return N, or -1. */
int64_t mog_path_devid(const char *path, size_t len);
/* A host's altmask, in the IPv4 forms Net::Netmask 2's new2 reads (as
 * Debian 12 ships it, checked side by side): "A.B.C.D/N",
 * "A.B.C.D/M.M.M.M", "A.B.C.D:M.M.M.M", "A.B.C.D#hostmask", "A.B.C.D"
 * (one address), "A.B.C.D - E.F.G.H" (exactly one block), "default",
 * "any"; short forms ("10.20") are refused, as it refuses them. 0 and the
 * network and mask in host order, or -1 (then MogileFS ignores the mask). */
int mog_netmask_parse(const char *mask, uint32_t *net, uint32_t *bits);
/* ip (dotted IPv4) lies inside mask; false for an invalid mask or ip. */
bool mog_netmask_match(const char *mask, const char *ip);

/* ---- proto_storage.c: mogstored request checks (pure) -------------------- */

/* A PUT/DELETE path MogileFS accepts: ^(/[\w\-.]+)*\/[\w\-.]+$ and no "..". */
bool mog_storage_path_ok(const char *path, size_t len);
/* Parse a side-channel line: "size <uri>", "MD5 <uri> [fsck]", "SHA-1 <uri>",
 * "watch". Returns the command kind and sets *uri. */
enum mog_side_cmd {
    MOG_SIDE_BAD = 0,
    MOG_SIDE_SIZE,
    MOG_SIDE_MD5,
    MOG_SIDE_SHA1,
    MOG_SIDE_WATCH,
    MOG_SIDE_OTHER,
    MOG_SIDE_DOTDOT
};
enum mog_side_cmd mog_side_parse(char *line, size_t len, char **uri, size_t *uri_len);
/* A partial PUT's Content-Range: "bytes S-E/T", T an asterisk or > E.
 * 0 with S <= E, else -1. */
int mog_content_range_parse(const char *v, size_t len, uint64_t *start, uint64_t *end);
/* Parse a mogstored usage file into total and used KiB. 0 or -1. */
int mog_usage_parse(const char *buf, size_t len, int64_t *total_kib, int64_t *used_kib);

/* ---- store.c: database access and the metadata cache --------------------- */

/* Rows copied out of a db_result (so callers on any thread can keep them). */
struct mog_rows {
    int status; /* 0 ok, -1 error */
    char error[256];
    int ncols;
    size_t nrows;
    uint64_t affected;
    int64_t last_id;
    char **cell; /* row-major, NULL for SQL NULL */
    size_t *len;
};
struct db_value;
struct mog_rows *mog_sql(const char *sql, const struct db_value *params, int n);
/* A write that may share a group commit with other threads' writes. */
struct mog_rows *mog_sql_write(const char *sql, const struct db_value *params, int n);
struct mog_stmt {
    const char *sql;
    const struct db_value *params;
    int n;
};
/* All or nothing (common/db's db_txn): flags[i] may be DB_EXPECT_ONE.
 * Returns 0 when committed; else -1 with *failed the failing statement's
 * index (-1 if none: the queue was full or the database closing). */
int mog_sql_txn(const struct mog_stmt *stmts, const int *flags, int n, int *failed, char *err, size_t errlen);
void mog_rows_free(struct mog_rows *r);
/* A read MogileFS lets a read slave answer (slave_keys settings; MySQL
 * trackers only): on a live slave if there is one, else the master. */
struct mog_rows *mog_sql_read(const char *sql, const struct db_value *params, int n);
void mog_slaves_invalidate(void);
void mog_slaves_close(void);
const char *mog_cell(const struct mog_rows *r, size_t row, int col);
int64_t mog_cell_int(const struct mog_rows *r, size_t row, int col);
bool mog_db_is_mysql(void);
/* "INSERT OR IGNORE" / "INSERT IGNORE". */
const char *mog_insert_ignore(void);

/* server_settings rows. get: 0 if present. */
int mog_setting_get(const char *key, char *out, size_t outlen);
int mog_setting_set(const char *key, const char *value);

int mog_store_open(const char *dsn, const char *user, const char *pass, int workers, char *err, size_t errlen);
void mog_store_close(void);
int mog_store_setup_schema(char *err, size_t errlen);
struct db *mog_store_db(void);

enum mog_dev_state { MOG_DEV_ALIVE = 0, MOG_DEV_READONLY, MOG_DEV_DRAIN, MOG_DEV_DOWN, MOG_DEV_DEAD, MOG_DEV_UNKNOWN };
enum mog_host_state { MOG_HOST_ALIVE = 0, MOG_HOST_READONLY, MOG_HOST_DOWN, MOG_HOST_DEAD, MOG_HOST_UNKNOWN };
enum mog_observed { MOG_OBS_UNKNOWN = 0, MOG_OBS_WRITEABLE, MOG_OBS_READABLE, MOG_OBS_UNREACHABLE };

struct mog_domain {
    int64_t dmid;
    char name[256];
};
struct mog_class {
    int64_t dmid, classid;
    char name[64];
    int mindevcount;
    char replpolicy[256];
    int hashtype; /* 0 none, 1 MD5 */
};
struct mog_host {
    int64_t hostid;
    char name[64], ip[64], altip[64], altmask[32];
    int http_port, http_get_port;
    enum mog_host_state status;
};
struct mog_device {
    int64_t devid, hostid;
    enum mog_dev_state status;
    int weight;
    int64_t mb_total, mb_used, mb_asof; /* -1 = NULL */
    /* monitor's view (kept across reloads) */
    enum mog_observed observed;
    double utilization;
    int reject_bad_md5; /* -1 not probed yet, else 0/1 */
};

struct mog_cache {
    pthread_rwlock_t lock;
    struct mog_domain *domains;
    size_t ndomains;
    struct mog_class *classes;
    size_t nclasses;
    struct mog_host *hosts;
    size_t nhosts;
    struct mog_device *devices;
    size_t ndevices;
    uint64_t generation;
};
extern struct mog_cache mog_cache;

/* Reload domains/classes/hosts/devices from the database. 0 or -1. */
int mog_cache_reload(void);
/* The same unless the cache was reloaded less than ms ago (lookups that
 * miss use this, so unknown names cannot make every request reload). */
int mog_cache_reload_if_stale(int ms);
/* Lookups copy out under the read lock. Return 0 if found, -1 if not. */
int mog_domain_by_name(const char *name, struct mog_domain *out);
int mog_domain_by_id(int64_t dmid, struct mog_domain *out);
int mog_class_by_name(int64_t dmid, const char *name, struct mog_class *out);
int mog_class_by_id(int64_t dmid, int64_t classid, struct mog_class *out);
int mog_host_by_id(int64_t hostid, struct mog_host *out);
int mog_host_by_name(const char *name, struct mog_host *out);
int mog_device_by_id(int64_t devid, struct mog_device *out);
/* Copies of all devices/hosts (caller frees). */
size_t mog_devices_copy(struct mog_device **out);
size_t mog_hosts_copy(struct mog_host **out);
void mog_device_set_observed(int64_t devid, enum mog_observed obs, int64_t mb_total, int64_t mb_used);
void mog_device_set_utilization(int64_t devid, double util);
void mog_device_set_reject_md5(int64_t devid, int v);

const char *mog_dev_state_name(enum mog_dev_state s);
enum mog_dev_state mog_dev_state_parse(const char *s);
const char *mog_host_state_name(enum mog_host_state s);
enum mog_host_state mog_host_state_parse(const char *s);
const char *mog_observed_name(enum mog_observed o);

/* Device predicates on a device and its host. */
bool mog_dev_can_read(const struct mog_device *d, const struct mog_host *h);
bool mog_dev_can_write(const struct mog_device *d, const struct mog_host *h, int64_t min_free_mb);
/* "http://ip:port/devN/..." for reading (get port) or writing. */
int mog_dev_url(char *out, size_t len, const struct mog_host *h, int64_t devid, int64_t fid, bool for_get, bool alt);

/* ---- nodehttp.c: the tracker's HTTP to storage nodes ---------------------- */
/* Blocking calls for query and job threads (never a loop): each hands its
 * request to the node-HTTP loop (common/httpc there) and waits for it. */

struct mog_http_res {
    int status;     /* HTTP status, or -1 on connect/IO error */
    int64_t length; /* Content-Length, -1 unknown */
    char *body;     /* GET only (NUL-ended), else NULL */
    size_t body_len;
    char error[128];
};
/* One request on a fresh connection. method "HEAD", "GET", "DELETE", "PUT".
 * url "http://host:port/path". body for PUT. max_body bounds GET.
 * timeout_ms bounds the connect and each silence / stalled write. */
int mog_http(const char *method, const char *url, const void *body, size_t body_len, size_t max_body, int timeout_ms,
             struct mog_http_res *res);
/* The same with extra header lines ("Name: value\r\n"...). */
int mog_http_ex(const char *method, const char *url, const char *extra_headers, const void *body, size_t body_len,
                size_t max_body, int timeout_ms, struct mog_http_res *res);
void mog_http_res_free(struct mog_http_res *res);
/* GET url and digest its body as it arrives (nothing kept in memory): 0
 * with the MD5 and byte count of a 200, else -1 (*status the HTTP status
 * or -1). */
int mog_http_md5(const char *url, int timeout_ms, unsigned char *md5, int64_t *length, int *status);
/* Stream src_url's body into a PUT to dst_url; *length gets the byte count
 * and md5 (if non-NULL, 16 bytes) the digest of what went through. On
 * failure *length is set when the destination may have received bytes. */
int mog_http_copy(const char *src_url, const char *dst_url, int timeout_ms, int64_t *length, unsigned char *md5,
                  char *err, size_t errlen);
/* The loop the requests run on (set before the job threads start), and
 * the end of waiting (after the loops stopped). */
void mog_nodehttp_start(struct core_loop *loop);
void mog_nodehttp_stop(void);

/* iostat.c: each storage node's side-channel "watch" stream, followed on
 * that loop (stop: after the loops stopped). */
int mog_iostat_start(struct core_loop *loop);
void mog_iostat_stop(void);

/* ---- tracker globals (mogilefsd.c) ---------------------------------------- */

struct mog_tracker_cfg {
    char *db_dsn, *db_user, *db_pass, *listen;
    int conf_port;
    int query_jobs, replicate_jobs, delete_jobs, fsck_jobs, reaper_jobs, monitor_jobs, job_master;
    int min_free_space; /* MB */
    int default_mindevcount;
    double node_timeout, conn_timeout;
    int max_disk_age;
    char *mogstored_stream_port;
    int db_workers;
    int monitor_interval_ms;
    int max_conns;
    int idle_timeout;
    int max_queue; /* commands waiting for a query thread */
    bool no_schema_check;
};

struct mog_counters {
    struct stats_counter queries, errors, uploads, get_paths, deletes, replicated, repl_failed, deleted_files,
        monitor_rounds, queue_full, times_out_of_qworkers, iostat_updates, slave_reads;
};

struct mog_tracker {
    struct mog_tracker_cfg cfg;
    struct mog_counters n;
    double started;
    _Atomic int processing; /* commands running now */
    _Atomic int pending;    /* commands waiting for a query thread */
    _Atomic uint64_t monitor_round;
    char hostname[256];
};
extern struct mog_tracker mog;

/* cmd_tracker.c: run one request (on a query thread), reply into r. */
void mog_cmd_run(const struct mog_req *req, const char *client_ip, struct mog_reply *r);
/* admin.c: "!" console commands (parent-level, on the loop). */
void mog_bang_command(const char *line, size_t len, struct evbuffer *out);
void mog_recent_add(const char *line, size_t len, double secs);

/* jobs.c */
int mog_jobs_start(void);
void mog_jobs_stop(void);
/* Block until the monitor finished at least one round (or timeout). */
void mog_wait_monitor(int timeout_ms);
void mog_monitor_kick(void);
void mog_replicate_kick(void);
void mog_delete_kick(void);
void mog_fsck_kick(void);
/* Enqueue every fid of a device for replication (drain, dead). */
int mog_enqueue_device(int64_t devid);

/* rebalance.c */
int mog_rebal_check_policy(const char *policy, char *err, size_t errlen);
int mog_rebal_test(char *sdevs, size_t sl, char *ddevs, size_t dl);
int mog_rebal_new_state(char *out, size_t len);
bool mog_rebal_step(void);
void mog_rebal_kick(void);

/* zones.c: MogileFS-Network zones (network_zones, zone_<name> settings) */
extern bool mog_zone_local;        /* plugins = ZoneLocal */
extern char mog_local_network[64]; /* local_network */
void mog_zones_invalidate(void);
/* The zone of ip (most specific netmask); 0, or -1 when in none. */
int mog_zone_for_ip(const char *ip, char *out, size_t len);
/* MultipleNetworks' network of ip: its zone's netmask, else its /16, as
 * "A.B.C.D/N". */
void mog_network_for_ip(const char *ip, char *out, size_t len);
/* ZoneLocal's order: indexes of host_ips in ip's zone first (in their
 * order), then the rest; returns how many are in ip's zone. */
size_t mog_zone_first(const char *ip, const char *const *host_ips, size_t n, size_t *order);
/* MogileFS-Network's HostsPerNetwork(zone=N, ...) policy string. 0 or -1. */
#define MOG_HPN_MAX 16
struct mog_hpn {
    int n;
    char zone[MOG_HPN_MAX][64];
    int need[MOG_HPN_MAX];
};
int mog_hpn_parse(const char *policy, struct mog_hpn *out);

/* session.c */
int mog_sessions_start(int nthreads);
void mog_sessions_stop(void);
void mog_tracker_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen, void *arg);
void mog_tracker_reject(int fd, void *arg);

/* conf.c: a MogileFS config file (key = value) applied to settings tables;
 * unknown keys warned about and skipped; live_only applies only live keys
 * (a SIGHUP reload) and warns about nothing. */
struct cfg_setting;
int mog_conf_read(const char *prog, const struct cfg_setting *const *tables, const char *path, bool live_only,
                  char *err, size_t errlen);

#endif
