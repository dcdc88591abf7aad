/* hooks: djabberd's hook chains. Every decision the server makes (auth,
 * registration, roster load and store, offline storage, vCard, delivery,
 * unknown IQs, disco features) runs a chain of plugin functions in
 * registration order. Each plugin must, now or later (e.g. from a db
 * callback), call exactly one of:
 *   dj_hook_decline(call)        -> the next plugin runs (or the chain ends DJ_DECLINED)
 *   dj_hook_finish(call, status) -> the chain stops; the caller's done() runs
 * The caller owns the call (usually a struct embedding struct dj_hook_call
 * first, with the hook's inputs and outputs) and frees it in done(). */
#ifndef DJ_HOOKS_H
#define DJ_HOOKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "djabberd/proto_sasl.h"

enum dj_hook {
    DJ_HOOK_GET_CREDS = 0,   /* struct dj_hook_creds: SCRAM keys of user@vhost */
    DJ_HOOK_CHECK_PLAIN,     /* struct dj_hook_creds (+password): accept or reject */
    DJ_HOOK_REGISTER,        /* struct dj_hook_register: new account (XEP-0077) */
    DJ_HOOK_ROSTER_LOAD,     /* struct dj_hook_roster: fill items of bare */
    DJ_HOOK_ROSTER_STORE,    /* struct dj_hook_roster_item: store/remove one item + version */
    DJ_HOOK_OFFLINE_STORE,   /* struct dj_hook_blob: keep a message for bare */
    DJ_HOOK_OFFLINE_FETCH,   /* struct dj_hook_list: take the stored messages of bare */
    DJ_HOOK_VCARD_GET,       /* struct dj_hook_blob: out xml */
    DJ_HOOK_VCARD_SET,       /* struct dj_hook_blob: in xml */
    DJ_HOOK_DELIVER,         /* struct dj_hook_deliver: a stanza no local resource took */
    DJ_HOOK_C2S_IQ,          /* struct dj_hook_iq: an IQ the core does not answer */
    DJ_HOOK_ALTER_PRESENCE,  /* struct dj_hook_iq: a client's broadcast presence, before it is kept and
                                sent; change st, decline to go on, finish(DJ_REJECT) to drop it */
    DJ_HOOK_DISCO_INFO,      /* struct dj_hook_disco: add <identity/>/<feature/> to a disco#info answer */
    DJ_HOOK_CLUSTER_DELIVER, /* struct dj_hook_cluster: hand a stanza to another node (default: the links) */
    DJ_HOOK_COUNT
};

enum dj_hook_status {
    DJ_OK = 0,
    DJ_DECLINED, /* no plugin answered */
    DJ_NOTFOUND,
    DJ_CONFLICT,
    DJ_REJECT,
    DJ_ERROR,
};

struct dj_hook_call;
typedef void (*dj_hook_fn)(struct dj_hook_call *call, void *plugin_arg);
typedef void (*dj_hook_done_fn)(struct dj_hook_call *call);

struct dj_hook_call {
    enum dj_hook hook;
    int next; /* index of the next plugin */
    enum dj_hook_status status;
    dj_hook_done_fn done;
};

struct dj_hook_creds {
    struct dj_hook_call call;
    int vhost;
    const char *user;     /* node, normalised */
    const char *password; /* CHECK_PLAIN only */
    size_t password_len;
    bool exists_only;      /* GET_CREDS: only say whether the account exists */
    struct dj_creds creds; /* GET_CREDS out */
    void *ctx;
};

struct dj_hook_register {
    struct dj_hook_call call;
    int vhost;
    char user[256];
    char password[256];
    void *ctx;
};

struct dj_roster_row {
    char *jid, *name, *groups;
    int sub;
};

struct dj_hook_roster {
    struct dj_hook_call call;
    char *bare;
    struct dj_roster_row *rows; /* out, malloc'd with malloc'd strings */
    int nrows;
    int64_t ver;
    void *ctx;
};

struct dj_hook_roster_item {
    struct dj_hook_call call;
    char *bare;
    struct dj_roster_row row; /* row.jid always set */
    bool removed;
    int64_t ver;
    void (*user_done)(void *arg, bool ok);
    void *user_arg;
};

struct dj_hook_blob {
    struct dj_hook_call call;
    char *bare;
    char *xml; /* in (store/set) or out (get), malloc'd */
    size_t len;
    int64_t stamp;
    void *ctx;
};

struct dj_hook_list {
    struct dj_hook_call call;
    char *bare;
    char **xml; /* out */
    int64_t *stamps;
    int n;
    void *ctx;
};

struct dj_stanza;
struct dj_sess;
struct dj_hook_deliver {
    struct dj_hook_call call;
    struct dj_stanza *st; /* owned by the call */
    char *to;
    bool redelivery; /* taken from offline storage, its session gone: already delay-stamped */
};

struct dj_hook_iq {
    struct dj_hook_call call;
    struct dj_sess *sess; /* held */
    struct dj_stanza *st; /* owned by the call */
};

struct evbuffer;
struct dj_hook_disco {
    struct dj_hook_call call;
    struct dj_sess *sess; /* held */
    struct dj_stanza *st; /* the request, owned by the call */
    bool account;         /* asked of an account (bare JID), not the server */
    struct evbuffer *out; /* plugins append features here */
};

struct dj_hook_cluster {
    struct dj_hook_call call;
    const char *node; /* owned by the call (valid until it finishes) */
    const char *to;
    const char *xml;
    size_t len;
};

/* Append a plugin to a chain. name shows in the console's `hooks`. */
void dj_hook_register(enum dj_hook h, const char *name, dj_hook_fn fn, void *arg);
/* Start the chain (status starts at DJ_DECLINED). */
void dj_hook_run(enum dj_hook h, struct dj_hook_call *call, dj_hook_done_fn done);
void dj_hook_decline(struct dj_hook_call *call);
void dj_hook_finish(struct dj_hook_call *call, enum dj_hook_status status);
const char *dj_hook_name(enum dj_hook h);
/* "name1 name2 ..." of the chain into buf. */
const char *dj_hook_chain(enum dj_hook h, char *buf, size_t cap);
/* Disco features plugins add (static strings). */
void dj_hook_add_feature(const char *var);
int dj_hook_features(const char ***out);
void dj_hooks_clear(void);

#endif
