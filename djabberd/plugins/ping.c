/* ping: XEP-0199 — an IQ get with <ping xmlns='urn:xmpp:ping'/> to the
 * server or to one's own account gets an empty result. */
#include "djabberd/djabberd.h"
#include "djabberd/hooks.h"
#include "djabberd/plugins/plugins.h"

#include <string.h>

#define NS_PING "urn:xmpp:ping"

static void ping_iq(struct dj_hook_call *call, void *arg)
{
    (void)arg;
    struct dj_hook_iq *h = (struct dj_hook_iq *)call;
    const char *ns;
    struct dj_node *q = dj_iq_payload(h->st, &ns);
    const char *type = dj_node_attr(h->st->root, "type");
    if (!q || !ns || strcmp(ns, NS_PING) || strcmp(dj_node_local(q), "ping") || !type || strcmp(type, "get")) {
        dj_hook_decline(call);
        return;
    }
    dj_iq_result(h->sess, h->st, NULL);
    dj_hook_finish(call, DJ_OK);
}

void dj_plugin_ping_register(void)
{
    dj_hook_register(DJ_HOOK_C2S_IQ, "ping", ping_iq, NULL);
    dj_hook_add_feature(NS_PING);
}
