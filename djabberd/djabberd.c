/* djabberd: the XMPP server — settings, start-up wiring (listeners, storage,
 * the plugin chains), stats. The stream state machine is in session.c,
 * stanza handling in cmd_xmpp.c, rosters in roster.c, the default storage
 * plugins in store.c, console commands in admin.c. */
#include "djabberd/djabberd.h"
#include "djabberd/hooks.h"
#include "djabberd/plugins/plugins.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/admin.h"
#include "common/config.h"
#include "common/conn.h"
#include "common/daemon.h"
#include "common/db.h"
#include "common/listen.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/stats.h"
#include "common/tls.h"

struct dj_state dj;

/* `vhost` may be given several times; each adds a domain. */
static int set_vhost(const struct cfg_setting *s, const char *value, char *err, size_t errlen)
{
    (void)s;
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", value);
    for (char *v = strtok(buf, ", \t"); v; v = strtok(NULL, ", \t")) {
        if (dj.nvhosts >= DJ_MAX_VHOSTS) {
            snprintf(err, errlen, "at most %d vhosts", DJ_MAX_VHOSTS);
            return -1;
        }
        struct dj_jid j;
        if (dj_jid_parse(v, &j) < 0 || j.node[0] || j.resource[0]) {
            snprintf(err, errlen, "vhost '%s' is not a domain name", v);
            return -1;
        }
        if (dj_vhost_find(j.domain) >= 0)
            continue;
        dj.vhosts[dj.nvhosts++].name = strdup(j.domain);
    }
    return 0;
}

static int set_route(const struct cfg_setting *s, const char *value, char *err, size_t errlen)
{
    (void)s;
    const char *eq = strchr(value, '=');
    const char *colon = eq ? strrchr(eq, ':') : NULL;
    if (!eq || eq == value || !colon || colon == eq + 1 || atoi(colon + 1) <= 0 || atoi(colon + 1) > 65535 ||
        strchr(value, ',')) {
        snprintf(err, errlen, "s2s_route '%s': expected domain=host:port", value);
        return -1;
    }
    size_t old = dj.cfg.s2s_routes ? strlen(dj.cfg.s2s_routes) : 0;
    char *n = realloc(dj.cfg.s2s_routes, old + strlen(value) + 2);
    if (!n)
        return -1;
    if (old)
        n[old++] = ',';
    strcpy(n + old, value);
    dj.cfg.s2s_routes = n;
    return 0;
}

static int set_peer(const struct cfg_setting *s, const char *value, char *err, size_t errlen)
{
    (void)s;
    const char *colon = strrchr(value, ':');
    if (!colon || colon == value || atoi(colon + 1) <= 0 || strchr(value, ',')) {
        snprintf(err, errlen, "cluster_peer '%s': expected host:port", value);
        return -1;
    }
    size_t old = dj.cfg.cluster_peers ? strlen(dj.cfg.cluster_peers) : 0;
    char *n = realloc(dj.cfg.cluster_peers, old + strlen(value) + 2);
    if (!n)
        return -1;
    if (old)
        n[old++] = ',';
    strcpy(n + old, value);
    dj.cfg.cluster_peers = n;
    return 0;
}

static const struct cfg_setting dj_settings_table[] = {
    LOG_VERBOSE_SETTING,
    { "config", 'c', CFG_STRING, &core_opts.config_file, NULL, "read settings from this file (key = value)", false,
      NULL },
    { "c2s_port", 'p', CFG_INT, &dj.cfg.c2s_port, "5222", "client-to-server port", false, NULL },
    { "s2s_port", 0, CFG_INT, &dj.cfg.s2s_port, "0", "server-to-server port (0 = no S2S; 5269 is the usual one)", false,
      NULL },
    { "s2s_listen", 0, CFG_STRING, &dj.cfg.s2s_listen, NULL, "address the s2s port binds (default: as listen)", false,
      NULL },
    { "s2s_secret", 0, CFG_STRING, &dj.cfg.s2s_secret, NULL,
      "dialback secret, the same on every node of a domain (default: random per start)", false, NULL },
    { "s2s_route", 0, CFG_CUSTOM, NULL, NULL,
      "domain=host:port: where to reach a remote domain (repeatable; default: the domain on s2s_default_port)", false,
      set_route },
    { "cluster_listen", 0, CFG_STRING, &dj.cfg.cluster_listen, NULL,
      "host:port of this node's cluster link listener, also its node name ('' = no cluster)", false, NULL },
    { "cluster_peer", 0, CFG_CUSTOM, NULL, NULL, "host:port of another node's cluster_listen (repeatable)", false,
      set_peer },
    { "cluster_secret", 0, CFG_STRING, &dj.cfg.cluster_secret, NULL, "shared secret of the cluster's nodes", false,
      NULL },
    { "s2s_default_port", 0, CFG_INT, &dj.cfg.s2s_default_port, "5269", "port of remote servers without a route", false,
      NULL },
    { "listen", 'l', CFG_STRING, &dj.cfg.listen, NULL, "address the c2s port binds (default: all)", false, NULL },
    { "vhost", 0, CFG_CUSTOM, NULL, NULL, "a domain this server hosts (repeatable; default localhost)", false,
      set_vhost },
    { "tls_cert", 0, CFG_STRING, &dj.cfg.tls_cert, NULL, "PEM certificate (chain) for STARTTLS", false, NULL },
    { "tls_key", 0, CFG_STRING, &dj.cfg.tls_key, NULL, "PEM private key for STARTTLS", false, NULL },
    { "require_tls", 0, CFG_BOOL, &dj.cfg.require_tls, "yes",
      "refuse clients until they use TLS (off allows plaintext c2s with PLAIN, like Prosody's "
      "c2s_require_encryption = false)",
      false, NULL },
    { "users_file", 0, CFG_STRING, &dj.cfg.users_file, NULL, "file of user:password lines (the embedded auth plugin)",
      false, NULL },
    { "inband_registration", 0, CFG_BOOL, &dj.cfg.inband_registration, "no", "allow XEP-0077 account registration",
      false, NULL },
    { "storage", 0, CFG_STRING, &dj.cfg.storage, "DBI:SQLite:dbname=djabberd.sqlite",
      "accounts, rosters, offline messages, vCards: DBI:SQLite:dbname=FILE or "
      "DBI:mysql:database=D;host=H;port=P;user=U;password=W",
      false, NULL },
    { "max_stanza_size", 0, CFG_SIZE, &dj.cfg.max_stanza, "256k",
      "largest stanza; a bigger one ends the stream with policy-violation", false, NULL },
    { "preauth_bytes", 0, CFG_SIZE, &dj.cfg.preauth_bytes, "64k", "bytes a client may send before it authenticates",
      false, NULL },
    { "auth_timeout", 0, CFG_INT, &dj.cfg.auth_timeout, "30", "seconds a client has to authenticate", false, NULL },
    { "idle_timeout", 0, CFG_INT, &dj.cfg.idle_timeout, "0", "close sessions silent this many seconds (0 = never)",
      false, NULL },
    { "max_conns", 0, CFG_INT, &dj.cfg.max_conns, "0", "most client connections (0 = unlimited)", false, NULL },
    { "max_offline", 0, CFG_SIZE, &dj.cfg.max_offline, "1000", "offline messages kept per account", false, NULL },
    { "max_roster", 0, CFG_INT, &dj.cfg.max_roster, "2000", "items per roster", false, NULL },
    { "max_resources", 0, CFG_INT, &dj.cfg.max_resources, "10", "sessions per account", false, NULL },
    { "sm_resume_timeout", 0, CFG_INT, &dj.cfg.sm_resume_timeout, "300",
      "seconds a lost XEP-0198 session may be resumed (0 = no resumption)", false, NULL },
    { "max_output", 0, CFG_SIZE, &dj.cfg.max_output, "2m",
      "bytes queued to a client that does not read before it is dropped", false, NULL },
    CFG_END
};

int dj_vhost_find(const char *name)
{
    for (int i = 0; i < dj.nvhosts; i++)
        if (!strcasecmp(dj.vhosts[i].name, name))
            return i;
    return -1;
}

/* ---- listeners ------------------------------------------------------------------------ */

static void dj_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen, void *arg)
{
    (void)arg;
    struct core_conn *c = conn_new(loop, fd, sa, salen, dj_sess_conn_ops(), NULL);
    if (c)
        dj_sess_accept(c);
}

static void dj_reject(int fd, void *arg)
{
    (void)arg;
    static const char msg[] = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                              "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'><stream:error>"
                              "<resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
                              "</stream:stream>";
    ssize_t r = send(fd, msg, sizeof msg - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)r;
}

/* ---- stats ------------------------------------------------------------------------------ */

static void dj_stats(struct stats_sink *sink, void *arg)
{
    (void)arg;
    stats_u64(sink, "c2s_connections", dj.nsessions);
    stats_u64(sink, "c2s_sessions", dj.nbound);
    stats_u64(sink, "accounts_in_memory", dj.nusers);
    stats_u64(sink, "c2s_total", dj.n.sessions_total);
    stats_u64(sink, "auth_ok", dj.n.auth_ok);
    stats_u64(sink, "auth_fail", dj.n.auth_fail);
    stats_u64(sink, "stanzas_in", dj.n.stanzas_in);
    stats_u64(sink, "stanzas_out", dj.n.stanzas_out);
    stats_u64(sink, "messages_routed", dj.n.messages_routed);
    stats_u64(sink, "messages_offline", dj.n.messages_offline);
    stats_u64(sink, "messages_dropped", dj.n.messages_dropped);
    stats_u64(sink, "offline_delivered", dj.n.offline_delivered);
    stats_u64(sink, "stream_errors", dj.n.stream_errors);
    stats_u64(sink, "policy_violations", dj.n.policy_violations);
    stats_u64(sink, "registered", dj.n.registered);
    stats_u64(sink, "sm_enabled", dj.n.sm_enabled);
    stats_u64(sink, "sm_resumed", dj.n.sm_resumed);
    stats_u64(sink, "sm_expired", dj.n.sm_expired);
    stats_u64(sink, "starttls", dj.n.starttls);
    stats_u64(sink, "slow_consumers", dj.n.slow_consumers);
    stats_u64(sink, "offline_refused", dj.n.offline_refused);
    stats_u64(sink, "cluster_links_out", dj_cluster_links(true));
    stats_u64(sink, "cluster_links_in", dj_cluster_links(false));
    stats_u64(sink, "cluster_forwarded", dj_cluster_n.forwarded);
    stats_u64(sink, "cluster_received", dj_cluster_n.received);
    stats_u64(sink, "cluster_auth_failed", dj_cluster_n.auth_failed);
    stats_u64(sink, "cluster_dropped", dj_cluster_n.dropped);
    stats_u64(sink, "cluster_offline_syncs", dj_cluster_n.offline_syncs);
    stats_u64(sink, "cluster_offline_syncs_in", dj_cluster_n.offline_syncs_in);
    stats_u64(sink, "s2s_incoming_authed", dj_s2s_n.incoming_authed);
    stats_u64(sink, "s2s_outgoing_authed", dj_s2s_n.outgoing_authed);
    stats_u64(sink, "s2s_streams_in", dj_s2s_count(false));
    stats_u64(sink, "s2s_streams_out", dj_s2s_count(true));
    stats_u64(sink, "s2s_stanzas_in", dj_s2s_n.stanzas_in);
    stats_u64(sink, "s2s_stanzas_out", dj_s2s_n.stanzas_out);
    stats_u64(sink, "s2s_dropped_bytes", dj_s2s_n.dropped_bytes);
    stats_u64(sink, "s2s_tls_in", dj_s2s_n.tls_in);
    stats_u64(sink, "s2s_tls_out", dj_s2s_n.tls_out);
    stats_u64(sink, "xml_parsers_pooled", dj_xml_pool_size());
    for (int i = 0; i < dj.nvhosts; i++)
        stats_u64f(sink, dj.per_vhost[i], "vhost:%s:sessions", dj.vhosts[i].name);
    if (dj.db) {
        struct db_counters dc;
        db_get_counters(dj.db, &dc);
        stats_u64(sink, "db_requests", dc.requests);
        stats_u64(sink, "db_commits", dc.commits);
        stats_u64(sink, "db_errors", dc.errors);
        stats_u64(sink, "db_waiting", dc.queued);
    }
}

/* ---- life cycle ---------------------------------------------------------------------------- */

static int dj_init(void)
{
    char err[512];
    if (dj.nvhosts == 0)
        dj.vhosts[dj.nvhosts++].name = strdup("localhost");
    if (dj.cfg.tls_cert && *dj.cfg.tls_cert) {
        dj.tls_ctx =
            tls_server_ctx_new(dj.cfg.tls_cert, dj.cfg.tls_key && *dj.cfg.tls_key ? dj.cfg.tls_key : dj.cfg.tls_cert,
                               NULL, err, sizeof err);
        if (!dj.tls_ctx) {
            log_error("djabberd: tls: %s", err);
            return -1;
        }
    }
    if (dj.cfg.require_tls && !dj.tls_ctx) {
        /* refuse to run rather than silently accept plaintext */
        log_error("djabberd: require_tls is on but no tls_cert/tls_key is set; give a certificate or set "
                  "require_tls = off to serve plaintext c2s");
        return -1;
    }
    if (dj.cfg.max_roster < 1)
        dj.cfg.max_roster = 1;
    if (dj.cfg.max_resources < 1)
        dj.cfg.max_resources = 1;
    if (dj.cfg.max_stanza < 1024)
        dj.cfg.max_stanza = 1024;
    if (dj_store_open(err, sizeof err) < 0) {
        log_error("djabberd: storage: %s", err);
        return -1;
    }
    dj_plugin_ping_register();
    dj_plugin_version_register();
    dj_plugin_vcard_register();
    dj_plugin_vcard_update_register();
    stats_add_source("", dj_stats, NULL);
    char spec[300];
    if (dj.cfg.listen && *dj.cfg.listen) {
        if (strchr(dj.cfg.listen, ':') && dj.cfg.listen[0] != '[')
            snprintf(spec, sizeof spec, "[%s]:%d", dj.cfg.listen, dj.cfg.c2s_port);
        else
            snprintf(spec, sizeof spec, "%s:%d", dj.cfg.listen, dj.cfg.c2s_port);
    } else
        snprintf(spec, sizeof spec, "*:%d", dj.cfg.c2s_port);
    /* one loop owns every session and roster (see djabberd.h) */
    struct listen_opts lo = { .single_loop = true };
    if (!listen_open(spec, 5222, &lo, dj_accept, dj_reject, NULL, err, sizeof err)) {
        log_error("djabberd: cannot listen on %s: %s", spec, err);
        return -1;
    }
    if (dj.cfg.s2s_port) {
        const char *a = dj.cfg.s2s_listen && *dj.cfg.s2s_listen ? dj.cfg.s2s_listen : dj.cfg.listen;
        char s2spec[300];
        if (a && *a)
            snprintf(s2spec, sizeof s2spec, strchr(a, ':') && a[0] != '[' ? "[%s]:%d" : "%s:%d", a, dj.cfg.s2s_port);
        else
            snprintf(s2spec, sizeof s2spec, "*:%d", dj.cfg.s2s_port);
        dj_s2s_set_secret(dj.cfg.s2s_secret);
        if (dj_s2s_tls_init(err, sizeof err) < 0) {
            log_error("djabberd: s2s tls: %s", err);
            return -1;
        }
        struct listen_opts so = { .single_loop = true };
        if (!listen_open(s2spec, 5269, &so, dj_s2s_accept, NULL, NULL, err, sizeof err)) {
            log_error("djabberd: cannot listen on %s (s2s): %s", s2spec, err);
            return -1;
        }
        log_info("djabberd: s2s on %s (dialback)", s2spec);
    }
    if (dj_cluster_start(err, sizeof err) < 0) {
        log_error("djabberd: cluster: %s", err);
        return -1;
    }
    if (dj.cfg.max_conns > 0)
        listen_set_max_conns((uint64_t)dj.cfg.max_conns);
    log_info("djabberd: c2s on %s, %d vhost(s), first %s", spec, dj.nvhosts, dj.vhosts[0].name);
    return 0;
}

static void dj_fini(void)
{
    dj_cluster_free();
    dj_s2s_tls_free();
    dj_store_close();
    if (dj.tls_ctx)
        tls_ctx_free(dj.tls_ctx);
    dj.tls_ctx = NULL;
    dj_xml_pool_clear();
    for (size_t i = 0; i < dj.nbuckets; i++)
        while (dj.users[i]) {
            struct dj_user *u = dj.users[i];
            dj.users[i] = u->hnext;
            dj_roster_free_items(u);
            while (u->remote) {
                struct dj_rsess *r = u->remote;
                u->remote = r->next;
                free(r->node);
                free(r->resource);
                free(r->presence);
                free(r);
            }
            free(u->bare);
            free(u);
        }
    free(dj.users);
    for (int i = 0; i < dj.nvhosts; i++)
        free(dj.vhosts[i].name);
}

static void dj_stopping(void)
{
    dj_sess_expire_detached();
    dj_s2s_close_all();
    dj_cluster_stop();
}

static void dj_reload(void)
{
    char err[512];
    if (dj.tls_ctx && tls_server_ctx_reload(&dj.tls_ctx, dj.cfg.tls_cert,
                                            dj.cfg.tls_key && *dj.cfg.tls_key ? dj.cfg.tls_key : dj.cfg.tls_cert, NULL,
                                            err, sizeof err) < 0)
        log_error("djabberd: reload: tls: %s (the old certificate stays)", err);
    if (dj_users_file_load(dj.cfg.users_file, err, sizeof err) < 0)
        log_error("djabberd: reload: %s", err);
    else
        log_info("djabberd: users_file reloaded (%zu accounts)", dj_users_file_count());
}

int main(int argc, char **argv)
{
    static const struct daemon_desc desc = {
        .name = "djabberd",
        .version = DJ_VERSION,
        .settings = dj_settings_table,
        .threads = NULL,
        .default_admin_port = 5280,
        .init = dj_init,
        .fini = dj_fini,
        .admin_cmds = dj_admin_cmds,
        .hooks = { .on_reload = dj_reload, .on_stop = dj_stopping },
    };
    return daemon_main(&desc, argc, argv);
}
