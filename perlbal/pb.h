/* pb.h: the objects of the perlbal daemon, shared by its files.
 *
 *   pools     named lists of backend nodes (POOL x ADD ip:port)
 *   services  a role (reverse_proxy, web_server, selector, management; echo
 *             with the EchoService plugin) with
 *             its parameters, listener and per-loop run-time state
 *
 * Services and pools are created and changed by the config file and the
 * management console. Everything a request path reads from a pool's node list
 * is read under pb_lock; per-loop state (idle backends, waiting clients) is
 * touched only by its own loop. */
#ifndef PB_H
#define PB_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/http.h"
#include "common/httpd.h"
#include "common/pool.h"

#define PB_VERSION "1.80-c"
#define PB_MAX_LOOPS 64
#define PB_NAME_MAX 64

struct core_conn;
struct core_loop;
struct evbuffer;
struct event;
struct pb_client;
struct pb_backend;
struct pb_plugin;

/* PB_ROLE_ECHO exists only once `LOAD EchoService` ran (pb_plugin.c). */
enum pb_role {
    PB_ROLE_NONE = 0,
    PB_ROLE_REVERSE_PROXY,
    PB_ROLE_WEB_SERVER,
    PB_ROLE_MANAGEMENT,
    PB_ROLE_SELECTOR,
    PB_ROLE_ECHO,
};

struct pb_pool {
    char name[PB_NAME_MAX];
    struct pool_node **nodes;
    int nnodes, cap;
    char *nodefile;
    time_t nodefile_mtime;
    int use_count;                  /* services using it */
    struct pb_pool *next;
};

struct pb_header_op {
    char *name;
    char *value;                    /* NULL for remove */
    struct pb_header_op *next;
};

struct pb_vhost {
    char *pattern;
    char *target;
    struct pb_vhost *next;
};

/* Per-loop, per-service state (only its loop touches it). */
struct pb_svc_loop {
    struct pool pool;               /* backends: idle ones, waiting clients, connects in flight */
    struct pb_service *svc;
    int loop_index;
    int active_clients;
    int listen_fd;
    struct event *listen_ev;
};

struct pb_service {
    char name[PB_NAME_MAX];
    enum pb_role role;
    char *listen;
    bool enabled;
    /* parameters (Perlbal names) */
    struct pb_pool *pool;
    bool persist_client, persist_backend, verify_backend, enable_reproxy, blind_proxy, always_trusted;
    bool enable_put, enable_delete, dirindexing, server_tokens, enable_ssl, buffer_uploads;
    bool enable_error_retries;
    int idle_timeout, persist_client_idle_timeout;
    int connect_ahead, backend_persist_cache, max_backend_uses, min_put_directory;
    int buffer_upload_threshold_time, buffer_upload_threshold_rate;
    uint64_t buffer_size, buffer_size_reproxy_url, buffer_backend_connect, max_put_size;
    uint64_t buffer_upload_threshold_size, max_chunked_request_size, client_sndbuf_size;
    int reproxy_cache_maxsize;
    struct pb_reproxy_cache *reproxy_cache;  /* X-REPROXY-CACHE-FOR (pb_proxy.c) */
    char *docroot, *index_files, *verify_backend_path, *high_priority_cookie, *high_priority_cookie_contents;
    char *trusted_upstream_proxies, *buffer_uploads_path, *ssl_key_file, *ssl_cert_file, *ssl_cipher_list;
    char *ssl_ca_path, *error_retry_schedule;
    /* parsed trusted_upstream_proxies */
    struct { uint32_t net, mask; } trusted[16];
    int ntrusted;
    struct pb_header_op *header_ops;
    struct pb_vhost *vhosts;
    char plugins[8][32];            /* names, as SET plugins gave them (lower case) */
    const struct pb_plugin *plugin_ptr[8];
    int nplugins;
    void *plugin_state;             /* pb_plugin.c's per-service state */
    uint64_t max_content_length;    /* MaxContentLength plugin */
    int echo_delay;                 /* EchoService: seconds before a line is echoed */
    void *tls_ctx;                  /* SSL_CTX when enable_ssl */
    struct httpd_files files;       /* web_server: docroot etc. mirrored from the parameters (pb_web.c) */
    bool enable_md5;
    /* counters */
    _Atomic uint64_t requests;
    struct pb_svc_loop loops[PB_MAX_LOOPS];
    struct pb_service *next;
};

/* the registry (pb_service.c) */
extern pthread_mutex_t pb_lock;
extern struct pb_service *pb_services;
extern struct pb_pool *pb_pools;
extern double pb_start_time;
extern _Atomic uint64_t pb_total_requests;

struct pb_service *pb_service_find(const char *name);
struct pb_service *pb_service_create(const char *name);
struct pb_pool *pb_pool_find(const char *name);
struct pb_pool *pb_pool_create(const char *name);
int pb_pool_add(struct pb_pool *p, const char *ipport, char *err, size_t errlen);
int pb_pool_remove(struct pb_pool *p, const char *ipport, char *err, size_t errlen);
/* Pick a live node at random (copying its address). Returns NULL if none. */
struct pool_node *pb_pool_pick(struct pb_pool *p);
void pb_pool_check_nodefile(struct pb_pool *p);
int pb_service_set(struct pb_service *s, const char *key, const char *val, char *err, size_t errlen);
int pb_service_set_default(const char *key, const char *val, char *err, size_t errlen);
int pb_pool_set(struct pb_pool *p, const char *key, const char *val, char *err, size_t errlen);
int pb_service_enable(struct pb_service *s, char *err, size_t errlen);
int pb_service_disable(struct pb_service *s, char *err, size_t errlen);
bool pb_service_trusted(const struct pb_service *s, const struct sockaddr_storage *peer);
const char *pb_role_name(enum pb_role r);
/* Keep p allocated (and reachable) for the life of the process: for things
 * replaced live that another loop may still be reading. */
void pb_retire(void *p);
void pb_close_all_listeners(void);
int64_t pb_now_ms(void);

/* clients (pb_client.c) */
/* reject: over SERVER max_connections: answer 503 (with a lingering close,
 * so the client reads it) and take no request. */
void pb_client_accept(struct pb_service *svc, struct core_loop *loop, int fd, const struct sockaddr *sa,
                      socklen_t salen, bool reject);
void pb_manage_accept(struct pb_service *svc, struct core_loop *loop, int fd, const struct sockaddr *sa,
                      socklen_t salen);

/* reverse proxy (pb_proxy.c) */
void pb_proxy_request(struct pb_client *cl);
void pb_proxy_client_gone(struct pb_client *cl);
/* Set up svc's backend pool on loop li (at creation); close its idle backends. */
void pb_proxy_init_loop(struct pb_service *svc, int li);
void pb_proxy_close_idle(struct pb_service *svc, int li);
void pb_web_sync(struct pb_service *svc);
void pb_proxy_body_ready(struct pb_client *cl);

/* web server (pb_web.c) */
void pb_web_request(struct pb_client *cl, struct http_msg *req);

/* management language (pb_manage.c) */
struct pb_manage_ctx {
    char last_created[PB_NAME_MAX];
    bool verbose;
    bool in_config;                 /* running the config file (errors abort start) */
};
/* Run one line; output lines go to out ("\r\n" ended when crlf). Returns 0 on
 * success, -1 on error (an "ERROR: ..." line was written). */
int pb_manage_run(struct pb_manage_ctx *ctx, const char *line, size_t len, struct evbuffer *out, bool crlf);
int pb_manage_run_file(const char *path, char *err, size_t errlen);
void pb_manage_admin_fallback_init(void);

#endif
