/* admin: the management console connections of a `role = management`
 * service — Perlbal's telnet console speaking the management language
 * (cmd_manage.c runs each line).
 *
 * Bounds: a line over 4 KiB closes the connection; output waiting for a
 * client that does not read is capped (reading pauses beyond it), so a
 * console client cannot grow our memory. `quit` / `exit` must be the whole
 * command. `$VAR` is not expanded here (only in config files, as Perlbal
 * does): a console user must not read the process environment. The console
 * has no authentication, by design as in Perlbal: service.c warns loudly
 * when one listens beyond loopback. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "common/conn.h"
#include "common/line.h"
#include "common/log.h"
#include "perlbal/accesslog.h"
#include "perlbal/perlbal.h"

#define MGMT_MAX_LINE 4096
#define MGMT_MAX_OUTPUT (256 * 1024)

struct pb_mgmt {
    struct pb_manage_ctx ctx;
};

/* The whole command is `word` (case-insensitive), surrounding blanks aside. */
static bool is_command(const char *line, size_t len, const char *word)
{
    while (len && (*line == ' ' || *line == '\t'))
        line++, len--;
    while (len && (line[len - 1] == ' ' || line[len - 1] == '\t'))
        len--;
    return len == strlen(word) && !strncasecmp(line, word, len);
}

static int mgmt_on_read(struct core_conn *c)
{
    struct pb_mgmt *m = c->data;
    for (;;) {
        size_t ll, consumed;
        enum line_status st;
        char *line = line_peek(conn_in(c), MGMT_MAX_LINE, &ll, &consumed, &st);
        if (st == LINE_NEED_MORE)
            return 0;
        if (st == LINE_TOO_LONG) {
            evbuffer_add_printf(conn_out(c), "ERROR: line too long\r\n");
            conn_close_after_write(c);
            return 0;
        }
        line[ll] = 0;
        if (is_command(line, ll, "quit") || is_command(line, ll, "exit")) {
            evbuffer_drain(conn_in(c), consumed);
            conn_close_after_write(c);
            return 0;
        }
        int rc = pb_manage_run(&m->ctx, line, ll, conn_out(c), true);
        if (pb_debug_requests)
            log_debug("console %llu: %s -> %s", (unsigned long long)c->id, line, rc < 0 ? "ERROR" : "OK");
        evbuffer_drain(conn_in(c), consumed);
        if (conn_is_closing(c))
            return 0;
        /* back-pressure: the core pauses reading while output is over the
         * limit; stop here so the rest waits in the (bounded) input */
        if (evbuffer_get_length(conn_out(c)) > MGMT_MAX_OUTPUT)
            return 0;
    }
}

static void mgmt_on_close(struct core_conn *c, enum conn_close_reason why)
{
    (void)why;
    free(c->data);
}

static const struct conn_ops mgmt_ops = {
    .name = "pb_manage",
    .on_read = mgmt_on_read,
    .on_close = mgmt_on_close,
};

void pb_manage_accept(struct pb_service *svc, struct core_loop *loop, int fd, const struct sockaddr *sa,
                      socklen_t salen)
{
    (void)svc;
    struct pb_mgmt *m = calloc(1, sizeof *m);
    if (!m) {
        close(fd);
        return;
    }
    m->ctx.verbose = true;
    struct core_conn *c = conn_new(loop, fd, sa, salen, &mgmt_ops, m);
    if (!c) {
        free(m);
        return;
    }
    conn_set_output_limit(c, MGMT_MAX_OUTPUT);
}
