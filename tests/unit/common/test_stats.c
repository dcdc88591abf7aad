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
        stats_hist_record(&h, 100);  /* bucket [64,128) */
    for (int i = 0; i < 10; i++)
        stats_hist_record(&h, 5000); /* bucket [4096,8192) */
    CHECK_EQ_INT(stats_hist_quantile(&h, 0.5), 128);
    CHECK_EQ_INT(stats_hist_quantile(&h, 0.9), 128);
    CHECK_EQ_INT(stats_hist_quantile(&h, 0.99), 8192);
    stats_hist_record(&h, 0);
    stats_hist_record(&h, ~0ULL);
    CHECK_EQ_INT(atomic_load(&h.count), 102);
}

int main(void)
{
    RUN(test_text_and_groups);
    RUN(test_histogram);
    return unit_done();
}
