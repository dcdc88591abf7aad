/* vcard: XEP-0054 vcard-temp. get on one's own account or another local
 * account's bare JID; set on one's own only. Storage is the VCardGet /
 * VCardSet chains (the db plugin by default); a set is answered after it is
 * durable. */
#include "djabberd/djabberd.h"
#include "djabberd/hooks.h"
#include "djabberd/plugins/plugins.h"

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#define NS_VCARD "vcard-temp"
#define DJ_VCARD_MAX (64 * 1024)

struct vcard_call {
    struct dj_hook_blob blob;
    struct dj_hook_iq *iq;
    bool set;
};

static void vcard_done(struct dj_hook_call *call)
{
    struct vcard_call *v = (struct vcard_call *)call;
    struct dj_hook_iq *h = v->iq;
    if (dj_sess_alive(h->sess)) {
        if (v->set) {
            if (call->status == DJ_OK)
                dj_iq_result(h->sess, h->st, NULL);
            else
                dj_cmd_error(h->sess, h->st, "wait", "internal-server-error");
        } else if (call->status == DJ_OK && v->blob.xml) {
            dj_iq_result(h->sess, h->st, v->blob.xml);
        } else if (call->status == DJ_NOTFOUND || call->status == DJ_DECLINED) {
            dj_iq_result(h->sess, h->st, "<vCard xmlns='" NS_VCARD "'/>");
        } else
            dj_cmd_error(h->sess, h->st, "wait", "internal-server-error");
    }
    free(v->blob.xml);
    free(v->blob.bare);
    free(v);
    dj_hook_finish(&h->call, DJ_OK);
}

static void vcard_iq(struct dj_hook_call *call, void *arg)
{
    (void)arg;
    struct dj_hook_iq *h = (struct dj_hook_iq *)call;
    const char *ns;
    struct dj_node *q = dj_iq_payload(h->st, &ns);
    const char *type = dj_node_attr(h->st->root, "type");
    if (!q || !ns || strcmp(ns, NS_VCARD)) {
        dj_hook_decline(call);
        return;
    }
    char mine[2 * DJ_JID_MAX + 2], target[2 * DJ_JID_MAX + 2];
    dj_sess_bare(h->sess, mine, sizeof mine);
    const char *to = dj_node_attr(h->st->root, "to");
    struct dj_jid j;
    if (to && dj_jid_parse(to, &j) == 0 && j.node[0])
        dj_jid_bare(&j, target, sizeof target);
    else
        strcpy(target, mine);
    bool set = type && !strcmp(type, "set");
    if (set && strcmp(target, mine)) {
        dj_cmd_error(h->sess, h->st, "auth", "forbidden");
        dj_hook_finish(call, DJ_OK);
        return;
    }
    struct vcard_call *v = calloc(1, sizeof *v);
    if (!v) {
        dj_hook_finish(call, DJ_ERROR);
        return;
    }
    v->iq = h;
    v->set = set;
    v->blob.bare = strdup(target);
    if (set) {
        struct evbuffer *b = evbuffer_new();
        dj_xml_write(b, q);
        v->blob.len = evbuffer_get_length(b);
        if (v->blob.len > DJ_VCARD_MAX) {
            evbuffer_free(b);
            free(v->blob.bare);
            free(v);
            dj_cmd_error(h->sess, h->st, "modify", "not-acceptable");
            dj_hook_finish(call, DJ_OK);
            return;
        }
        v->blob.xml = malloc(v->blob.len + 1);
        evbuffer_remove(b, v->blob.xml, v->blob.len);
        v->blob.xml[v->blob.len] = 0;
        evbuffer_free(b);
        dj_hook_run(DJ_HOOK_VCARD_SET, &v->blob.call, vcard_done);
    } else
        dj_hook_run(DJ_HOOK_VCARD_GET, &v->blob.call, vcard_done);
}

void dj_plugin_vcard_register(void)
{
    dj_hook_register(DJ_HOOK_C2S_IQ, "vcard", vcard_iq, NULL);
    dj_hook_add_feature(NS_VCARD);
}
