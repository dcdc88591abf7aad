/* vcard_update: XEP-0153 (vCard-based avatars) on the AlterPresence chain.
 * Before a client's available presence is broadcast, the account's stored
 * vCard is fetched through the VCardGet chain (a database query: the chain
 * answers later) and, when it has a PHOTO, the presence gets
 * <x xmlns='vcard-temp:x:update'><photo>SHA-1 of the image</photo></x>, as
 * LiveJournal's djabberd did for userpics. A presence that already carries
 * an update element is left alone. */
#include "djabberd/djabberd.h"
#include "djabberd/hooks.h"
#include "djabberd/plugins/plugins.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#define NS_UPDATE "vcard-temp:x:update"

struct update_call {
    struct dj_hook_blob blob;
    struct dj_hook_iq *presence;
};

/* The base64 text between <BINVAL> and </BINVAL> of a stored vCard
 * (our own serialisation, so the element names are as the client wrote them). */
static int photo_sha1(const char *xml, char out[41])
{
    const char *a = strstr(xml, "<BINVAL>");
    const char *b = a ? strstr(a, "</BINVAL>") : NULL;
    if (!a || !b)
        return -1;
    a += 8;
    size_t len = (size_t)(b - a);
    unsigned char *raw = malloc(len + 1);
    if (!raw)
        return -1;
    int rl = dj_b64_decode(a, len, raw, len + 1);
    if (rl <= 0) {
        free(raw);
        return -1;
    }
    unsigned char md[20];
    unsigned int ml;
    EVP_Digest(raw, (size_t)rl, md, &ml, EVP_sha1(), NULL);
    free(raw);
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < 20; i++) {
        out[2 * i] = hx[md[i] >> 4];
        out[2 * i + 1] = hx[md[i] & 15];
    }
    out[40] = 0;
    return 0;
}

static void update_got_vcard(struct dj_hook_call *call)
{
    struct update_call *u = (struct update_call *)call;
    struct dj_hook_iq *h = u->presence;
    char sha[41];
    if (call->status == DJ_OK && u->blob.xml && photo_sha1(u->blob.xml, sha) == 0) {
        struct dj_stanza *st = h->st;
        struct dj_node *x = dj_node_new(st, st->root, "x");
        dj_node_set_attr(st, x, "xmlns", NS_UPDATE);
        struct dj_node *p = dj_node_new(st, x, "photo");
        dj_node_text(st, p, sha, 40);
    }
    free(u->blob.xml);
    free(u->blob.bare);
    free(u);
    dj_hook_decline(&h->call); /* the rest of the chain, then the broadcast */
}

static void update_presence(struct dj_hook_call *call, void *arg)
{
    (void)arg;
    struct dj_hook_iq *h = (struct dj_hook_iq *)call;
    if (dj_node_attr(h->st->root, "type") || dj_node_child(h->st->root, "x", NS_UPDATE) || !h->sess->node) {
        dj_hook_decline(call);
        return;
    }
    struct update_call *u = calloc(1, sizeof *u);
    if (!u) {
        dj_hook_decline(call);
        return;
    }
    char bare[2 * DJ_JID_MAX + 2];
    u->presence = h;
    u->blob.bare = strdup(dj_sess_bare(h->sess, bare, sizeof bare));
    dj_hook_run(DJ_HOOK_VCARD_GET, &u->blob.call, update_got_vcard);
}

void dj_plugin_vcard_update_register(void)
{
    dj_hook_register(DJ_HOOK_ALTER_PRESENCE, "vcard_update", update_presence, NULL);
}
