/* plugins/vpaths.c: Perlbal's Vpaths plugin — a selector that picks the
 * service by the request URI instead of the Host header.
 *
 *   LOAD vpaths
 *   CREATE SERVICE sel
 *     SET role = selector
 *     SET plugins = vpaths
 *     VPATH sel ^/static/ = web          (Perl regex against the request URI)
 *     VPATH ^/api/\d+ = app              (the service in context)
 *     SET default_service = app          (what no VPATH matched; else 404)
 *
 * As in Perlbal, the console lower-cases a command up to its '=', so the
 * regex is lower-case too (`^/Img/` matches only "/img/..."; `\S` reads as
 * `\s`): configs behave as they did under Perlbal.
 * VPATHs are tried in the order added; the first match wins. A VPATH
 * naming a service that does not exist answers 404 "Not Found (<name> not
 * a defined service)", as Perlbal. */
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/http.h"
#include "perlbal/perlbal.h"
#include "perlbal/plugin.h"
#include "perlbal/proto_manage.h"
#include "perlbal/regex.h"

static struct pb_service *vp_select(struct pb_service *sel, struct pb_client *cl, struct http_msg *req, int *status,
                                    char *msg, size_t msglen)
{
    (void)cl;
    struct plug_state *st = pb_plugin_state(sel);
    if (!st)
        return NULL;
    char target[64] = "";
    pthread_mutex_lock(&pb_plugin_lock);
    for (int i = 0; i < st->nvpaths && !target[0]; i++)
        if (pb_regex_match(st->vpaths[i].re, req->target, req->target_len))
            snprintf(target, sizeof target, "%s", st->vpaths[i].target);
    pthread_mutex_unlock(&pb_plugin_lock);
    if (!target[0])
        return NULL; /* default_service, else 404 */
    pthread_mutex_lock(&pb_lock);
    struct pb_service *t = pb_service_find(target);
    pthread_mutex_unlock(&pb_lock);
    if (!t) {
        *status = 404;
        snprintf(msg, msglen, "Not Found (%s not a defined service)", target);
    }
    return t;
}

static int vp_attach(struct pb_service *svc, char *err, size_t errlen)
{
    if (svc->role != PB_ROLE_SELECTOR) {
        snprintf(err, errlen, "You can't load the vpath plugin on a service not of role selector.");
        return -1;
    }
    return 0;
}

/* VPATH [<service>] <path regex> = <dest_service> */
static int vp_command(const char *ctx_service, int argc, const char *const *argv, void (*out)(void *, const char *),
                      void *arg, char *err, size_t errlen)
{
    (void)out;
    (void)arg;
    static const char usage[] = "usage: VPATH [<service>] <path regex> = <dest_service>";
    char line[1024] = "";
    size_t o = 0;
    for (int i = 1; i < argc && o < sizeof line; i++)
        o += (size_t)snprintf(line + o, sizeof line - o, "%s%s", i > 1 ? " " : "", argv[i]);
    if (o >= sizeof line) {
        snprintf(err, errlen, "%s", usage);
        return -1;
    }
    char *eq = strrchr(line, '=');
    if (!eq) {
        snprintf(err, errlen, "%s", usage);
        return -1;
    }
    *eq = 0;
    char *dest = eq + 1;
    while (*dest == ' ')
        dest++;
    char *left = line;
    size_t ll = strlen(left);
    while (ll && left[ll - 1] == ' ')
        left[--ll] = 0;
    char *sp = strchr(left, ' ');
    const char *svcname = ctx_service, *regex = left;
    if (sp) {
        *sp = 0;
        svcname = left;
        regex = sp + 1;
        if (!pb_is_word(svcname) || strchr(regex, ' ')) {
            snprintf(err, errlen, "%s", usage);
            return -1;
        }
    }
    if (!*regex || !pb_is_word(dest)) {
        snprintf(err, errlen, "%s", usage);
        return -1;
    }
    if (!svcname) {
        snprintf(err, errlen, "omitted service name not implied from context");
        return -1;
    }
    char lname[PB_NAME_MAX];
    snprintf(lname, sizeof lname, "%s", svcname);
    for (char *q = lname; *q; q++)
        *q = (char)tolower((unsigned char)*q);
    pthread_mutex_lock(&pb_lock);
    struct pb_service *ss = pb_service_find(lname);
    pthread_mutex_unlock(&pb_lock);
    if (!ss || ss->role != PB_ROLE_SELECTOR) {
        snprintf(err, errlen, "Service '%s' is not a selector service", lname);
        return -1;
    }
    char e[200];
    struct pb_regex *re = pb_regex_compile(regex, e, sizeof e);
    if (!re) {
        snprintf(err, errlen, "invalid regular expression: '%s'", regex);
        return -1;
    }
    struct plug_state *st = pb_plugin_state(ss);
    pthread_mutex_lock(&pb_plugin_lock);
    if (!st || st->nvpaths >= MAX_VPATHS) {
        pthread_mutex_unlock(&pb_plugin_lock);
        pb_regex_free(re);
        snprintf(err, errlen, "too many VPATHs (at most %d per selector)", MAX_VPATHS);
        return -1;
    }
    st->vpaths[st->nvpaths].re = re;
    snprintf(st->vpaths[st->nvpaths].target, sizeof st->vpaths[0].target, "%s", dest);
    for (char *q = st->vpaths[st->nvpaths].target; *q; q++)
        *q = (char)tolower((unsigned char)*q);
    st->nvpaths++;
    pthread_mutex_unlock(&pb_plugin_lock);
    return 0;
}

static const char *const vp_cmds[] = { "vpath", NULL };
const struct pb_plugin pb_plugin_vpaths = {
    .name = "vpaths", .attach = vp_attach, .select = vp_select, .commands = vp_cmds, .command = vp_command
};
