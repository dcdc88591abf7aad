/* admin: the tracker's "!" commands (answered on the loop, multi-line,
 * ending in ".") and its console commands.
 *
 * !version, !stats, !jobs, !recent, !queue, !watch, !shutdown as MogileFS
 * 2.73's parent process has them; anything else gets the help text. */
#include "mogilefs/mogilefs.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "common/admin.h"
#include "common/loop.h"

#define RECENT 50

static struct {
    pthread_mutex_t mu;
    char line[RECENT][160];
    double secs[RECENT];
    int next, count;
} recent = { .mu = PTHREAD_MUTEX_INITIALIZER };

void mog_recent_add(const char *line, size_t len, double secs)
{
    pthread_mutex_lock(&recent.mu);
    snprintf(recent.line[recent.next], sizeof recent.line[0], "%.*s", (int)(len > 150 ? 150 : len), line);
    recent.secs[recent.next] = secs;
    recent.next = (recent.next + 1) % RECENT;
    if (recent.count < RECENT)
        recent.count++;
    pthread_mutex_unlock(&recent.mu);
}

static void stats_lines(struct evbuffer *out)
{
    evbuffer_add_printf(out, "uptime %lld\r\n", (long long)(stats_wall_time() - mog.started));
    evbuffer_add_printf(out, "pending_queries %d\r\n", mog.pending);
    evbuffer_add_printf(out, "processing_queries %d\r\n", mog.processing);
    evbuffer_add_printf(out, "bored_queryworkers %d\r\n", mog.cfg.query_jobs - mog.processing);
    evbuffer_add_printf(out, "queries %llu\r\n", (unsigned long long)stats_counter_get(&mog.n.queries));
    evbuffer_add_printf(out, "times_out_of_qworkers %llu\r\n",
                        (unsigned long long)stats_counter_get(&mog.n.times_out_of_qworkers));
    evbuffer_add_printf(out, "work_queue_for_replicate %d\r\n", 0);
}

void mog_bang_command(const char *line, size_t len, struct evbuffer *out)
{
    char cmd[32];
    size_t n = 0;
    for (size_t i = 1; i < len && n < sizeof cmd - 1 && line[i] != ' ' && line[i] != '\r'; i++)
        cmd[n++] = line[i];
    cmd[n] = '\0';
    if (!strcmp(cmd, "version")) {
        evbuffer_add_printf(out, "%s\r\n", MOG_VERSION);
    } else if (!strcmp(cmd, "stats")) {
        stats_lines(out);
    } else if (!strcmp(cmd, "jobs")) {
        static const struct {
            const char *name;
            const int *count;
        } jobs[] = {
            { "queryworker", &mog.cfg.query_jobs },
            { "replicate", &mog.cfg.replicate_jobs },
            { "delete", &mog.cfg.delete_jobs },
            { "monitor", &mog.cfg.monitor_jobs },
        };
        for (size_t i = 0; i < sizeof jobs / sizeof jobs[0]; i++) {
            evbuffer_add_printf(out, "%s count %d\r\n", jobs[i].name, *jobs[i].count);
            evbuffer_add_printf(out, "%s desired %d\r\n", jobs[i].name, *jobs[i].count);
            evbuffer_add_printf(out, "%s pids %d\r\n", jobs[i].name, (int)getpid());
        }
    } else if (!strcmp(cmd, "recent")) {
        pthread_mutex_lock(&recent.mu);
        for (int i = 0; i < recent.count; i++) {
            int k = (recent.next - recent.count + i + RECENT) % RECENT;
            evbuffer_add_printf(out, "%.4f %s\r\n", recent.secs[k], recent.line[k]);
        }
        pthread_mutex_unlock(&recent.mu);
    } else if (!strcmp(cmd, "queue") || !strcmp(cmd, "pend")) {
        evbuffer_add_printf(out, "pending %d\r\n", mog.pending);
    } else if (!strcmp(cmd, "shutdown")) {
        loop_request_stop();
    } else {
        evbuffer_add_printf(out,
                            "Unknown command: !%s\r\n"
                            "!version, !stats, !jobs, !recent, !queue, !watch, !shutdown\r\n",
                            cmd);
    }
    evbuffer_add(out, ".\r\n", 3);
}

/* Console: "mogstats" prints the same as "!stats"; "recent" the last queries. */
static enum admin_result con_mogstats(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    stats_lines(ctx->out);
    return ADMIN_OK;
}

static enum admin_result con_recent(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    mog_bang_command("!recent", 7, ctx->out);
    return ADMIN_OK;
}

const struct admin_cmd mog_tracker_admin_cmds[] = {
    { "mogstats", "mogstats", "tracker counters as !stats prints them", con_mogstats },
    { "recent", "recent", "the last 50 queries with their run time", con_recent },
    { NULL, NULL, NULL, NULL },
};
