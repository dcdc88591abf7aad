/* stats: counters, gauges and latency histograms, rendered as memcached-style
 * `STAT name value` lines (console, memcached `stats`) and as Prometheus text
 * (optional metrics port, GET /metrics).
 *
 * Daemons keep their numbers where they like (per-thread structs on hot
 * paths) and register a source: a function that emits them into a sink when
 * someone asks. Sources are grouped: group "" is plain `stats`; other groups
 * answer `stats <group>` (e.g. "slabs"). */
#ifndef CORE_STATS_H
#define CORE_STATS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;
struct stats_sink;

typedef void (*stats_source_fn)(struct stats_sink *sink, void *arg);

/* Sources of a group are emitted in registration order. */
void stats_add_source(const char *group, stats_source_fn fn, void *arg);

void stats_u64(struct stats_sink *s, const char *name, uint64_t v);
void stats_i64(struct stats_sink *s, const char *name, int64_t v);
/* Rendered with 6 decimals ("0.123456"), as memcached does for rusage. */
void stats_double(struct stats_sink *s, const char *name, double v);
/* Text-only value (Prometheus skips it). */
void stats_str(struct stats_sink *s, const char *name, const char *v);
/* printf-style name, for per-slab "1:chunk_size" and the like. */
void stats_u64f(struct stats_sink *s, uint64_t v, const char *namefmt, ...) __attribute__((format(printf, 3, 4)));

/* Typed metrics, for Prometheus' conventions: a "# HELP" and a "# TYPE"
 * line per family, counters named ..._total, optional labels. One
 * descriptor (usually a static const table) says how a value is shown on
 * the console (name) and to Prometheus (prom, help, kind). The untyped
 * calls above stay valid: Prometheus sees them as "untyped". */
enum stats_kind { STATS_UNTYPED = 0, STATS_COUNTER, STATS_GAUGE };
struct stats_desc {
    const char *name; /* console: STAT name value; NULL = Prometheus only */
    const char *prom; /* Prometheus family after "<ns>_"; NULL = name; "" = console only.
                       * Counters get "_total" appended unless it is there. */
    enum stats_kind kind;
    const char *help; /* one line; NULL = none */
    int decimals;     /* console: digits after the point (0 = an integer) */
};
struct stats_label {
    const char *name;  /* [a-zA-Z_][a-zA-Z0-9_]* */
    const char *value; /* any text: escaped as the format wants */
};
void stats_emit(struct stats_sink *s, const struct stats_desc *d, double v);
/* One sample of a labelled family (Prometheus only: the console and
 * stats_visit skip it, they have their own names). The samples of one
 * family must be emitted one after another, so its HELP and TYPE come
 * once. */
void stats_emit_labels(struct stats_sink *s, const struct stats_desc *d, const struct stats_label *labels, int n,
                       double v);

/* `STAT name value\r\n` for every source of group. Returns 0, or -1 if no
 * source has that group. The caller appends "END\r\n" if its protocol wants. */
int stats_render_text(struct evbuffer *out, const char *group);
/* Every numeric value of every group, names prefixed "<ns>_", with
 * histogram buckets; any character outside [a-zA-Z0-9_] becomes '_'. Each
 * family gets its "# TYPE" line (and "# HELP" when it has help), in the
 * Prometheus text format 0.0.4. */
void stats_render_prometheus(struct evbuffer *out, const char *ns);

/* Call a source directly (for protocols that format stats themselves, e.g.
 * memcached's binary STAT). fn gets name and value text for each item. */
typedef void (*stats_visit_fn)(const char *name, const char *value, void *arg);
int stats_visit(const char *group, stats_visit_fn fn, void *arg);

/* A counter safe to bump from any thread (relaxed atomic). */
struct stats_counter {
    _Atomic uint64_t v;
};
static inline void stats_counter_add(struct stats_counter *c, uint64_t n)
{
    atomic_fetch_add_explicit(&c->v, n, memory_order_relaxed);
}
static inline uint64_t stats_counter_get(const struct stats_counter *c)
{
    return atomic_load_explicit(&((struct stats_counter *)c)->v, memory_order_relaxed);
}

/* Latency histogram: power-of-two microsecond buckets, [0,1us) .. [2^30us, inf). */
#define STATS_HIST_BUCKETS 32
struct stats_hist {
    _Atomic uint64_t bucket[STATS_HIST_BUCKETS];
    _Atomic uint64_t count;
    _Atomic uint64_t sum_us;
};
void stats_hist_record(struct stats_hist *h, uint64_t usec);
/* Text: name_count, name_sum_us, name_p50_us, name_p90_us, name_p99_us.
 * Prometheus: a histogram with buckets in seconds. */
void stats_hist_emit(struct stats_sink *s, const char *name, const struct stats_hist *h);
/* Value below which the fraction q (0..1) of samples fall (bucket upper bound, us). */
uint64_t stats_hist_quantile(const struct stats_hist *h, double q);

/* Monotonic and wall clocks. */
uint64_t stats_now_usec(void);
double stats_wall_time(void);

/* The process source (group ""): pid, uptime, time, version, libevent,
 * pointer_size, rusage_user, rusage_system, max_connections,
 * curr_connections, total_connections, rejected_connections,
 * accept_fd_exhausted, threads. Prometheus names follow the memcached
 * exporter's where one exists: <ns>_uptime_seconds,
 * <ns>_current_connections, <ns>_connections_total,
 * <ns>_process_cpu_seconds_total, <ns>_process_open_fds ...
 * daemon_main registers it first. */
void stats_process_source(struct stats_sink *sink, void *arg);
/* Set by daemon_main: version string and start time for the process source. */
void stats_set_process_info(const char *version, double started);
double stats_process_started(void);

/* HTTP listener answering GET /metrics with stats_render_prometheus(ns). */
int stats_metrics_listen(const char *spec, const char *ns, char *err, size_t errlen);

#endif
