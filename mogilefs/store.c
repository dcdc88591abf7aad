/* store: the tracker's database (MogileFS schema version 17 on SQLite or
 * MariaDB, through common/db) and the in-memory cache of domains, classes,
 * hosts and devices.
 *
 * Calls here block the calling thread until the database worker answered:
 * they are made from query and job threads only, never from an event loop.
 * Writes are flagged DB_GROUP so concurrent threads share one commit. */
#include "mogilefs/mogilefs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/db.h"
#include "common/log.h"

struct mog_cache mog_cache = { .lock = PTHREAD_RWLOCK_INITIALIZER };
static struct db *store_db;

struct db *mog_store_db(void) { return store_db; }
bool mog_db_is_mysql(void) { return store_db && db_get_driver(store_db) == DB_MYSQL; }
const char *mog_insert_ignore(void) { return mog_db_is_mysql() ? "INSERT IGNORE" : "INSERT OR IGNORE"; }

/* ---- synchronous wrappers --------------------------------------------------- */

struct sync_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    struct mog_rows *rows;
};

static struct mog_rows *rows_from(const struct db_result *res)
{
    struct mog_rows *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->status = res->status;
    snprintf(r->error, sizeof r->error, "%s", res->error);
    r->affected = res->affected;
    r->last_id = res->last_id;
    if (res->status != 0 || res->ncols <= 0 || res->nrows == 0)
        return r;
    size_t n = res->nrows * (size_t)res->ncols;
    r->cell = calloc(n, sizeof *r->cell);
    r->len = calloc(n, sizeof *r->len);
    if (!r->cell || !r->len) {
        r->status = -1;
        snprintf(r->error, sizeof r->error, "out of memory");
        return r;
    }
    r->ncols = res->ncols;
    r->nrows = res->nrows;
    for (size_t row = 0; row < res->nrows; row++)
        for (int c = 0; c < res->ncols; c++) {
            size_t len;
            const char *v = db_cell(res, row, c, &len);
            size_t i = row * (size_t)res->ncols + (size_t)c;
            if (v) {
                r->cell[i] = malloc(len + 1);
                if (r->cell[i]) {
                    memcpy(r->cell[i], v, len);
                    r->cell[i][len] = '\0';
                }
                r->len[i] = len;
            }
        }
    return r;
}

/* Runs on the database worker thread. */
static void sync_done(struct db_result *res, void *arg)
{
    struct sync_wait *w = arg;
    struct mog_rows *rows = rows_from(res);
    pthread_mutex_lock(&w->mu);
    w->rows = rows;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static struct mog_rows *run_sync(int flags, const char *sql, const struct db_value *params, int n)
{
    struct sync_wait w = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };
    if (!store_db || db_query(store_db, NULL, flags, sql, params, n, sync_done, &w) < 0) {
        struct mog_rows *r = calloc(1, sizeof *r);
        if (r) {
            r->status = -1;
            snprintf(r->error, sizeof r->error, "database closing");
        }
        return r;
    }
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    if (w.rows && w.rows->status != 0)
        log_debug("mogilefsd: sql error: %s (%s)", w.rows->error, sql);
    if (!w.rows) {
        w.rows = calloc(1, sizeof *w.rows);
        if (w.rows)
            w.rows->status = -1;
    }
    return w.rows;
}

struct mog_rows *mog_sql(const char *sql, const struct db_value *params, int n) { return run_sync(0, sql, params, n); }

struct mog_rows *mog_sql_write(const char *sql, const struct db_value *params, int n)
{
    return run_sync(DB_GROUP, sql, params, n);
}

struct txn_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int status, failed;
    char error[256];
    int64_t last_id;
};

static void txn_done(struct db_result *res, void *arg)
{
    struct txn_wait *w = arg;
    pthread_mutex_lock(&w->mu);
    w->status = res->status;
    w->failed = res->failed_stmt;
    snprintf(w->error, sizeof w->error, "%s", res->error);
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int mog_sql_txn(const struct mog_stmt *stmts, const int *flags, int n, int *failed, char *err, size_t errlen)
{
    struct db_stmt st[16];
    if (n > 16)
        return -1;
    for (int i = 0; i < n; i++)
        st[i] = (struct db_stmt){ stmts[i].sql, stmts[i].params, stmts[i].n, flags ? flags[i] : 0 };
    struct txn_wait w = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .failed = -1 };
    if (!store_db || db_txn(store_db, 0, NULL, st, n, txn_done, &w) < 0) {
        if (err)
            snprintf(err, errlen, "database busy or closing");
        if (failed)
            *failed = -1;
        return -1;
    }
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    if (failed)
        *failed = w.failed;
    if (err)
        snprintf(err, errlen, "%s", w.error);
    return w.status == 0 ? 0 : -1;
}

void mog_rows_free(struct mog_rows *r)
{
    if (!r)
        return;
    size_t n = r->nrows * (size_t)r->ncols;
    for (size_t i = 0; i < n && r->cell; i++)
        free(r->cell[i]);
    free(r->cell);
    free(r->len);
    free(r);
}

const char *mog_cell(const struct mog_rows *r, size_t row, int col)
{
    if (!r || r->status != 0 || row >= r->nrows || col < 0 || col >= r->ncols)
        return NULL;
    return r->cell[row * (size_t)r->ncols + (size_t)col];
}

int64_t mog_cell_int(const struct mog_rows *r, size_t row, int col)
{
    const char *v = mog_cell(r, row, col);
    return v ? strtoll(v, NULL, 10) : 0;
}

/* ---- DSN and schema ----------------------------------------------------------- */

int mog_store_open(const char *dsn, const char *user, const char *pass, int workers, char *err, size_t errlen)
{
    struct db_config cfg = { 0 };
    /* db_user/db_pass first: a DSN that names user= or password= wins. */
    cfg.user = user;
    cfg.password = pass;
    if (db_config_dsn(&cfg, dsn, err, errlen) < 0)
        return -1;
    /* SQLite: one connection. MySQL: one keeps every request in submission
     * order; more let reads run side by side. */
    cfg.workers = cfg.driver == DB_SQLITE ? 1 : (workers > 0 ? workers : 1);
    store_db = db_open(&cfg, err, errlen);
    db_config_clear(&cfg);
    return store_db ? 0 : -1;
}

void mog_store_close(void)
{
    mog_slaves_close();
    if (store_db)
        db_close(store_db);
    store_db = NULL;
}

/* The MogileFS 2.73 tables (schema version 17). Column types are MySQL's;
 * SQLite takes them as declared types. ENUM columns become TEXT on SQLite,
 * AUTO_INCREMENT becomes INTEGER PRIMARY KEY AUTOINCREMENT, and secondary
 * indexes are separate CREATE INDEX statements on both. */
struct table_def {
    const char *name;
    const char *mysql;
    const char *sqlite;  /* NULL = same as mysql */
    const char *indexes; /* ';'-separated CREATE INDEX statements or NULL */
};

static const struct table_def tables[] = {
    { "domain",
      "CREATE TABLE domain (dmid SMALLINT UNSIGNED NOT NULL PRIMARY KEY, namespace VARCHAR(255), UNIQUE (namespace))",
      NULL, NULL },
    { "class",
      "CREATE TABLE class (dmid SMALLINT UNSIGNED NOT NULL, classid TINYINT UNSIGNED NOT NULL, "
      "PRIMARY KEY (dmid,classid), classname VARCHAR(50), UNIQUE (dmid,classname), "
      "mindevcount TINYINT UNSIGNED NOT NULL, replpolicy VARCHAR(255), hashtype TINYINT UNSIGNED)",
      "CREATE TABLE class (dmid SMALLINT UNSIGNED NOT NULL, classid TINYINT UNSIGNED NOT NULL, "
      "classname VARCHAR(50), mindevcount TINYINT UNSIGNED NOT NULL, hashtype TINYINT UNSIGNED, "
      "replpolicy VARCHAR(255), UNIQUE (dmid,classid), UNIQUE (dmid,classname))",
      NULL },
    { "file",
      "CREATE TABLE file (fid INT UNSIGNED NOT NULL PRIMARY KEY, dmid SMALLINT UNSIGNED NOT NULL, "
      "dkey VARCHAR(255), length BIGINT UNSIGNED, classid TINYINT UNSIGNED NOT NULL, "
      "devcount TINYINT UNSIGNED NOT NULL, UNIQUE dkey (dmid, dkey), INDEX devcount (dmid,classid,devcount))",
      "CREATE TABLE file (fid INT UNSIGNED NOT NULL PRIMARY KEY, dmid SMALLINT UNSIGNED NOT NULL, "
      "dkey VARCHAR(255), length INT UNSIGNED, classid TINYINT UNSIGNED NOT NULL, "
      "devcount TINYINT UNSIGNED NOT NULL, UNIQUE (dmid, dkey))",
      NULL },
    { "tempfile",
      "CREATE TABLE tempfile (fid INT UNSIGNED NOT NULL AUTO_INCREMENT, PRIMARY KEY (fid), "
      "createtime INT UNSIGNED NOT NULL, classid TINYINT UNSIGNED NOT NULL, dmid SMALLINT UNSIGNED NOT NULL, "
      "dkey VARCHAR(255), devids VARCHAR(60))",
      "CREATE TABLE tempfile (fid INTEGER PRIMARY KEY AUTOINCREMENT, createtime INT UNSIGNED NOT NULL, "
      "classid TINYINT UNSIGNED NOT NULL, dmid SMALLINT UNSIGNED NOT NULL, dkey VARCHAR(255), devids VARCHAR(60))",
      NULL },
    { "file_to_delete", "CREATE TABLE file_to_delete (fid INT UNSIGNED NOT NULL, PRIMARY KEY (fid))", NULL, NULL },
    { "unreachable_fids",
      "CREATE TABLE unreachable_fids (fid INT UNSIGNED NOT NULL, lastupdate INT UNSIGNED NOT NULL, PRIMARY KEY (fid))",
      NULL, "CREATE INDEX lastupdate ON unreachable_fids (lastupdate)" },
    { "file_on",
      "CREATE TABLE file_on (fid INT UNSIGNED NOT NULL, devid MEDIUMINT UNSIGNED NOT NULL, PRIMARY KEY (fid, devid))",
      NULL, "CREATE INDEX devid ON file_on (devid)" },
    { "file_on_corrupt",
      "CREATE TABLE file_on_corrupt (fid INT UNSIGNED NOT NULL, devid MEDIUMINT UNSIGNED NOT NULL, "
      "PRIMARY KEY (fid, devid))",
      NULL, NULL },
    { "host",
      "CREATE TABLE host (hostid MEDIUMINT UNSIGNED NOT NULL PRIMARY KEY, "
      "status ENUM('alive','dead','down','readonly'), http_port MEDIUMINT UNSIGNED DEFAULT 7500, "
      "http_get_port MEDIUMINT UNSIGNED, hostname VARCHAR(40), hostip VARCHAR(15), altip VARCHAR(15), "
      "altmask VARCHAR(18), UNIQUE (hostname), UNIQUE (hostip), UNIQUE (altip))",
      "CREATE TABLE host (hostid MEDIUMINT UNSIGNED NOT NULL PRIMARY KEY, status TEXT, "
      "http_port MEDIUMINT UNSIGNED DEFAULT 7500, http_get_port MEDIUMINT UNSIGNED, hostname VARCHAR(40), "
      "hostip VARCHAR(15), altip VARCHAR(15), altmask VARCHAR(18), UNIQUE (hostname), UNIQUE (hostip), "
      "UNIQUE (altip))",
      NULL },
    { "device",
      "CREATE TABLE device (devid MEDIUMINT UNSIGNED NOT NULL, hostid MEDIUMINT UNSIGNED NOT NULL, "
      "status ENUM('alive','dead','down','readonly','drain'), weight MEDIUMINT DEFAULT 100, "
      "mb_total INT UNSIGNED, mb_used INT UNSIGNED, mb_asof INT UNSIGNED, PRIMARY KEY (devid))",
      "CREATE TABLE device (devid MEDIUMINT UNSIGNED NOT NULL, hostid MEDIUMINT UNSIGNED NOT NULL, status TEXT, "
      "weight MEDIUMINT DEFAULT 100, mb_total INT UNSIGNED, mb_used INT UNSIGNED, mb_asof INT UNSIGNED, "
      "PRIMARY KEY (devid))",
      "CREATE INDEX status ON device (status)" },
    { "server_settings", "CREATE TABLE server_settings (field VARCHAR(50) PRIMARY KEY, value TEXT)", NULL, NULL },
    { "file_to_replicate",
      "CREATE TABLE file_to_replicate (fid INT UNSIGNED NOT NULL PRIMARY KEY, nexttry INT UNSIGNED NOT NULL, "
      "fromdevid INT UNSIGNED, failcount TINYINT UNSIGNED NOT NULL DEFAULT 0, "
      "flags SMALLINT UNSIGNED NOT NULL DEFAULT 0)",
      NULL, "CREATE INDEX nexttry ON file_to_replicate (nexttry)" },
    { "file_to_delete_later",
      "CREATE TABLE file_to_delete_later (fid INT UNSIGNED NOT NULL PRIMARY KEY, delafter INT UNSIGNED NOT NULL)", NULL,
      "CREATE INDEX delafter ON file_to_delete_later (delafter)" },
    { "fsck_log",
      "CREATE TABLE fsck_log (logid INT UNSIGNED NOT NULL AUTO_INCREMENT, PRIMARY KEY (logid), "
      "utime INT UNSIGNED NOT NULL, fid INT UNSIGNED NULL, evcode CHAR(4), devid MEDIUMINT UNSIGNED)",
      "CREATE TABLE fsck_log (logid INTEGER PRIMARY KEY AUTOINCREMENT, utime INT UNSIGNED NOT NULL, "
      "fid INT UNSIGNED NULL, evcode CHAR(4), devid MEDIUMINT UNSIGNED)",
      "CREATE INDEX utime ON fsck_log (utime)" },
    { "file_to_queue",
      "CREATE TABLE file_to_queue (fid INT UNSIGNED NOT NULL, devid INT UNSIGNED, type TINYINT UNSIGNED NOT NULL, "
      "nexttry INT UNSIGNED NOT NULL, failcount TINYINT UNSIGNED NOT NULL default '0', "
      "flags SMALLINT UNSIGNED NOT NULL default '0', arg TEXT, PRIMARY KEY (fid, type))",
      NULL, "CREATE INDEX type_nexttry ON file_to_queue (type,nexttry)" },
    { "file_to_delete2",
      "CREATE TABLE file_to_delete2 (fid INT UNSIGNED NOT NULL PRIMARY KEY, nexttry INT UNSIGNED NOT NULL, "
      "failcount TINYINT UNSIGNED NOT NULL default '0')",
      NULL, "CREATE INDEX file_to_delete2_nexttry ON file_to_delete2 (nexttry)" },
    { "checksum",
      "CREATE TABLE checksum (fid INT UNSIGNED NOT NULL PRIMARY KEY, hashtype TINYINT UNSIGNED NOT NULL, "
      "checksum VARBINARY(64) NOT NULL)",
      NULL, NULL },
    { "lock",
      "CREATE TABLE lock (lockid INT UNSIGNED NOT NULL PRIMARY KEY, hostname VARCHAR(255) NOT NULL, "
      "pid INT UNSIGNED NOT NULL, acquiredat INT UNSIGNED NOT NULL)",
      NULL, NULL },
};

static bool table_exists(const char *name)
{
    struct db_value p = DB_TEXTN(name, strlen(name));
    struct mog_rows *r =
        mog_db_is_mysql()
            ? mog_sql(
                  "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?",
                  &p, 1)
            : mog_sql("SELECT name FROM sqlite_master WHERE type='table' AND name=?", &p, 1);
    bool yes = r && r->status == 0 && r->nrows > 0;
    mog_rows_free(r);
    return yes;
}

/* Create missing tables (as mogdbsetup does) and record schema_version 17.
 * An existing MogileFS database is used as is; missing 2.x columns
 * (class.replpolicy, class.hashtype) are added. */
int mog_store_setup_schema(char *err, size_t errlen)
{
    bool mysql = mog_db_is_mysql();
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        const struct table_def *t = &tables[i];
        if (!strcmp(t->name, "lock") && mysql)
            continue; /* MySQL uses GET_LOCK */
        if (table_exists(t->name))
            continue;
        const char *sql = (!mysql && t->sqlite) ? t->sqlite : t->mysql;
        char buf[1200];
        if (mysql) {
            snprintf(buf, sizeof buf, "%s ENGINE=InnoDB", sql);
            sql = buf;
        }
        struct mog_rows *r = mog_sql(sql, NULL, 0);
        if (!r || r->status != 0) {
            snprintf(err, errlen, "creating table %s: %s", t->name, r ? r->error : "?");
            mog_rows_free(r);
            return -1;
        }
        mog_rows_free(r);
        if (t->indexes) {
            r = mog_sql(t->indexes, NULL, 0);
            if (!r || r->status != 0) {
                snprintf(err, errlen, "creating index on %s: %s", t->name, r ? r->error : "?");
                mog_rows_free(r);
                return -1;
            }
            mog_rows_free(r);
        }
        log_info("mogilefsd: created table %s", t->name);
    }
    /* Upgrades from older schemas: columns added in later versions. */
    struct mog_rows *r = mog_sql("SELECT replpolicy FROM class LIMIT 1", NULL, 0);
    if (r && r->status != 0) {
        mog_rows_free(r);
        r = mog_sql("ALTER TABLE class ADD COLUMN replpolicy VARCHAR(255)", NULL, 0);
    }
    mog_rows_free(r);
    r = mog_sql("SELECT hashtype FROM class LIMIT 1", NULL, 0);
    if (r && r->status != 0) {
        mog_rows_free(r);
        r = mog_sql("ALTER TABLE class ADD COLUMN hashtype TINYINT UNSIGNED", NULL, 0);
    }
    mog_rows_free(r);
    struct db_value p[2] = { DB_TEXTN("schema_version", 14), DB_TEXTN("17", 2) };
    r = mog_sql_write("REPLACE INTO server_settings (field, value) VALUES (?, ?)", p, 2);
    int rc = (r && r->status == 0) ? 0 : -1;
    if (rc < 0)
        snprintf(err, errlen, "setting schema_version: %s", r ? r->error : "?");
    mog_rows_free(r);
    return rc;
}

/* ---- states ------------------------------------------------------------------------ */

static const char *const dev_states[] = { "alive", "readonly", "drain", "down", "dead" };
static const char *const host_states[] = { "alive", "readonly", "down", "dead" };

const char *mog_dev_state_name(enum mog_dev_state s) { return s < MOG_DEV_UNKNOWN ? dev_states[s] : "unknown"; }

enum mog_dev_state mog_dev_state_parse(const char *s)
{
    for (int i = 0; s && i < (int)MOG_DEV_UNKNOWN; i++)
        if (!strcmp(s, dev_states[i]))
            return (enum mog_dev_state)i;
    return MOG_DEV_UNKNOWN;
}

const char *mog_host_state_name(enum mog_host_state s) { return s < MOG_HOST_UNKNOWN ? host_states[s] : "unknown"; }

enum mog_host_state mog_host_state_parse(const char *s)
{
    for (int i = 0; s && i < (int)MOG_HOST_UNKNOWN; i++)
        if (!strcmp(s, host_states[i]))
            return (enum mog_host_state)i;
    return MOG_HOST_UNKNOWN;
}

const char *mog_observed_name(enum mog_observed o)
{
    static const char *const n[] = { "", "writeable", "readable", "unreachable" };
    return n[o];
}

bool mog_dev_can_read(const struct mog_device *d, const struct mog_host *h)
{
    if (d->status != MOG_DEV_ALIVE && d->status != MOG_DEV_READONLY && d->status != MOG_DEV_DRAIN)
        return false;
    if (!h || (h->status != MOG_HOST_ALIVE && h->status != MOG_HOST_READONLY))
        return false;
    return d->observed != MOG_OBS_UNREACHABLE;
}

bool mog_dev_can_write(const struct mog_device *d, const struct mog_host *h, int64_t min_free_mb)
{
    if (d->status != MOG_DEV_ALIVE || !h || h->status != MOG_HOST_ALIVE)
        return false;
    if (d->observed != MOG_OBS_WRITEABLE)
        return false;
    if (d->mb_total >= 0 && d->mb_used >= 0 && d->mb_total - d->mb_used < min_free_mb)
        return false;
    return true;
}

int mog_dev_url(char *out, size_t len, const struct mog_host *h, int64_t devid, int64_t fid, bool for_get, bool alt)
{
    char path[96];
    mog_fid_path(path, sizeof path, devid, fid);
    int port = (for_get && h->http_get_port > 0) ? h->http_get_port : h->http_port;
    const char *ip = (alt && h->altip[0]) ? h->altip : h->ip;
    return snprintf(out, len, "http://%s:%d%s", ip, port, path);
}

/* ---- the cache -------------------------------------------------------------------------- */

static void copy_str(char *dst, size_t n, const char *src) { snprintf(dst, n, "%s", src ? src : ""); }

static int64_t cell_or(const struct mog_rows *r, size_t row, int col, int64_t dflt)
{
    const char *v = mog_cell(r, row, col);
    return v ? strtoll(v, NULL, 10) : dflt;
}

static _Atomic uint64_t last_reload_ms;

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int mog_cache_reload_if_stale(int ms)
{
    if (mono_ms() - last_reload_ms < (uint64_t)ms)
        return 0;
    return mog_cache_reload();
}

int mog_cache_reload(void)
{
    last_reload_ms = mono_ms();
    struct mog_rows *rd = mog_sql("SELECT dmid, namespace FROM domain", NULL, 0);
    struct mog_rows *rc =
        mog_sql("SELECT dmid, classid, classname, mindevcount, replpolicy, hashtype FROM class", NULL, 0);
    struct mog_rows *rh = mog_sql("SELECT hostid, status, http_port, http_get_port, hostname, hostip, altip, altmask "
                                  "FROM host",
                                  NULL, 0);
    struct mog_rows *rv = mog_sql("SELECT devid, hostid, status, weight, mb_total, mb_used, mb_asof FROM device "
                                  "ORDER BY devid",
                                  NULL, 0);
    int ret = -1;
    if (!rd || !rc || !rh || !rv || rd->status || rc->status || rh->status || rv->status)
        goto out;
    struct mog_domain *dom = calloc(rd->nrows + 1, sizeof *dom);
    struct mog_class *cls = calloc(rc->nrows + 1, sizeof *cls);
    struct mog_host *hosts = calloc(rh->nrows + 1, sizeof *hosts);
    struct mog_device *devs = calloc(rv->nrows + 1, sizeof *devs);
    if (!dom || !cls || !hosts || !devs) {
        free(dom), free(cls), free(hosts), free(devs);
        goto out;
    }
    for (size_t i = 0; i < rd->nrows; i++) {
        dom[i].dmid = mog_cell_int(rd, i, 0);
        copy_str(dom[i].name, sizeof dom[i].name, mog_cell(rd, i, 1));
    }
    for (size_t i = 0; i < rc->nrows; i++) {
        cls[i].dmid = mog_cell_int(rc, i, 0);
        cls[i].classid = mog_cell_int(rc, i, 1);
        copy_str(cls[i].name, sizeof cls[i].name, mog_cell(rc, i, 2));
        cls[i].mindevcount = (int)mog_cell_int(rc, i, 3);
        copy_str(cls[i].replpolicy, sizeof cls[i].replpolicy, mog_cell(rc, i, 4));
        cls[i].hashtype = (int)mog_cell_int(rc, i, 5);
    }
    for (size_t i = 0; i < rh->nrows; i++) {
        hosts[i].hostid = mog_cell_int(rh, i, 0);
        hosts[i].status = mog_host_state_parse(mog_cell(rh, i, 1));
        hosts[i].http_port = (int)cell_or(rh, i, 2, 7500);
        hosts[i].http_get_port = (int)cell_or(rh, i, 3, 0);
        copy_str(hosts[i].name, sizeof hosts[i].name, mog_cell(rh, i, 4));
        copy_str(hosts[i].ip, sizeof hosts[i].ip, mog_cell(rh, i, 5));
        copy_str(hosts[i].altip, sizeof hosts[i].altip, mog_cell(rh, i, 6));
        copy_str(hosts[i].altmask, sizeof hosts[i].altmask, mog_cell(rh, i, 7));
    }
    for (size_t i = 0; i < rv->nrows; i++) {
        devs[i].devid = mog_cell_int(rv, i, 0);
        devs[i].hostid = mog_cell_int(rv, i, 1);
        devs[i].status = mog_dev_state_parse(mog_cell(rv, i, 2));
        devs[i].weight = (int)cell_or(rv, i, 3, 100);
        devs[i].mb_total = cell_or(rv, i, 4, -1);
        devs[i].mb_used = cell_or(rv, i, 5, -1);
        devs[i].mb_asof = cell_or(rv, i, 6, -1);
        devs[i].reject_bad_md5 = -1;
    }
    pthread_rwlock_wrlock(&mog_cache.lock);
    /* Keep what the monitor observed about devices that still exist. */
    for (size_t i = 0; i < rv->nrows; i++)
        for (size_t j = 0; j < mog_cache.ndevices; j++)
            if (mog_cache.devices[j].devid == devs[i].devid) {
                devs[i].observed = mog_cache.devices[j].observed;
                devs[i].utilization = mog_cache.devices[j].utilization;
                devs[i].reject_bad_md5 = mog_cache.devices[j].reject_bad_md5;
                if (mog_cache.devices[j].mb_asof > devs[i].mb_asof) {
                    devs[i].mb_total = mog_cache.devices[j].mb_total;
                    devs[i].mb_used = mog_cache.devices[j].mb_used;
                    devs[i].mb_asof = mog_cache.devices[j].mb_asof;
                }
            }
    free(mog_cache.domains);
    free(mog_cache.classes);
    free(mog_cache.hosts);
    free(mog_cache.devices);
    mog_cache.domains = dom, mog_cache.ndomains = rd->nrows;
    mog_cache.classes = cls, mog_cache.nclasses = rc->nrows;
    mog_cache.hosts = hosts, mog_cache.nhosts = rh->nrows;
    mog_cache.devices = devs, mog_cache.ndevices = rv->nrows;
    mog_cache.generation++;
    pthread_rwlock_unlock(&mog_cache.lock);
    ret = 0;
out:
    mog_rows_free(rd);
    mog_rows_free(rc);
    mog_rows_free(rh);
    mog_rows_free(rv);
    return ret;
}

#define CACHE_FIND(arr, n, cond, out)                                                                                  \
    do {                                                                                                               \
        int found_ = -1;                                                                                               \
        pthread_rwlock_rdlock(&mog_cache.lock);                                                                        \
        for (size_t i_ = 0; i_ < mog_cache.n; i_++) {                                                                  \
            const __typeof__(*mog_cache.arr) *e = &mog_cache.arr[i_];                                                  \
            if (cond) {                                                                                                \
                *(out) = *e;                                                                                           \
                found_ = 0;                                                                                            \
                break;                                                                                                 \
            }                                                                                                          \
        }                                                                                                              \
        pthread_rwlock_unlock(&mog_cache.lock);                                                                        \
        return found_;                                                                                                 \
    } while (0)

int mog_domain_by_name(const char *name, struct mog_domain *out)
{
    CACHE_FIND(domains, ndomains, !strcmp(e->name, name), out);
}

int mog_domain_by_id(int64_t dmid, struct mog_domain *out) { CACHE_FIND(domains, ndomains, e->dmid == dmid, out); }

int mog_class_by_name(int64_t dmid, const char *name, struct mog_class *out)
{
    CACHE_FIND(classes, nclasses, e->dmid == dmid && !strcmp(e->name, name), out);
}

int mog_class_by_id(int64_t dmid, int64_t classid, struct mog_class *out)
{
    CACHE_FIND(classes, nclasses, e->dmid == dmid && e->classid == classid, out);
}

int mog_host_by_id(int64_t hostid, struct mog_host *out) { CACHE_FIND(hosts, nhosts, e->hostid == hostid, out); }

int mog_host_by_name(const char *name, struct mog_host *out) { CACHE_FIND(hosts, nhosts, !strcmp(e->name, name), out); }

int mog_device_by_id(int64_t devid, struct mog_device *out) { CACHE_FIND(devices, ndevices, e->devid == devid, out); }

size_t mog_devices_copy(struct mog_device **out)
{
    pthread_rwlock_rdlock(&mog_cache.lock);
    size_t n = mog_cache.ndevices;
    *out = calloc(n + 1, sizeof **out);
    if (*out && n)
        memcpy(*out, mog_cache.devices, n * sizeof **out);
    pthread_rwlock_unlock(&mog_cache.lock);
    return *out ? n : 0;
}

size_t mog_hosts_copy(struct mog_host **out)
{
    pthread_rwlock_rdlock(&mog_cache.lock);
    size_t n = mog_cache.nhosts;
    *out = calloc(n + 1, sizeof **out);
    if (*out && n)
        memcpy(*out, mog_cache.hosts, n * sizeof **out);
    pthread_rwlock_unlock(&mog_cache.lock);
    return *out ? n : 0;
}

void mog_device_set_observed(int64_t devid, enum mog_observed obs, int64_t mb_total, int64_t mb_used)
{
    pthread_rwlock_wrlock(&mog_cache.lock);
    for (size_t i = 0; i < mog_cache.ndevices; i++)
        if (mog_cache.devices[i].devid == devid) {
            mog_cache.devices[i].observed = obs;
            if (mb_total >= 0) {
                mog_cache.devices[i].mb_total = mb_total;
                mog_cache.devices[i].mb_used = mb_used;
                mog_cache.devices[i].mb_asof = (int64_t)time(NULL);
            }
        }
    pthread_rwlock_unlock(&mog_cache.lock);
}

/* ---- server_settings ------------------------------------------------------------------ */

int mog_setting_get(const char *key, char *out, size_t outlen)
{
    struct db_value p = DB_TEXTN(key, strlen(key));
    struct mog_rows *r = mog_sql("SELECT value FROM server_settings WHERE field=?", &p, 1);
    int rc = -1;
    if (r && r->status == 0 && r->nrows > 0) {
        snprintf(out, outlen, "%s", mog_cell(r, 0, 0) ? mog_cell(r, 0, 0) : "");
        rc = 0;
    }
    mog_rows_free(r);
    return rc;
}

int mog_setting_set(const char *key, const char *value)
{
    struct db_value p[2] = { DB_TEXTN(key, strlen(key)), DB_TEXTN(value, strlen(value)) };
    struct mog_rows *r = mog_sql_write("REPLACE INTO server_settings (field, value) VALUES (?, ?)", p, 2);
    int rc = (r && r->status == 0) ? 0 : -1;
    mog_rows_free(r);
    return rc;
}

void mog_device_set_utilization(int64_t devid, double util)
{
    pthread_rwlock_wrlock(&mog_cache.lock);
    for (size_t i = 0; i < mog_cache.ndevices; i++)
        if (mog_cache.devices[i].devid == devid)
            mog_cache.devices[i].utilization = util;
    pthread_rwlock_unlock(&mog_cache.lock);
}

void mog_device_set_reject_md5(int64_t devid, int v)
{
    pthread_rwlock_wrlock(&mog_cache.lock);
    for (size_t i = 0; i < mog_cache.ndevices; i++)
        if (mog_cache.devices[i].devid == devid)
            mog_cache.devices[i].reject_bad_md5 = v;
    pthread_rwlock_unlock(&mog_cache.lock);
}

/* ---- read slaves -------------------------------------------------------------------------
 * MogileFS 2.73's slaves: server settings slave_keys = "a,b=W" and
 * slave_<key> = "DSN|user|pass" (mogadm slave add/modify/delete write them
 * and bump slave_version). As the original, only a MySQL tracker uses
 * them, and only for the reads it marks slave-safe: the file row of a
 * (domain, key) and the devices of a fid in get_paths, file_info and
 * edit_file. A slave that fails to connect or answer is skipped for
 * slave_dead_retry_timeout (default 15) seconds times its failures in a
 * row (at most 20), and the read goes to the master. Each slave has as
 * many connections of its own (common/db's db_conn, opened when first
 * needed) as there are query threads, as each of the original's query
 * workers has its own, so a read never finds them all busy. A failure
 * makes the slave's other connections stale too (reopened when it is
 * tried again). */

#define MOG_MAX_SLAVES 16

struct slave_conn {
    pthread_mutex_t mu; /* held while a thread reads through it */
    struct db_conn *conn;
    unsigned gen; /* the slave's generation it was opened in */
};

struct mog_slave {
    char key[64];
    char spec[512]; /* DSN|user|pass as configured */
    struct slave_conn *c;
    int nconn;
    pthread_mutex_t state_mu; /* dead_until, backoff, gen */
    time_t dead_until;
    int backoff;
    unsigned gen; /* bumped by a failure: older connections are stale */
};

static struct {
    pthread_mutex_t mu; /* guards the list (not the connections) */
    struct mog_slave *s[MOG_MAX_SLAVES];
    size_t n;
    char version[32];
    time_t checked;
    bool stale;
} S = { .mu = PTHREAD_MUTEX_INITIALIZER, .stale = true };

void mog_slaves_invalidate(void)
{
    pthread_mutex_lock(&S.mu);
    S.stale = true;
    pthread_mutex_unlock(&S.mu);
}

static void slave_free(struct mog_slave *sl)
{
    for (int j = 0; j < sl->nconn; j++) {
        /* Wait for a thread still reading through it. */
        pthread_mutex_lock(&sl->c[j].mu);
        pthread_mutex_unlock(&sl->c[j].mu);
        if (sl->c[j].conn)
            db_conn_close(sl->c[j].conn);
        pthread_mutex_destroy(&sl->c[j].mu);
    }
    pthread_mutex_destroy(&sl->state_mu);
    free(sl->c);
    free(sl);
}

/* Re-read the slave list when slave_version changed (checked at most once
 * a second; at once after this tracker changed a slave setting). */
static void slaves_refresh(void)
{
    time_t now = time(NULL);
    pthread_mutex_lock(&S.mu);
    bool look = S.stale || now != S.checked;
    S.checked = now;
    pthread_mutex_unlock(&S.mu);
    if (!look)
        return;
    char ver[32] = "";
    mog_setting_get("slave_version", ver, sizeof ver);
    pthread_mutex_lock(&S.mu);
    bool changed = S.stale || strcmp(ver, S.version);
    S.stale = false;
    pthread_mutex_unlock(&S.mu);
    if (!changed)
        return;
    char keys[1024] = "";
    mog_setting_get("slave_keys", keys, sizeof keys);
    struct mog_slave *fresh[MOG_MAX_SLAVES];
    size_t n = 0;
    char *save = NULL;
    for (char *k = strtok_r(keys, ", \t", &save); k && n < MOG_MAX_SLAVES; k = strtok_r(NULL, ", \t", &save)) {
        char *eq = strchr(k, '='); /* "key=weight": the weight is MogileFS::Admin's, unused by the tracker */
        if (eq)
            *eq = '\0';
        char skey[96], spec[512];
        snprintf(skey, sizeof skey, "slave_%s", k);
        if (mog_setting_get(skey, spec, sizeof spec) < 0 || !spec[0]) {
            log_warn("mogilefsd: slave %s: no %s setting", k, skey);
            continue;
        }
        if (!strchr(spec, '|')) {
            log_warn("mogilefsd: %s is not DSN|user|pass: ignored", skey);
            continue;
        }
        struct mog_slave *sl = calloc(1, sizeof *sl);
        int nconn = mog.cfg.query_jobs < 1 ? 1 : mog.cfg.query_jobs > 256 ? 256 : mog.cfg.query_jobs;
        if (sl)
            sl->c = calloc((size_t)nconn, sizeof *sl->c);
        if (!sl || !sl->c) {
            free(sl);
            break;
        }
        sl->nconn = nconn;
        for (int j = 0; j < nconn; j++)
            pthread_mutex_init(&sl->c[j].mu, NULL);
        pthread_mutex_init(&sl->state_mu, NULL);
        snprintf(sl->key, sizeof sl->key, "%s", k);
        snprintf(sl->spec, sizeof sl->spec, "%s", spec);
        fresh[n++] = sl;
    }
    struct mog_slave *old[MOG_MAX_SLAVES];
    size_t nold;
    pthread_mutex_lock(&S.mu);
    nold = S.n;
    memcpy(old, S.s, nold * sizeof *old);
    memcpy(S.s, fresh, n * sizeof *fresh);
    S.n = n;
    snprintf(S.version, sizeof S.version, "%s", ver);
    pthread_mutex_unlock(&S.mu);
    for (size_t i = 0; i < nold; i++)
        slave_free(old[i]);
}

static struct db_conn *slave_connect(const struct mog_slave *sl, char *err, size_t errlen)
{
    char spec[512];
    snprintf(spec, sizeof spec, "%s", sl->spec);
    char *user = strchr(spec, '|');
    *user++ = '\0';
    char *pass = strchr(user, '|');
    if (pass)
        *pass++ = '\0';
    struct db_config cfg = { 0 };
    cfg.user = user;
    cfg.password = pass ? pass : "";
    if (db_config_dsn(&cfg, spec, err, errlen) < 0)
        return NULL;
    char tmo[16];
    cfg.connect_timeout_s =
        mog_setting_get("slave_connect_timeout", tmo, sizeof tmo) == 0 && atoi(tmo) > 0 ? atoi(tmo) : 1;
    cfg.io_timeout_s = 5;
    struct db_conn *conn = db_conn_open(&cfg, err, errlen);
    db_config_clear(&cfg);
    return conn;
}

/* sc (held by the caller) failed: the slave rests, its connections are
 * stale. */
static void slave_failed(struct mog_slave *sl, struct slave_conn *sc, const char *why)
{
    char tmo[16];
    int retry = mog_setting_get("slave_dead_retry_timeout", tmo, sizeof tmo) == 0 && atoi(tmo) > 0 ? atoi(tmo) : 15;
    if (sc->conn)
        db_conn_close(sc->conn);
    sc->conn = NULL;
    pthread_mutex_lock(&sl->state_mu);
    if (sl->backoff < 20)
        sl->backoff++;
    int rest = retry * sl->backoff;
    sl->dead_until = time(NULL) + rest;
    sl->gen++;
    pthread_mutex_unlock(&sl->state_mu);
    log_warn("mogilefsd: read slave %s: %s (master used for %d s)", sl->key, why, rest);
}

/* One read on a slave: rows, or NULL when no slave could answer. */
static struct mog_rows *slave_read(const char *sql, const struct db_value *params, int n)
{
    if (!mog_db_is_mysql())
        return NULL;
    slaves_refresh();
    pthread_mutex_lock(&S.mu);
    size_t ns = S.n;
    if (ns == 0) {
        pthread_mutex_unlock(&S.mu);
        return NULL;
    }
    size_t start = (size_t)random() % ns;
    struct mog_rows *out = NULL;
    time_t now = time(NULL);
    for (size_t i = 0; i < ns && !out; i++) {
        struct mog_slave *sl = S.s[(start + i) % ns];
        pthread_mutex_lock(&sl->state_mu);
        bool resting = sl->dead_until > now;
        unsigned gen = sl->gen;
        pthread_mutex_unlock(&sl->state_mu);
        if (resting)
            continue;
        struct slave_conn *sc = NULL;
        for (int j = 0; j < sl->nconn && !sc; j++)
            if (pthread_mutex_trylock(&sl->c[j].mu) == 0)
                sc = &sl->c[j];
        if (!sc)
            continue; /* all its connections are busy */
        /* The list lock is not held across the database call; the
         * connection's own lock keeps the slave alive (slave_free waits). */
        pthread_mutex_unlock(&S.mu);
        if (sc->conn && sc->gen != gen) { /* opened before a failure */
            db_conn_close(sc->conn);
            sc->conn = NULL;
        }
        char err[256];
        if (!sc->conn && (sc->conn = slave_connect(sl, err, sizeof err)) == NULL) {
            slave_failed(sl, sc, err);
        } else {
            sc->gen = gen;
            struct db_result res = { 0 };
            if (db_conn_query(sc->conn, sql, params, n, &res) == DB_OK) {
                res.status = 0;
                out = rows_from(&res);
                pthread_mutex_lock(&sl->state_mu);
                sl->backoff = 0;
                pthread_mutex_unlock(&sl->state_mu);
            } else {
                slave_failed(sl, sc, db_conn_error(sc->conn));
            }
            db_result_clear(&res);
        }
        pthread_mutex_unlock(&sc->mu);
        pthread_mutex_lock(&S.mu);
        if (ns != S.n)
            break; /* the list changed meanwhile */
    }
    pthread_mutex_unlock(&S.mu);
    if (out)
        stats_counter_add(&mog.n.slave_reads, 1);
    return out;
}

struct mog_rows *mog_sql_read(const char *sql, const struct db_value *params, int n)
{
    struct mog_rows *r = slave_read(sql, params, n);
    return r ? r : mog_sql(sql, params, n);
}

void mog_slaves_close(void)
{
    pthread_mutex_lock(&S.mu);
    for (size_t i = 0; i < S.n; i++)
        slave_free(S.s[i]);
    S.n = 0;
    pthread_mutex_unlock(&S.mu);
}
