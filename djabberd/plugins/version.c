/* version: XEP-0092 software version of the server. */
#include "djabberd/djabberd.h"
#include "djabberd/hooks.h"
#include "djabberd/plugins/plugins.h"

#include <string.h>

#include <event2/buffer.h>

#define NS_VERSION "jabber:iq:version"

static void version_iq(struct dj_hook_call *call, void *arg)
{
    (void)arg;
    struct dj_hook_iq *h = (struct dj_hook_iq *)call;
    const char *ns;
    struct dj_node *q = dj_iq_payload(h->st, &ns);
    const char *type = dj_node_attr(h->st->root, "type");
    const char *to = dj_node_attr(h->st->root, "to");
    if (!q || !ns || strcmp(ns, NS_VERSION) || !type || strcmp(type, "get") || (to && strchr(to, '@'))) {
        dj_hook_decline(call);
        return;
    }
    dj_iq_result(h->sess, h->st,
                 "<query xmlns='" NS_VERSION "'><name>djabberd</name><version>" DJ_VERSION "</version></query>");
    dj_hook_finish(call, DJ_OK);
}

/* Its disco feature comes through the DiscoInfo chain (the server only). */
static void version_disco(struct dj_hook_call *call, void *arg)
{
    (void)arg;
    struct dj_hook_disco *h = (struct dj_hook_disco *)call;
    if (!h->account)
        evbuffer_add_printf(h->out, "<feature var='" NS_VERSION "'/>");
    dj_hook_decline(call);
}

void dj_plugin_version_register(void)
{
    dj_hook_register(DJ_HOOK_C2S_IQ, "version", version_iq, NULL);
    dj_hook_register(DJ_HOOK_DISCO_INFO, "version", version_disco, NULL);
}
