/* accesslog.h: the access log (one line per answered request) and the
 * per-service, per-status request counters behind perlbal's metrics.
 *
 *   SERVER access_log = /var/log/perlbal/access.log   (or "off", the default)
 *   SERVER access_log_format = combined | common | <template>
 *
 * Templates take Apache's LogFormat directives: %h %l %u %t %r %m %U %q %H
 * %s %>s %b %B %D %T %v (the service) %{Name}i %%. Lines are formatted on
 * the loop and handed to a writer thread (the loop never writes the file);
 * at most 4 MiB wait for it, beyond that lines are dropped and counted
 * (metric perlbal_access_log_dropped_total). SIGHUP reopens the file
 * (logrotate). */
#ifndef PB_ACCESSLOG_H
#define PB_ACCESSLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pb_client;
struct http_msg;

/* SERVER access_log / access_log_format: 1 if key is one of ours (result
 * in the return of *rc: 0, or -1 with err), else 0. */
int pb_accesslog_server_set(const char *key, const char *val, int *rc, char *err, size_t errlen);
/* After the config file (and daemonizing): open the file, start the writer. */
int pb_accesslog_start(char *err, size_t errlen);
void pb_accesslog_reopen(void);
void pb_accesslog_stop(void);
/* The request head is here (dispatch): keep what the line needs from it. */
void pb_accesslog_request_start(struct pb_client *cl, const struct http_msg *req);
/* The request ended: count it for metrics, log it, debug it at -vv. */
void pb_accesslog_request_end(struct pb_client *cl);
/* -vv: a debug line per request and per console command */
extern bool pb_debug_requests;
/* metrics: registers the stats source (once, at start) */
void pb_metrics_init(void);

#endif
