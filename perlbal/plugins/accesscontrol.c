/* plugins/accesscontrol.c: Perlbal's accesscontrol plugin — ACCESS policy|allow|deny|queue_low|reset ip|netmask: 403 or
 * low priority by client address. */
#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <regex.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/conn.h"
#include "common/line.h"
#include "common/log.h"
#include "common/loop.h"
#include "perlbal/perlbal.h"
#include "perlbal/plugin.h"

static enum pb_hook_result access_start(struct pb_service *svc, struct pb_client *cl, struct http_msg *req)
{
    struct plug_state *st = pb_plugin_state(svc);
    if (!st)
        return PB_HOOK_CONTINUE;
    /* use_observed_ip (as Perlbal): behind a trusted upstream proxy, the
     * rules apply to the first address of X-Forwarded-For */
    struct sockaddr_storage who = cl->c->peer;
    size_t xl;
    const char *xff = st->use_observed_ip ? http_header_value(req, "x-forwarded-for", &xl) : NULL;
    if (xff && pb_service_trusted(svc, &cl->c->peer)) {
        char first[INET6_ADDRSTRLEN];
        size_t n = 0; /* the value is not NUL-ended: it points into the input */
        while (n < xl && xff[n] != ',' && xff[n] != ' ')
            n++;
        if (n < sizeof first) {
            memcpy(first, xff, n);
            first[n] = 0;
            struct sockaddr_in *s4 = (struct sockaddr_in *)&who;
            struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&who;
            struct in_addr a4;
            struct in6_addr a6;
            if (inet_pton(AF_INET, first, &a4) == 1) {
                memset(&who, 0, sizeof who);
                s4->sin_family = AF_INET;
                s4->sin_addr = a4;
            } else if (inet_pton(AF_INET6, first, &a6) == 1) {
                memset(&who, 0, sizeof who);
                s6->sin6_family = AF_INET6;
                s6->sin6_addr = a6;
            }
        }
    }
    int action = -1;
    pthread_mutex_lock(&pb_plugin_lock);
    for (int i = 0; i < st->nrules; i++)
        if (pb_net_match(&st->rules[i].net, &who)) {
            action = (int)st->rules[i].action;
            break;
        }
    bool deny_default = st->deny_default;
    pthread_mutex_unlock(&pb_plugin_lock);
    if (action == ACC_QUEUE_LOW) {
        cl->prio = 2;
        return PB_HOOK_CONTINUE;
    }
    if (action == ACC_ALLOW || (action < 0 && !deny_default))
        return PB_HOOK_CONTINUE;
    pb_client_error(cl, 403, "Access denied.");
    return PB_HOOK_HANDLED;
}

int pb_plugin_parse_net(const char *what, const char *val, uint32_t *net, uint32_t *mask)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%s", val);
    int bits = 32;
    char *slash = strchr(buf, '/');
    if (!strcmp(what, "netmask")) {
        if (!slash)
            return -1;
        *slash = 0;
        char *end;
        long b = strtol(slash + 1, &end, 10);
        if (*end || b < 0 || b > 32)
            return -1;
        bits = (int)b;
    } else if (slash) {
        return -1;
    }
    struct in_addr a;
    if (inet_pton(AF_INET, buf, &a) != 1)
        return -1;
    *mask = bits ? htonl(~0u << (32 - bits)) : 0;
    *net = a.s_addr & *mask;
    return 0;
}

static int access_command(const char *svcname, int argc, const char *const *argv, void (*out)(void *, const char *),
                          void *arg, char *err, size_t errlen)
{
    (void)out;
    (void)arg;
    if (argc < 2 || argc > 4) {
        snprintf(err, errlen, "usage: ACCESS <cmd> <arg1> [<arg2>]");
        return -1;
    }
    struct pb_service *svc = svcname ? pb_service_find(svcname) : NULL;
    if (!svcname) {
        snprintf(err, errlen, "No service name in context from CREATE SERVICE <name> or USE <service_name>");
        return -1;
    }
    if (!svc) {
        snprintf(err, errlen, "Non-existent service '%s'", svcname);
        return -1;
    }
    struct plug_state *st = pb_plugin_state(svc);
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    const char *cmd = argv[1];
    int rc = 0;
    pthread_mutex_lock(&pb_plugin_lock);
    if (!strcmp(cmd, "reset")) {
        st->nrules = 0;
        st->deny_default = false;
    } else if (!strcmp(cmd, "policy")) {
        if (argc < 3 || (strcmp(argv[2], "allow") && strcmp(argv[2], "deny"))) {
            snprintf(err, errlen, "policy must be 'allow' or 'deny'");
            rc = -1;
        } else {
            st->deny_default = !strcmp(argv[2], "deny");
        }
    } else if (!strcmp(cmd, "allow") || !strcmp(cmd, "deny") || !strcmp(cmd, "queue_low")) {
        struct pb_net net;
        bool is_mask = argc >= 4 && !strcmp(argv[2], "netmask");
        if (argc < 3 || (strcmp(argv[2], "ip") && strcmp(argv[2], "netmask"))) {
            snprintf(err, errlen, "Unknown item to %s: '%s'", cmd, argc >= 3 ? argv[2] : "");
            rc = -1;
        } else if (argc < 4 || (strchr(argv[3], '/') != NULL) != is_mask || pb_net_parse(argv[3], &net) < 0) {
            snprintf(err, errlen, "Error parsing %s", argv[2]);
            rc = -1;
        } else if (st->nrules >= MAX_RULES) {
            snprintf(err, errlen, "too many access rules (max %d)", MAX_RULES);
            rc = -1;
        } else {
            struct access_rule *r = &st->rules[st->nrules++];
            r->action = !strcmp(cmd, "allow") ? ACC_ALLOW : !strcmp(cmd, "deny") ? ACC_DENY : ACC_QUEUE_LOW;
            r->net = net;
        }
    } else {
        snprintf(err, errlen, "usage: ACCESS <cmd> <arg1> [<arg2>]");
        rc = -1;
    }
    pthread_mutex_unlock(&pb_plugin_lock);
    return rc;
}

static const char *const access_cmds[] = { "access", NULL };
/* SET svc.AccessControl.use_observed_ip = bool */
static int access_set(struct pb_service *svc, const char *key, const char *val, char *err, size_t errlen)
{
    if (strcasecmp(key, "use_observed_ip")) {
        snprintf(err, errlen, "Unknown AccessControl parameter '%s'", key);
        return -1;
    }
    bool on = !strcasecmp(val, "1") || !strcasecmp(val, "on") || !strcasecmp(val, "yes") || !strcasecmp(val, "true");
    if (!on && strcasecmp(val, "0") && strcasecmp(val, "off") && strcasecmp(val, "no") && strcasecmp(val, "false")) {
        snprintf(err, errlen, "Expected boolean value for use_observed_ip");
        return -1;
    }
    struct plug_state *st = pb_plugin_state(svc);
    if (!st)
        return -1;
    st->use_observed_ip = on;
    return 0;
}

const struct pb_plugin pb_plugin_accesscontrol = { .name = "accesscontrol",
                                                   .start_request = access_start,
                                                   .commands = access_cmds,
                                                   .command = access_command,
                                                   .set_param = access_set };
