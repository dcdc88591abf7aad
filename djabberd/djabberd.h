/* djabberd: the component's shared types.
 *
 * Threading: one loop owns every session, user and roster (like djabberd's
 * single Danga::Socket loop); storage runs on the db module's worker and
 * answers back on that loop. So nothing here needs a lock.
 *
 * Every decision goes through a hook chain (hooks.c): a plugin answers now or
 * later (from a db callback), or declines to the next plugin. */
#ifndef DJ_DJABBERD_H
#define DJ_DJABBERD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "djabberd/proto_sasl.h"
#include "djabberd/proto_xml.h"
#include "common/admin.h"

#define DJ_VERSION "0.1.0"
#define DJ_MAX_VHOSTS 16
#define DJ_JID_MAX 1023

struct core_conn;
struct evbuffer;
struct db;
struct dj_user;

/* ---- settings ---- */
struct dj_config {
    int c2s_port;
    int s2s_port;
    char *listen;     /* c2s address, "" = all */
    char *vhosts_raw; /* comma-joined (the repeatable `vhost`) */
    char *tls_cert, *tls_key;
    bool require_tls;
    char *users_file;
    bool inband_registration;
    char *storage; /* DBI DSN */
    uint64_t max_stanza;
    uint64_t preauth_bytes; /* bytes a client may send before it is authenticated */
    int auth_timeout;       /* seconds to authenticate */
    int idle_timeout;       /* seconds, 0 = none */
    int max_conns;
    uint64_t max_offline;  /* offline messages kept per user */
    int max_roster;        /* items per roster */
    int max_resources;     /* sessions per account */
    uint64_t max_output;   /* bytes queued to one client before it counts as not reading */
    int sm_resume_timeout; /* seconds a lost XEP-0198 session may be resumed (0 = no resumption) */
    char *s2s_listen;      /* s2s address, "" = as listen */
    char *s2s_secret;      /* dialback secret ("" = random per start) */
    char *s2s_routes;      /* "domain=host:port,..." (the repeatable s2s_route) */
    int s2s_default_port;
    char *cluster_listen; /* this node's cluster address = its node name; "" = no cluster */
    char *cluster_peers;  /* "host:port,..." (the repeatable cluster_peer) */
    char *cluster_secret;
};

/* ---- JIDs ---- */
struct dj_jid {
    char node[DJ_JID_MAX + 1];
    char domain[DJ_JID_MAX + 1];
    char resource[DJ_JID_MAX + 1];
};
/* Parse and normalise (node and domain lower-cased). 0 or -1 (invalid). */
int dj_jid_parse(const char *s, struct dj_jid *j);
/* "node@domain" into buf. */
const char *dj_jid_bare(const struct dj_jid *j, char *buf, size_t cap);
const char *dj_jid_full(const struct dj_jid *j, char *buf, size_t cap);

/* ---- sessions ---- */
enum dj_sess_state {
    DJ_S_STREAM = 0, /* waiting for the stream header */
    DJ_S_AUTH,       /* features with mechanisms sent */
    DJ_S_AUTH_WAIT,  /* a hook is deciding */
    DJ_S_SCRAM,      /* server-first sent, waiting for client-final */
    DJ_S_RESTART,    /* success sent, waiting for the new stream header */
    DJ_S_BIND,       /* authenticated, waiting for resource binding */
    DJ_S_ACTIVE,     /* bound: stanzas flow */
    DJ_S_CLOSED,
    DJ_S_DETACHED, /* XEP-0198: connection lost, resumable for sm_resume_timeout */
};

#define DJ_F_AVAILABLE 0x01  /* sent available presence */
#define DJ_F_INTERESTED 0x02 /* requested the roster */
#define DJ_F_REGISTERING 0x04
#define DJ_F_SM 0x08       /* XEP-0198 stream management enabled */
#define DJ_F_STARTTLS 0x10 /* <proceed/> queued: switch to TLS after this stanza */
#define DJ_F_IN_FEED 0x20  /* sess_on_read is feeding the parser */

struct dj_sess {
    struct core_conn *c;
    struct dj_xml *xml;
    struct dj_scram *scram; /* only while SCRAM runs */
    struct dj_user *user;   /* after binding */
    char *node;             /* after authentication */
    char *resource;         /* after binding */
    char *presence;         /* last available presence, serialised (broadcast to probes) */
    uint32_t refs;
    uint32_t preauth;                 /* bytes read before authentication */
    uint32_t sm_in, sm_out, sm_acked; /* XEP-0198 counters (mod 2^32) */
    struct dj_pres_wait *pres_wait;   /* broadcast presences behind one in the AlterPresence chain */
    struct dj_sm_resume *resume;      /* XEP-0198 resumption state, only when the client asked for it */
    bool pres_busy;
    uint16_t vhost;
    uint8_t state;
    uint8_t flags;
    int8_t prio;
    uint8_t mech;
    struct dj_sess *next_res; /* the user's other sessions */
};

/* ---- an online (or roster-touched) account ---- */
#define DJ_SUB_TO 0x1
#define DJ_SUB_FROM 0x2
#define DJ_SUB_ASK 0x4        /* pending out */
#define DJ_SUB_PENDING_IN 0x8 /* their subscribe waits for our answer */

struct dj_roster_item {
    char *jid;    /* bare contact JID */
    char *name;   /* may be NULL */
    char *groups; /* '\n'-joined, may be NULL */
    uint8_t sub;
    bool hidden; /* only a pending-in request, not in the roster proper */
};

enum dj_roster_state { DJ_ROSTER_NONE = 0, DJ_ROSTER_LOADING, DJ_ROSTER_LOADED, DJ_ROSTER_FAILED };

/* A session of this account on another cluster node. */
struct dj_rsess {
    char *node, *resource;
    char *presence; /* its last available presence, serialised */
    int8_t prio;
    bool avail;
    struct dj_rsess *next;
};

struct dj_roster_wait;
struct dj_user {
    char *bare;
    struct dj_sess *sessions;
    struct dj_rsess *remote; /* sessions on other cluster nodes */
    struct dj_roster_item *items;
    int nitems, capitems;
    int64_t ver;
    uint8_t roster_state;
    uint32_t pending;       /* store ops in flight */
    uint32_t commits;       /* roster commits begun (a reload that overlaps one reads again) */
    bool reload_after_load; /* a reload was asked while the roster was loading */
    struct dj_roster_wait *waiters;
    struct dj_user *hnext;
};

struct dj_vhost {
    char *name;
};

struct dj_counters {
    uint64_t sessions_total, auth_ok, auth_fail, stanzas_in, stanzas_out;
    uint64_t messages_routed, messages_offline, messages_dropped, offline_delivered;
    uint64_t stream_errors, policy_violations, registered, sm_enabled, starttls, slow_consumers, offline_refused,
        sm_resumed, sm_expired;
};

struct dj_state {
    struct dj_config cfg;
    struct dj_vhost vhosts[DJ_MAX_VHOSTS];
    int nvhosts;
    struct db *db;
    void *tls_ctx;               /* SSL_CTX for STARTTLS, NULL without tls_cert/tls_key */
    struct work_pool *hash_pool; /* PBKDF2 threads */
    struct dj_user **users;      /* hash of online/roster-touched accounts */
    size_t nbuckets, nusers;
    uint64_t nsessions, nbound;
    uint64_t per_vhost[DJ_MAX_VHOSTS];
    struct dj_counters n;
};
extern struct dj_state dj;

int dj_vhost_find(const char *name);

/* session.c */
void dj_sess_accept(struct core_conn *c);
void dj_sess_hold(struct dj_sess *s);
void dj_sess_put(struct dj_sess *s);
bool dj_sess_alive(const struct dj_sess *s);
/* Queue raw XML for the client. */
void dj_sess_send(struct dj_sess *s, const char *xml, size_t len);
void dj_sess_send_buf(struct dj_sess *s, struct evbuffer *b);
void dj_sess_send_node(struct dj_sess *s, const struct dj_node *n);
/* Stream error and close. */
void dj_sess_stream_error(struct dj_sess *s, const char *condition, const char *text);
const char *dj_sess_jid(const struct dj_sess *s, char *buf, size_t cap);
const char *dj_sess_bare(const struct dj_sess *s, char *buf, size_t cap);
const struct conn_ops *dj_sess_conn_ops(void);
/* End every detached (resumable) session now (graceful stop). */
void dj_sess_expire_detached(void);
/* End a session from the console: a stream error, or at once if detached. */
void dj_sess_kick(struct dj_sess *s, const char *text);
extern const char *dj_sess_state_names[];

/* cmd_xmpp.c: stanzas of a bound session. */
void dj_cmd_stanza(struct dj_sess *s, struct dj_stanza *st);
/* Error reply to a stanza (its from/to swapped). */
void dj_cmd_error(struct dj_sess *s, struct dj_stanza *st, const char *type, const char *condition);
void dj_cmd_session_gone(struct dj_sess *s);
/* Free presences still waiting for the AlterPresence chain (session freed). */
void dj_cmd_presence_drop(struct dj_sess *s);
/* Deliver a stanza (from already stamped) to a JID: local resources,
 * else the deliver chain (offline storage for messages). */
void dj_route(struct dj_stanza *st, const char *to);
/* Writes in flight: a message in the deliver chain (on its way to offline
 * storage), a roster store. dj_after_writes runs fn(arg) once every write
 * begun before the call has ended, its store committed (now, if none). An
 * offline fetch waits for this, so a message that went to storage just
 * before an initial presence is not left behind; a cluster node waits for
 * it before it tells another node to fetch or reload again. */
struct dj_inflight {
    uint64_t seq;
    struct dj_inflight *prev, *next;
};
void dj_inflight_begin(struct dj_inflight *e);
void dj_inflight_end(struct dj_inflight *e);
void dj_after_writes(void (*fn)(void *arg), void *arg);
/* Fetch the stored messages of s's account and deliver them to s, after
 * the writes already under way (dj_after_writes). */
void dj_offline_fetch_for(struct dj_sess *s);
/* Peer node `node` has seen jid (a session here) appear or become
 * available, and every write it had begun before is committed: fetch
 * offline messages again (if the session is available), send it the
 * presence of its contacts on that node again (they may have become
 * available there before that node knew of this session, and after this
 * node's initial presence looked), and with roster, reload the roster. */
void dj_cluster_offline_sync(const char *node, const char *jid, bool roster);
void dj_disco_features(struct evbuffer *out);

/* roster.c */
struct dj_user *dj_user_get(const char *bare, bool create);
void dj_user_maybe_free(struct dj_user *u);
struct dj_roster_item *dj_roster_find(struct dj_user *u, const char *jid);
/* Run fn(arg, u) once the roster of bare is loaded (now or later); u is NULL on failure. */
void dj_roster_with(const char *bare, void (*fn)(void *arg, struct dj_user *u), void *arg);
/* Store one item (or remove it: item == NULL), bump the version, push it to
 * interested resources; done(arg, ok) after it is durable. */
void dj_roster_commit(struct dj_user *u, const char *jid, bool removed, void (*done)(void *arg, bool ok), void *arg);
void dj_roster_item_xml(struct evbuffer *out, const struct dj_roster_item *it, const char *jid_if_removed);
void dj_roster_iq(struct dj_sess *s, struct dj_stanza *st);
/* Presence subscription stanzas (subscribe, subscribed, ...), outbound from s. */
void dj_roster_subscription_out(struct dj_sess *s, struct dj_stanza *st, const char *type, const char *to_bare);
/* Inbound subscription stanza to a local user (type, from bare). */
void dj_roster_subscription_in(struct dj_stanza *st, const char *type, const char *to_bare, const char *from_bare);
void dj_roster_free_items(struct dj_user *u);
/* Read a loaded roster again (another node changed it): items that
 * differ are replaced and pushed, new pending subscription requests go to
 * available resources. */
void dj_roster_reload(struct dj_user *u);

/* store.c: the default plugins (users_file auth, db-backed storage). */
int dj_store_open(char *err, size_t errlen);
void dj_store_close(void);
int dj_users_file_load(const char *path, char *err, size_t errlen);
/* PBKDF2 off the loop (common/work): check a password against creds
 * (check != NULL) or make fresh creds from it (check == NULL). done runs on
 * the calling loop with ok and, when making, the new creds. Returns 0, or
 * -1 when the hashing queue is full (the caller answers "try later"). */
int dj_creds_async(const struct dj_creds *check, const char *pw, size_t pwlen,
                   void (*done)(void *arg, bool ok, const struct dj_creds *made), void *arg);
size_t dj_users_file_count(void);

/* s2s.c: server-to-server with dialback */
struct sockaddr;
struct core_loop;
struct dj_s2s_counters {
    uint64_t incoming, outgoing, incoming_authed, outgoing_authed;
    uint64_t stanzas_in, stanzas_out, verify_answered, dropped_bytes, tls_in, tls_out;
};
extern struct dj_s2s_counters dj_s2s_n;
void dj_s2s_set_secret(const char *secret);
int dj_s2s_tls_init(char *err, size_t errlen);
void dj_s2s_tls_free(void);
void dj_s2s_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, unsigned salen, void *arg);
/* Queue or send to a remote domain; 0, or -1 (s2s off, queue full, no route). */
int dj_s2s_send_buf(const char *local, const char *remote, struct evbuffer *b);
int dj_s2s_send_node(const char *remote, const struct dj_node *n);
int dj_s2s_send_raw_to(const char *xml, size_t len, const char *to);
void dj_s2s_close_all(void);
size_t dj_s2s_count(bool outgoing);
bool dj_is_remote(const char *jid);
/* A remote contact probes a local account's presence (cmd_xmpp.c). */
void dj_presence_probe(const char *local_bare, const char *remote_bare);

/* cluster.c: several nodes, one domain */
struct dj_cluster_counters {
    uint64_t announced, forwarded, received, auth_failed, dropped;
    uint64_t offline_syncs, offline_syncs_in; /* <osync/> sent, received */
};
extern struct dj_cluster_counters dj_cluster_n;
extern bool dj_cluster_local_only; /* delivering a forwarded stanza: never forward again */
bool dj_cluster_on(void);
int dj_cluster_start(char *err, size_t errlen);
void dj_cluster_stop(void);
void dj_cluster_free(void);
size_t dj_cluster_links(bool outgoing);
void dj_cluster_announce(struct dj_sess *s, bool gone);
int dj_cluster_forward(const char *node, const char *to, const char *xml, size_t len);
int dj_cluster_forward_node(const char *node, const char *to, const struct dj_node *n);
void dj_cluster_forward_available(struct dj_user *u, const char *xml, size_t len);
/* cmd_xmpp.c: deliver a stanza a peer node forwarded (local sessions only). */
void dj_cluster_deliver(struct dj_stanza *st, const char *to);
/* Send to every available session of u, here and on other nodes. */
void dj_send_to_available(struct dj_user *u, const char *xml, size_t len);

/* admin.c */

extern const struct admin_cmd dj_admin_cmds[];

#endif
