/* plugins/lazycdn.c: Perlbal's LazyCDN plugin — a web_server that sends
 * what it does not have (or has only in an older version) to another
 * service, e.g. a reverse_proxy to the origin:
 *
 *   LOAD LazyCDN
 *   CREATE SERVICE cdn
 *     SET role = web_server
 *     SET docroot = /var/cache/cdn
 *     SET plugins = LazyCDN
 *     SET fallback_service = origin            (a reverse_proxy or web_server)
 *     SET fallback_udp_ping_addr = 10.0.0.5:9999   (optional: the URI in a datagram)
 *
 * As Perlbal's (whose hooks it takes from common/httpd's poststat, after
 * the web_server's own stat on its disk pool): a GET/HEAD for a file
 * missing under the docroot goes to fallback_service; so does one whose
 * URI carries `v=N` with N newer than the file's mtime, when the answer
 * would be a plain 200 (not a 304, a 206 or a 416). Concatenated GETs
 * ("/dir/??a,b,c" with enable_concatenate_get) the same way: one of the
 * files missing, or a v=N newer than the newest of them. Each fallback
 * sends the request URI to fallback_udp_ping_addr when set. What the
 * web_server refuses anyway (bad paths, no slash before "??", a base that
 * is not a directory) it answers itself. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>

#include "common/conn.h"
#include "common/http.h"
#include "common/httpd.h"
#include "perlbal/perlbal.h"
#include "perlbal/plugin.h"
#include "perlbal/proto_upload.h"

static void lazy_ping(struct pb_service *svc, const char *uri, size_t len)
{
    struct plug_state *st = pb_plugin_state(svc);
    if (!st || !st->lazy_ping_set)
        return;
    static __thread int fd = -1;
    if (fd < 0)
        fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0)
        (void)sendto(fd, uri, len, MSG_DONTWAIT, (struct sockaddr *)&st->lazy_ping, sizeof(struct sockaddr_in));
}

/* A GET/HEAD on a service with a fallback: its head is kept (in the
 * client's req_head buffer, reused) for a fallback after the stat. */
static enum pb_hook_result lazy_start(struct pb_service *svc, struct pb_client *cl, struct http_msg *req)
{
    struct plug_state *st = pb_plugin_state(svc);
    if (!st || svc->role != PB_ROLE_WEB_SERVER || (req->method != HTTP_M_GET && req->method != HTTP_M_HEAD))
        return PB_HOOK_CONTINUE;
    pthread_mutex_lock(&pb_plugin_lock);
    bool on = st->lazy_fallback[0] != 0;
    pthread_mutex_unlock(&pb_plugin_lock);
    if (!on)
        return PB_HOOK_CONTINUE;
    if (!cl->req_head)
        cl->req_head = evbuffer_new();
    if (!cl->req_head)
        return PB_HOOK_CONTINUE;
    evbuffer_drain(cl->req_head, evbuffer_get_length(cl->req_head));
    /* only a head still in the input: a request that came here by a
     * fallback (its head a copy) gets no second one */
    struct evbuffer *in = conn_in(cl->c);
    const char *b =
        evbuffer_get_length(in) >= req->head_len ? (const char *)evbuffer_pullup(in, (ev_ssize_t)req->head_len) : NULL;
    if (b && req->target >= b && req->target < b + req->head_len && evbuffer_add(cl->req_head, b, req->head_len) < 0)
        evbuffer_drain(cl->req_head, evbuffer_get_length(cl->req_head));
    return PB_HOOK_CONTINUE; /* the web_server stats it; lazy_poststat decides */
}

/* Perlbal's static_/concat_get_poststat_file_missing and _pre_send hooks. */
static bool lazy_poststat(struct pb_service *svc, struct pb_client *cl, int what, int64_t mtime)
{
    struct plug_state *st = pb_plugin_state(svc);
    size_t hl = cl->req_head ? evbuffer_get_length(cl->req_head) : 0;
    if (!st || !hl || !cl->target)
        return false;
    if (what == HTTPD_POSTSTAT_SEND) {
        long long v = pb_uri_version(cl->target, strlen(cl->target));
        if (!(v && v > (long long)mtime))
            return false;
    }
    char name[64];
    pthread_mutex_lock(&pb_plugin_lock);
    snprintf(name, sizeof name, "%s", st->lazy_fallback);
    pthread_mutex_unlock(&pb_plugin_lock);
    pthread_mutex_lock(&pb_lock);
    struct pb_service *t = name[0] ? pb_service_find(name) : NULL;
    pthread_mutex_unlock(&pb_lock);
    if (!t || (t->role != PB_ROLE_REVERSE_PROXY && t->role != PB_ROLE_WEB_SERVER) || t == svc)
        return false;
    /* the head, copied out: the fallback reuses req_head for its own */
    char *head = malloc(hl);
    struct http_msg *m = malloc(sizeof *m);
    struct http_limits lim = { 0 };
    bool ok =
        head && m && evbuffer_remove(cl->req_head, head, hl) == (int)hl && http_parse_request(head, hl, &lim, m) > 0;
    if (ok) {
        lazy_ping(svc, cl->target, strlen(cl->target));
        pb_dispatch_service(cl, t, m);
    }
    free(m);
    free(head);
    return ok;
}

static int lazy_set(struct pb_service *svc, const char *key, const char *val, char *err, size_t errlen)
{
    struct plug_state *st = pb_plugin_state(svc);
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (svc->role != PB_ROLE_WEB_SERVER) {
        snprintf(err, errlen, "Can't set %s on a service of role '%s'", key, pb_role_name(svc->role));
        return -1;
    }
    if (!strcmp(key, "fallback_service")) {
        pthread_mutex_lock(&pb_plugin_lock);
        snprintf(st->lazy_fallback, sizeof st->lazy_fallback, "%s", val);
        pthread_mutex_unlock(&pb_plugin_lock);
        return 0;
    }
    if (!strcmp(key, "fallback_udp_ping_addr")) {
        unsigned a, b, c, d, port;
        char tail;
        if (sscanf(val, "%u.%u.%u.%u:%u%c", &a, &b, &c, &d, &port, &tail) != 5 || a > 255 || b > 255 || c > 255 ||
            d > 255 || port > 65535) {
            snprintf(err, errlen, "Expecting IP:port of form a.b.c.d:port.");
            return -1;
        }
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
        sin.sin_addr.s_addr = htonl(a << 24 | b << 16 | c << 8 | d);
        pthread_mutex_lock(&pb_plugin_lock);
        memcpy(&st->lazy_ping, &sin, sizeof sin);
        st->lazy_ping_set = true;
        pthread_mutex_unlock(&pb_plugin_lock);
        return 0;
    }
    snprintf(err, errlen, "Unknown LazyCDN parameter '%s'", key);
    return -1;
}

static const char *const lazy_tunables[] = { "fallback_service", "fallback_udp_ping_addr", NULL };
const struct pb_plugin pb_plugin_lazycdn = { .name = "lazycdn",
                                             .start_request = lazy_start,
                                             .poststat = lazy_poststat,
                                             .set_param = lazy_set,
                                             .tunables = lazy_tunables };
