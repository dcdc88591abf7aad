/* plugin.h: the C hook API for perlbal plugins and the bundled plugins.
 *
 * A plugin is a struct of optional hooks (nginx-style module). `LOAD name`
 * makes a compiled-in plugin available (and registers its management
 * commands); `SET plugins = a, b` on a service turns it on for that service.
 * Hooks run on the loop that owns the request; anything they keep across
 * loops (per-service rules, counters) they guard themselves.
 *
 * Bundled: vhosts (the selector role's VHOST table), accesscontrol,
 * maxcontentlength, redirect, stats, queues, autoremoveleadingdir, notmodified,
 * throttle, echoservice (a service role of its own: pb_echo_accept). */
#ifndef PB_PLUGIN_H
#define PB_PLUGIN_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct core_loop;
struct evbuffer;
struct http_msg;
struct pb_client;
struct pb_service;
struct pb_regex;
struct pb_resp_edit;

enum pb_hook_result { PB_HOOK_CONTINUE = 0, PB_HOOK_HANDLED = 1 };

struct pb_plugin {
    const char *name; /* lower case, as LOAD and SET plugins name it */
    /* A request head is complete (before the role handles it). The hook may
     * answer it itself (it drains nothing: the caller has already consumed
     * the head) and return PB_HOOK_HANDLED, or change cl->prio. */
    enum pb_hook_result (*start_request)(struct pb_service *svc, struct pb_client *cl, struct http_msg *req);
    /* web_server: rewrite the normalised path in place (NUL-ended, cap bytes). */
    void (*serve_path)(struct pb_service *svc, char *path, size_t cap);
    /* reverse_proxy: a backend was assigned; extra request header lines
     * ("Name: value\r\n") may be appended to hdrs. */
    void (*backend_assigned)(struct pb_service *svc, struct pb_client *cl, struct evbuffer *hdrs);
    /* reverse_proxy: the backend's response head arrived (status). */
    void (*response_head)(struct pb_service *svc, struct pb_client *cl, int status);
    /* a file was sent from disk (web_server or X-REPROXY-FILE) */
    void (*file_sent)(struct pb_service *svc, struct pb_client *cl, bool reproxied);
    /* web_server, after a GET/HEAD's stat (common/httpd's poststat):
     * HTTPD_POSTSTAT_MISSING or _SEND with the file's (newest) mtime.
     * Return true when the hook took the request (it answers it). */
    bool (*poststat)(struct pb_service *svc, struct pb_client *cl, int what, int64_t mtime);
    /* Management command words this plugin adds once loaded ("access"). */
    const char *const *commands;
    /* Run one of those: argv[0] is the word; ctx_service is the service in
     * context (CREATE/USE), may be NULL. Writes lines through out(); returns
     * 0 (the caller prints OK when verbose) or -1 with err set. */
    int (*command)(const char *ctx_service, int argc, const char *const *argv, void (*out)(void *arg, const char *line),
                   void *arg, char *err, size_t errlen);
    /* SET svc.<plugin>.<key> = value. Returns 0 or -1 with err. */
    int (*set_param)(struct pb_service *svc, const char *key, const char *val, char *err, size_t errlen);
    /* Service tunables the plugin adds once loaded (SET key = value without a
     * dot, as Perlbal's add_tunable); NULL-ended; set through set_param. */
    const char *const *tunables;
    /* reverse_proxy, before a backend is asked for: return 0 to go on, a
     * delay in ms to hold the request first, or -1 when the hook answered
     * (denied) it. Each call that does not answer is paired with proxy_end.
     * PB_HOLD_ASYNC: the hook started work elsewhere (a memcached lookup on
     * a work pool); the request is held, reading paused, until the plugin
     * calls pb_proxy_async_done() on the client's loop. Before returning it
     * the hook sets cl->async_job and cl->async_cancel: if the client goes
     * away first, async_cancel(job) is called (on the loop) and the plugin
     * must then not touch cl. Later plugins' proxy_start are not run. */
    int64_t (*proxy_start)(struct pb_service *svc, struct pb_client *cl);
    void (*proxy_end)(struct pb_service *svc, struct pb_client *cl);
    /* SET plugins = ... names it for svc: 0, or -1 with err when the plugin
     * cannot serve that service (Perlbal's register dying: Vpaths on a
     * non-selector, FlvStreaming on a non-proxy). */
    int (*attach)(struct pb_service *svc, char *err, size_t errlen);
    /* selector: the service to hand the request to (the plugin replaces
     * the vhost choice, as Perlbal's $svc->selector). NULL with *status and
     * *msg set: answer that error; NULL with *status 0: no match (the
     * selector's default_service, else 404). */
    struct pb_service *(*select)(struct pb_service *sel, struct pb_client *cl, struct http_msg *req, int *status,
                                 char *msg, size_t msglen);
    /* reverse_proxy: edit the backend's response head before the client
     * sees it (FlvStreaming). */
    void (*modify_response)(struct pb_service *svc, struct pb_client *cl, struct http_msg *resp,
                            struct pb_resp_edit *e);
    /* reverse_proxy: the client's request head is being rewritten for the
     * backend: a request header the plugin replaces (lower-case name, NULL =
     * none) is dropped; its own lines go in through backend_assigned. */
    const char *(*replaces_request_header)(struct pb_service *svc, struct pb_client *cl);
};

/* What modify_response may change in a backend's response head. */
struct pb_resp_edit {
    int status;           /* the status to send (starts as the backend's) */
    const char *reason;   /* its reason phrase, NULL = the backend's */
    const char *drop[4];  /* lower-case names of headers not to pass on */
    const char *ctype;    /* a Content-Type to send instead of the backend's, or NULL */
    int64_t length_delta; /* added to the backend's Content-Length */
    const void *prepend;  /* body bytes sent before the backend's */
    size_t prepend_len;
};

#define PB_HOLD_ASYNC INT64_MAX
/* The end of a PB_HOLD_ASYNC hold (on the client's loop): hold_ms 0 goes
 * on to the backend now, > 0 holds that long first (as a returned delay),
 * -1 means the plugin answers the client itself right after this call. */
void pb_proxy_async_done(struct pb_client *cl, int64_t hold_ms);

/* Find a compiled-in plugin by name (case-insensitive). */
const struct pb_plugin *pb_plugin_find(const char *name);
/* LOAD: mark loaded. Returns 0 or -1 if no such plugin is built in. */
int pb_plugin_load(const char *name);
bool pb_plugin_loaded(const char *name);
/* The loaded plugin that owns a management command word, or NULL. */
const struct pb_plugin *pb_plugin_for_command(const char *word);
/* SET svc.plugin.key = value: 1 if a plugin took it (0 or -1 in *rc), 0 if
 * no built-in plugin has that name. */
int pb_plugin_set_param(struct pb_service *svc, const char *dotted_key, const char *val, int *rc, char *err,
                        size_t errlen);
/* SET key = value for a key some loaded plugin added as a tunable: 1 if
 * taken (result in *rc), else 0. */
int pb_plugin_set_tunable(struct pb_service *svc, const char *key, const char *val, int *rc, char *err, size_t errlen);
int64_t pb_plugins_proxy_start(struct pb_service *svc, struct pb_client *cl);
void pb_plugins_proxy_end(struct pb_service *svc, struct pb_client *cl);
/* Names of all compiled-in plugins, NULL-ended. */
const char *const *pb_plugin_names(void);

/* EchoService's `echo` role: a new client connection of svc. */
void pb_echo_accept(struct pb_service *svc, struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen);

/* Run the hooks of svc's plugins. */
enum pb_hook_result pb_plugins_start_request(struct pb_service *svc, struct pb_client *cl, struct http_msg *req);
void pb_plugins_serve_path(struct pb_service *svc, char *path, size_t cap);
void pb_plugins_backend_assigned(struct pb_service *svc, struct pb_client *cl, struct evbuffer *hdrs);
void pb_plugins_response_head(struct pb_service *svc, struct pb_client *cl, int status);
void pb_plugins_file_sent(struct pb_service *svc, struct pb_client *cl, bool reproxied);
bool pb_plugins_poststat(struct pb_service *svc, struct pb_client *cl, int what, int64_t mtime);

/* ---- for the plugins in plugins/<name>.c ---- */

#define MAX_RULES 64
#define MAX_REDIRECTS 64
#define RECENT_MAX 100
#define MAX_VPATHS 64

enum access_action { ACC_ALLOW, ACC_DENY, ACC_QUEUE_LOW };

struct access_rule {
    enum access_action action;
    struct pb_net net; /* IPv4 or IPv6; "ip" = a full-length prefix */
};

struct plug_state {
    /* accesscontrol */
    struct access_rule rules[MAX_RULES];
    int nrules;
    bool deny_default;
    bool use_observed_ip;
    /* xffextras */
    bool xff_send_port, xff_send_proto;
    /* redirect */
    struct {
        char match[128], target[128];
    } redirects[MAX_REDIRECTS];
    int nredirects;
    /* stats */
    _Atomic uint64_t files_sent, files_reproxied, web_requests, proxy_requests, proxy_requests_highpri;
    char recent[RECENT_MAX][192];
    int recent_next, recent_count;
    /* notmodified */
    struct pb_regex *host_re; /* NULL = none */
    /* throttle */
    struct thr_state *throttle;
    /* highpri: uri_pattern (NULL = Perlbal's default until set), host_pattern */
    struct pb_regex *hp_uri, *hp_host;
    bool hp_uri_set;
    /* vpaths: path regex -> service, in the order added */
    struct {
        struct pb_regex *re;
        char target[64];
    } vpaths[MAX_VPATHS];
    int nvpaths;
    /* lazycdn */
    char lazy_fallback[64];
    struct sockaddr_storage lazy_ping;
    bool lazy_ping_set;
};

/* The service's plugin state (created on first use); console changes and
 * request-time reads meet under pb_plugin_lock. */
extern pthread_mutex_t pb_plugin_lock;
struct plug_state *pb_plugin_state(struct pb_service *s);
/* The client's IPv4 address (network order); ok false for other families. */
uint32_t pb_plugin_client_ipv4(struct pb_client *cl, bool *ok);
/* "a.b.c.d" (what = "ip") or "a.b.c.d/n" / "a.b.c.d/m.m.m.m" ("netmask") -> net, mask
 * (network order). Returns 0 or -1. */
int pb_plugin_parse_net(const char *what, const char *val, uint32_t *net, uint32_t *mask);

/* the bundled plugins */
extern const struct pb_plugin pb_plugin_accesscontrol;
extern const struct pb_plugin pb_plugin_maxcontentlength;
extern const struct pb_plugin pb_plugin_redirect;
extern const struct pb_plugin pb_plugin_stats;
extern const struct pb_plugin pb_plugin_queues;
extern const struct pb_plugin pb_plugin_autoremoveleadingdir;
extern const struct pb_plugin pb_plugin_notmodified;
extern const struct pb_plugin pb_plugin_throttle;
extern const struct pb_plugin pb_plugin_echoservice;
extern const struct pb_plugin pb_plugin_include;
extern const struct pb_plugin pb_plugin_xffextras;
extern const struct pb_plugin pb_plugin_highpri;
extern const struct pb_plugin pb_plugin_vpaths;
extern const struct pb_plugin pb_plugin_flvstreaming;
extern const struct pb_plugin pb_plugin_lazycdn;
extern const struct pb_plugin pb_plugin_palimg;

/* selector: the target a select hook chose (plugin.c); *has_hook false
 * when no plugin of sel selects (the vhost table does). */
struct pb_service *pb_plugins_select(struct pb_service *sel, struct pb_client *cl, struct http_msg *req, bool *has_hook,
                                     int *status, char *msg, size_t msglen);
void pb_plugins_modify_response(struct pb_service *svc, struct pb_client *cl, struct http_msg *resp,
                                struct pb_resp_edit *e);
/* Is this request header replaced by a plugin (lower-case name compare)? */
bool pb_plugins_replace_header(struct pb_service *svc, struct pb_client *cl, const char *name, size_t len);

#endif
