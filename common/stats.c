/* stats: the registry of stat sources and the two renderings (STAT lines,
 * Prometheus text), latency histograms, the process source and the tiny
 * HTTP listener for /metrics. */
#include "common/stats.h"

#include <ctype.h>
#include <dirent.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/clock.h"
#include "common/conn.h"
#include "common/line.h"
#include "common/listen.h"
#include "common/log.h"
#include "common/loop.h"

#define MAX_SOURCES 64

struct source {
    char group[32];
    stats_source_fn fn;
    void *arg;
};

static struct source sources[MAX_SOURCES];
static int nsources;
static pthread_mutex_t sources_lock = PTHREAD_MUTEX_INITIALIZER;

enum sink_kind { SINK_TEXT, SINK_PROM, SINK_VISIT };

struct stats_sink {
    enum sink_kind kind;
    struct evbuffer *out;
    const char *ns;
    stats_visit_fn visit;
    void *visit_arg;
    char family[256]; /* Prometheus: the family whose HELP/TYPE went out last */
    uint64_t *seen;   /* Prometheus: hashes of the families already closed */
    size_t nseen, capseen;
    bool skip; /* the current family is a repeat: drop its samples */
};

void stats_add_source(const char *group, stats_source_fn fn, void *arg)
{
    pthread_mutex_lock(&sources_lock);
    if (nsources < MAX_SOURCES) {
        snprintf(sources[nsources].group, sizeof(sources[nsources].group), "%s", group ? group : "");
        sources[nsources].fn = fn;
        sources[nsources].arg = arg;
        nsources++;
    } else {
        log_error("stats: too many sources, '%s' dropped", group);
    }
    pthread_mutex_unlock(&sources_lock);
}

static void prom_name(char *dst, size_t len, const char *ns, const char *name)
{
    size_t i = 0;
    for (const char *p = ns; *p && i + 1 < len; p++)
        dst[i++] = isalnum((unsigned char)*p) ? *p : '_';
    if (i + 1 < len)
        dst[i++] = '_';
    for (const char *p = name; *p && i + 1 < len; p++)
        dst[i++] = isalnum((unsigned char)*p) ? *p : '_';
    dst[i] = '\0';
}

static const char *const kind_name[] = { "untyped", "counter", "gauge" };

static uint64_t fnv1a(const char *p)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return h;
}

/* "# HELP" and "# TYPE" once per family, before its first sample. A family
 * met again after another one (a value two groups both show, like
 * memcached's total_malloced) is dropped: Prometheus allows one block per
 * family and one sample per name. Returns false to drop the sample. */
static bool prom_family(struct stats_sink *s, const char *family, const char *type, const char *help)
{
    if (strcmp(s->family, family) == 0)
        return !s->skip;
    uint64_t h = fnv1a(family);
    s->skip = false;
    for (size_t i = 0; i < s->nseen; i++)
        if (s->seen[i] == h)
            s->skip = true;
    snprintf(s->family, sizeof(s->family), "%s", family);
    if (s->skip)
        return false;
    if (s->nseen == s->capseen) {
        size_t cap = s->capseen ? s->capseen * 2 : 256;
        uint64_t *n = realloc(s->seen, cap * sizeof *n);
        if (n) {
            s->seen = n;
            s->capseen = cap;
        }
    }
    if (s->nseen < s->capseen)
        s->seen[s->nseen++] = h;
    if (help && *help) {
        evbuffer_add_printf(s->out, "# HELP %s ", family);
        for (const char *p = help; *p; p++) {
            if (*p == '\\')
                evbuffer_add(s->out, "\\\\", 2);
            else if (*p == '\n')
                evbuffer_add(s->out, "\\n", 2);
            else
                evbuffer_add(s->out, p, 1);
        }
        evbuffer_add(s->out, "\n", 1);
    }
    evbuffer_add_printf(s->out, "# TYPE %s %s\n", family, type);
    return true;
}

static void emit(struct stats_sink *s, const char *name, const char *value, bool numeric)
{
    switch (s->kind) {
    case SINK_TEXT: evbuffer_add_printf(s->out, "STAT %s %s\r\n", name, value); break;
    case SINK_PROM:
        if (numeric) {
            char n[256];
            prom_name(n, sizeof(n), s->ns, name);
            if (prom_family(s, n, "untyped", NULL))
                evbuffer_add_printf(s->out, "%s %s\n", n, value);
        }
        break;
    case SINK_VISIT: s->visit(name, value, s->visit_arg); break;
    }
}

void stats_u64(struct stats_sink *s, const char *name, uint64_t v)
{
    char b[24];
    snprintf(b, sizeof(b), "%llu", (unsigned long long)v);
    emit(s, name, b, true);
}

void stats_i64(struct stats_sink *s, const char *name, int64_t v)
{
    char b[24];
    snprintf(b, sizeof(b), "%lld", (long long)v);
    emit(s, name, b, true);
}

void stats_double(struct stats_sink *s, const char *name, double v)
{
    char b[48];
    snprintf(b, sizeof(b), "%.6f", v);
    emit(s, name, b, true);
}

void stats_str(struct stats_sink *s, const char *name, const char *v) { emit(s, name, v ? v : "", false); }

void stats_u64f(struct stats_sink *s, uint64_t v, const char *namefmt, ...)
{
    char name[128];
    va_list ap;
    va_start(ap, namefmt);
    vsnprintf(name, sizeof(name), namefmt, ap);
    va_end(ap);
    stats_u64(s, name, v);
}

/* The Prometheus family of a descriptor: "<ns>_<prom>" (+ "_total"). */
static void desc_family(struct stats_sink *s, const struct stats_desc *d, char *out, size_t len)
{
    prom_name(out, len, s->ns, d->prom ? d->prom : d->name);
    size_t n = strlen(out);
    if (d->kind == STATS_COUNTER && (n < 6 || strcmp(out + n - 6, "_total") != 0))
        snprintf(out + n, len - n, "_total");
}

static void prom_value(char *buf, size_t len, double v)
{
    if (v == (double)(int64_t)v && v < 9007199254740992.0 && v > -9007199254740992.0)
        snprintf(buf, len, "%lld", (long long)v);
    else
        snprintf(buf, len, "%.17g", v);
}

void stats_emit(struct stats_sink *s, const struct stats_desc *d, double v)
{
    char b[64];
    switch (s->kind) {
    case SINK_TEXT:
    case SINK_VISIT:
        if (!d->name)
            return;
        if (d->decimals > 0)
            snprintf(b, sizeof(b), "%.*f", d->decimals, v);
        else
            prom_value(b, sizeof(b), v);
        emit(s, d->name, b, true);
        return;
    case SINK_PROM: {
        if (d->prom && !*d->prom)
            return; /* console only */
        char fam[256];
        desc_family(s, d, fam, sizeof(fam));
        if (!prom_family(s, fam, kind_name[d->kind], d->help))
            return;
        prom_value(b, sizeof(b), v);
        evbuffer_add_printf(s->out, "%s %s\n", fam, b);
        return;
    }
    }
}

static void label_value(struct evbuffer *out, const char *v)
{
    for (const char *p = v ? v : ""; *p; p++) {
        if (*p == '\\' || *p == '"')
            evbuffer_add_printf(out, "\\%c", *p);
        else if (*p == '\n')
            evbuffer_add(out, "\\n", 2);
        else
            evbuffer_add(out, p, 1);
    }
}

void stats_emit_labels(struct stats_sink *s, const struct stats_desc *d, const struct stats_label *labels, int n,
                       double v)
{
    if (s->kind != SINK_PROM || (d->prom && !*d->prom))
        return;
    char fam[256], b[64];
    desc_family(s, d, fam, sizeof(fam));
    if (!prom_family(s, fam, kind_name[d->kind], d->help))
        return;
    evbuffer_add_printf(s->out, "%s{", fam);
    for (int i = 0; i < n; i++) {
        char ln[64];
        prom_name(ln, sizeof(ln), "", labels[i].name);
        evbuffer_add_printf(s->out, "%s%s=\"", i ? "," : "", ln + 1); /* skip the "_" of the empty ns */
        label_value(s->out, labels[i].value);
        evbuffer_add(s->out, "\"", 1);
    }
    prom_value(b, sizeof(b), v);
    evbuffer_add_printf(s->out, "} %s\n", b);
}

static int render(struct stats_sink *sink, const char *group)
{
    int found = 0;
    pthread_mutex_lock(&sources_lock);
    int n = nsources;
    pthread_mutex_unlock(&sources_lock);
    for (int i = 0; i < n; i++) {
        if (group && strcmp(sources[i].group, group) != 0)
            continue;
        found++;
        sources[i].fn(sink, sources[i].arg);
    }
    return found ? 0 : -1;
}

int stats_render_text(struct evbuffer *out, const char *group)
{
    struct stats_sink sink = { .kind = SINK_TEXT, .out = out };
    return render(&sink, group ? group : "");
}

void stats_render_prometheus(struct evbuffer *out, const char *ns)
{
    struct stats_sink sink = { .kind = SINK_PROM, .out = out, .ns = ns ? ns : "core" };
    render(&sink, NULL);
    free(sink.seen);
}

int stats_visit(const char *group, stats_visit_fn fn, void *arg)
{
    struct stats_sink sink = { .kind = SINK_VISIT, .visit = fn, .visit_arg = arg };
    return render(&sink, group ? group : "");
}

/* Histograms. */

static int bucket_of(uint64_t usec)
{
    if (usec == 0)
        return 0;
    int b = 64 - __builtin_clzll(usec); /* usec in [2^(b-1), 2^b) -> bucket b */
    return b < STATS_HIST_BUCKETS ? b : STATS_HIST_BUCKETS - 1;
}

void stats_hist_record(struct stats_hist *h, uint64_t usec)
{
    atomic_fetch_add_explicit(&h->bucket[bucket_of(usec)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, usec, memory_order_relaxed);
}

/* Upper bound (exclusive) of bucket b in microseconds. */
static uint64_t bucket_upper(int b) { return b == 0 ? 1 : 1ULL << b; }

uint64_t stats_hist_quantile(const struct stats_hist *h, double q)
{
    struct stats_hist *m = (struct stats_hist *)h;
    uint64_t total = atomic_load_explicit(&m->count, memory_order_relaxed);
    if (total == 0)
        return 0;
    uint64_t want = (uint64_t)(q * (double)total + 0.5), seen = 0;
    if (want == 0)
        want = 1;
    for (int b = 0; b < STATS_HIST_BUCKETS; b++) {
        seen += atomic_load_explicit(&m->bucket[b], memory_order_relaxed);
        if (seen >= want)
            return bucket_upper(b);
    }
    return bucket_upper(STATS_HIST_BUCKETS - 1);
}

void stats_hist_emit(struct stats_sink *s, const char *name, const struct stats_hist *h)
{
    struct stats_hist *m = (struct stats_hist *)h;
    char n[160];
    uint64_t count = atomic_load_explicit(&m->count, memory_order_relaxed);
    uint64_t sum = atomic_load_explicit(&m->sum_us, memory_order_relaxed);
    if (s->kind == SINK_PROM) {
        char base[160], fam[200];
        prom_name(base, sizeof(base), s->ns, name);
        snprintf(fam, sizeof(fam), "%s_seconds", base);
        if (!prom_family(s, fam, "histogram", NULL))
            return;
        uint64_t cum = 0;
        for (int b = 0; b < STATS_HIST_BUCKETS - 1; b++) {
            cum += atomic_load_explicit(&m->bucket[b], memory_order_relaxed);
            evbuffer_add_printf(s->out, "%s_seconds_bucket{le=\"%g\"} %llu\n", base, (double)bucket_upper(b) / 1e6,
                                (unsigned long long)cum);
        }
        evbuffer_add_printf(s->out, "%s_seconds_bucket{le=\"+Inf\"} %llu\n", base, (unsigned long long)count);
        evbuffer_add_printf(s->out, "%s_seconds_sum %g\n", base, (double)sum / 1e6);
        evbuffer_add_printf(s->out, "%s_seconds_count %llu\n", base, (unsigned long long)count);
        return;
    }
    snprintf(n, sizeof(n), "%s_count", name);
    stats_u64(s, n, count);
    snprintf(n, sizeof(n), "%s_sum_us", name);
    stats_u64(s, n, sum);
    snprintf(n, sizeof(n), "%s_p50_us", name);
    stats_u64(s, n, stats_hist_quantile(h, 0.50));
    snprintf(n, sizeof(n), "%s_p90_us", name);
    stats_u64(s, n, stats_hist_quantile(h, 0.90));
    snprintf(n, sizeof(n), "%s_p99_us", name);
    stats_u64(s, n, stats_hist_quantile(h, 0.99));
}

uint64_t stats_now_usec(void) { return clock_now_us(); }

double stats_wall_time(void) { return clock_wall(); }

/* The process source. */

static const char *process_version = "";
static double process_started;

void stats_set_process_info(const char *version, double started)
{
    process_version = version ? version : "";
    process_started = started;
}

double stats_process_started(void) { return process_started; }

static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* not the one opendir holds */
}

/* The console names are memcached's; the Prometheus names the memcached
 * exporter's, so existing dashboards find them. */
static const struct stats_desc
    d_pid = { "pid", "", STATS_GAUGE, NULL, 0 },
    d_uptime = { "uptime", "uptime_seconds", STATS_COUNTER, "Seconds since the server started.", 0 },
    d_time = { "time", "time_seconds", STATS_GAUGE, "The server's clock, seconds since the Unix epoch.", 0 },
    d_ptr = { "pointer_size", "", STATS_GAUGE, NULL, 0 },
    d_ruser = { "rusage_user", "process_user_cpu_seconds", STATS_COUNTER, "User CPU time spent, in seconds.", 6 },
    d_rsys = { "rusage_system", "process_system_cpu_seconds", STATS_COUNTER, "System CPU time spent, in seconds.", 6 },
    d_cpu = { NULL, "process_cpu_seconds", STATS_COUNTER, "Total user and system CPU time spent in seconds.", 0 },
    d_start = { NULL, "process_start_time_seconds", STATS_GAUGE,
                "Start time of the process since unix epoch in seconds.", 0 },
    d_maxfds = { NULL, "process_max_fds", STATS_GAUGE, "Maximum number of open file descriptors.", 0 },
    d_openfds = { NULL, "process_open_fds", STATS_GAUGE, "Number of open file descriptors.", 0 },
    d_maxconn = { "max_connections", NULL, STATS_GAUGE, "Connections allowed at once (0 = no limit).", 0 },
    d_curr = { "curr_connections", "current_connections", STATS_GAUGE, "Current number of open connections.", 0 },
    d_total = { "total_connections", "connections", STATS_COUNTER,
                "Total number of connections opened since the server started running.", 0 },
    d_rejected = { "rejected_connections", "connections_rejected", STATS_COUNTER,
                   "Connections refused because the connection limit was reached.", 0 },
    d_fdex = { "accept_fd_exhausted", "accept_fd_exhausted", STATS_COUNTER,
               "Accepts that failed because the process ran out of file descriptors (the waiting connection is closed, "
               "or accepting pauses).",
               0 },
    d_threads = { "threads", NULL, STATS_GAUGE, "Event-loop threads.", 0 };

void stats_process_source(struct stats_sink *s, void *arg)
{
    (void)arg;
    double now = stats_wall_time();
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    double sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    stats_emit(s, &d_pid, (double)getpid());
    stats_emit(s, &d_uptime, (double)(uint64_t)(now - process_started));
    stats_emit(s, &d_time, (double)(uint64_t)now);
    stats_str(s, "version", process_version);
    stats_str(s, "libevent", event_get_version());
    stats_emit(s, &d_ptr, (double)(sizeof(void *) * 8));
    stats_emit(s, &d_ruser, user);
    stats_emit(s, &d_rsys, sys);
    stats_emit(s, &d_cpu, user + sys);
    stats_emit(s, &d_start, process_started);
    if (s->kind == SINK_PROM) { /* costs a directory read: scrapes only */
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
            stats_emit(s, &d_maxfds, (double)rl.rlim_cur);
        int fds = open_fds();
        if (fds >= 0)
            stats_emit(s, &d_openfds, fds);
    }
    stats_emit(s, &d_maxconn, (double)listen_max_conns());
    stats_emit(s, &d_curr, (double)conn_total_current());
    stats_emit(s, &d_total, (double)conn_total_accepted());
    stats_emit(s, &d_rejected, (double)listen_rejected_conns());
    stats_emit(s, &d_fdex, (double)listen_fd_exhausted());
    stats_emit(s, &d_threads, (double)loop_count());
}

/* The metrics listener: just enough HTTP for a scraper. One request per
 * connection; the reply closes it. */

static char metrics_ns[64] = "core";

static int metrics_read(struct core_conn *c)
{
    struct evbuffer *in = conn_in(c);
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    if (end.pos < 0) {
        if (evbuffer_get_length(in) > 8192)
            return -1;
        return 0;
    }
    size_t len, used;
    enum line_status st;
    char *line = line_peek(in, 8192, &len, &used, &st);
    struct evbuffer *out = conn_out(c);
    bool ok = line && (strncmp(line, "GET /metrics ", 13) == 0 || strncmp(line, "GET / ", 6) == 0);
    if (ok) {
        struct evbuffer *body = evbuffer_new();
        stats_render_prometheus(body, metrics_ns);
        evbuffer_add_printf(out,
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                            "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                            evbuffer_get_length(body));
        evbuffer_add_buffer(out, body);
        evbuffer_free(body);
    } else {
        evbuffer_add_printf(out,
                            "HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\nConnection: close\r\n\r\nnot found\n");
    }
    evbuffer_drain(in, evbuffer_get_length(in));
    conn_close_after_write(c);
    return 0;
}

static const struct conn_ops metrics_ops = { .name = "metrics", .on_read = metrics_read };

static void metrics_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen, void *arg)
{
    (void)arg;
    struct core_conn *c = conn_new(loop, fd, sa, salen, &metrics_ops, NULL);
    if (c)
        conn_set_timeouts(c, 10000, 10000);
}

int stats_metrics_listen(const char *spec, const char *ns, char *err, size_t errlen)
{
    snprintf(metrics_ns, sizeof(metrics_ns), "%s", ns ? ns : "core");
    struct listen_opts o = { .single_loop = true, .is_admin = true, .loopback_default = true };
    return listen_open(spec, 9150, &o, metrics_accept, NULL, NULL, err, errlen) ? 0 : -1;
}

/* SIGUSR1 writes the stats to the log (see loop_layer). */
static void dump_to_log(void)
{
    struct evbuffer *b = evbuffer_new();
    if (!b)
        return;
    stats_render_text(b, "");
    char *line;
    size_t n;
    while ((line = evbuffer_readln(b, &n, EVBUFFER_EOL_CRLF))) {
        log_msg(LOG_LEVEL_INFO, "%s", line);
        free(line);
    }
    evbuffer_free(b);
}

static const struct loop_layer stats_layer = { .name = "stats", .dump = dump_to_log };

__attribute__((constructor)) static void stats_register_layer(void) { loop_add_layer(&stats_layer); }
