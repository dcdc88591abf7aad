/* topology: the servers userdbd routes to — the global database and the
 * user clusters (a/b masters, weighted replicas) — built from the settings,
 * rebuilt live on reload, and the choice of a server for a statement.
 * Also the replication-lag monitor that keeps stale replicas out of reads.
 *
 * Settings arrive through the config's custom handlers into a staging area
 * (ud_stage_*); ud_topology_apply() turns the stage into a new topology,
 * keeping the server objects (pools, health, counters) of DSNs that stay. */
#include "userdb/userdb.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <event2/event.h>

#include "common/log.h"
#include "common/loop.h"

struct ud_topology *ud_topo;
struct ud_server *ud_all_servers;
struct ud_user_table ud_user_tables[UD_MAX_USER_TABLES];
int ud_nuser_tables;

/* ---- staging (filled by the settings' custom handlers) ---------------------------- */

struct stage {
    char *global;
    char *master[UD_MAX_CLUSTERS + 1][2];
    int nmaster[UD_MAX_CLUSTERS + 1];
    char *replica[UD_MAX_CLUSTERS + 1][UD_MAX_REPLICAS];
    int nreplica[UD_MAX_CLUSTERS + 1];
    bool readonly[UD_MAX_CLUSTERS + 1];
    char *defaults;
    struct ud_user_table tables[UD_MAX_USER_TABLES];
    int ntables;
};
static struct stage stage;

void ud_stage_reset(void)
{
    free(stage.global);
    for (int c = 0; c <= UD_MAX_CLUSTERS; c++) {
        for (int i = 0; i < stage.nmaster[c]; i++)
            free(stage.master[c][i]);
        for (int i = 0; i < stage.nreplica[c]; i++)
            free(stage.replica[c][i]);
    }
    free(stage.defaults);
    memset(&stage, 0, sizeof stage);
}

int ud_stage_global(const char *v, char *err, size_t errlen)
{
    struct ud_dsn d;
    if (ud_dsn_parse(v, &d, err, errlen) < 0)
        return -1;
    free(stage.global);
    stage.global = strdup(v);
    return 0;
}

int ud_stage_master(int c, const char *v, char *err, size_t errlen)
{
    struct ud_dsn d;
    if (ud_dsn_parse(v, &d, err, errlen) < 0)
        return -1;
    if (stage.nmaster[c] >= 2) {
        snprintf(err, errlen, "cluster.%d.master: at most two (an a/b pair)", c);
        return -1;
    }
    stage.master[c][stage.nmaster[c]++] = strdup(v);
    return 0;
}

int ud_stage_replica(int c, const char *v, char *err, size_t errlen)
{
    struct ud_dsn d;
    if (ud_dsn_parse(v, &d, err, errlen) < 0)
        return -1;
    if (stage.nreplica[c] >= UD_MAX_REPLICAS) {
        snprintf(err, errlen, "cluster.%d.replica: at most %d", c, UD_MAX_REPLICAS);
        return -1;
    }
    stage.replica[c][stage.nreplica[c]++] = strdup(v);
    return 0;
}

int ud_stage_readonly(int c, bool v)
{
    stage.readonly[c] = v;
    return 0;
}

int ud_stage_defaults(const char *v, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    free(stage.defaults);
    stage.defaults = strdup(v);
    return 0;
}

int ud_stage_user_table(const char *v, char *err, size_t errlen)
{
    struct ud_user_table t;
    memset(&t, 0, sizeof t);
    if (sscanf(v, "%64[A-Za-z0-9_]:%64[A-Za-z0-9_]", t.table, t.column) != 2 ||
        strlen(v) != strlen(t.table) + 1 + strlen(t.column)) {
        snprintf(err, errlen, "user_table '%s': want TABLE:COLUMN (letters, digits, _)", v);
        return -1;
    }
    if (stage.ntables >= UD_MAX_USER_TABLES) {
        snprintf(err, errlen, "too many user_table lines");
        return -1;
    }
    stage.tables[stage.ntables++] = t;
    return 0;
}

/* ---- building ------------------------------------------------------------------------ */

static int resolve(struct ud_server *srv, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    unsigned len;
    if (srv->dsn.socket[0]) {
        struct sockaddr_un *un = (struct sockaddr_un *)&ss;
        if (strlen(srv->dsn.socket) >= sizeof un->sun_path) {
            snprintf(err, errlen, "%s: socket path too long", srv->dsn_text);
            return -1;
        }
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, srv->dsn.socket);
        len = sizeof *un;
    } else {
        /* Numeric addresses only: a host name is resolved per connect by
         * the core's evdns (conn_connect_host), never on the loop here. */
        struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST }, *ai;
        char port[16];
        snprintf(port, sizeof port, "%d", srv->dsn.port);
        const char *host = strcmp(srv->dsn.host, "localhost") == 0 ? "127.0.0.1" : srv->dsn.host;
        int rc = getaddrinfo(host, port, &hints, &ai);
        if (rc == EAI_NONAME) {
            free(srv->addr);
            srv->addr = NULL; /* by name: see backend_connect */
            return 0;
        }
        if (rc) {
            snprintf(err, errlen, "%s: %s", srv->dsn_text, gai_strerror(rc));
            return -1;
        }
        memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
        len = (unsigned)ai->ai_addrlen;
        freeaddrinfo(ai);
    }
    if (!srv->addr)
        srv->addr = malloc(sizeof ss);
    if (!srv->addr)
        return -1;
    memcpy(srv->addr, &ss, sizeof ss);
    srv->addr_len = len;
    return 0;
}

static struct ud_server *find_server(enum ud_role role, int cluster, const char *dsn)
{
    for (struct ud_server *s = ud_all_servers; s; s = s->next_all)
        if (!s->retired && s->role == role && s->cluster == cluster && strcmp(s->dsn_text, dsn) == 0)
            return s;
    return NULL;
}

static struct ud_server *get_server(enum ud_role role, int cluster, const char *dsn, const char *name, char *err,
                                    size_t errlen, struct ud_server **fresh)
{
    struct ud_server *s = find_server(role, cluster, dsn);
    if (s) {
        s->cw = 0;
        snprintf(s->name, sizeof s->name, "%s", name);
        struct ud_dsn d;
        ud_dsn_parse(dsn, &d, err, errlen);
        s->weight = d.weight;
        return s;
    }
    s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    snprintf(s->name, sizeof s->name, "%s", name);
    snprintf(s->dsn_text, sizeof s->dsn_text, "%s", dsn);
    if (ud_dsn_parse(dsn, &s->dsn, err, errlen) < 0 || resolve(s, err, errlen) < 0) {
        free(s->addr);
        free(s);
        return NULL;
    }
    s->role = role;
    s->cluster = cluster;
    s->weight = s->dsn.weight;
    s->lag = -1;
    ud_server_pool_init(s);
    s->next_all = *fresh;
    *fresh = s;
    return s;
}

static int parse_defaults(struct ud_topology *t, const char *v, char *err, size_t errlen)
{
    t->ndefaults = 0;
    if (!v)
        return 0;
    const char *p = v;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!*p)
            break;
        char *end;
        long c = strtol(p, &end, 10), w = 1;
        if (end == p || c < 1 || c > UD_MAX_CLUSTERS)
            goto bad;
        p = end;
        if (*p == ':') {
            w = strtol(p + 1, &end, 10);
            if (end == p + 1 || w < 0 || w > 1000000)
                goto bad;
            p = end;
        }
        if (*p && *p != ',' && *p != ' ')
            goto bad;
        int i;
        for (i = 0; i < t->ndefaults && t->def_cluster[i] != c; i++)
            ;
        if (i == t->ndefaults) {
            if (t->ndefaults >= UD_MAX_DEFAULTS)
                goto bad;
            t->def_cluster[i] = (int)c;
            t->def_weight[i] = 0;
            t->ndefaults++;
        }
        t->def_weight[i] += (int)w; /* a repeated id weighs more, as in LJ */
    }
    return 0;
bad:
    snprintf(err, errlen, "default_clusters '%s': want a list like 1,2 or 1:3,2:1", v);
    return -1;
}

int ud_topology_apply(char *err, size_t errlen)
{
    struct ud_topology *t = calloc(1, sizeof *t);
    struct ud_server *fresh = NULL;
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (!stage.global) {
        snprintf(err, errlen, "no global database configured (global = DBI:mysql:database=D;host=H;port=P)");
        goto fail;
    }
    if (!(t->global = get_server(UD_ROLE_GLOBAL, 0, stage.global, "global", err, errlen, &fresh)))
        goto fail;
    /* "Cluster 0" is the global database with its replicas (global_replica). */
    t->cluster[0].master[0] = t->global;
    t->cluster[0].nmasters = 1;
    for (int i = 0; i < stage.nreplica[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "gr%d", i);
        if (!(t->cluster[0].replica[i] =
                  get_server(UD_ROLE_REPLICA, 0, stage.replica[0][i], name, err, errlen, &fresh)))
            goto fail;
    }
    t->cluster[0].nreplicas = stage.nreplica[0];
    for (int c = 1; c <= UD_MAX_CLUSTERS; c++) {
        struct ud_cluster *cl = &t->cluster[c];
        cl->id = c;
        if (stage.nreplica[c] && !stage.nmaster[c]) {
            snprintf(err, errlen, "cluster %d has replicas but no master", c);
            goto fail;
        }
        for (int i = 0; i < stage.nmaster[c]; i++) {
            char name[32];
            snprintf(name, sizeof name, "c%d%c", c, 'a' + i);
            if (!(cl->master[i] = get_server(UD_ROLE_MASTER, c, stage.master[c][i], name, err, errlen, &fresh)))
                goto fail;
        }
        cl->nmasters = stage.nmaster[c];
        for (int i = 0; i < stage.nreplica[c]; i++) {
            char name[32];
            snprintf(name, sizeof name, "c%dr%d", c, i);
            if (!(cl->replica[i] = get_server(UD_ROLE_REPLICA, c, stage.replica[c][i], name, err, errlen, &fresh)))
                goto fail;
        }
        cl->nreplicas = stage.nreplica[c];
        cl->readonly = stage.readonly[c];
        if (ud_topo && ud_topo->cluster[c].nmasters && cl->nmasters == 2)
            cl->active = ud_topo->cluster[c].active; /* a flip survives a reload (and is in clusterstate) */
    }
    if (parse_defaults(t, stage.defaults, err, errlen) < 0)
        goto fail;
    for (int i = 0; i < t->ndefaults; i++)
        if (!t->cluster[t->def_cluster[i]].nmasters) {
            snprintf(err, errlen, "default_clusters names cluster %d, which has no master", t->def_cluster[i]);
            goto fail;
        }
    /* Commit: new servers join the list; servers no longer named retire. */
    while (fresh) {
        struct ud_server *s = fresh;
        fresh = s->next_all;
        s->next_all = ud_all_servers;
        ud_all_servers = s;
    }
    for (struct ud_server *s = ud_all_servers; s; s = s->next_all) {
        bool used = s == t->global;
        for (int c = 0; c <= UD_MAX_CLUSTERS && !used; c++) {
            for (int i = 0; i < t->cluster[c].nmasters; i++)
                used |= t->cluster[c].master[i] == s;
            for (int i = 0; i < t->cluster[c].nreplicas; i++)
                used |= t->cluster[c].replica[i] == s;
        }
        if (!used && !s->retired) {
            ud_server_retire(s);
        }
    }
    memcpy(ud_user_tables, stage.tables, sizeof ud_user_tables);
    ud_nuser_tables = stage.ntables;
    free(ud_topo);
    ud_topo = t;
    ud_dir_clear();
    ud_stage_reset();
    return 0;
fail:
    while (fresh) {
        struct ud_server *s = fresh;
        fresh = s->next_all;
        free(s->addr);
        free(s);
    }
    free(t);
    ud_stage_reset();
    return -1;
}

void ud_topology_free(void)
{
    free(ud_topo);
    ud_topo = NULL;
    while (ud_all_servers) {
        struct ud_server *s = ud_all_servers;
        ud_all_servers = s->next_all;
        free(s->addr);
        free(s);
    }
    ud_stage_reset();
}

struct ud_cluster *ud_cluster_get(int id)
{
    if (!ud_topo || id < 1 || id > UD_MAX_CLUSTERS || !ud_topo->cluster[id].nmasters)
        return NULL;
    return &ud_topo->cluster[id];
}

/* ---- choosing ------------------------------------------------------------------------ */

static bool replica_usable(struct ud_server *r, uint64_t now)
{
    if (r->retired || r->weight <= 0)
        return false;
    if (ud_server_dead(r))
        return false;
    /* Only a replica measured recently, and within max_lag, serves reads. */
    return r->lag >= 0 && r->lag <= ud_cfg.max_lag && now - r->lag_at_ms <= 3000;
}

struct ud_server *ud_pick_server(int cluster, bool read)
{
    if (!ud_topo)
        return NULL;
    struct ud_cluster *cl = cluster == 0 ? &ud_topo->cluster[0] : ud_cluster_get(cluster);
    if (!cl)
        return NULL;
    struct ud_server *m = cl->master[cl->active];
    if (!read || !cl->nreplicas)
        return m;
    /* Smooth weighted round robin (as nginx): exact shares, evenly spread. */
    uint64_t now = ud_now_ms();
    struct ud_server *best = NULL;
    int total = 0;
    for (int i = 0; i < cl->nreplicas; i++) {
        struct ud_server *r = cl->replica[i];
        if (!replica_usable(r, now))
            continue;
        r->cw += r->weight;
        total += r->weight;
        if (!best || r->cw > best->cw)
            best = r;
    }
    if (!best)
        return m;
    best->cw -= total;
    return best;
}

int ud_pick_default_cluster(void)
{
    if (!ud_topo)
        return 0;
    struct ud_topology *t = ud_topo;
    int best = -1, total = 0;
    for (int i = 0; i < t->ndefaults; i++) {
        struct ud_cluster *cl = &t->cluster[t->def_cluster[i]];
        if (!cl->nmasters || cl->readonly || t->def_weight[i] <= 0)
            continue;
        t->def_cw[i] += t->def_weight[i];
        total += t->def_weight[i];
        if (best < 0 || t->def_cw[i] > t->def_cw[best])
            best = i;
    }
    if (best < 0)
        return 0;
    t->def_cw[best] -= total;
    return t->def_cluster[best];
}

/* ---- a/b state, shared through the global database ------------------------------- */

/* Bumped by every local flip: a poll sent before it must not undo it. */
unsigned ud_state_gen;

void ud_apply_cluster_state(const char *s, unsigned gen)
{
    if (!ud_topo || gen != ud_state_gen)
        return;
    while (s && *s) {
        int c = atoi(s);
        const char *colon = strchr(s, ':');
        if (!colon)
            return;
        struct ud_cluster *cl = ud_cluster_get(c);
        int side = colon[1] == 'b' ? 1 : 0;
        if (cl && cl->nmasters == 2 && cl->active != side) {
            cl->active = side;
            log_info("userdbd: cluster %d: active master is now %s (global clusterstate)", c, cl->master[side]->name);
        }
        s = strchr(colon, ',');
        if (s)
            s++;
    }
}

/* One save of a cluster's side in flight at a time; flips meanwhile only
 * mark it dirty, and the latest side is written when the save returns (a
 * console spamming `flip` can't queue unbounded writes). */
static bool flip_saving[UD_MAX_CLUSTERS + 1], flip_dirty[UD_MAX_CLUSTERS + 1];

static void flip_save(int c);

static void flip_saved(struct ud_iq *q)
{
    int c = (int)(intptr_t)q->arg;
    if (q->error)
        log_error("userdbd: saving the flip of cluster %d: %s", c, q->err);
    flip_saving[c] = false;
    if (flip_dirty[c])
        flip_save(c);
}

static void flip_save(int c)
{
    struct ud_cluster *cl = ud_cluster_get(c);
    flip_dirty[c] = false;
    if (!cl)
        return;
    if (flip_saving[c]) {
        flip_dirty[c] = true;
        return;
    }
    char sql[160];
    snprintf(sql, sizeof sql,
             "INSERT INTO clusterstate (clusterid, active) VALUES (%d, '%c') ON DUPLICATE KEY UPDATE active = '%c'", c,
             'a' + cl->active, 'a' + cl->active);
    flip_saving[c] = true;
    if (ud_iq_run(ud_topo->global, sql, flip_saved, (void *)(intptr_t)c) < 0)
        flip_saving[c] = false;
}

int ud_flip(int c)
{
    struct ud_cluster *cl = ud_cluster_get(c);
    if (!cl || cl->nmasters < 2)
        return -1;
    cl->active ^= 1;
    ud_state_gen++;
    flip_save(c);
    log_info("userdbd: cluster %d: active master is now %s", c, cl->master[cl->active]->name);
    return 0;
}

static bool state_polling;

static void state_polled(struct ud_iq *q)
{
    state_polling = false;
    if (!q->error && q->nrows > 0 && q->val[0])
        ud_apply_cluster_state(q->val[0], (unsigned)(uintptr_t)q->arg);
}

/* ---- replication lag --------------------------------------------------------------- */

static struct event *lag_timer;

static void lag_done(struct ud_iq *q)
{
    struct ud_server *r = q->arg;
    r->lag_checking = false;
    r->lag_at_ms = ud_now_ms();
    if (q->error || q->nrows < 1) {
        r->lag = -1;
        return;
    }
    const char *sbm = ud_iq_value(q, "Seconds_Behind_Master");
    const char *sql = ud_iq_value(q, "Slave_SQL_Running");
    const char *io = ud_iq_value(q, "Slave_IO_Running");
    if (!sbm || !sql || strcasecmp(sql, "Yes") || !io || strcasecmp(io, "Yes"))
        r->lag = -1;
    else
        r->lag = atoi(sbm);
}

static void lag_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    if (!ud_topo)
        return;
    /* Another router (or this one's console) may have flipped a pair. */
    if (!state_polling) {
        state_polling = true;
        if (ud_iq_run(ud_topo->global, "SELECT GROUP_CONCAT(CONCAT(clusterid, ':', active)) FROM clusterstate",
                      state_polled, (void *)(uintptr_t)ud_state_gen) < 0)
            state_polling = false;
    }
    for (int c = 0; c <= UD_MAX_CLUSTERS; c++)
        for (int i = 0; i < ud_topo->cluster[c].nreplicas; i++) {
            struct ud_server *r = ud_topo->cluster[c].replica[i];
            if (r->lag_checking || r->retired)
                continue;
            r->lag_checking = true;
            if (ud_iq_run(r, "SHOW SLAVE STATUS", lag_done, r) < 0)
                r->lag_checking = false;
        }
}

int ud_lag_monitor_start(void)
{
    lag_timer = event_new(loop_get(0)->base, -1, EV_PERSIST, lag_tick, NULL);
    if (!lag_timer)
        return -1;
    struct timeval tv = { 0, 500000 };
    event_add(lag_timer, &tv);
    event_active(lag_timer, EV_TIMEOUT, 0);
    return 0;
}

void ud_lag_monitor_stop(void)
{
    if (lag_timer) {
        event_free(lag_timer);
        lag_timer = NULL;
    }
}
