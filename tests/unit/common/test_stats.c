/* stats sources, renderings and histograms */
#include <string.h>

#include <event2/buffer.h>

#include "common/stats.h"
#include "tests/unit/unit.h"

static void src_general(struct stats_sink *s, void *arg)
{
    stats_u64(s, "cmd_get", *(uint64_t *)arg);
    stats_str(s, "version", "1.2.3");
    stats_double(s, "rusage_user", 0.5);
}

static void src_slabs(struct stats_sink *s, void *arg)
{
    (void)arg;
    stats_u64f(s, 96, "%d:chunk_size", 1);
}

static char *text(struct evbuffer *b)
{
    evbuffer_add(b, "", 1);
    return (char *)evbuffer_pullup(b, -1);
}

static void test_text_and_groups(void)
{
    static uint64_t gets = 42;
    stats_add_source("", src_general, &gets);
    stats_add_source("slabs", src_slabs, NULL);
    struct evbuffer *b = evbuffer_new();
    CHECK_EQ_INT(stats_render_text(b, ""), 0);
    CHECK_STR(text(b), "STAT cmd_get 42\r\nSTAT version 1.2.3\r\nSTAT rusage_user 0.500000\r\n");
    evbuffer_drain(b, evbuffer_get_length(b));
    CHECK_EQ_INT(stats_render_text(b, "slabs"), 0);
    CHECK_STR(text(b), "STAT 1:chunk_size 96\r\n");
    evbuffer_drain(b, evbuffer_get_length(b));
    CHECK_EQ_INT(stats_render_text(b, "nope"), -1);
    evbuffer_drain(b, evbuffer_get_length(b));
    stats_render_prometheus(b, "memcached");
    char *p = text(b);
    CHECK(strstr(p, "memcached_cmd_get 42\n") != NULL);
    CHECK(strstr(p, "memcached_1_chunk_size 96\n") != NULL);
    CHECK(strstr(p, "version") == NULL); /* text values are skipped */
    evbuffer_free(b);
}

static void test_histogram(void)
{
    static struct stats_hist h;
    for (int i = 0; i < 90; i++)
        stats_hist_record(&h, 100); /* bucket [64,128) */
    for (int i = 0; i < 10; i++)
        stats_hist_record(&h, 5000); /* bucket [4096,8192) */
    CHECK_EQ_INT(stats_hist_quantile(&h, 0.5), 128);
    CHECK_EQ_INT(stats_hist_quantile(&h, 0.9), 128);
    CHECK_EQ_INT(stats_hist_quantile(&h, 0.99), 8192);
    stats_hist_record(&h, 0);
    stats_hist_record(&h, ~0ULL);
    CHECK_EQ_INT(atomic_load(&h.count), 102);
}

/* Typed metrics: HELP/TYPE once per family, counters end in _total, labels
 * escaped, console names kept, console-only and Prometheus-only values. */
static const struct stats_desc d_gets = { "cmd_get", "commands", STATS_COUNTER, "Commands by kind.", 0 },
                               d_bytes = { "bytes", "current_bytes", STATS_GAUGE, "Bytes \\ in use\nnow.", 0 },
                               d_cpu = { "rusage_user", "", STATS_COUNTER, NULL, 6 },
                               d_only_prom = { NULL, "up", STATS_GAUGE, "Is it up.", 0 },
                               d_already = { "hits_total", NULL, STATS_COUNTER, NULL, 0 };

static struct stats_hist latency;

static void src_typed(struct stats_sink *s, void *arg)
{
    (void)arg;
    static const struct stats_label get_hit[] = { { "command", "get" }, { "status", "hit" } };
    static const struct stats_label odd[] = { { "command", "a\"b\\c\nd" }, { "bad-name", "x" } };
    stats_u64(s, "dup", 1);
    stats_emit(s, &d_bytes, 1024);
    stats_u64(s, "dup", 2); /* again, elsewhere: Prometheus keeps the first */
    stats_emit_labels(s, &d_gets, get_hit, 2, 7);
    stats_emit_labels(s, &d_gets, odd, 2, 1);
    stats_emit(s, &d_cpu, 0.25);
    stats_emit(s, &d_only_prom, 1);
    stats_emit(s, &d_already, 3);
    stats_hist_emit(s, "latency", &latency);
}

static void test_typed_prometheus(void)
{
    stats_hist_record(&latency, 3);
    stats_add_source("typed", src_typed, NULL);
    struct evbuffer *b = evbuffer_new();
    CHECK_EQ_INT(stats_render_text(b, "typed"), 0);
    char *t = text(b);
    CHECK(strstr(t, "STAT bytes 1024\r\n") != NULL);
    CHECK(strstr(t, "STAT rusage_user 0.250000\r\n") != NULL);
    CHECK(strstr(t, "STAT hits_total 3\r\n") != NULL);
    CHECK(strstr(t, "cmd_get") == NULL);  /* labelled: Prometheus only */
    CHECK(strstr(t, "STAT up ") == NULL); /* Prometheus only */
    evbuffer_drain(b, evbuffer_get_length(b));
    stats_render_prometheus(b, "mc");
    char *p = text(b);
    CHECK(strstr(p, "# HELP mc_current_bytes Bytes \\\\ in use\\nnow.\n# TYPE mc_current_bytes gauge\nmc_current_bytes "
                    "1024\n") != NULL);
    CHECK(strstr(p, "# HELP mc_commands_total Commands by kind.\n# TYPE mc_commands_total counter\n"
                    "mc_commands_total{command=\"get\",status=\"hit\"} 7\n"
                    "mc_commands_total{command=\"a\\\"b\\\\c\\nd\",bad_name=\"x\"} 1\n") != NULL);
    CHECK(strstr(p, "0.25") == NULL); /* console only */
    CHECK(strstr(p, "# TYPE mc_up gauge\nmc_up 1\n") != NULL);
    CHECK(strstr(p, "mc_hits_total 3\n") != NULL);
    CHECK(strstr(p, "hits_total_total") == NULL);
    CHECK(strstr(p, "# TYPE mc_latency_seconds histogram\n") != NULL);
    CHECK(strstr(p, "mc_latency_seconds_count 1\n") != NULL);
    /* untyped values say so, once per family */
    CHECK(strstr(p, "# TYPE mc_cmd_get untyped\nmc_cmd_get 42\n") != NULL);
    CHECK(strstr(p, "# TYPE mc_dup untyped\nmc_dup 1\n") != NULL);
    CHECK(strstr(p, "mc_dup 2") == NULL);
    const char *first = strstr(p, "# TYPE mc_commands_total");
    CHECK(first && !strstr(first + 1, "# TYPE mc_commands_total"));
    evbuffer_free(b);
}

int main(void)
{
    RUN(test_text_and_groups);
    RUN(test_histogram);
    RUN(test_typed_prometheus);
    return unit_done();
}
