/* cmd_tracker: the tracker commands of MogileFS 2.73 (S: Worker/Query.pm),
 * with its argument names, reply keys and error codes.
 *
 * Each command runs on a query thread and may block on the database and on
 * HTTP to storage nodes; it must never touch a connection (the reply goes
 * into r and session.c sends it from the loop). */
#include "mogilefs/mogilefs.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common/db.h"
#include "common/log.h"

struct cmd_ctx {
    const struct mog_req *req;
    struct mog_reply *r;
    const char *client_ip;
    bool alt_zone; /* zone=alt */
};

typedef int (*cmd_fn)(struct cmd_ctx *c);

static const char *arg(struct cmd_ctx *c, const char *k) { return mog_arg(c->req, k); }

static bool has(const char *s) { return s && *s; }

/* The address a URL handed to this client names, as MogileFS's Host->ip:
 * the host's altip when it has an altip and a valid altmask and either
 * the client asked for zone=alt or its address lies in the altmask. */
static bool use_altip(const struct cmd_ctx *c, const struct mog_host *h)
{
    uint32_t net, mask;
    if (!h->altip[0] || mog_netmask_parse(h->altmask, &net, &mask) < 0)
        return false;
    return c->alt_zone || mog_netmask_match(h->altmask, c->client_ip);
}

static int64_t arg_int(struct cmd_ctx *c, const char *k, int64_t dflt)
{
    const char *v = arg(c, k);
    if (!has(v))
        return dflt;
    return strtoll(v, NULL, 10);
}

static bool all_digits(const char *s)
{
    if (!has(s))
        return false;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s))
            return false;
    return true;
}

static struct db_value T(const char *s) {
    return DB_TEXTN(s ? s : "", s ? strlen(s) : 0);
} static struct db_value I(int64_t v) {
    return DB_INT64(v);
}

/* Run a statement whose only interest is success. */
static int
exec_w(const char *sql, const struct db_value *p, int n, uint64_t *affected)
{
    struct mog_rows *r = mog_sql_write(sql, p, n);
    int rc = (r && r->status == 0) ? 0 : -1;
    if (affected)
        *affected = r ? r->affected : 0;
    if (rc < 0)
        log_warn("mogilefsd: %s: %s", sql, r ? r->error : "?");
    mog_rows_free(r);
    return rc;
}

static bool is_dup_error(const struct mog_rows *r)
{
    return r && r->status != 0 &&
           (strstr(r->error, "UNIQUE") || strstr(r->error, "Duplicate") || strstr(r->error, "unique") ||
            strstr(r->error, "PRIMARY"));
}

/* check_domain: no_domain / unreg_domain. */
static int need_domain(struct cmd_ctx *c, struct mog_domain *d)
{
    const char *name = arg(c, "domain");
    if (!has(name))
        return mog_err(c->r, "no_domain", NULL);
    if (mog_domain_by_name(name, d) < 0) {
        mog_cache_reload_if_stale(200);
        if (mog_domain_by_name(name, d) < 0)
            return mog_err(c->r, "unreg_domain", NULL);
    }
    return 0;
}

/* The class of a file: classid 0 is the implicit "default" class. */
static void class_or_default(int64_t dmid, int64_t classid, struct mog_class *cl)
{
    if (mog_class_by_id(dmid, classid, cl) == 0)
        return;
    memset(cl, 0, sizeof *cl);
    cl->dmid = dmid;
    cl->classid = classid;
    snprintf(cl->name, sizeof cl->name, "default");
    cl->mindevcount = mog.cfg.default_mindevcount;
}

static void wait_next_round(void);

static void after_admin_change(void) { mog_cache_reload(); }

/* ---- simple ones ------------------------------------------------------------------- */

static int cmd_noop(struct cmd_ctx *c) { return mog_ok(c->r); }

static int cmd_sleep(struct cmd_ctx *c)
{
    int64_t d = arg_int(c, "duration", 10);
    if (d < 0)
        d = 0;
    if (d > 600)
        d = 600;
    sleep((unsigned)d);
    return mog_ok(c->r);
}

static int cmd_test(struct cmd_ctx *c)
{
    if (has(arg(c, "crash")))
        return mog_err(c->r, "failure", NULL);
    return mog_ok(c->r);
}

/* The original refreshes its caches and waits for a monitor round, then
 * echoes the request's arguments (internal callers send none). */
static void refresh_and_wait(void)
{
    after_admin_change();
    wait_next_round();
}

static int ok_after_refresh(struct cmd_ctx *c)
{
    refresh_and_wait();
    return mog_ok(c->r);
}

static int cmd_clear_cache(struct cmd_ctx *c)
{
    refresh_and_wait();
    for (int i = 0; i < c->req->nargs; i++)
        if (strcmp(c->req->key[i], "callid"))
            mog_reply_kvn(c->r, c->req->key[i], c->req->val[i], c->req->val_len[i]);
    return mog_ok(c->r);
}

static int cmd_do_monitor_round(struct cmd_ctx *c)
{
    wait_next_round();
    return mog_ok(c->r);
}

/* ---- domains and classes ------------------------------------------------------------ */

static const char *hashtype_name(int t) { return t == 1 ? "MD5" : "NONE"; }

static int cmd_get_domains(struct cmd_ctx *c)
{
    mog_cache_reload(); /* another tracker may have changed them */
    pthread_rwlock_rdlock(&mog_cache.lock);
    size_t nd = mog_cache.ndomains;
    for (size_t i = 0; i < nd; i++) {
        const struct mog_domain *d = &mog_cache.domains[i];
        size_t n = i + 1;
        mog_reply_kvf(c->r, d->name, "domain%zu", n);
        int cn = 0;
        bool have_default = false;
        for (size_t j = 0; j < mog_cache.nclasses; j++)
            if (mog_cache.classes[j].dmid == d->dmid && mog_cache.classes[j].classid == 0)
                have_default = true;
        if (!have_default) {
            cn++;
            mog_reply_kvf(c->r, "default", "domain%zuclass%dname", n, cn);
            mog_reply_kvif(c->r, mog.cfg.default_mindevcount, "domain%zuclass%dmindevcount", n, cn);
            mog_reply_kvf(c->r, "MultipleHosts()", "domain%zuclass%dreplpolicy", n, cn);
            mog_reply_kvf(c->r, "NONE", "domain%zuclass%dhashtype", n, cn);
        }
        for (size_t j = 0; j < mog_cache.nclasses; j++) {
            const struct mog_class *cl = &mog_cache.classes[j];
            if (cl->dmid != d->dmid)
                continue;
            cn++;
            mog_reply_kvf(c->r, cl->classid == 0 ? "default" : cl->name, "domain%zuclass%dname", n, cn);
            mog_reply_kvif(c->r, cl->mindevcount, "domain%zuclass%dmindevcount", n, cn);
            mog_reply_kvf(c->r, cl->replpolicy[0] ? cl->replpolicy : "MultipleHosts()", "domain%zuclass%dreplpolicy", n,
                          cn);
            mog_reply_kvf(c->r, hashtype_name(cl->hashtype), "domain%zuclass%dhashtype", n, cn);
        }
        mog_reply_kvif(c->r, cn, "domain%zuclasses", n);
    }
    pthread_rwlock_unlock(&mog_cache.lock);
    mog_reply_kvi(c->r, "domains", (int64_t)nd);
    return mog_ok(c->r);
}

static int cmd_create_domain(struct cmd_ctx *c)
{
    const char *name = arg(c, "domain");
    if (!has(name))
        return mog_err(c->r, "no_domain", NULL);
    if (strlen(name) > 255)
        return mog_err(c->r, "failure", "Domain name too long");
    /* dmid = max+1, retried when another tracker took it first. */
    for (int attempt = 0; attempt < 5; attempt++) {
        struct mog_rows *r = mog_sql("SELECT COALESCE(MAX(dmid),0)+1 FROM domain", NULL, 0);
        int64_t dmid = mog_cell_int(r, 0, 0);
        mog_rows_free(r);
        if (dmid <= 0 || dmid > 65535)
            return mog_err(c->r, "failure", NULL);
        struct db_value p[2] = { I(dmid), T(name) };
        r = mog_sql_write("INSERT INTO domain (dmid, namespace) VALUES (?, ?)", p, 2);
        if (r && r->status == 0) {
            mog_rows_free(r);
            after_admin_change();
            mog_reply_kv(c->r, "domain", name);
            return mog_ok(c->r);
        }
        struct db_value q = T(name);
        struct mog_rows *e = mog_sql("SELECT dmid FROM domain WHERE namespace=?", &q, 1);
        bool exists = e && e->nrows > 0;
        mog_rows_free(e);
        mog_rows_free(r);
        if (exists)
            return mog_err(c->r, "domain_exists", NULL);
    }
    return mog_err(c->r, "failure", NULL);
}

static int cmd_delete_domain(struct cmd_ctx *c)
{
    const char *name = arg(c, "domain");
    if (!has(name))
        return mog_err(c->r, "no_domain", NULL);
    struct mog_domain d;
    mog_cache_reload();
    if (mog_domain_by_name(name, &d) < 0)
        return mog_err(c->r, "domain_not_found", NULL);
    struct db_value p = I(d.dmid);
    struct mog_rows *r = mog_sql("SELECT fid FROM file WHERE dmid=? LIMIT 1", &p, 1);
    bool files = r && r->nrows > 0;
    mog_rows_free(r);
    if (files)
        return mog_err(c->r, "domain_has_files", NULL);
    r = mog_sql("SELECT classid FROM class WHERE dmid=? AND classid<>0 LIMIT 1", &p, 1);
    bool classes = r && r->nrows > 0;
    mog_rows_free(r);
    if (classes)
        return mog_err(c->r, "domain_has_classes", NULL);
    if (exec_w("DELETE FROM class WHERE dmid=?", &p, 1, NULL) < 0 ||
        exec_w("DELETE FROM domain WHERE dmid=?", &p, 1, NULL) < 0)
        return mog_err(c->r, "failure", NULL);
    after_admin_change();
    mog_reply_kv(c->r, "domain", name);
    return mog_ok(c->r);
}

static bool replpolicy_ok(const char *s)
{
    /* MultipleHosts(), MultipleHosts(N), MultipleDevices(), MultipleDevices(N),
     * and MogileFS-Network's MultipleNetworks(), MultipleNetworks(N),
     * HostsPerNetwork(zone=N, ...) */
    const char *names[] = { "MultipleHosts(", "MultipleDevices(", "MultipleNetworks(" };
    for (int i = 0; i < 3; i++) {
        size_t l = strlen(names[i]);
        if (!strncmp(s, names[i], l)) {
            const char *p = s + l;
            while (isdigit((unsigned char)*p))
                p++;
            return p[0] == ')' && p[1] == '\0';
        }
    }
    struct mog_hpn hpn;
    return mog_hpn_parse(s, &hpn) == 0;
}

static int class_write(struct cmd_ctx *c, bool update)
{
    const char *domain = arg(c, "domain"), *cls = arg(c, "class");
    if (!has(domain))
        return mog_err(c->r, "no_domain", NULL);
    if (!has(cls))
        return mog_err(c->r, "no_class", NULL);
    int64_t mindev = arg_int(c, "mindevcount", 0);
    if (mindev <= 0 || mindev > 255)
        return mog_err(c->r, "invalid_mindevcount", NULL);
    const char *rp = arg(c, "replpolicy");
    if (has(rp) && !replpolicy_ok(rp))
        return mog_err(c->r, "invalid_replpolicy", "Invalid replication policy");
    const char *ht = arg(c, "hashtype");
    int hashtype = -1; /* -1 = leave */
    if (has(ht)) {
        if (!strcmp(ht, "NONE"))
            hashtype = 0;
        else if (!strcmp(ht, "MD5"))
            hashtype = 1;
        else
            return mog_err(c->r, "invalid_hashtype", NULL);
    }
    if (has(arg(c, "update")) && strcmp(arg(c, "update"), "0"))
        update = true;
    mog_cache_reload();
    struct mog_domain d;
    if (mog_domain_by_name(domain, &d) < 0)
        return mog_err(c->r, "domain_not_found", NULL);
    struct mog_class cl;
    bool exists = mog_class_by_name(d.dmid, cls, &cl) == 0;
    int64_t classid;
    if (!exists && update && !strcmp(cls, "default"))
        update = false, exists = false;
    if (update) {
        if (!exists)
            return mog_err(c->r, "class_not_found", NULL);
        classid = cl.classid;
    } else if (!strcmp(cls, "default")) {
        if (exists)
            return mog_err(c->r, "class_exists", NULL);
        classid = 0;
        struct db_value p[3] = { I(d.dmid), I(0), T("default") };
        struct mog_rows *r =
            mog_sql_write("INSERT INTO class (dmid, classid, classname, mindevcount) VALUES (?,?,?,2)", p, 3);
        bool dup = is_dup_error(r), ok = r && r->status == 0;
        mog_rows_free(r);
        if (!ok)
            return mog_err(c->r, dup ? "class_exists" : "failure", NULL);
    } else {
        if (exists)
            return mog_err(c->r, "class_exists", NULL);
        struct db_value p0 = I(d.dmid);
        struct mog_rows *r = mog_sql("SELECT COALESCE(MAX(classid),0)+1 FROM class WHERE dmid=?", &p0, 1);
        classid = mog_cell_int(r, 0, 0);
        mog_rows_free(r);
        if (classid <= 0 || classid > 255)
            return mog_err(c->r, "failure", "Too many classes in domain");
        struct db_value p[3] = { I(d.dmid), I(classid), T(cls) };
        r = mog_sql_write("INSERT INTO class (dmid, classid, classname, mindevcount) VALUES (?,?,?,2)", p, 3);
        bool dup = is_dup_error(r), ok = r && r->status == 0;
        mog_rows_free(r);
        if (!ok)
            return mog_err(c->r, dup ? "class_exists" : "failure", NULL);
    }
    struct db_value pm[3] = { I(mindev), I(d.dmid), I(classid) };
    exec_w("UPDATE class SET mindevcount=? WHERE dmid=? AND classid=?", pm, 3, NULL);
    if (has(rp)) {
        struct db_value pr[3] = { T(rp), I(d.dmid), I(classid) };
        exec_w("UPDATE class SET replpolicy=? WHERE dmid=? AND classid=?", pr, 3, NULL);
    }
    if (hashtype >= 0) {
        struct db_value ph[3] = { hashtype ? I(hashtype) : (struct db_value){ .type = DB_NULL }, I(d.dmid),
                                  I(classid) };
        exec_w("UPDATE class SET hashtype=? WHERE dmid=? AND classid=?", ph, 3, NULL);
    }
    after_admin_change();
    mog_reply_kv(c->r, "class", cls);
    mog_reply_kvi(c->r, "mindevcount", mindev);
    mog_reply_kv(c->r, "domain", domain);
    return mog_ok(c->r);
}

static int cmd_create_class(struct cmd_ctx *c) { return class_write(c, false); }
static int cmd_update_class(struct cmd_ctx *c) { return class_write(c, true); }

static int cmd_delete_class(struct cmd_ctx *c)
{
    const char *domain = arg(c, "domain"), *cls = arg(c, "class");
    if (!has(domain))
        return mog_err(c->r, "no_domain", NULL);
    if (!has(cls))
        return mog_err(c->r, "no_class", NULL);
    if (!strcmp(cls, "default"))
        return mog_err(c->r, "nodel_default_class", NULL);
    mog_cache_reload();
    struct mog_domain d;
    if (mog_domain_by_name(domain, &d) < 0)
        return mog_err(c->r, "domain_not_found", NULL);
    struct mog_class cl;
    if (mog_class_by_name(d.dmid, cls, &cl) < 0)
        return mog_err(c->r, "class_not_found", NULL);
    struct db_value p[2] = { I(d.dmid), I(cl.classid) };
    struct mog_rows *r = mog_sql("SELECT fid FROM file WHERE dmid=? AND classid=? LIMIT 1", p, 2);
    bool files = r && r->nrows > 0;
    mog_rows_free(r);
    if (files)
        return mog_err(c->r, "class_has_files", NULL);
    if (exec_w("DELETE FROM class WHERE dmid=? AND classid=?", p, 2, NULL) < 0)
        return mog_err(c->r, "failure", NULL);
    after_admin_change();
    mog_reply_kv(c->r, "domain", domain);
    mog_reply_kv(c->r, "class", cls);
    return mog_ok(c->r);
}

/* ---- hosts and devices ------------------------------------------------------------------ */

static int host_write(struct cmd_ctx *c, bool update)
{
    const char *name = arg(c, "host");
    if (!has(name))
        return mog_err(c->r, "no_host", NULL);
    if (has(arg(c, "update")) && strcmp(arg(c, "update"), "0"))
        update = true;
    mog_cache_reload();
    struct mog_host h;
    bool exists = mog_host_by_name(name, &h) == 0;
    const char *status = arg(c, "status");
    if (update) {
        if (!exists)
            return mog_err(c->r, "host_not_found", NULL);
    } else {
        if (exists)
            return mog_err(c->r, "host_exists", NULL);
        if (!has(arg(c, "ip")))
            return mog_err(c->r, "no_ip", NULL);
        if (!has(arg(c, "port")))
            return mog_err(c->r, "no_port", NULL);
        if (!has(status))
            status = "down";
    }
    if (has(status) && mog_host_state_parse(status) == MOG_HOST_UNKNOWN)
        return mog_err(c->r, "unknown_state", NULL);
    int64_t hostid = exists ? h.hostid : 0;
    if (!exists) {
        struct mog_rows *r = mog_sql("SELECT COALESCE(MAX(hostid),0)+1 FROM host", NULL, 0);
        hostid = mog_cell_int(r, 0, 0);
        mog_rows_free(r);
        struct db_value p[3] = { I(hostid), T(name), T(arg(c, "ip")) };
        r = mog_sql_write("INSERT INTO host (hostid, hostname, hostip) VALUES (?,?,?)", p, 3);
        bool ok = r && r->status == 0, dup = is_dup_error(r);
        mog_rows_free(r);
        if (!ok) /* another host has that ip: the original's "dup" */
            return mog_err(c->r, dup ? "dup" : "failure", NULL);
    }
    static const struct {
        const char *arg, *col;
        bool num;
    } cols[] = {
        { "status", "status", false },        { "ip", "hostip", false },   { "port", "http_port", true },
        { "getport", "http_get_port", true }, { "altip", "altip", false }, { "altmask", "altmask", false },
    };
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++) {
        const char *v = !strcmp(cols[i].arg, "status") ? status : arg(c, cols[i].arg);
        if (!v)
            continue;
        char sql[128];
        snprintf(sql, sizeof sql, "UPDATE host SET %s=? WHERE hostid=?", cols[i].col);
        struct db_value p[2] = { cols[i].num ? (has(v) ? I(strtoll(v, NULL, 10)) : (struct db_value){ .type = DB_NULL })
                                             : (has(v) ? T(v) : (struct db_value){ .type = DB_NULL }),
                                 I(hostid) };
        struct mog_rows *r = mog_sql_write(sql, p, 2);
        bool ok = r && r->status == 0, dup = is_dup_error(r);
        mog_rows_free(r);
        if (!ok)
            return mog_err(c->r, dup ? "dup" : "failure", NULL);
    }
    after_admin_change();
    mog_reply_kvi(c->r, "hostid", hostid);
    mog_reply_kv(c->r, "hostname", name);
    return mog_ok(c->r);
}

static int cmd_create_host(struct cmd_ctx *c) { return host_write(c, false); }
static int cmd_update_host(struct cmd_ctx *c) { return host_write(c, true); }

static int cmd_delete_host(struct cmd_ctx *c)
{
    const char *name = arg(c, "host");
    mog_cache_reload();
    struct mog_host h;
    if (!has(name) || mog_host_by_name(name, &h) < 0)
        return mog_err(c->r, "unknown_host", NULL);
    struct db_value p = I(h.hostid);
    struct mog_rows *r = mog_sql("SELECT devid FROM device WHERE hostid=? LIMIT 1", &p, 1);
    bool devs = r && r->nrows > 0;
    mog_rows_free(r);
    if (devs)
        return mog_err(c->r, "host_not_empty", NULL);
    if (exec_w("DELETE FROM host WHERE hostid=?", &p, 1, NULL) < 0)
        return mog_err(c->r, "failure", NULL);
    after_admin_change();
    return mog_ok(c->r);
}

static int cmd_get_hosts(struct cmd_ctx *c)
{
    int64_t only = arg_int(c, "hostid", -1);
    mog_cache_reload();
    struct mog_host *hs;
    size_t nh = mog_hosts_copy(&hs), n = 0;
    for (size_t i = 0; i < nh; i++) {
        const struct mog_host *h = &hs[i];
        if (only >= 0 && h->hostid != only)
            continue;
        n++;
        mog_reply_kvif(c->r, h->hostid, "host%zu_hostid", n);
        mog_reply_kvf(c->r, mog_host_state_name(h->status), "host%zu_status", n);
        mog_reply_kvf(c->r, h->name, "host%zu_hostname", n);
        mog_reply_kvf(c->r, h->ip, "host%zu_hostip", n);
        mog_reply_kvif(c->r, h->http_port, "host%zu_http_port", n);
        if (h->http_get_port > 0)
            mog_reply_kvif(c->r, h->http_get_port, "host%zu_http_get_port", n);
        else
            mog_reply_kvf(c->r, "", "host%zu_http_get_port", n);
        mog_reply_kvf(c->r, h->altip, "host%zu_altip", n);
        mog_reply_kvf(c->r, h->altmask, "host%zu_altmask", n);
    }
    free(hs);
    mog_reply_kvi(c->r, "hosts", (int64_t)n);
    return mog_ok(c->r);
}

static int cmd_create_device(struct cmd_ctx *c)
{
    const char *state = arg(c, "state");
    if (!has(state))
        state = "alive";
    if (mog_dev_state_parse(state) == MOG_DEV_UNKNOWN)
        return mog_err(c->r, "invalid_state", NULL);
    const char *devid = arg(c, "devid");
    if (!all_digits(devid) || strtoll(devid, NULL, 10) <= 0 || strlen(devid) > 8)
        return mog_err(c->r, "invalid_devid", NULL);
    mog_cache_reload();
    struct mog_host h;
    const char *hid = arg(c, "hostid"), *hname = arg(c, "hostname");
    if (all_digits(hid)) {
        if (mog_host_by_id(strtoll(hid, NULL, 10), &h) < 0)
            return mog_err(c->r, "unknown_hostid", NULL);
    } else if (has(hname)) {
        if (mog_host_by_name(hname, &h) < 0)
            return mog_err(c->r, "unknown_host", NULL);
    } else {
        return mog_err(c->r, "bad_args", "No hostid/hostname parameter");
    }
    struct db_value p[3] = { I(strtoll(devid, NULL, 10)), I(h.hostid), T(state) };
    struct mog_rows *r = mog_sql_write("INSERT INTO device (devid, hostid, status) VALUES (?,?,?)", p, 3);
    bool ok = r && r->status == 0, dup = is_dup_error(r);
    mog_rows_free(r);
    if (!ok)
        return mog_err(c->r, dup ? "existing_devid" : "failure", NULL);
    return ok_after_refresh(c);
}

static int cmd_get_devices(struct cmd_ctx *c)
{
    int64_t only = arg_int(c, "devid", -1);
    mog_cache_reload();
    struct mog_device *ds;
    size_t nd = mog_devices_copy(&ds), n = 0;
    for (size_t i = 0; i < nd; i++) {
        const struct mog_device *d = &ds[i];
        if (only >= 0 && d->devid != only)
            continue;
        n++;
        mog_reply_kvif(c->r, d->devid, "dev%zu_devid", n);
        mog_reply_kvif(c->r, d->hostid, "dev%zu_hostid", n);
        mog_reply_kvf(c->r, mog_dev_state_name(d->status), "dev%zu_status", n);
        mog_reply_kvif(c->r, d->weight, "dev%zu_weight", n);
        mog_reply_kvf(c->r, mog_observed_name(d->observed), "dev%zu_observed_state", n);
        if (d->mb_total >= 0) {
            mog_reply_kvif(c->r, d->mb_total, "dev%zu_mb_total", n);
            mog_reply_kvif(c->r, d->mb_used, "dev%zu_mb_used", n);
            mog_reply_kvif(c->r, d->mb_total - d->mb_used, "dev%zu_mb_free", n);
            mog_reply_kvif(c->r, d->mb_asof, "dev%zu_mb_asof", n);
        } else {
            mog_reply_kvf(c->r, "", "dev%zu_mb_total", n);
            mog_reply_kvf(c->r, "", "dev%zu_mb_used", n);
            mog_reply_kvf(c->r, "", "dev%zu_mb_free", n);
            mog_reply_kvf(c->r, "", "dev%zu_mb_asof", n);
        }
        char u[32];
        snprintf(u, sizeof u, "%.1f", d->utilization);
        mog_reply_kvf(c->r, u, "dev%zu_utilization", n);
        mog_reply_kvf(c->r, d->reject_bad_md5 < 0 ? "" : d->reject_bad_md5 ? "1" : "0", "dev%zu_reject_bad_md5", n);
    }
    free(ds);
    mog_reply_kvi(c->r, "devices", (int64_t)n);
    return mog_ok(c->r);
}

static int dev_for_host(struct cmd_ctx *c, struct mog_device *d)
{
    const char *host = arg(c, "host");
    int64_t devid = arg_int(c, "device", 0);
    if (!has(host) || devid <= 0)
        return mog_err(c->r, "bad_params", NULL);
    mog_cache_reload();
    if (mog_device_by_id(devid, d) < 0)
        return mog_err(c->r, "no_device", NULL);
    struct mog_host h;
    if (mog_host_by_id(d->hostid, &h) < 0 || strcmp(h.name, host))
        return mog_err(c->r, "host_mismatch", NULL);
    return 0;
}

static int cmd_set_state(struct cmd_ctx *c)
{
    const char *state = arg(c, "state");
    enum mog_dev_state st = mog_dev_state_parse(state);
    if (st == MOG_DEV_UNKNOWN)
        return mog_err(c->r, "bad_params", NULL);
    struct mog_device d;
    if (dev_for_host(c, &d) < 0)
        return -1;
    if (d.status == MOG_DEV_DEAD && st != MOG_DEV_DEAD)
        return mog_err(c->r, "state_too_high", NULL);
    struct db_value p[2] = { T(state), I(d.devid) };
    if (exec_w("UPDATE device SET status=? WHERE devid=?", p, 2, NULL) < 0)
        return mog_err(c->r, "failure", NULL);
    /* Dead: the reaper drops its copies; drain: its files move elsewhere.
     * Either way every fid on it is queued for the replicator. */
    if ((st == MOG_DEV_DEAD || st == MOG_DEV_DRAIN) && d.status != st)
        mog_enqueue_device(d.devid);
    return ok_after_refresh(c);
}

static int cmd_set_weight(struct cmd_ctx *c)
{
    /* As the original's "weight + 0": a missing or non-numeric weight is
     * 0 (a valid weight), a negative one bad_params. */
    int64_t weight = arg_int(c, "weight", 0);
    if (weight < 0 || weight > 0x7fffffff)
        return mog_err(c->r, "bad_params", NULL);
    struct mog_device d;
    if (dev_for_host(c, &d) < 0)
        return -1;
    struct db_value p[2] = { I(weight), I(d.devid) };
    if (exec_w("UPDATE device SET weight=? WHERE devid=?", p, 2, NULL) < 0)
        return mog_err(c->r, "failure", NULL);
    return ok_after_refresh(c);
}

/* ---- device choice ------------------------------------------------------------------------- */

struct cand {
    struct mog_device d;
    struct mog_host h;
    double w;
};

/* Weighted random order: repeatedly pick by weight without replacement. */
static void weighted_shuffle(struct cand *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double total = 0;
        for (size_t j = i; j < n; j++)
            total += c[j].w;
        double x = (double)random() / RAND_MAX * total, acc = 0;
        size_t pick = n - 1;
        for (size_t j = i; j < n; j++) {
            acc += c[j].w;
            if (x <= acc) {
                pick = j;
                break;
            }
        }
        struct cand t = c[i];
        c[i] = c[pick];
        c[pick] = t;
    }
}

/* The ZoneLocal plugin: candidates on hosts in the client's zone first,
 * each group in the order it had. */
static void zone_local_order(const struct cmd_ctx *c, struct cand *cands, size_t n)
{
    if (!mog_zone_local || n < 2)
        return;
    const char **ips = calloc(n, sizeof *ips);
    size_t *order = calloc(n, sizeof *order);
    struct cand *tmp = calloc(n, sizeof *tmp);
    if (ips && order && tmp) {
        for (size_t i = 0; i < n; i++)
            ips[i] = use_altip(c, &cands[i].h) ? cands[i].h.altip : cands[i].h.ip;
        mog_zone_first(c->client_ip, ips, n, order);
        for (size_t i = 0; i < n; i++)
            tmp[i] = cands[order[i]];
        memcpy(cands, tmp, n * sizeof *tmp);
    }
    free(ips);
    free(order);
    free(tmp);
}

/* The order create_open offers devices in, as MogileFS 2.73's
 * (S: Query.pm cmd_create_open, sort_devs_by_freespace): devices that
 * should get new files; with a size, those known to have more free space
 * than it (or, if none, those whose free space is unknown); the 20 with
 * the most free space by percent, in weighted random order by percent
 * free (the device weight is not used for new files, only for reads).
 * Returns the count; *out is heap. */
static size_t writable_devices(int64_t size, const int64_t *skip, size_t nskip, struct cand **out)
{
    struct mog_device *ds;
    size_t nd = mog_devices_copy(&ds), n = 0;
    struct cand *c = calloc(nd + 1, sizeof *c);
    /* With a size: is any device (writable or not) known to have room? */
    bool any_room = false;
    for (size_t i = 0; size > 0 && i < nd; i++)
        if (ds[i].mb_total > 0 && ds[i].mb_used >= 0 && (ds[i].mb_total - ds[i].mb_used) * 1048576 > size)
            any_room = true;
    for (size_t i = 0; c && i < nd; i++) {
        bool known = ds[i].mb_total > 0 && ds[i].mb_used >= 0;
        if (size > 0 && (any_room ? !known || (ds[i].mb_total - ds[i].mb_used) * 1048576 <= size : known))
            continue;
        struct mog_host h;
        if (mog_host_by_id(ds[i].hostid, &h) < 0 || !mog_dev_can_write(&ds[i], &h, mog.cfg.min_free_space))
            continue;
        bool skipped = false;
        for (size_t k = 0; k < nskip; k++)
            if (skip[k] == ds[i].devid)
                skipped = true;
        if (skipped)
            continue;
        c[n].d = ds[i];
        c[n].h = h;
        c[n].w = known ? 100 * (1.0 - (double)ds[i].mb_used / (double)ds[i].mb_total) : 0;
        n++;
    }
    free(ds);
    /* Most free first (a stable insertion sort keeps devid order among
     * equals), the top 20, then those with weight > 0 by weight. */
    for (size_t i = 1; c && i < n; i++) {
        struct cand t = c[i];
        size_t j = i;
        for (; j > 0 && c[j - 1].w < t.w; j--)
            c[j] = c[j - 1];
        c[j] = t;
    }
    if (n > 20)
        n = 20;
    size_t m = 0;
    for (size_t i = 0; c && i < n; i++)
        if (c[i].w > 0)
            c[m++] = c[i];
    n = m;
    if (c)
        weighted_shuffle(c, n);
    *out = c;
    return n;
}

static bool devices_unobserved(void)
{
    struct mog_device *ds;
    size_t nd = mog_devices_copy(&ds);
    bool any = false;
    for (size_t i = 0; i < nd; i++)
        if (ds[i].observed == MOG_OBS_UNKNOWN && ds[i].status == MOG_DEV_ALIVE)
            any = true;
    free(ds);
    return any;
}

static void wait_next_round(void)
{
    uint64_t want = mog.monitor_round + 2;
    mog_monitor_kick();
    for (int i = 0; i < 500 && mog.monitor_round < want; i++)
        usleep(10000);
}

/* ---- files ------------------------------------------------------------------------------------ */

static int cmd_create_open(struct cmd_ctx *c)
{
    struct mog_domain d;
    if (need_domain(c, &d) < 0)
        return -1;
    const char *cls = arg(c, "class");
    int64_t classid = 0;
    if (has(cls)) {
        struct mog_class cl;
        if (mog_class_by_name(d.dmid, cls, &cl) < 0)
            return mog_err(c->r, "unreg_class", NULL);
        classid = cl.classid;
    }
    const char *key = arg(c, "key");
    if (key && strlen(key) > MOG_MAX_KEY)
        return mog_err(c->r, "key_too_long", "Key too long");
    int64_t fid = arg_int(c, "fid", 0), size = arg_int(c, "size", 0);
    bool multi = arg_int(c, "multi_dest", 0) != 0;
    mog_wait_monitor(5000);
    struct cand *cands;
    size_t n = writable_devices(size, NULL, 0, &cands);
    if (n == 0 && devices_unobserved()) {
        /* New devices the monitor has not looked at yet: give it a round. */
        free(cands);
        wait_next_round();
        n = writable_devices(size, NULL, 0, &cands);
    }
    zone_local_order(c, cands, n);
    if (n == 0) {
        free(cands);
        return mog_err(c->r, "no_devices", NULL);
    }
    /* Up to 3 destinations. MogileFS 2.73 skips a device when
     * Device::not_on_hosts says it is on a chosen destination's host — and
     * that function compares the device's devid with the hosts' hostids, so
     * in effect a device is skipped when its devid equals the hostid of a
     * destination already chosen. Clients see the outcome (how many
     * destinations multi_dest=1 offers), so it is kept as the original has
     * it; copies still land on distinct hosts through the replicator. */
    struct cand pick[3];
    size_t np = 0, want = multi ? 3 : 1;
    for (size_t i = 0; i < n && np < want; i++) {
        bool skip = false;
        for (size_t j = 0; j < np; j++)
            if (pick[j].h.hostid == cands[i].d.devid)
                skip = true;
        if (!skip)
            pick[np++] = cands[i];
    }
    free(cands);
    char devids[64] = "";
    for (size_t i = 0; i < np; i++)
        snprintf(devids + strlen(devids), sizeof devids - strlen(devids), "%s%lld", i ? "," : "",
                 (long long)pick[i].d.devid);
    int64_t now = (int64_t)time(NULL);
    struct mog_rows *r;
    if (fid > 0) {
        struct db_value pf = I(fid);
        r = mog_sql("SELECT fid FROM file WHERE fid=?", &pf, 1);
        bool used = r && r->nrows > 0;
        mog_rows_free(r);
        if (used)
            return mog_err(c->r, "fid_in_use", NULL);
        struct db_value p[6] = { I(fid), I(now), I(classid), I(d.dmid), T(key), T(devids) };
        r = mog_sql_write("INSERT INTO tempfile (fid, createtime, classid, dmid, dkey, devids) VALUES (?,?,?,?,?,?)", p,
                          6);
        if (is_dup_error(r)) {
            mog_rows_free(r);
            return mog_err(c->r, "fid_in_use", NULL);
        }
    } else {
        struct db_value p[5] = { I(now), I(classid), I(d.dmid), T(key), T(devids) };
        r = mog_sql_write("INSERT INTO tempfile (createtime, classid, dmid, dkey, devids) VALUES (?,?,?,?,?)", p, 5);
        if (r && r->status == 0)
            fid = r->last_id;
    }
    bool ok = r && r->status == 0 && fid > 0;
    mog_rows_free(r);
    if (!ok)
        return mog_err(c->r, "db", NULL);
    char url[512];
    mog_reply_kvi(c->r, "fid", fid);
    if (multi) {
        mog_reply_kvi(c->r, "dev_count", (int64_t)np);
        for (size_t i = 0; i < np; i++) {
            mog_dev_url(url, sizeof url, &pick[i].h, pick[i].d.devid, fid, false, use_altip(c, &pick[i].h));
            mog_reply_kvif(c->r, pick[i].d.devid, "devid_%zu", i + 1);
            mog_reply_kvf(c->r, url, "path_%zu", i + 1);
        }
    } else {
        mog_dev_url(url, sizeof url, &pick[0].h, pick[0].d.devid, fid, false, use_altip(c, &pick[0].h));
        mog_reply_kvi(c->r, "devid", pick[0].d.devid);
        mog_reply_kv(c->r, "path", url);
    }
    return mog_ok(c->r);
}

static bool devid_listed(const char *list, int64_t devid)
{
    const char *p = list;
    while (p && *p) {
        if (strtoll(p, NULL, 10) == devid)
            return true;
        p = strchr(p, ',');
        if (p)
            p++;
    }
    return false;
}

static int hexnib(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = tolower(ch);
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

/* "MD5:<32 hex>" -> 16 bytes. */
static int parse_checksum(const char *s, unsigned char *out)
{
    if (strncmp(s, "MD5:", 4) || strlen(s) != 36)
        return -1;
    for (int i = 0; i < 16; i++) {
        int a = hexnib((unsigned char)s[4 + 2 * i]), b = hexnib((unsigned char)s[5 + 2 * i]);
        if (a < 0 || b < 0)
            return -1;
        out[i] = (unsigned char)(a * 16 + b);
    }
    return 0;
}

static void enqueue_delete(int64_t fid)
{
    char sql[160];
    snprintf(sql, sizeof sql, "%s INTO file_to_delete2 (fid, nexttry) VALUES (?, ?)", mog_insert_ignore());
    struct db_value p[2] = { I(fid), I(0) };
    exec_w(sql, p, 2, NULL);
}

/* Forget an upload that cannot be kept, in one transaction: the tempfile
 * row goes (a retried close then gets no_temp_file), the copy is recorded
 * and queued for deletion so nothing is left behind on the device. */
static void discard_upload(int64_t fid, int64_t devid)
{
    char sql_on[128], sql_del[128];
    snprintf(sql_on, sizeof sql_on, "%s INTO file_on (fid, devid) VALUES (?, ?)", mog_insert_ignore());
    snprintf(sql_del, sizeof sql_del, "%s INTO file_to_delete2 (fid, nexttry) VALUES (?, 0)", mog_insert_ignore());
    struct db_value po[2] = { I(fid), I(devid) };
    struct mog_stmt st[3] = {
        { "DELETE FROM tempfile WHERE fid=?", po, 1 },
        { sql_on, po, 2 },
        { sql_del, po, 1 },
    };
    char err[256];
    if (mog_sql_txn(st, NULL, 3, NULL, err, sizeof err) < 0)
        log_warn("mogilefsd: discarding fid %lld: %s", (long long)fid, err);
    mog_delete_kick();
}

/* MD5 of the stored copy (GET through the storage node). */
static int fetch_md5(const char *url, unsigned char *md5, int64_t *len)
{
    int status;
    return mog_http_md5(url, (int)(mog.cfg.node_timeout * 1000) * 10, md5, len, &status);
}

/* Does a new file of this class need the replicator? More than one copy
 * by the class's count or its policy's "(N)", or a HostsPerNetwork policy
 * (which has no count of its own). */
static bool class_wants_copies(const struct mog_class *cl)
{
    struct mog_hpn hpn;
    if (mog_hpn_parse(cl->replpolicy, &hpn) == 0)
        return true;
    const char *paren = strchr(cl->replpolicy, '(');
    if (paren && paren[1] >= '1' && paren[1] <= '9')
        return atoi(paren + 1) > 1;
    return cl->mindevcount > 1;
}

static int cmd_create_close(struct cmd_ctx *c)
{
    struct mog_domain d;
    int64_t fid = arg_int(c, "fid", 0), devid = arg_int(c, "devid", 0);
    const char *path = arg(c, "path");
    /* The original's order: the domain, then fid, devid, path. */
    if (need_domain(c, &d) < 0)
        return -1;
    if (fid <= 0)
        return mog_err(c->r, "no_fid", NULL);
    if (devid <= 0)
        return mog_err(c->r, "no_devid", NULL);
    if (!has(path))
        return mog_err(c->r, "no_path", NULL);
    const char *key = arg(c, "key");
    const char *checksum = arg(c, "checksum");
    unsigned char want_md5[16];
    bool have_sum = has(checksum);
    if (have_sum && parse_checksum(checksum, want_md5) < 0)
        return mog_err(c->r, "invalid_checksum_format", NULL);
    struct mog_device dev;
    struct mog_host h;
    char wurl[512], gurl[512];
    if (mog_device_by_id(devid, &dev) < 0 || mog_host_by_id(dev.hostid, &h) < 0)
        return mog_err(c->r, "invalid_destdev", NULL);
    mog_dev_url(wurl, sizeof wurl, &h, devid, fid, false, use_altip(c, &h));
    mog_dev_url(gurl, sizeof gurl, &h, devid, fid, true, use_altip(c, &h));
    if (strcmp(path, wurl) && strcmp(path, gurl))
        return mog_err(c->r, "bogus_args", NULL);
    /* Claim the tempfile row: exactly one close wins. */
    struct db_value pf = I(fid);
    struct mog_rows *t = mog_sql("SELECT classid, dmid, dkey, devids FROM tempfile WHERE fid=?", &pf, 1);
    if (!t || t->status != 0 || t->nrows == 0) {
        mog_rows_free(t);
        return mog_err(c->r, "no_temp_file", NULL);
    }
    int64_t classid = mog_cell_int(t, 0, 0);
    char devids[64];
    snprintf(devids, sizeof devids, "%s", mog_cell(t, 0, 3) ? mog_cell(t, 0, 3) : "");
    mog_rows_free(t);
    if (!devid_listed(devids, devid)) {
        discard_upload(fid, devid);
        return mog_err(c->r, "invalid_destdev", NULL);
    }
    if (!has(key)) {
        /* An empty key discards the upload, as the original does. */
        discard_upload(fid, devid);
        return mog_ok(c->r);
    }
    /* The size the node really holds. */
    struct mog_http_res res;
    int tmo = (int)(mog.cfg.node_timeout * 1000);
    if (mog_http("HEAD", wurl, NULL, 0, 0, tmo, &res) < 0 || res.status != 200 || res.length < 0) {
        mog_http_res_free(&res);
        discard_upload(fid, devid);
        return mog_err(c->r, "size_verify_error", "Expected: file not found or unreachable");
    }
    int64_t length = res.length;
    mog_http_res_free(&res);
    int64_t client_size = arg_int(c, "size", -1);
    if (has(arg(c, "size")) && client_size >= 0 && client_size != length) {
        discard_upload(fid, devid);
        char msg[700];
        snprintf(msg, sizeof msg, "Expected: %lld; actual: %lld; path: %s", (long long)client_size, (long long)length,
                 wurl);
        return mog_err(c->r, "size_mismatch", msg);
    }
    if (have_sum && arg_int(c, "checksumverify", 0)) {
        unsigned char got[16];
        int64_t glen;
        if (fetch_md5(wurl, got, &glen) < 0 || memcmp(got, want_md5, 16)) {
            discard_upload(fid, devid);
            return mog_err(c->r, "checksum_mismatch", "Checksum of the stored file does not match");
        }
    }
    struct mog_class cl;
    class_or_default(d.dmid, classid, &cl);
    /* Overwriting a key: the old fid goes to the delete queue. */
    struct db_value pk[2] = { I(d.dmid), T(key) };
    struct mog_rows *old = mog_sql("SELECT fid FROM file WHERE dmid=? AND dkey=?", pk, 2);
    int64_t oldfid = mog_cell_int(old, 0, 0);
    mog_rows_free(old);
    /* One transaction: the tempfile row is claimed (exactly one close of a
     * fid wins), the copy's location, its checksum, the replication
     * request, the old fid's removal and the name all commit, or none. */
    char sql_on[128], sql_rep[128], sql_del[128];
    snprintf(sql_on, sizeof sql_on, "%s INTO file_on (fid, devid) VALUES (?, ?)", mog_insert_ignore());
    snprintf(sql_rep, sizeof sql_rep, "%s INTO file_to_replicate (fid, nexttry) VALUES (?, 0)", mog_insert_ignore());
    snprintf(sql_del, sizeof sql_del, "%s INTO file_to_delete2 (fid, nexttry) VALUES (?, 0)", mog_insert_ignore());
    struct db_value po[2] = { I(fid), I(devid) };
    struct db_value pc[3] = { I(fid), I(1), DB_BLOBN(want_md5, 16) };
    struct db_value pd = I(oldfid);
    struct db_value pfile[5] = { I(fid), I(d.dmid), T(key), I(length), I(classid) };
    struct mog_stmt st[8];
    int fl[8] = { 0 }, ns = 0;
    fl[ns] = DB_EXPECT_ONE;
    st[ns++] = (struct mog_stmt){ "DELETE FROM tempfile WHERE fid=?", po, 1 };
    st[ns++] = (struct mog_stmt){ sql_on, po, 2 };
    if (have_sum)
        st[ns++] = (struct mog_stmt){ "REPLACE INTO checksum (fid, hashtype, checksum) VALUES (?,?,?)", pc, 3 };
    if (class_wants_copies(&cl))
        st[ns++] = (struct mog_stmt){ sql_rep, po, 1 };
    if (oldfid > 0 && oldfid != fid) {
        st[ns++] = (struct mog_stmt){ "DELETE FROM file WHERE fid=?", &pd, 1 };
        st[ns++] = (struct mog_stmt){ sql_del, &pd, 1 };
    }
    st[ns++] = (struct mog_stmt){ "REPLACE INTO file (fid, dmid, dkey, length, classid, devcount) VALUES (?,?,?,?,?,1)",
                                  pfile, 5 };
    int failed = -1;
    char err[256];
    if (mog_sql_txn(st, fl, ns, &failed, err, sizeof err) < 0) {
        if (failed == 0)
            return mog_err(c->r, "no_temp_file", NULL);
        log_warn("mogilefsd: create_close fid %lld: %s", (long long)fid, err);
        return mog_err(c->r, "db", NULL);
    }
    stats_counter_add(&mog.n.uploads, 1);
    mog_replicate_kick();
    return mog_ok(c->r);
}

/* (fid, length) for a key; 0, or -1 with the reply sent. slave_ok: a read
 * slave may answer (get_paths, file_info, edit_file, as the original). */
static int lookup_key_on(bool slave_ok, struct cmd_ctx *c, const struct mog_domain *d, const char *key, int64_t *fid,
                         int64_t *len, int64_t *classid, int64_t *devcount)
{
    if (!has(key))
        return mog_err(c->r, "no_key", NULL);
    struct db_value p[2] = { I(d->dmid), T(key) };
    const char *sql = "SELECT fid, length, classid, devcount FROM file WHERE dmid=? AND dkey=?";
    struct mog_rows *r = slave_ok ? mog_sql_read(sql, p, 2) : mog_sql(sql, p, 2);
    if (!r || r->status != 0) {
        mog_rows_free(r);
        return mog_err(c->r, "db", NULL);
    }
    if (r->nrows == 0) {
        mog_rows_free(r);
        return mog_err(c->r, "unknown_key", NULL);
    }
    *fid = mog_cell_int(r, 0, 0);
    if (len)
        *len = mog_cell_int(r, 0, 1);
    if (classid)
        *classid = mog_cell_int(r, 0, 2);
    if (devcount)
        *devcount = mog_cell_int(r, 0, 3);
    mog_rows_free(r);
    return 0;
}

static int lookup_key(struct cmd_ctx *c, const struct mog_domain *d, const char *key, int64_t *fid, int64_t *len,
                      int64_t *classid, int64_t *devcount)
{
    return lookup_key_on(false, c, d, key, fid, len, classid, devcount);
}

static int cmd_get_paths(struct cmd_ctx *c)
{
    struct mog_domain d;
    if (need_domain(c, &d) < 0)
        return -1;
    const char *key = arg(c, "key");
    if (!has(key))
        return mog_err(c->r, "no_key", NULL);
    bool noverify = arg_int(c, "noverify", 0) != 0;
    int64_t pathcount = arg_int(c, "pathcount", 2);
    if (pathcount < 2)
        pathcount = 2;
    struct db_value p[2] = { I(d.dmid), T(key) };
    struct mog_rows *r = mog_sql_read("SELECT f.fid, f.length, o.devid FROM file f LEFT JOIN file_on o ON o.fid = "
                                      "f.fid WHERE f.dmid=? AND f.dkey=?",
                                      p, 2);
    if (!r || r->status != 0) {
        mog_rows_free(r);
        return mog_err(c->r, "db", NULL);
    }
    if (r->nrows == 0) {
        mog_rows_free(r);
        return mog_err(c->r, "unknown_key", NULL);
    }
    stats_counter_add(&mog.n.get_paths, 1);
    int64_t fid = mog_cell_int(r, 0, 0), length = mog_cell_int(r, 0, 1);
    struct cand *cands = calloc(r->nrows + 1, sizeof *cands);
    size_t n = 0, ndrain = 0;
    struct cand backup;
    bool have_backup = false;
    for (size_t i = 0; cands && i < r->nrows; i++) {
        if (!mog_cell(r, i, 2))
            continue;
        struct cand k;
        if (mog_device_by_id(mog_cell_int(r, i, 2), &k.d) < 0 || mog_host_by_id(k.d.hostid, &k.h) < 0)
            continue;
        if (!mog_dev_can_read(&k.d, &k.h)) {
            if (!have_backup && k.d.status != MOG_DEV_DEAD) {
                backup = k;
                have_backup = true;
            }
            continue;
        }
        k.w = k.d.utilization > 0 ? 102 - k.d.utilization : (k.d.weight > 0 ? k.d.weight : 1);
        cands[n++] = k;
    }
    mog_rows_free(r);
    /* Weighted random order (ZoneLocal: the client's zone first), devices
     * being drained last. */
    weighted_shuffle(cands, n);
    zone_local_order(c, cands, n);
    for (size_t i = 0; i < n; i++)
        if (cands[i].d.status != MOG_DEV_DRAIN) {
            struct cand t = cands[ndrain];
            cands[ndrain] = cands[i];
            cands[i] = t;
            ndrain++;
        }
    int64_t out = 0;
    char url[512];
    bool verified = noverify;
    for (size_t i = 0; i < n && out < pathcount; i++) {
        mog_dev_url(url, sizeof url, &cands[i].h, cands[i].d.devid, fid, true, use_altip(c, &cands[i].h));
        if (!verified) {
            struct mog_http_res res;
            int ok = mog_http("HEAD", url, NULL, 0, 0, (int)(mog.cfg.node_timeout * 1000), &res) == 0 &&
                     res.status == 200 && res.length == length;
            mog_http_res_free(&res);
            if (!ok)
                continue;
            verified = true;
        }
        out++;
        mog_reply_kvf(c->r, url, "path%lld", (long long)out);
    }
    if (out == 0 && have_backup) {
        /* Nothing readable: the original still hands out a down copy. */
        mog_dev_url(url, sizeof url, &backup.h, backup.d.devid, fid, true, use_altip(c, &backup.h));
        out++;
        mog_reply_kvf(c->r, url, "path%lld", (long long)out);
    }
    free(cands);
    mog_reply_kvi(c->r, "paths", out);
    return mog_ok(c->r);
}

/* edit_file (experimental in MogileFS 2.73, for MogileFS::Client's
 * edit_file): pick the first readable copy of the key's fid as get_paths
 * would, register a tempfile for the same key with a new fid on that
 * device, move that device's entry from the old fid to the new one, and
 * answer both URLs; the client then MOVEs the old file to the new name
 * (WebDAV, on the storage node), edits it and closes the new fid with
 * create_close, which replaces the key and deletes the old fid's other
 * copies. The original reads the fid through memcache and answers
 * "ERR failure" when no memcache_servers are set; this tracker has no
 * path cache and reads the database. No readable copy: no_devices (the
 * original goes on with an undefined device). */
static int cmd_edit_file(struct cmd_ctx *c)
{
    struct mog_domain d;
    if (need_domain(c, &d) < 0)
        return -1;
    const char *key = arg(c, "key");
    int64_t fid, classid;
    if (lookup_key_on(true, c, &d, key, &fid, NULL, &classid, NULL) < 0)
        return -1;
    struct db_value pf = I(fid);
    struct mog_rows *r = mog_sql_read("SELECT devid FROM file_on WHERE fid=?", &pf, 1);
    if (!r || r->status != 0) {
        mog_rows_free(r);
        return mog_err(c->r, "db", NULL);
    }
    struct cand *cands = calloc(r->nrows + 1, sizeof *cands);
    size_t n = 0;
    for (size_t i = 0; cands && i < r->nrows; i++) {
        struct cand k;
        if (mog_device_by_id(mog_cell_int(r, i, 0), &k.d) < 0 || mog_host_by_id(k.d.hostid, &k.h) < 0)
            continue;
        k.w = k.d.utilization > 0 ? 102 - k.d.utilization : (k.d.weight > 0 ? k.d.weight : 100);
        cands[n++] = k;
    }
    mog_rows_free(r);
    weighted_shuffle(cands, n);
    struct cand pick;
    bool found = false;
    for (size_t i = 0; i < n && !found; i++)
        if (mog_dev_can_read(&cands[i].d, &cands[i].h)) {
            pick = cands[i];
            found = true;
        }
    free(cands);
    if (!found)
        return mog_err(c->r, "no_devices", NULL);
    char devids[24];
    snprintf(devids, sizeof devids, "%lld", (long long)pick.d.devid);
    struct db_value pt[5] = { I((int64_t)time(NULL)), I(classid), I(d.dmid), T(key), T(devids) };
    struct mog_rows *t =
        mog_sql_write("INSERT INTO tempfile (createtime, classid, dmid, dkey, devids) VALUES (?,?,?,?,?)", pt, 5);
    int64_t newfid = (t && t->status == 0) ? t->last_id : 0;
    mog_rows_free(t);
    if (newfid <= 0)
        return mog_err(c->r, "db", NULL);
    /* The device's entry moves from the old fid to the new one at once. */
    char sql_on[128];
    snprintf(sql_on, sizeof sql_on, "%s INTO file_on (fid, devid) VALUES (?, ?)", mog_insert_ignore());
    struct db_value pold[2] = { I(fid), I(pick.d.devid) }, pnew[2] = { I(newfid), I(pick.d.devid) };
    struct mog_stmt st[2] = { { "DELETE FROM file_on WHERE fid=? AND devid=?", pold, 2 }, { sql_on, pnew, 2 } };
    char err[256];
    if (mog_sql_txn(st, NULL, 2, NULL, err, sizeof err) < 0) {
        log_warn("mogilefsd: edit_file fid %lld: %s", (long long)fid, err);
        return mog_err(c->r, "db", NULL);
    }
    char oldurl[512], newurl[512];
    bool alt = use_altip(c, &pick.h);
    mog_dev_url(oldurl, sizeof oldurl, &pick.h, pick.d.devid, fid, true, alt);
    mog_dev_url(newurl, sizeof newurl, &pick.h, pick.d.devid, newfid, true, alt);
    mog_reply_kv(c->r, "oldpath", oldurl);
    mog_reply_kv(c->r, "newpath", newurl);
    mog_reply_kvi(c->r, "fid", newfid);
    mog_reply_kvi(c->r, "devid", pick.d.devid);
    mog_reply_kvi(c->r, "class", classid);
    return mog_ok(c->r);
}

static int cmd_delete(struct cmd_ctx *c)
{
    struct mog_domain d;
    if (need_domain(c, &d) < 0)
        return -1;
    int64_t fid;
    if (lookup_key(c, &d, arg(c, "key"), &fid, NULL, NULL, NULL) < 0)
        return -1;
    /* The name goes first, then the copies are queued: a crash in between
     * leaves unreferenced copies (found by fsck), never a name without data. */
    struct db_value p = I(fid);
    uint64_t n = 0;
    if (exec_w("DELETE FROM file WHERE fid=?", &p, 1, &n) < 0)
        return mog_err(c->r, "db", NULL);
    if (n == 0)
        return mog_err(c->r, "unknown_key", NULL);
    enqueue_delete(fid);
    stats_counter_add(&mog.n.deletes, 1);
    mog_delete_kick();
    return mog_ok(c->r);
}

static int cmd_rename(struct cmd_ctx *c)
{
    struct mog_domain d;
    if (need_domain(c, &d) < 0)
        return -1;
    const char *from = arg(c, "from_key"), *to = arg(c, "to_key");
    if (!has(from) || !has(to))
        return mog_err(c->r, "no_key", NULL);
    if (strlen(to) > MOG_MAX_KEY)
        return mog_err(c->r, "key_too_long", "Key too long");
    int64_t fid;
    if (lookup_key(c, &d, from, &fid, NULL, NULL, NULL) < 0)
        return -1;
    struct db_value p[3] = { T(to), I(d.dmid), T(from) };
    struct mog_rows *r = mog_sql_write("UPDATE file SET dkey=? WHERE dmid=? AND dkey=?", p, 3);
    bool ok = r && r->status == 0, dup = is_dup_error(r);
    uint64_t n = r ? r->affected : 0;
    mog_rows_free(r);
    if (dup)
        return mog_err(c->r, "key_exists", NULL);
    if (!ok)
        return mog_err(c->r, "db", NULL);
    if (n == 0)
        return mog_err(c->r, "unknown_key", NULL);
    return mog_ok(c->r);
}

static int cmd_updateclass(struct cmd_ctx *c)
{
    struct mog_domain d;
    if (need_domain(c, &d) < 0)
        return -1;
    const char *key = arg(c, "key"), *cls = arg(c, "class");
    if (!has(key))
        return mog_err(c->r, "no_key", NULL);
    if (!has(cls))
        return mog_err(c->r, "no_class", NULL);
    struct mog_class cl;
    if (!strcmp(cls, "default"))
        class_or_default(d.dmid, 0, &cl);
    else if (mog_class_by_name(d.dmid, cls, &cl) < 0)
        return mog_err(c->r, "class_not_found", NULL);
    /* The original's answers here: invalid_key for a key it does not
     * know, no_devices for a file on no device. */
    struct db_value pk[2] = { I(d.dmid), T(key) };
    struct mog_rows *r = mog_sql("SELECT f.fid, f.classid, (SELECT COUNT(*) FROM file_on o WHERE o.fid = f.fid) "
                                 "FROM file f WHERE f.dmid=? AND f.dkey=?",
                                 pk, 2);
    if (!r || r->status != 0) {
        mog_rows_free(r);
        return mog_err(c->r, "db", NULL);
    }
    bool found = r->nrows > 0;
    int64_t fid = mog_cell_int(r, 0, 0), oldclass = mog_cell_int(r, 0, 1), ndev = mog_cell_int(r, 0, 2);
    mog_rows_free(r);
    if (!found)
        return mog_err(c->r, "invalid_key", NULL);
    if (ndev == 0)
        return mog_err(c->r, "no_devices", NULL);
    if (oldclass != cl.classid) {
        struct db_value p[2] = { I(cl.classid), I(fid) };
        if (exec_w("UPDATE file SET classid=? WHERE fid=?", p, 2, NULL) < 0)
            return mog_err(c->r, "db", NULL);
        char sql[160];
        snprintf(sql, sizeof sql, "%s INTO file_to_replicate (fid, nexttry) VALUES (?, 0)", mog_insert_ignore());
        struct db_value pf = I(fid);
        exec_w(sql, &pf, 1, NULL);
        mog_replicate_kick();
    }
    return mog_ok(c->r);
}

static void hex16(const unsigned char *b, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[b[i] >> 4];
        out[2 * i + 1] = hx[b[i] & 15];
    }
    out[2 * n] = '\0';
}

/* "MD5:<hex>" from the checksum table, or "" when there is none. */
static void checksum_of(int64_t fid, char *out, size_t outlen)
{
    struct db_value p = I(fid);
    struct mog_rows *r = mog_sql("SELECT hashtype, checksum FROM checksum WHERE fid=?", &p, 1);
    out[0] = '\0';
    if (r && r->nrows > 0 && r->len[1] <= 64 && mog_cell(r, 0, 1)) {
        char hx[130];
        hex16((const unsigned char *)mog_cell(r, 0, 1), r->len[1], hx);
        snprintf(out, outlen, "MD5:%s", hx);
    }
    mog_rows_free(r);
}

static int cmd_file_info(struct cmd_ctx *c)
{
    struct mog_domain d;
    if (need_domain(c, &d) < 0)
        return -1;
    const char *key = arg(c, "key");
    int64_t fid, len, classid, devcount;
    if (lookup_key_on(true, c, &d, key, &fid, &len, &classid, &devcount) < 0)
        return -1;
    struct mog_class cl;
    class_or_default(d.dmid, classid, &cl);
    mog_reply_kvi(c->r, "fid", fid);
    mog_reply_kv(c->r, "domain", d.name);
    mog_reply_kv(c->r, "class", cl.name);
    mog_reply_kv(c->r, "key", key);
    mog_reply_kvi(c->r, "length", len);
    /* The file row's devcount column, as the original (the replicator
     * keeps it current), not a count of file_on rows. */
    mog_reply_kvi(c->r, "devcount", devcount);
    if (arg_int(c, "devices", 0)) {
        struct db_value p = I(fid);
        struct mog_rows *r = mog_sql("SELECT devid FROM file_on WHERE fid=? ORDER BY devid", &p, 1);
        char list[1024] = "";
        for (size_t i = 0; r && i < r->nrows; i++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? "," : "", mog_cell(r, i, 0));
        mog_reply_kv(c->r, "devids", list);
        mog_rows_free(r);
    }
    if (cl.hashtype) {
        char sum[160];
        checksum_of(fid, sum, sizeof sum);
        mog_reply_kv(c->r, "checksum", sum[0] ? sum : "MISSING");
    }
    return mog_ok(c->r);
}

/* Every column of the row(s) as <prefix>_<col>. */
static void dump_row(struct cmd_ctx *c, const char *prefix, const char *sql, int64_t fid, const char *const *cols)
{
    struct db_value p = I(fid);
    struct mog_rows *r = mog_sql(sql, &p, 1);
    if (r && r->nrows > 0)
        for (int i = 0; cols[i]; i++)
            if (mog_cell(r, 0, i))
                mog_reply_kvf(c->r, mog_cell(r, 0, i), "%s_%s", prefix, cols[i]);
    mog_rows_free(r);
}

static int cmd_file_debug(struct cmd_ctx *c)
{
    int64_t fid = arg_int(c, "fid", 0);
    if (fid <= 0) {
        struct mog_domain d;
        if (need_domain(c, &d) < 0)
            return -1;
        if (lookup_key(c, &d, arg(c, "key"), &fid, NULL, NULL, NULL) < 0)
            return -1;
    }
    struct db_value p = I(fid);
    struct mog_rows *f = mog_sql("SELECT fid, dmid, dkey, length, classid, devcount FROM file WHERE fid=?", &p, 1);
    struct mog_rows *t = mog_sql("SELECT fid FROM tempfile WHERE fid=?", &p, 1);
    bool known = (f && f->nrows) || (t && t->nrows);
    if (f && f->nrows) {
        static const char *const cols[] = { "fid", "dmid", "dkey", "length", "classid", "devcount", NULL };
        for (int i = 0; cols[i]; i++)
            if (mog_cell(f, 0, i))
                mog_reply_kvf(c->r, mog_cell(f, 0, i), "fid_%s", cols[i]);
        struct mog_domain d;
        struct mog_class cl;
        int64_t dmid = mog_cell_int(f, 0, 1);
        if (mog_domain_by_id(dmid, &d) == 0)
            mog_reply_kv(c->r, "fid_domain", d.name);
        class_or_default(dmid, mog_cell_int(f, 0, 4), &cl);
        mog_reply_kv(c->r, "fid_class", cl.name);
    }
    mog_rows_free(f);
    mog_rows_free(t);
    /* A fid asked for by number that is nowhere is no error in the
     * original: it answers what it found (only "checksum=NONE"). */
    (void)known;
    struct mog_rows *on = mog_sql("SELECT devid FROM file_on WHERE fid=? ORDER BY devid", &p, 1);
    static const char *const tcols[] = { "fid", "createtime", "classid", "dmid", "dkey", "devids", NULL };
    dump_row(c, "tempfile", "SELECT fid, createtime, classid, dmid, dkey, devids FROM tempfile WHERE fid=?", fid,
             tcols);
    static const char *const rcols[] = { "fid", "nexttry", "fromdevid", "failcount", "flags", NULL };
    dump_row(c, "replqueue", "SELECT fid, nexttry, fromdevid, failcount, flags FROM file_to_replicate WHERE fid=?", fid,
             rcols);
    static const char *const dcols[] = { "fid", "nexttry", "failcount", NULL };
    dump_row(c, "delqueue", "SELECT fid, nexttry, failcount FROM file_to_delete2 WHERE fid=?", fid, dcols);
    char list[1024] = "";
    for (size_t i = 0; on && i < on->nrows; i++) {
        int64_t devid = mog_cell_int(on, i, 0);
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%lld", i ? "," : "", (long long)devid);
        struct mog_device dv;
        struct mog_host h;
        char url[512];
        if (mog_device_by_id(devid, &dv) == 0 && mog_host_by_id(dv.hostid, &h) == 0) {
            mog_dev_url(url, sizeof url, &h, devid, fid, true, use_altip(c, &h));
            mog_reply_kvf(c->r, url, "devpath_%lld", (long long)devid);
        }
    }
    mog_rows_free(on);
    if (list[0])
        mog_reply_kv(c->r, "devids", list);
    char sum[160];
    checksum_of(fid, sum, sizeof sum);
    mog_reply_kv(c->r, "checksum", sum[0] ? sum : "NONE");
    return mog_ok(c->r);
}

static int cmd_list_keys(struct cmd_ctx *c)
{
    struct mog_domain d;
    if (need_domain(c, &d) < 0)
        return -1;
    const char *prefix = arg(c, "prefix"), *after = arg(c, "after");
    if (!prefix)
        prefix = "";
    int64_t limit = arg_int(c, "limit", 1000);
    if (limit <= 0 || limit > 1000)
        limit = 1000;
    if (has(after) && strncmp(after, prefix, strlen(prefix)))
        return mog_err(c->r, "after_mismatch", NULL);
    /* LIKE 'prefix%' with the prefix's own wildcards escaped. */
    size_t pl = strlen(prefix);
    char *like = malloc(pl * 2 + 2);
    if (!like)
        return mog_err(c->r, "failure", NULL);
    size_t o = 0;
    /* '!' escapes: a backslash means different things to SQLite and MySQL. */
    for (size_t i = 0; i < pl; i++) {
        if (prefix[i] == '%' || prefix[i] == '_' || prefix[i] == '!')
            like[o++] = '!';
        like[o++] = prefix[i];
    }
    like[o++] = '%';
    like[o] = '\0';
    struct db_value p[4] = { I(d.dmid), T(like), T(has(after) ? after : ""), I(limit) };
    struct mog_rows *r = mog_sql("SELECT dkey FROM file WHERE dmid=? AND dkey LIKE ? ESCAPE '!' AND dkey > ? "
                                 "ORDER BY dkey LIMIT ?",
                                 p, 4);
    free(like);
    if (!r || r->status != 0) {
        mog_rows_free(r);
        return mog_err(c->r, "db", NULL);
    }
    if (r->nrows == 0) {
        mog_rows_free(r);
        return mog_err(c->r, "none_match", NULL);
    }
    for (size_t i = 0; i < r->nrows; i++)
        mog_reply_kvf(c->r, mog_cell(r, i, 0), "key_%zu", i + 1);
    mog_reply_kvi(c->r, "key_count", (int64_t)r->nrows);
    mog_reply_kv(c->r, "next_after", mog_cell(r, r->nrows - 1, 0));
    mog_rows_free(r);
    return mog_ok(c->r);
}

static int cmd_list_fids(struct cmd_ctx *c)
{
    int64_t from = arg_int(c, "from", 0), count = arg_int(c, "to", 0);
    if (count == 0)
        count = 100;
    if (count > 500 || count < 0)
        count = 500;
    struct db_value p[2] = { I(from), I(count) };
    struct mog_rows *r = mog_sql("SELECT fid, dmid, dkey, length, classid, devcount FROM file WHERE fid > ? "
                                 "ORDER BY fid LIMIT ?",
                                 p, 2);
    if (!r || r->status != 0) {
        mog_rows_free(r);
        return mog_err(c->r, "failure", NULL);
    }
    for (size_t i = 0; i < r->nrows; i++) {
        size_t n = i + 1;
        struct mog_domain d;
        struct mog_class cl;
        int64_t dmid = mog_cell_int(r, i, 1);
        mog_reply_kvf(c->r, mog_cell(r, i, 0), "fid_%zu_fid", n);
        mog_reply_kvf(c->r, mog_domain_by_id(dmid, &d) == 0 ? d.name : "", "fid_%zu_domain", n);
        class_or_default(dmid, mog_cell_int(r, i, 4), &cl);
        mog_reply_kvf(c->r, cl.name, "fid_%zu_class", n);
        mog_reply_kvf(c->r, mog_cell(r, i, 2), "fid_%zu_key", n);
        mog_reply_kvf(c->r, mog_cell(r, i, 3), "fid_%zu_length", n);
        mog_reply_kvf(c->r, mog_cell(r, i, 5), "fid_%zu_devcount", n);
    }
    mog_reply_kvi(c->r, "fid_count", (int64_t)r->nrows);
    mog_rows_free(r);
    return mog_ok(c->r);
}

static int cmd_replicate_now(struct cmd_ctx *c)
{
    uint64_t n = 0;
    struct db_value p = I(0);
    exec_w("UPDATE file_to_replicate SET nexttry=? WHERE nexttry > 0", &p, 1, &n);
    mog_replicate_kick();
    mog_reply_kvi(c->r, "count", (int64_t)n);
    return mog_ok(c->r);
}

/* httpcopy: copy a fid's file from one device to another and record it. */
static int cmd_httpcopy(struct cmd_ctx *c)
{
    int64_t sdev = arg_int(c, "sdevid", 0), ddev = arg_int(c, "ddevid", 0), fid = arg_int(c, "fid", 0);
    struct mog_device sd, dd;
    struct mog_host sh, dh;
    /* As the original's http_copy: an unknown fid makes it die ("ERR
     * failure"), an unknown device makes it return false (copy_err). */
    struct db_value pf = I(fid);
    struct mog_rows *fr = mog_sql("SELECT fid FROM file WHERE fid=?", &pf, 1);
    bool have_fid = fr && fr->nrows > 0;
    mog_rows_free(fr);
    if (!have_fid)
        return mog_err(c->r, "failure", NULL);
    if (mog_device_by_id(sdev, &sd) < 0 || mog_device_by_id(ddev, &dd) < 0 || mog_host_by_id(sd.hostid, &sh) < 0 ||
        mog_host_by_id(dd.hostid, &dh) < 0)
        return mog_err(c->r, "copy_err", NULL);
    char surl[512], durl[512], err[256];
    mog_dev_url(surl, sizeof surl, &sh, sdev, fid, true, false);
    mog_dev_url(durl, sizeof durl, &dh, ddev, fid, false, false);
    int64_t len = -1;
    if (mog_http_copy(surl, durl, (int)(mog.cfg.node_timeout * 5000), &len, NULL, err, sizeof err) < 0) {
        /* The original names the side that failed. */
        log_warn("mogilefsd: httpcopy fid %lld: %s", (long long)fid, err);
        return mog_err(c->r, "copy_err", strncmp(err, "source", 6) ? "dest_error" : "src_error");
    }
    char sql[128];
    snprintf(sql, sizeof sql, "%s INTO file_on (fid, devid) VALUES (?, ?)", mog_insert_ignore());
    struct db_value p[2] = { I(fid), I(ddev) };
    if (exec_w(sql, p, 2, NULL) < 0)
        return mog_err(c->r, "copy_err", "failed to add link to database");
    return mog_ok(c->r);
}

/* ---- server settings -------------------------------------------------------------------- */

/* MogileFS 2.73's server_setting_is_writable: which keys a client may
 * set, and the value each takes. Returns 1 with out set (out "" with
 * *del: the row is deleted), 0 for a key that is not writable, -1 with
 * why for a value in the wrong format. */
static int setting_clean(const char *k, const char *v, char *out, size_t outlen, bool *del, const char **why)
{
    static const char *const bools[] = { "skip_devcount", "skip_mkcol", "case_sensitive_list_keys", NULL };
    static const char *const nums[] = { "memcache_ttl", "internal_queue_limit", NULL };
    *del = false;
    snprintf(out, outlen, "%s", v);
    for (int i = 0; bools[i]; i++)
        if (!strcmp(k, bools[i])) {
            char ch = (char)tolower((unsigned char)v[0]);
            if (!v[0] || ch == '0' || ch == 'f' || ch == 'n' || !strncasecmp(v, "off", 3))
                snprintf(out, outlen, "0");
            else if (ch == '1' || ch == 't' || ch == 'y' || !strncasecmp(v, "on", 2))
                snprintf(out, outlen, "1");
            else
                return *why = "Unknown format", -1;
            return 1;
        }
    for (int i = 0; nums[i]; i++)
        if (!strcmp(k, nums[i])) {
            if (!v[0] || !strcmp(v, "0"))
                snprintf(out, outlen, "0");
            else if (!all_digits(v))
                return *why = "Must be numeric", -1;
            return 1;
        }
    if (!strncmp(k, "slave_", 6)) {
        *del = !v[0] || !strcmp(v, "0");
        return 1;
    }
    if (!strncmp(k, "zone_", 5)) {
        char buf[1024];
        snprintf(buf, sizeof buf, "%s", v);
        char *save = NULL;
        uint32_t net, mask;
        for (char *m = strtok_r(buf, ", \t", &save); m; m = strtok_r(NULL, ", \t", &save))
            if (mog_netmask_parse(m, &net, &mask) < 0)
                return *why = "Doesn't match an acceptable netmask", -1;
        return 1;
    }
    if (!strcmp(k, "fsck_checksum")) {
        if (!strcmp(v, "class"))
            *del = true;
        else if (strcmp(v, "off") && strcmp(v, "MD5"))
            return *why = "Not a valid checksum algorithm", -1;
        return 1;
    }
    return !strncmp(k, "queue_", 6) || !strcmp(k, "memcache_servers") || !strcmp(k, "network_zones");
}

static int cmd_server_setting(struct cmd_ctx *c)
{
    const char *k = arg(c, "key");
    if (!has(k))
        return mog_err(c->r, "bad_params", NULL);
    struct db_value p = T(k);
    struct mog_rows *r = mog_sql("SELECT value FROM server_settings WHERE field=?", &p, 1);
    mog_reply_kv(c->r, "key", k);
    mog_reply_kv(c->r, "value", mog_cell(r, 0, 0) ? mog_cell(r, 0, 0) : "");
    mog_rows_free(r);
    return mog_ok(c->r);
}

static int cmd_server_settings(struct cmd_ctx *c)
{
    struct mog_rows *r = mog_sql("SELECT field, value FROM server_settings ORDER BY field", NULL, 0);
    int64_t n = 0;
    for (size_t i = 0; r && i < r->nrows; i++) {
        const char *k = mog_cell(r, i, 0);
        if (!k || (!strncmp(k, "fsck_", 5) && strcmp(k, "fsck_checksum")))
            continue;
        n++;
        mog_reply_kvf(c->r, k, "key_%lld", (long long)n);
        mog_reply_kvf(c->r, mog_cell(r, i, 1) ? mog_cell(r, i, 1) : "", "value_%lld", (long long)n);
    }
    mog_rows_free(r);
    mog_reply_kvi(c->r, "key_count", n);
    return mog_ok(c->r);
}

static int cmd_set_server_setting(struct cmd_ctx *c)
{
    const char *k = arg(c, "key"), *v = arg(c, "value");
    if (!has(k))
        return mog_err(c->r, "bad_params", NULL);
    if (!v)
        v = "";
    char val[2048];
    bool del;
    const char *why = NULL;
    int ok = setting_clean(k, v, val, sizeof val, &del, &why);
    if (ok == 0)
        return mog_err(c->r, "not_writable", NULL);
    if (ok < 0)
        return mog_err(c->r, "invalid_format", why);
    struct db_value p[2] = { T(k), T(val) };
    if (del ? exec_w("DELETE FROM server_settings WHERE field=?", p, 1, NULL) < 0
            : exec_w("REPLACE INTO server_settings (field, value) VALUES (?, ?)", p, 2, NULL) < 0)
        return mog_err(c->r, "failure", NULL);
    if (!strncmp(k, "zone_", 5) || !strcmp(k, "network_zones"))
        mog_zones_invalidate();
    if (!strncmp(k, "slave_", 6)) {
        /* As the original: a slave change bumps slave_version, which
         * every tracker watches to reconnect its read slaves. */
        uint64_t bumped = 0;
        if (exec_w("UPDATE server_settings SET value=value+1 WHERE field='slave_version'", NULL, 0, &bumped) == 0 &&
            bumped == 0)
            mog_setting_set("slave_version", "1");
        mog_slaves_invalidate();
    }
    return mog_ok(c->r);
}

/* ---- fsck (the checks run in jobs.c) ------------------------------------------------------- */

static int64_t setting_int(const char *k)
{
    char v[64];
    return mog_setting_get(k, v, sizeof v) == 0 ? strtoll(v, NULL, 10) : 0;
}

static int fsck_reset(int64_t policy_only, int64_t startpos)
{
    char v[32];
    snprintf(v, sizeof v, "%lld", (long long)startpos);
    int rc = mog_setting_set("fsck_highest_fid_checked", v);
    snprintf(v, sizeof v, "%lld", (long long)policy_only);
    rc |= mog_setting_set("fsck_opt_policy_only", v);
    struct mog_rows *r = mog_sql("SELECT MAX(fid) FROM file", NULL, 0);
    snprintf(v, sizeof v, "%lld", (long long)mog_cell_int(r, 0, 0));
    mog_rows_free(r);
    rc |= mog_setting_set("fsck_fid_at_end", v);
    return rc;
}

static int cmd_fsck_start(struct cmd_ctx *c)
{
    char host[256];
    if (mog_setting_get("fsck_host", host, sizeof host) == 0 && host[0])
        return mog_err(c->r, "fsck_running", "fsck is already running");
    if (mog_setting_get("rebal_host", host, sizeof host) == 0 && host[0])
        return mog_err(c->r, "rebal_running", "rebalance running; cannot run fsck at same time");
    int64_t checked = setting_int("fsck_highest_fid_checked"), end = setting_int("fsck_fid_at_end");
    if ((checked && end && checked >= end) || (!end && !checked))
        if (fsck_reset(setting_int("fsck_opt_policy_only"), 0) < 0)
            return mog_err(c->r, "db", NULL);
    char v[32];
    snprintf(v, sizeof v, "%lld", (long long)time(NULL));
    if (mog_setting_set("fsck_start_time", v) < 0 || mog_setting_set("fsck_stop_time", "") < 0 ||
        mog_setting_set("fsck_host", mog.hostname) < 0)
        return mog_err(c->r, "db", NULL);
    mog_fsck_kick();
    return mog_ok(c->r);
}

static int cmd_fsck_stop(struct cmd_ctx *c)
{
    char v[32];
    snprintf(v, sizeof v, "%lld", (long long)time(NULL));
    mog_setting_set("fsck_host", "");
    mog_setting_set("fsck_stop_time", v);
    return mog_ok(c->r);
}

static int cmd_fsck_reset(struct cmd_ctx *c)
{
    if (fsck_reset(arg_int(c, "policy_only", 0) ? 1 : 0, arg_int(c, "startpos", 0)) < 0)
        return mog_err(c->r, "db", NULL);
    return mog_ok(c->r);
}

static int cmd_fsck_clearlog(struct cmd_ctx *c)
{
    exec_w("DELETE FROM fsck_log", NULL, 0, NULL);
    return mog_ok(c->r);
}

static int cmd_fsck_getlog(struct cmd_ctx *c)
{
    struct db_value p = I(arg_int(c, "after_logid", 0));
    struct mog_rows *r = mog_sql("SELECT logid, utime, fid, evcode, devid FROM fsck_log WHERE logid > ? "
                                 "ORDER BY logid LIMIT 100",
                                 &p, 1);
    static const char *const cols[] = { "logid", "utime", "fid", "evcode", "devid" };
    size_t n = r ? r->nrows : 0;
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 5; k++)
            mog_reply_kvf(c->r, mog_cell(r, i, k) ? mog_cell(r, i, k) : "", "row_%zu_%s", i + 1, cols[k]);
    mog_rows_free(r);
    mog_reply_kvi(c->r, "row_count", (int64_t)n);
    return mog_ok(c->r);
}

static int cmd_fsck_status(struct cmd_ctx *c)
{
    char host[256] = "";
    mog_setting_get("fsck_host", host, sizeof host);
    mog_reply_kvi(c->r, "running", host[0] ? 1 : 0);
    mog_reply_kv(c->r, "host", host);
    mog_reply_kvi(c->r, "max_fid_checked", setting_int("fsck_highest_fid_checked"));
    mog_reply_kvi(c->r, "policy_only", setting_int("fsck_opt_policy_only"));
    mog_reply_kvi(c->r, "end_fid", setting_int("fsck_fid_at_end"));
    mog_reply_kvi(c->r, "start_time", setting_int("fsck_start_time"));
    mog_reply_kvi(c->r, "stop_time", setting_int("fsck_stop_time"));
    mog_reply_kvi(c->r, "current_time", (int64_t)time(NULL));
    struct mog_rows *r = mog_sql("SELECT MAX(logid) FROM fsck_log", NULL, 0);
    mog_reply_kvi(c->r, "max_logid", mog_cell_int(r, 0, 0));
    mog_rows_free(r);
    r = mog_sql("SELECT evcode, COUNT(*) FROM fsck_log GROUP BY evcode", NULL, 0);
    for (size_t i = 0; r && i < r->nrows; i++)
        if (mog_cell(r, i, 0))
            mog_reply_kvf(c->r, mog_cell(r, i, 1), "num_%s", mog_cell(r, i, 0));
    mog_rows_free(r);
    return mog_ok(c->r);
}

/* ---- rebalance (rebalance.c) ---------------------------------------------------------------- */

static bool setting_set_nonempty(const char *k)
{
    char v[256];
    return mog_setting_get(k, v, sizeof v) == 0 && v[0];
}

static int cmd_rebalance_status(struct cmd_ctx *c)
{
    char st[4096];
    if (mog_setting_get("rebal_state", st, sizeof st) < 0 || !st[0])
        return mog_err(c->r, "no_rebal_state", NULL);
    mog_reply_kv(c->r, "state", st);
    return mog_ok(c->r);
}

static int cmd_rebalance_start(struct cmd_ctx *c)
{
    if (setting_set_nonempty("rebal_host"))
        return mog_err(c->r, "rebal_running", "rebalance is already running");
    if (setting_set_nonempty("fsck_host"))
        return mog_err(c->r, "fsck_running", "fsck running; cannot run rebalance at same time");
    char st[4096] = "";
    if (mog_setting_get("rebal_state", st, sizeof st) < 0 || !st[0] || strstr(st, "completed=1")) {
        if (!setting_set_nonempty("rebal_policy"))
            return mog_err(c->r, "no_rebal_policy", NULL);
        if (mog_rebal_new_state(st, sizeof st) < 0 || mog_setting_set("rebal_state", st) < 0)
            return mog_err(c->r, "db", NULL);
    }
    mog_setting_set("rebal_signal", "");
    if (mog_setting_set("rebal_host", mog.hostname) < 0)
        return mog_err(c->r, "db", NULL);
    mog_rebal_kick();
    mog_reply_kv(c->r, "state", st);
    return mog_ok(c->r);
}

static int cmd_rebalance_test(struct cmd_ctx *c)
{
    char sdevs[1024], ddevs[1024];
    if (!setting_set_nonempty("rebal_policy") || mog_rebal_test(sdevs, sizeof sdevs, ddevs, sizeof ddevs) < 0)
        return mog_err(c->r, "no_rebal_policy", NULL);
    mog_reply_kv(c->r, "sdevs", sdevs);
    mog_reply_kv(c->r, "ddevs", ddevs);
    return mog_ok(c->r);
}

static int cmd_rebalance_reset(struct cmd_ctx *c)
{
    if (setting_set_nonempty("rebal_host"))
        return mog_err(c->r, "rebal_running", "rebalance is running");
    mog_setting_set("rebal_state", "");
    return mog_ok(c->r);
}

static int cmd_rebalance_stop(struct cmd_ctx *c)
{
    if (!setting_set_nonempty("rebal_host"))
        return mog_err(c->r, "rebal_not_started", NULL);
    mog_setting_set("rebal_signal", "stop");
    mog_rebal_kick();
    return mog_ok(c->r);
}

static int cmd_rebalance_set_policy(struct cmd_ctx *c)
{
    if (setting_set_nonempty("rebal_host"))
        return mog_err(c->r, "no_set_rebal", "cannot change rebalance policy while rebalance is running");
    const char *pol = arg(c, "policy");
    char err[256];
    if (mog_rebal_check_policy(pol ? pol : "", err, sizeof err) < 0)
        return mog_err(c->r, "bad_rebal_pol", err);
    /* As the original: no policy deletes the setting; the state goes. */
    struct db_value pp[2] = { T("rebal_policy"), T(pol) };
    if ((has(pol) ? exec_w("REPLACE INTO server_settings (field, value) VALUES (?, ?)", pp, 2, NULL)
                  : exec_w("DELETE FROM server_settings WHERE field=?", pp, 1, NULL)) < 0)
        return mog_err(c->r, "db", NULL);
    struct db_value ps = T("rebal_state");
    if (exec_w("DELETE FROM server_settings WHERE field=?", &ps, 1, NULL) < 0)
        return mog_err(c->r, "db", NULL);
    return mog_ok(c->r);
}

/* ---- dispatch ------------------------------------------------------------------------------- */

static const struct {
    const char *name;
    cmd_fn fn;
} commands[] = {
    { "create_open", cmd_create_open },
    { "create_close", cmd_create_close },
    { "get_paths", cmd_get_paths },
    { "delete", cmd_delete },
    { "edit_file", cmd_edit_file },
    { "rename", cmd_rename },
    { "updateclass", cmd_updateclass },
    { "file_info", cmd_file_info },
    { "file_debug", cmd_file_debug },
    { "list_keys", cmd_list_keys },
    { "list_fids", cmd_list_fids },
    { "get_domains", cmd_get_domains },
    { "create_domain", cmd_create_domain },
    { "delete_domain", cmd_delete_domain },
    { "create_class", cmd_create_class },
    { "update_class", cmd_update_class },
    { "delete_class", cmd_delete_class },
    { "create_host", cmd_create_host },
    { "update_host", cmd_update_host },
    { "delete_host", cmd_delete_host },
    { "get_hosts", cmd_get_hosts },
    { "create_device", cmd_create_device },
    { "get_devices", cmd_get_devices },
    { "set_state", cmd_set_state },
    { "set_weight", cmd_set_weight },
    { "clear_cache", cmd_clear_cache },
    { "do_monitor_round", cmd_do_monitor_round },
    { "noop", cmd_noop },
    { "sleep", cmd_sleep },
    { "test", cmd_test },
    { "replicate_now", cmd_replicate_now },
    { "httpcopy", cmd_httpcopy },
    { "server_setting", cmd_server_setting },
    { "server_settings", cmd_server_settings },
    { "set_server_setting", cmd_set_server_setting },
    { "fsck_start", cmd_fsck_start },
    { "fsck_stop", cmd_fsck_stop },
    { "fsck_reset", cmd_fsck_reset },
    { "fsck_clearlog", cmd_fsck_clearlog },
    { "fsck_getlog", cmd_fsck_getlog },
    { "fsck_status", cmd_fsck_status },
    { "rebalance_status", cmd_rebalance_status },
    { "rebalance_start", cmd_rebalance_start },
    { "rebalance_test", cmd_rebalance_test },
    { "rebalance_reset", cmd_rebalance_reset },
    { "rebalance_stop", cmd_rebalance_stop },
    { "rebalance_set_policy", cmd_rebalance_set_policy },
};

void mog_cmd_run(const struct mog_req *req, const char *client_ip, struct mog_reply *r)
{
    const char *zone = mog_arg(req, "zone");
    struct cmd_ctx c = { .req = req, .r = r, .client_ip = client_ip, .alt_zone = zone && !strcmp(zone, "alt") };
    stats_counter_add(&mog.n.queries, 1);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(commands[i].name, req->cmd)) {
            commands[i].fn(&c);
            if (!r->done)
                mog_err(r, "failure", NULL);
            return;
        }
    mog_err(r, "unknown_command", NULL);
}
