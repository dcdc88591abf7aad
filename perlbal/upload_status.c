/* upload_status: Perlbal's upload progress bars.
 *
 *  - A reverse_proxy with `upload_status_listeners = ip:port[, ip:port]`
 *    watches uploads whose URI carries `client_up_sess=<5..50 word chars>`:
 *    while the body (Content-Length) arrives it sends, at most once a
 *    second, the UDP datagram "UPLOAD:<sess>:<done>:<total>:<start>:<now>"
 *    to each listener; and it answers `GET /__upload_status?client_up_sess=X`
 *    itself with "{done:D,total:T,starttime:S,nowtime:N}" (or "{}") from
 *    what this process's trackers heard.
 *  - A service with `role = upload_tracker` listens for those datagrams on
 *    UDP at its `listen` address and keeps each session's last report for
 *    4 s after it stops coming.
 * Same wire format and JSON-ish answer as Perlbal 1.80 (ClientProxy.pm,
 * UploadListener.pm), so Perl and C perlbals can report to each other.
 *
 * The session table is fixed-size (direct-mapped by a hash of the name):
 * nothing a client sends can grow it; a colliding session replaces an
 * older one. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/listen.h"
#include "common/log.h"
#include "common/loop.h"
#include "perlbal/perlbal.h"
#include "perlbal/proto_upload.h"

#define UT_SLOTS 4096
#define UT_KEEP_S 4 /* a session's report is forgotten this long after its last packet */

struct ut_slot {
    char sess[52];
    uint64_t done, total, start;
    time_t touched;
};
static struct ut_slot ut_table[UT_SLOTS];
static pthread_mutex_t ut_lock = PTHREAD_MUTEX_INITIALIZER;

static unsigned ut_hash(const char *s)
{
    unsigned h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % UT_SLOTS;
}

/* ---- the tracker (role upload_tracker) ---- */

static void tracker_read(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    (void)arg;
    for (int k = 0; k < 64; k++) { /* a burst at most per wake-up */
        char buf[512];
        ssize_t n = recv(fd, buf, sizeof buf - 1, MSG_DONTWAIT);
        if (n <= 0)
            return;
        buf[n] = 0;
        struct pb_upload_report rep;
        if (pb_upload_report_parse(buf, (size_t)n, &rep) < 0)
            continue; /* not Perlbal's datagram: ignored, as Perlbal */
        pthread_mutex_lock(&ut_lock);
        struct ut_slot *sl = &ut_table[ut_hash(rep.sess)];
        snprintf(sl->sess, sizeof sl->sess, "%s", rep.sess);
        sl->done = rep.done;
        sl->total = rep.total;
        sl->start = rep.start;
        sl->touched = time(NULL);
        pthread_mutex_unlock(&ut_lock);
    }
}

int pb_upload_tracker_open(struct pb_service *s, char *err, size_t errlen)
{
    if (!s->listen) {
        snprintf(err, errlen, "upload_tracker service '%s' needs a listen address", s->name);
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sl;
    char e[160];
    if (listen_parse_addr(s->listen, 0, &ss, &sl, e, sizeof e) < 0) {
        snprintf(err, errlen, "%s", e);
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&ss, sl) < 0) {
        snprintf(err, errlen, "Error creating listening socket: %s", strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    /* datagrams are few and tiny: loop 0 reads them */
    struct event *ev = event_new(loop_get(0)->base, fd, EV_READ | EV_PERSIST, tracker_read, s);
    if (!ev || event_add(ev, NULL) < 0) {
        if (ev)
            event_free(ev);
        close(fd);
        snprintf(err, errlen, "cannot watch the upload_tracker socket");
        return -1;
    }
    s->ut_fd = fd;
    s->ut_ev = ev;
    return 0;
}

static void tracker_close_on_loop(void *arg)
{
    struct event *ev = arg;
    evutil_socket_t fd = event_get_fd(ev);
    event_free(ev);
    close(fd);
}

void pb_upload_tracker_close(struct pb_service *s)
{
    if (!s->ut_ev)
        return;
    struct event *ev = s->ut_ev;
    s->ut_ev = NULL;
    s->ut_fd = -1;
    struct core_loop *cur = loop_current();
    if (cur && cur->index == 0)
        tracker_close_on_loop(ev);
    else
        loop_call(loop_get(0), tracker_close_on_loop, ev);
}

/* ---- the reverse_proxy side ---- */

int pb_upload_status_set_listeners(struct pb_service *s, const char *val, char *err, size_t errlen)
{
    struct sockaddr_storage addrs[PB_UPLOAD_LISTENERS];
    int n = 0;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", val);
    for (char *save = NULL, *t = strtok_r(buf, ", \t", &save); t; t = strtok_r(NULL, ", \t", &save)) {
        if (n == PB_UPLOAD_LISTENERS) {
            snprintf(err, errlen, "at most %d upload_status_listeners", PB_UPLOAD_LISTENERS);
            return -1;
        }
        socklen_t sl;
        char e[160];
        if (listen_parse_addr(t, 0, &addrs[n], &sl, e, sizeof e) < 0 ||
            (addrs[n].ss_family == AF_INET && !((struct sockaddr_in *)&addrs[n])->sin_port)) {
            snprintf(err, errlen, "upload_status_listeners: '%s' is not ip:port", t);
            return -1;
        }
        n++;
    }
    pthread_mutex_lock(&pb_lock);
    memcpy(s->ul_addrs, addrs, sizeof addrs);
    s->n_ul = n;
    pthread_mutex_unlock(&pb_lock);
    return 0;
}

bool pb_upload_status_request(struct pb_client *cl, struct http_msg *req)
{
    char sess[PB_UPLOAD_SESS_MAX + 1];
    if (!pb_upload_session_of(req->target, req->target_len, sess))
        return false;
    static const char status_path[] = "/__upload_status?";
    if (req->target_len >= sizeof status_path - 1 && !strncmp(req->target, status_path, sizeof status_path - 1)) {
        char body[160] = "{}";
        time_t now = time(NULL);
        pthread_mutex_lock(&ut_lock);
        const struct ut_slot *sl = &ut_table[ut_hash(sess)];
        if (!strcmp(sl->sess, sess) && now - sl->touched <= UT_KEEP_S)
            snprintf(body, sizeof body, "{done:%llu,total:%llu,starttime:%llu,nowtime:%lld}",
                     (unsigned long long)sl->done, (unsigned long long)sl->total, (unsigned long long)sl->start,
                     (long long)now);
        pthread_mutex_unlock(&ut_lock);
        bool keep = pb_client_can_persist(cl) && (cl->h->body == HTTP_BODY_NONE || cl->h->body_done);
        size_t bl = strlen(body);
        pb_client_response_head(cl, 200, "text/plain", (int64_t)bl, keep, NULL);
        if (cl->h->method != HTTP_M_HEAD)
            evbuffer_add(httpd_tx(), body, bl);
        pb_client_done(cl, keep);
        return true;
    }
    /* an upload to watch */
    if (req->body == HTTP_BODY_LENGTH && req->content_length > 0) {
        snprintf(cl->upload_session, sizeof cl->upload_session, "%s", sess);
        cl->upload_total = req->content_length;
        cl->upload_started_s = time(NULL);
        cl->upload_last_packet_s = 0;
    }
    return false;
}

void pb_upload_status_progress(struct pb_client *cl, uint64_t done)
{
    if (!cl->upload_session[0] || done >= cl->upload_total)
        return;
    int64_t now = (int64_t)time(NULL);
    if (cl->upload_last_packet_s == now)
        return; /* once a second */
    cl->upload_last_packet_s = now;
    static __thread int fd4 = -1, fd6 = -1;
    char msg[160];
    int len = snprintf(msg, sizeof msg, "UPLOAD:%s:%llu:%llu:%lld:%lld", cl->upload_session, (unsigned long long)done,
                       (unsigned long long)cl->upload_total, (long long)cl->upload_started_s, (long long)now);
    struct pb_service *svc = cl->svc;
    pthread_mutex_lock(&pb_lock);
    int n = svc->n_ul;
    struct sockaddr_storage addrs[PB_UPLOAD_LISTENERS];
    memcpy(addrs, svc->ul_addrs, sizeof addrs);
    pthread_mutex_unlock(&pb_lock);
    for (int i = 0; i < n; i++) {
        bool v6 = addrs[i].ss_family == AF_INET6;
        int *fd = v6 ? &fd6 : &fd4;
        if (*fd < 0)
            *fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (*fd >= 0) /* lost datagrams are fine: the next second sends another */
            (void)sendto(*fd, msg, (size_t)len, MSG_DONTWAIT, (struct sockaddr *)&addrs[i],
                         v6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
    }
}
