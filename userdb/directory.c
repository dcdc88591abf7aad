/* directory: the global database's user directory as userdbd sees it — a
 * bounded cache of userid -> (cluster, read-only), new users, and per-user
 * counters (LiveJournal's alloc_user_counter).
 *
 * Lookups and writes are internal queries on the global master's pool
 * (backend.c), so they never block the loop. Cache entries live at most
 * directory_ttl seconds: that bounds how long a router can act on a user's
 * old cluster or read-only flag, and the mover waits that long after
 * setting the flag before it copies (see tools/usermove.c). */
#include "userdb/userdb.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mysql.h>

#include "common/log.h"

const char ud_dir_schema[] = "CREATE TABLE IF NOT EXISTS user ("
                             " userid INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,"
                             " user VARCHAR(64) NOT NULL,"
                             " clusterid SMALLINT UNSIGNED NOT NULL,"
                             " readonly TINYINT UNSIGNED NOT NULL DEFAULT 0,"
                             " UNIQUE KEY (user), KEY (clusterid)) ENGINE=InnoDB;"
                             "CREATE TABLE IF NOT EXISTS usercounter ("
                             " userid INT UNSIGNED NOT NULL,"
                             " area VARCHAR(16) NOT NULL,"
                             " max BIGINT UNSIGNED NOT NULL,"
                             " PRIMARY KEY (userid, area)) ENGINE=InnoDB;"
                             "CREATE TABLE IF NOT EXISTS clustermove ("
                             " cmid INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,"
                             " userid INT UNSIGNED NOT NULL,"
                             " sclust SMALLINT UNSIGNED NOT NULL,"
                             " dclust SMALLINT UNSIGNED NOT NULL,"
                             " timestart INT UNSIGNED NOT NULL,"
                             " timedone INT UNSIGNED NULL,"
                             " state VARCHAR(16) NOT NULL DEFAULT 'copying',"
                             " KEY (userid)) ENGINE=InnoDB;"
                             "CREATE TABLE IF NOT EXISTS clusterstate ("
                             " clusterid SMALLINT UNSIGNED NOT NULL PRIMARY KEY,"
                             " active CHAR(1) NOT NULL DEFAULT 'a') ENGINE=InnoDB";

/* ---- cache: open addressing, cleared whole when full ------------------------------ */

static struct ud_dir_entry *tab;
static size_t tab_cap, tab_used;

static size_t slot_of(uint32_t id)
{
    uint32_t h = id * 2654435761u;
    return (size_t)h & (tab_cap - 1);
}

static struct ud_dir_entry *find(uint32_t id)
{
    if (!tab)
        return NULL;
    for (size_t i = slot_of(id), n = 0; n < tab_cap; i = (i + 1) & (tab_cap - 1), n++) {
        if (tab[i].userid == id)
            return &tab[i];
        if (tab[i].userid == 0)
            return NULL;
    }
    return NULL;
}

void ud_dir_clear(void)
{
    if (tab)
        memset(tab, 0, tab_cap * sizeof *tab);
    tab_used = 0;
}

size_t ud_dir_size(void) { return tab_used; }

static void store(const struct ud_dir_entry *e)
{
    if (!tab) {
        size_t want = 1024;
        while (want < (size_t)ud_cfg.dir_cache_max * 2)
            want <<= 1;
        tab = calloc(want, sizeof *tab);
        if (!tab)
            return;
        tab_cap = want;
    }
    struct ud_dir_entry *old = find(e->userid);
    if (old) {
        *old = *e;
        return;
    }
    if (tab_used >= (size_t)ud_cfg.dir_cache_max || tab_used >= tab_cap / 2)
        ud_dir_clear();
    size_t i = slot_of(e->userid);
    while (tab[i].userid)
        i = (i + 1) & (tab_cap - 1);
    tab[i] = *e;
    tab_used++;
}

/* Deleting from linear probing: re-insert the rest of the run. */
void ud_dir_invalidate(uint32_t id)
{
    struct ud_dir_entry *e = find(id);
    if (!e)
        return;
    size_t i = (size_t)(e - tab);
    tab[i].userid = 0;
    tab_used--;
    for (i = (i + 1) & (tab_cap - 1); tab[i].userid; i = (i + 1) & (tab_cap - 1)) {
        struct ud_dir_entry moved = tab[i];
        tab[i].userid = 0;
        tab_used--;
        store(&moved);
    }
}

/* ---- lookups ----------------------------------------------------------------------- */

struct lookup {
    uint32_t userid;
    uint64_t sent_ms; /* the answer is no newer than this: expiry counts from here */
    ud_dir_fn cb;
    void *arg;
};

static void lookup_done(struct ud_iq *q)
{
    struct lookup *l = q->arg;
    if (q->error) {
        l->cb(l->arg, NULL, q->err);
        free(l);
        return;
    }
    struct ud_dir_entry e = { .userid = l->userid };
    if (q->nrows > 0) {
        const char *c = ud_iq_value(q, "clusterid"), *r = ud_iq_value(q, "readonly");
        e.cluster = c ? atoi(c) : 0;
        e.readonly = r && atoi(r) != 0;
        /* From when the query was sent, not when the answer came back: the
         * global database may have read the row long before a slow reply
         * reaches us, and the mover counts directory_ttl from its UPDATE. */
        e.expires_ms = l->sent_ms + (uint64_t)(ud_cfg.directory_ttl * 1000);
        /* Lookups may come back out of order: an answer to a later lookup
         * is newer, keep it (and use it) rather than this older one. */
        struct ud_dir_entry *cur = find(l->userid);
        if (cur && cur->expires_ms > e.expires_ms)
            e = *cur;
        else if (e.cluster)
            store(&e);
    }
    l->cb(l->arg, &e, NULL);
    free(l);
}

void ud_dir_lookup(uint32_t userid, ud_dir_fn cb, void *arg)
{
    struct ud_dir_entry *e = find(userid);
    if (e && e->expires_ms > ud_now_ms()) {
        ud_n.dir_hits++;
        struct ud_dir_entry copy = *e;
        cb(arg, &copy, NULL);
        return;
    }
    ud_n.dir_misses++;
    struct lookup *l = malloc(sizeof *l);
    if (!l) {
        cb(arg, NULL, "out of memory");
        return;
    }
    l->userid = userid;
    l->sent_ms = ud_now_ms();
    l->cb = cb;
    l->arg = arg;
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT clusterid, readonly FROM user WHERE userid = %u", userid);
    if (ud_iq_run(ud_topo->global, sql, lookup_done, l) < 0) {
        free(l);
        cb(arg, NULL, "out of memory");
    }
}

/* ---- new users and counters ---------------------------------------------------------- */

struct ud_sess;
void ud_sess_special_reply(struct ud_sess *s, const char *colname, uint64_t value, const char *err, uint16_t code);
void ud_sess_hold(struct ud_sess *s);
const struct ud_query *ud_sess_query(struct ud_sess *s);

static void created(struct ud_iq *q)
{
    struct ud_sess *s = q->arg;
    if (q->error) {
        ud_sess_special_reply(s, NULL, 0, q->err, q->err_code);
        return;
    }
    ud_n.users_created++;
    ud_sess_special_reply(s, "userdb_create_user", q->insert_id, NULL, 0);
}

void ud_create_user(struct ud_sess *s)
{
    const struct ud_query *qq = ud_sess_query(s);
    ud_sess_hold(s);
    if (qq->arg_len == 0 || qq->arg_len > 64) {
        ud_sess_special_reply(s, NULL, 0, "userdb: a user name is 1 to 64 bytes", 0);
        return;
    }
    int cluster = ud_pick_default_cluster();
    if (!cluster) {
        ud_sess_special_reply(s, NULL, 0, "userdb: no default cluster can take new users", 0);
        return;
    }
    char name[140], sql[256];
    ud_sql_quote(name, sizeof name, qq->arg, qq->arg_len);
    snprintf(sql, sizeof sql, "INSERT INTO user (user, clusterid) VALUES (%s, %d)", name, cluster);
    if (ud_iq_run(ud_topo->global, sql, created, s) < 0)
        ud_sess_special_reply(s, NULL, 0, "out of memory", 0);
}

/* counter_source = AREA:TABLE:COLUMN (the user column comes from user_table). */
struct counter_source {
    char area[17];
    char table[65];
    char column[65];
};
static struct counter_source sources[UD_MAX_USER_TABLES];
static int nsources;

int ud_counter_source_add(const char *v, char *err, size_t errlen)
{
    if (nsources >= UD_MAX_USER_TABLES) {
        snprintf(err, errlen, "too many counter_source lines");
        return -1;
    }
    struct counter_source cs;
    memset(&cs, 0, sizeof cs);
    if (sscanf(v, "%16[A-Za-z0-9_]:%64[A-Za-z0-9_]:%64[A-Za-z0-9_]", cs.area, cs.table, cs.column) != 3) {
        snprintf(err, errlen, "counter_source '%s': want AREA:TABLE:COLUMN", v);
        return -1;
    }
    for (int i = 0; i < nsources; i++)
        if (!strcmp(sources[i].area, cs.area)) {
            sources[i] = cs;
            return 0;
        }
    sources[nsources++] = cs;
    return 0;
}

void ud_counter_sources_reset(void) { nsources = 0; }

struct counter_ctx {
    struct ud_sess *s;
    uint32_t userid;
    int cluster;
    char area[17];
};

static void counter_reply(struct counter_ctx *cc, struct ud_iq *q)
{
    if (q->error) {
        ud_sess_special_reply(cc->s, NULL, 0, q->err, q->err_code);
    } else {
        ud_n.counters_issued++;
        ud_sess_special_reply(cc->s, "userdb_counter", q->insert_id, NULL, 0);
    }
    free(cc);
}

static void counter_inserted(struct ud_iq *q) { counter_reply(q->arg, q); }

static void counter_insert(struct counter_ctx *cc, uint64_t start)
{
    char sql[300];
    snprintf(sql, sizeof sql,
             "INSERT INTO usercounter (userid, area, max) VALUES (%u, '%s', LAST_INSERT_ID(%llu)) "
             "ON DUPLICATE KEY UPDATE max = LAST_INSERT_ID(max + 1)",
             cc->userid, cc->area, (unsigned long long)start);
    if (ud_iq_run(ud_topo->global, sql, counter_inserted, cc) < 0) {
        ud_sess_special_reply(cc->s, NULL, 0, "out of memory", 0);
        free(cc);
    }
}

static void counter_max_known(struct ud_iq *q)
{
    struct counter_ctx *cc = q->arg;
    if (q->error) {
        counter_reply(cc, q);
        return;
    }
    const char *m = ud_iq_value(q, "m");
    counter_insert(cc, (m ? strtoull(m, NULL, 10) : 0) + 1);
}

static void counter_updated(struct ud_iq *q)
{
    struct counter_ctx *cc = q->arg;
    if (q->error || q->affected > 0) {
        counter_reply(cc, q);
        return;
    }
    /* No row yet: start after the largest id already in the user's table
     * for this area, if one is configured. */
    for (int i = 0; i < nsources; i++) {
        if (strcmp(sources[i].area, cc->area))
            continue;
        const char *ucol = NULL;
        for (int t = 0; t < ud_nuser_tables; t++)
            if (!strcmp(ud_user_tables[t].table, sources[i].table))
                ucol = ud_user_tables[t].column;
        struct ud_server *m = ud_pick_server(cc->cluster, false);
        if (!ucol || !m)
            break;
        char sql[400];
        snprintf(sql, sizeof sql, "SELECT COALESCE(MAX(`%s`), 0) AS m FROM `%s` WHERE `%s` = %u", sources[i].column,
                 sources[i].table, ucol, cc->userid);
        if (ud_iq_run(m, sql, counter_max_known, cc) < 0)
            break;
        return;
    }
    counter_insert(cc, 1);
}

void ud_counter_next(struct ud_sess *s, const struct ud_dir_entry *e)
{
    const struct ud_query *qq = ud_sess_query(s);
    ud_sess_hold(s);
    bool ok = qq->arg_len >= 1 && qq->arg_len <= 16;
    for (size_t i = 0; ok && i < qq->arg_len; i++)
        ok = isalnum((unsigned char)qq->arg[i]) || qq->arg[i] == '_';
    if (!ok) {
        ud_sess_special_reply(s, NULL, 0, "userdb: a counter area is 1 to 16 letters, digits or _", 0);
        return;
    }
    struct counter_ctx *cc = calloc(1, sizeof *cc);
    if (!cc) {
        ud_sess_special_reply(s, NULL, 0, "out of memory", 0);
        return;
    }
    cc->s = s;
    cc->userid = e->userid;
    cc->cluster = e->cluster;
    memcpy(cc->area, qq->arg, qq->arg_len);
    char sql[200];
    snprintf(sql, sizeof sql, "UPDATE usercounter SET max = LAST_INSERT_ID(max + 1) WHERE userid = %u AND area = '%s'",
             cc->userid, cc->area);
    if (ud_iq_run(ud_topo->global, sql, counter_updated, cc) < 0) {
        ud_sess_special_reply(s, NULL, 0, "out of memory", 0);
        free(cc);
    }
}

/* ---- schema ------------------------------------------------------------------------- */

int ud_dir_create_schema(char *err, size_t errlen)
{
    const struct ud_dsn *d = &ud_topo->global->dsn;
    MYSQL *my = mysql_init(NULL);
    if (!my) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    unsigned timeout = 10;
    mysql_options(my, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    if (!mysql_real_connect(my, d->socket[0] ? NULL : d->host, ud_cfg.backend_user,
                            ud_backend_password ? ud_backend_password : "", d->database, (unsigned)d->port,
                            d->socket[0] ? d->socket : NULL, CLIENT_MULTI_STATEMENTS)) {
        snprintf(err, errlen, "global database: %s", mysql_error(my));
        mysql_close(my);
        return -1;
    }
    int rc = 0;
    if (mysql_query(my, ud_dir_schema)) {
        snprintf(err, errlen, "global database: creating the directory tables: %s", mysql_error(my));
        rc = -1;
    }
    do {
        MYSQL_RES *r = mysql_store_result(my);
        if (r)
            mysql_free_result(r);
    } while (rc == 0 && mysql_next_result(my) == 0);
    /* Which side of each a/b pair is active, as the last flip left it. */
    if (rc == 0 && mysql_query(my, "SELECT GROUP_CONCAT(CONCAT(clusterid, ':', active)) FROM clusterstate") == 0) {
        MYSQL_RES *r = mysql_store_result(my);
        MYSQL_ROW row = r ? mysql_fetch_row(r) : NULL;
        if (row && row[0])
            ud_apply_cluster_state(row[0], 0);
        if (r)
            mysql_free_result(r);
    }
    mysql_close(my);
    return rc;
}

void ud_dir_peek(uint32_t id, struct ud_dir_entry *out, bool *found)
{
    struct ud_dir_entry *e = find(id);
    *found = e != NULL;
    if (e)
        *out = *e;
}
