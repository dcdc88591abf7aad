/* hooks: the chain runner. A chain is a small array of (name, fn, arg); a
 * call walks it one plugin at a time, so a plugin can stop mid-chain and
 * resume it later from a callback (async). */
#include "djabberd/hooks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DJ_HOOK_MAX_PLUGINS 16
#define DJ_MAX_FEATURES 32

struct dj_hook_entry {
    const char *name;
    dj_hook_fn fn;
    void *arg;
};

static struct dj_hook_entry chains[DJ_HOOK_COUNT][DJ_HOOK_MAX_PLUGINS];
static int chain_len[DJ_HOOK_COUNT];
static const char *features[DJ_MAX_FEATURES];
static int nfeatures;

static const char *hook_names[DJ_HOOK_COUNT] = {
    "GetCreds", "CheckPlain", "RegisterJID", "RosterGet", "RosterSetItem", "OfflineStore", "OfflineFetch",
    "VCardGet", "VCardSet",   "deliver",     "c2s-iq",    "AlterPresence", "DiscoInfo",    "ClusterDeliverMessage",
};

const char *dj_hook_name(enum dj_hook h) { return h < DJ_HOOK_COUNT ? hook_names[h] : "?"; }

void dj_hook_register(enum dj_hook h, const char *name, dj_hook_fn fn, void *arg)
{
    if (h >= DJ_HOOK_COUNT || chain_len[h] >= DJ_HOOK_MAX_PLUGINS)
        abort(); /* a start-up wiring bug */
    chains[h][chain_len[h]++] = (struct dj_hook_entry){ name, fn, arg };
}

static void step(struct dj_hook_call *call)
{
    if (call->next >= chain_len[call->hook]) {
        call->status = DJ_DECLINED;
        call->done(call);
        return;
    }
    struct dj_hook_entry *e = &chains[call->hook][call->next++];
    e->fn(call, e->arg);
}

void dj_hook_run(enum dj_hook h, struct dj_hook_call *call, dj_hook_done_fn done)
{
    call->hook = h;
    call->next = 0;
    call->status = DJ_DECLINED;
    call->done = done;
    step(call);
}

void dj_hook_decline(struct dj_hook_call *call) { step(call); }

void dj_hook_finish(struct dj_hook_call *call, enum dj_hook_status status)
{
    call->status = status;
    call->done(call);
}

const char *dj_hook_chain(enum dj_hook h, char *buf, size_t cap)
{
    size_t o = 0;
    buf[0] = 0;
    for (int i = 0; i < chain_len[h] && o < cap; i++) {
        int n = snprintf(buf + o, cap - o, "%s%s", i ? " " : "", chains[h][i].name);
        if (n < 0)
            break;
        o += (size_t)n;
    }
    return buf;
}

void dj_hook_add_feature(const char *var)
{
    if (nfeatures < DJ_MAX_FEATURES)
        features[nfeatures++] = var;
}

int dj_hook_features(const char ***out)
{
    *out = features;
    return nfeatures;
}

void dj_hooks_clear(void)
{
    memset(chain_len, 0, sizeof chain_len);
    nfeatures = 0;
}
