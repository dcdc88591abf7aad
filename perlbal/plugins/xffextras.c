/* plugins/xffextras.c: Perlbal's XFFExtras plugin — the tunables
 * send_backend_port and send_backend_proto add X-Forwarded-Port (the port
 * the client connected to) and X-Forwarded-Proto (http or https) to the
 * requests a reverse_proxy sends its backends; as in Perlbal, not when the
 * client is a trusted upstream and the service is a blind proxy (the
 * upstream's own headers pass then). */
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <event2/buffer.h>

#include "common/conn.h"
#include "perlbal/perlbal.h"
#include "perlbal/plugin.h"

static const char *const xff_tunables[] = { "send_backend_port", "send_backend_proto", NULL };

static int xff_set(struct pb_service *svc, const char *key, const char *val, char *err, size_t errlen)
{
    bool on = !strcasecmp(val, "1") || !strcasecmp(val, "on") || !strcasecmp(val, "yes") || !strcasecmp(val, "true");
    if (!on && strcasecmp(val, "0") && strcasecmp(val, "off") && strcasecmp(val, "no") && strcasecmp(val, "false")) {
        snprintf(err, errlen, "Expected boolean value for '%s'", key);
        return -1;
    }
    if (svc->role != PB_ROLE_REVERSE_PROXY) {
        snprintf(err, errlen, "Parameter '%s' is only for reverse_proxy services", key);
        return -1;
    }
    struct plug_state *st = pb_plugin_state(svc);
    if (!st)
        return -1;
    if (!strcasecmp(key, "send_backend_port"))
        st->xff_send_port = on;
    else if (!strcasecmp(key, "send_backend_proto"))
        st->xff_send_proto = on;
    else {
        snprintf(err, errlen, "Unknown XFFExtras parameter '%s'", key);
        return -1;
    }
    return 0;
}

static void xff_assigned(struct pb_service *svc, struct pb_client *cl, struct evbuffer *hdrs)
{
    struct plug_state *st = pb_plugin_state(svc);
    if (!st || (!st->xff_send_port && !st->xff_send_proto))
        return;
    if (pb_service_trusted(svc, &cl->c->peer) && svc->blind_proxy)
        return;
    if (st->xff_send_port) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int port = 0;
        if (cl->c->fd >= 0 && getsockname(cl->c->fd, (struct sockaddr *)&ss, &sl) == 0) {
            if (ss.ss_family == AF_INET)
                port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
            else if (ss.ss_family == AF_INET6)
                port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        }
        evbuffer_add_printf(hdrs, "X-Forwarded-Port: %d\r\n", port);
    }
    if (st->xff_send_proto)
        evbuffer_add_printf(hdrs, "X-Forwarded-Proto: %s\r\n", cl->listen_svc->enable_ssl ? "https" : "http");
}

const struct pb_plugin pb_plugin_xffextras = {
    .name = "xffextras", .backend_assigned = xff_assigned, .set_param = xff_set, .tunables = xff_tunables
};
