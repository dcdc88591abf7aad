/* accesslog: what happened to each request, for operators — the access
 * log file (Apache's Combined Log Format by default), the per-service,
 * per-status request counters of the metrics, and the -vv debug line.
 *
 * The loop formats a line (its request half when the head arrives, the
 * status and size when the request ends) and appends it to a shared
 * buffer; a writer thread owns the file and writes what piled up, so a
 * slow disk never stalls a loop. The buffer is bounded: lines over it are
 * dropped and counted. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "common/conn.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/stats.h"
#include "perlbal/accesslog.h"
#include "perlbal/perlbal.h"

#define AL_COMBINED "%h %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-Agent}i\""
#define AL_COMMON "%h %l %u %t \"%r\" %>s %b"
#define AL_MAX_PENDING (4u << 20) /* bytes of lines waiting for the writer */
#define AL_MAX_FIELD 2048         /* one header or request line, escaped, at most */

/* markers left in a request's half-line for what is known only at the end */
#define MARK '\x01'

bool pb_debug_requests;

static pthread_mutex_t al_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t al_cond = PTHREAD_COND_INITIALIZER;
static char *al_path;                          /* NULL = off */
static _Atomic(const char *) al_format = NULL; /* NULL = combined; replaced ones are retired */
static _Atomic bool al_on;                     /* a file is open and the writer runs */
static bool al_started, al_stop, al_reopen;
static int al_fd = -1;
static pthread_t al_thread;
static char *al_buf; /* pending lines (under al_lock) */
static size_t al_len, al_cap;
static struct stats_counter al_dropped, al_lines, al_write_errors;

/* ---- the writer thread ---- */

static int open_log(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        log_error("perlbal: access_log %s: %s", path, strerror(errno));
    return fd;
}

static void *writer_main(void *arg)
{
    (void)arg;
    char *mine = NULL;
    size_t mine_cap = 0;
    pthread_mutex_lock(&al_lock);
    for (;;) {
        while (!al_len && !al_stop && !al_reopen)
            pthread_cond_wait(&al_cond, &al_lock);
        if (al_reopen) {
            al_reopen = false;
            char *path = al_path ? strdup(al_path) : NULL;
            pthread_mutex_unlock(&al_lock);
            int fd = path ? open_log(path) : -1;
            free(path);
            pthread_mutex_lock(&al_lock);
            if (al_fd >= 0)
                close(al_fd);
            al_fd = fd;
            atomic_store(&al_on, fd >= 0);
        }
        /* swap the pending lines out, write them without the lock */
        char *tmp = mine;
        size_t tcap = mine_cap, n = al_len;
        mine = al_buf;
        mine_cap = al_cap;
        al_buf = tmp;
        al_cap = tcap;
        al_len = 0;
        int fd = al_fd;
        bool stop = al_stop;
        pthread_mutex_unlock(&al_lock);
        for (size_t off = 0; fd >= 0 && off < n;) {
            ssize_t w = write(fd, mine + off, n - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                stats_counter_add(&al_write_errors, 1);
                break;
            }
            off += (size_t)w;
        }
        pthread_mutex_lock(&al_lock);
        if (stop && !al_len)
            break;
    }
    pthread_mutex_unlock(&al_lock);
    free(mine);
    return NULL;
}

static void append_line(const char *line, size_t len)
{
    pthread_mutex_lock(&al_lock);
    if (al_len + len > AL_MAX_PENDING) {
        pthread_mutex_unlock(&al_lock);
        stats_counter_add(&al_dropped, 1);
        return;
    }
    if (al_len + len > al_cap) {
        size_t cap = al_cap ? al_cap : 16384;
        while (cap < al_len + len)
            cap *= 2;
        char *nb = realloc(al_buf, cap);
        if (!nb) {
            pthread_mutex_unlock(&al_lock);
            stats_counter_add(&al_dropped, 1);
            return;
        }
        al_buf = nb;
        al_cap = cap;
    }
    memcpy(al_buf + al_len, line, len);
    bool wake = al_len == 0;
    al_len += len;
    pthread_mutex_unlock(&al_lock);
    stats_counter_add(&al_lines, 1);
    if (wake)
        pthread_cond_signal(&al_cond);
}

/* ---- settings ---- */

int pb_accesslog_server_set(const char *key, const char *val, int *rc, char *err, size_t errlen)
{
    *rc = 0;
    if (!strcasecmp(key, "access_log")) {
        bool off = !*val || !strcasecmp(val, "off") || !strcasecmp(val, "none") || !strcmp(val, "0");
        if (!off && val[0] != '/') {
            snprintf(err, errlen, "access_log must be an absolute file name or 'off'");
            *rc = -1;
            return 1;
        }
        pthread_mutex_lock(&al_lock);
        free(al_path);
        al_path = off ? NULL : strdup(val);
        bool started = al_started;
        if (started)
            al_reopen = true;
        pthread_mutex_unlock(&al_lock);
        if (started) {
            /* lines from now on are queued (or not): the writer opens the
             * new file before it writes them */
            atomic_store(&al_on, !off);
            pthread_cond_signal(&al_cond);
        } else if (!off && loop_count() > 0) {
            /* turned on from the console: the writer starts now */
            *rc = pb_accesslog_start(err, errlen);
        }
        return 1;
    }
    if (!strcasecmp(key, "access_log_format")) {
        const char *f = !strcasecmp(val, "combined") ? AL_COMBINED : !strcasecmp(val, "common") ? AL_COMMON : val;
        if (!*f || strlen(f) > 1024 || strchr(f, MARK) || strchr(f, '\n')) {
            snprintf(err, errlen, "access_log_format: combined, common or a LogFormat template (at most 1 KiB)");
            *rc = -1;
            return 1;
        }
        char *copy = strdup(f);
        if (!copy) {
            snprintf(err, errlen, "out of memory");
            *rc = -1;
            return 1;
        }
        const char *old = atomic_exchange(&al_format, copy);
        if (old)
            pb_retire((void *)old); /* a loop may be formatting with it */
        return 1;
    }
    return 0;
}

int pb_accesslog_start(char *err, size_t errlen)
{
    pthread_mutex_lock(&al_lock);
    if (al_started || !al_path) {
        pthread_mutex_unlock(&al_lock);
        return 0;
    }
    int fd = open_log(al_path);
    if (fd < 0) {
        snprintf(err, errlen, "access_log %s: %s", al_path, strerror(errno));
        pthread_mutex_unlock(&al_lock);
        return -1;
    }
    al_fd = fd;
    al_stop = false;
    if (pthread_create(&al_thread, NULL, writer_main, NULL) != 0) {
        close(fd);
        al_fd = -1;
        snprintf(err, errlen, "access_log: cannot start its writer thread");
        pthread_mutex_unlock(&al_lock);
        return -1;
    }
    al_started = true;
    atomic_store(&al_on, true);
    pthread_mutex_unlock(&al_lock);
    return 0;
}

void pb_accesslog_reopen(void)
{
    pthread_mutex_lock(&al_lock);
    if (al_started)
        al_reopen = true;
    pthread_mutex_unlock(&al_lock);
    pthread_cond_signal(&al_cond);
}

void pb_accesslog_stop(void)
{
    pthread_mutex_lock(&al_lock);
    bool started = al_started;
    al_stop = true;
    pthread_mutex_unlock(&al_lock);
    if (!started)
        return;
    pthread_cond_signal(&al_cond);
    pthread_join(al_thread, NULL); /* what was logged is written first */
    atomic_store(&al_on, false);
    if (al_fd >= 0)
        close(al_fd);
    al_fd = -1;
    al_started = false;
}

/* ---- formatting ---- */

/* Apache's escaping of request lines and header values: '"' and '\'
 * backslashed, control and non-ASCII bytes as \xhh. */
static void add_escaped(struct evbuffer *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[AL_MAX_FIELD + 8];
    size_t o = 0;
    for (size_t i = 0; i < n && o < AL_MAX_FIELD; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            tmp[o++] = '\\';
            tmp[o++] = (char)ch;
        } else if (ch < 0x20 || ch >= 0x7f) {
            tmp[o++] = '\\';
            tmp[o++] = 'x';
            tmp[o++] = hex[ch >> 4];
            tmp[o++] = hex[ch & 15];
        } else {
            tmp[o++] = (char)ch;
        }
    }
    evbuffer_add(b, tmp, o);
}

/* [05/Dec/2026:21:47:47 +0000], cached per second per thread */
static void add_time(struct evbuffer *b)
{
    static __thread time_t last;
    static __thread char text[40];
    time_t now = time(NULL);
    if (now != last) {
        struct tm tm;
        localtime_r(&now, &tm);
        strftime(text, sizeof text, "[%d/%b/%Y:%H:%M:%S %z]", &tm);
        last = now;
    }
    evbuffer_add(b, text, strlen(text));
}

static void add_peer(struct evbuffer *b, struct pb_client *cl)
{
    size_t l;
    const char *ip = pb_client_ip(cl, &l);
    evbuffer_add(b, l ? ip : "-", l ? l : 1);
}

/* The request's half of a line: everything the head tells; what only the
 * end knows is left as MARK + its letter. */
static char *format_request(struct pb_client *cl, const struct http_msg *req, const char *fmt)
{
    struct evbuffer *b = evbuffer_new();
    if (!b)
        return NULL;
    const char *q = memchr(req->target, '?', req->target_len);
    size_t pathlen = q ? (size_t)(q - req->target) : req->target_len;
    for (const char *p = fmt; *p; p++) {
        if (*p != '%') {
            evbuffer_add(b, p, 1);
            continue;
        }
        p++;
        if (*p == '>' && p[1] == 's')
            p++;
        switch (*p) {
        case '%': evbuffer_add(b, "%", 1); break;
        case 'h':
        case 'a': add_peer(b, cl); break;
        case 'l':
        case 'u': evbuffer_add(b, "-", 1); break;
        case 't': add_time(b); break;
        case 'r':
            add_escaped(b, req->method_str, req->method_len);
            evbuffer_add(b, " ", 1);
            add_escaped(b, req->target, req->target_len);
            evbuffer_add_printf(b, " HTTP/1.%d", req->version_minor);
            break;
        case 'm': add_escaped(b, req->method_str, req->method_len); break;
        case 'U': add_escaped(b, req->target, pathlen); break;
        case 'q':
            if (q)
                add_escaped(b, q, req->target_len - pathlen);
            break;
        case 'H': evbuffer_add_printf(b, "HTTP/1.%d", req->version_minor); break;
        case 's':
        case 'b':
        case 'B':
        case 'D':
        case 'T':
        case 'v': {
            char m[2] = { MARK, *p };
            evbuffer_add(b, m, 2);
            break;
        }
        case '{': {
            const char *end = strchr(p, '}');
            if (!end || end[1] != 'i' || end - p - 1 > 64) {
                evbuffer_add(b, "%{", 2); /* not ours: as written */
                break;
            }
            char name[72];
            snprintf(name, sizeof name, "%.*s", (int)(end - p - 1), p + 1);
            size_t vl;
            const char *v = http_header_value((struct http_msg *)req, name, &vl);
            if (v)
                add_escaped(b, v, vl);
            else
                evbuffer_add(b, "-", 1);
            p = end + 1;
            break;
        }
        case 0: p--; break;
        default: evbuffer_add(b, p - 1, 2); break;
        }
    }
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    if (s) {
        evbuffer_remove(b, s, n);
        s[n] = 0;
    }
    evbuffer_free(b);
    return s;
}

void pb_accesslog_request_start(struct pb_client *cl, const struct http_msg *req)
{
    cl->status = 0;
    cl->resp_bytes = 0;
    cl->resp_bytes_known = false;
    if (!atomic_load_explicit(&al_on, memory_order_relaxed) && !pb_debug_requests)
        return;
    cl->t0_us = stats_now_usec();
    const char *fmt = atomic_load_explicit(&al_format, memory_order_acquire);
    free(cl->log_req);
    cl->log_req = format_request(cl, req, fmt ? fmt : AL_COMBINED);
}

/* ---- metrics: per service, per status ---- */

static void emit_metrics(struct stats_sink *s, void *arg)
{
    (void)arg;
    static const struct stats_desc d_req = { NULL, "requests", STATS_COUNTER,
                                             "HTTP requests answered, by service and status code", 0 };
    static const struct stats_desc d_bytes = { NULL, "response_body_bytes", STATS_COUNTER,
                                               "response body bytes sent, by service", 0 };
    static const struct stats_desc d_drop = { NULL, "access_log_dropped", STATS_COUNTER,
                                              "access log lines dropped (the writer was behind by 4 MiB)", 0 };
    static const struct stats_desc d_lines = { NULL, "access_log_lines", STATS_COUNTER, "access log lines queued", 0 };
    static const struct stats_desc d_werr = { NULL, "access_log_write_errors", STATS_COUNTER,
                                              "failed writes of the access log file", 0 };
    pthread_mutex_lock(&pb_lock);
    for (struct pb_service *svc = pb_services; svc; svc = svc->next)
        for (int i = 0; i < PB_STATUS_SLOTS; i++) {
            uint64_t n = atomic_load_explicit(&svc->status_count[i], memory_order_relaxed);
            if (!n)
                continue;
            char code[8];
            snprintf(code, sizeof code, "%d", i + 100);
            struct stats_label l[2] = { { "service", svc->name }, { "code", code } };
            stats_emit_labels(s, &d_req, l, 2, (double)n);
        }
    for (struct pb_service *svc = pb_services; svc; svc = svc->next) {
        if (svc->role == PB_ROLE_MANAGEMENT)
            continue;
        struct stats_label l[1] = { { "service", svc->name } };
        stats_emit_labels(s, &d_bytes, l, 1, (double)atomic_load(&svc->body_bytes));
    }
    pthread_mutex_unlock(&pb_lock);
    stats_emit(s, &d_lines, (double)stats_counter_get(&al_lines));
    stats_emit(s, &d_drop, (double)stats_counter_get(&al_dropped));
    stats_emit(s, &d_werr, (double)stats_counter_get(&al_write_errors));
}

void pb_metrics_init(void) { stats_add_source("", emit_metrics, NULL); }

void pb_accesslog_request_end(struct pb_client *cl)
{
    int status = cl->status;
    uint64_t bytes = cl->resp_bytes;
    bool known = cl->resp_bytes_known;
    if (!status || !known) {
        /* an answer httpd made itself (files, errors): as it reports it */
        int s = cl->h->resp_status;
        if (!status)
            status = s;
        if (s && !known && cl->h->resp_body >= 0) {
            bytes = (uint64_t)cl->h->resp_body;
            known = true;
        }
    }
    struct pb_service *svc = cl->svc;
    if (status >= 100 && status < 100 + PB_STATUS_SLOTS && svc) {
        atomic_fetch_add_explicit(&svc->status_count[status - 100], 1, memory_order_relaxed);
        if (known && cl->h->method != HTTP_M_HEAD)
            atomic_fetch_add_explicit(&svc->body_bytes, bytes, memory_order_relaxed);
    }
    if (!cl->log_req)
        return;
    char *half = cl->log_req;
    cl->log_req = NULL;
    if (cl->h->method == HTTP_M_HEAD || status == 304 || status == 204)
        bytes = 0, known = true;
    uint64_t us = stats_now_usec() - cl->t0_us;
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        free(half);
        return;
    }
    for (const char *p = half; *p; p++) {
        if (*p != MARK || !p[1]) {
            const char *m = strchr(p, MARK);
            size_t n = m ? (size_t)(m - p) : strlen(p);
            evbuffer_add(b, p, n);
            p += n - 1;
            continue;
        }
        p++;
        switch (*p) {
        case 's':
            if (status)
                evbuffer_add_printf(b, "%d", status);
            else
                evbuffer_add(b, "-", 1);
            break;
        case 'b':
            if (known && bytes)
                evbuffer_add_printf(b, "%llu", (unsigned long long)bytes);
            else
                evbuffer_add(b, "-", 1);
            break;
        case 'B': evbuffer_add_printf(b, "%llu", known ? (unsigned long long)bytes : 0ULL); break;
        case 'D': evbuffer_add_printf(b, "%llu", (unsigned long long)us); break;
        case 'T': evbuffer_add_printf(b, "%llu", (unsigned long long)(us / 1000000)); break;
        case 'v': evbuffer_add(b, svc ? svc->name : "-", svc ? strlen(svc->name) : 1); break;
        }
    }
    free(half);
    size_t n = evbuffer_get_length(b);
    char *line = (char *)evbuffer_pullup(b, (ssize_t)n);
    if (pb_debug_requests)
        log_debug("request: client %llu service %s: %.*s (%llu us)", (unsigned long long)cl->c->id,
                  svc ? svc->name : "-", (int)n, line ? line : "", (unsigned long long)us);
    if (line && atomic_load_explicit(&al_on, memory_order_relaxed)) {
        evbuffer_add(b, "\n", 1);
        n++;
        line = (char *)evbuffer_pullup(b, (ssize_t)n);
        if (line)
            append_line(line, n);
    }
    evbuffer_free(b);
}
