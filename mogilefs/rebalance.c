/* rebalance: MogileFS's rebalance — a policy names source and destination
 * devices and how much to move; a worker on the tracker that started it
 * moves copies of fids from each source device to a destination device
 * (copy, record, then delete the source copy), keeping its progress in
 * server_settings (rebal_state) so a stopped rebalance resumes.
 *
 * The policy is MogileFS's "key=value key=v1,v2" string. Keys understood:
 * from_hosts, from_devices, from_percent_used, from_percent_free,
 * from_space_used, from_space_free (MB), fid_age (old|new), limit_type
 * (device|global), limit_by (none|count|size), limit (a count, or bytes
 * with k/m/g/t for size), to_hosts, to_devices, to_percent_used,
 * to_percent_free, to_space_used, to_space_free, not_to_hosts,
 * not_to_devices, use_dest_devs, leave_in_drain_mode, from_all_devs,
 * to_all_devs. Anything else is refused (bad_rebal_pol). */
#include "mogilefs/mogilefs.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/db.h"
#include "common/log.h"

#define MAX_LIST 64

struct rebal_policy {
    int64_t from_hosts[MAX_LIST], from_devices[MAX_LIST], to_hosts[MAX_LIST], to_devices[MAX_LIST];
    int64_t not_to_hosts[MAX_LIST], not_to_devices[MAX_LIST];
    int n_from_hosts, n_from_devices, n_to_hosts, n_to_devices, n_not_to_hosts, n_not_to_devices;
    double from_pct_used, from_pct_free, to_pct_used, to_pct_free;         /* < 0 = unset */
    double from_space_used, from_space_free, to_space_used, to_space_free; /* MB, < 0 = unset */
    bool fid_new;
    bool limit_global;
    int limit_by; /* 0 none, 1 count, 2 size */
    int64_t limit;
};

static int parse_list(const char *v, int64_t *out, int *n)
{
    *n = 0;
    while (*v) {
        char *end;
        long long x = strtoll(v, &end, 10);
        if (end == v || x < 0 || *n >= MAX_LIST)
            return -1;
        out[(*n)++] = x;
        v = end;
        if (*v == ',')
            v++;
        else if (*v)
            return -1;
    }
    return 0;
}

static int parse_num(const char *v, double *out)
{
    char *end;
    *out = strtod(v, &end);
    return (end == v || *end || *out < 0) ? -1 : 0;
}

static int parse_limit(const char *v, int64_t *out)
{
    char *end;
    double x = strtod(v, &end);
    if (end == v || x < 0)
        return -1;
    switch (tolower((unsigned char)*end)) {
    case '\0': break;
    case 'k': x *= 1024.0; break;
    case 'm': x *= 1048576.0; break;
    case 'g': x *= 1073741824.0; break;
    case 't': x *= 1099511627776.0; break;
    default: return -1;
    }
    if (*end && end[1])
        return -1;
    *out = (int64_t)x;
    return 0;
}

/* Returns 0, or -1 with a message naming the bad key. */
static int policy_parse(const char *text, struct rebal_policy *p, char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    p->from_pct_used = p->from_pct_free = p->to_pct_used = p->to_pct_free = -1;
    p->from_space_used = p->from_space_free = p->to_space_used = p->to_space_free = -1;
    char buf[2048];
    if (!text || strlen(text) >= sizeof buf) {
        snprintf(err, errlen, "policy missing or too long");
        return -1;
    }
    snprintf(buf, sizeof buf, "%s", text);
    char *save = NULL;
    for (char *tok = strtok_r(buf, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
        /* "key" alone is the key with an empty value, as the original
         * splits it. */
        char *eq = strchr(tok, '=');
        if (eq)
            *eq = '\0';
        const char *k = tok, *v = eq ? eq + 1 : "";
        int rc = 0;
        if (!strcmp(k, "from_hosts"))
            rc = parse_list(v, p->from_hosts, &p->n_from_hosts);
        else if (!strcmp(k, "from_devices"))
            rc = parse_list(v, p->from_devices, &p->n_from_devices);
        else if (!strcmp(k, "to_hosts"))
            rc = parse_list(v, p->to_hosts, &p->n_to_hosts);
        else if (!strcmp(k, "to_devices"))
            rc = parse_list(v, p->to_devices, &p->n_to_devices);
        else if (!strcmp(k, "not_to_hosts"))
            rc = parse_list(v, p->not_to_hosts, &p->n_not_to_hosts);
        else if (!strcmp(k, "not_to_devices"))
            rc = parse_list(v, p->not_to_devices, &p->n_not_to_devices);
        else if (!strcmp(k, "from_percent_used"))
            rc = parse_num(v, &p->from_pct_used);
        else if (!strcmp(k, "from_percent_free"))
            rc = parse_num(v, &p->from_pct_free);
        else if (!strcmp(k, "to_percent_used"))
            rc = parse_num(v, &p->to_pct_used);
        else if (!strcmp(k, "to_percent_free"))
            rc = parse_num(v, &p->to_pct_free);
        else if (!strcmp(k, "from_space_used"))
            rc = parse_num(v, &p->from_space_used);
        else if (!strcmp(k, "from_space_free"))
            rc = parse_num(v, &p->from_space_free);
        else if (!strcmp(k, "to_space_used"))
            rc = parse_num(v, &p->to_space_used);
        else if (!strcmp(k, "to_space_free"))
            rc = parse_num(v, &p->to_space_free);
        else if (!strcmp(k, "fid_age")) {
            if (!strcmp(v, "new"))
                p->fid_new = true;
            else if (strcmp(v, "old"))
                rc = -1;
        } else if (!strcmp(k, "limit_type")) {
            if (!strcmp(v, "global"))
                p->limit_global = true;
            else if (strcmp(v, "device"))
                rc = -1;
        } else if (!strcmp(k, "limit_by")) {
            if (!strcmp(v, "none"))
                p->limit_by = 0;
            else if (!strcmp(v, "count"))
                p->limit_by = 1;
            else if (!strcmp(v, "size"))
                p->limit_by = 2;
            else
                rc = -1; /* percent is not built */
        } else if (!strcmp(k, "limit"))
            rc = parse_limit(v, &p->limit);
        else if (!strcmp(k, "from_all_devs") || !strcmp(k, "to_all_devs") || !strcmp(k, "use_dest_devs") ||
                 !strcmp(k, "leave_in_drain_mode")) {
            /* accepted: devices are never put in drain mode here, and every
             * matching destination is used */
        } else {
            snprintf(err, errlen, "Invalid setting %s", k); /* the original's words */
            return -1;
        }
        if (rc < 0) {
            snprintf(err, errlen, "bad value for %s: %s", k, v);
            return -1;
        }
    }
    return 0;
}

static bool in_list(const int64_t *l, int n, int64_t x)
{
    for (int i = 0; i < n; i++)
        if (l[i] == x)
            return true;
    return false;
}

static bool space_ok(const struct mog_device *d, double pct_used, double pct_free, double used, double free_mb)
{
    if (pct_used < 0 && pct_free < 0 && used < 0 && free_mb < 0)
        return true;
    if (d->mb_total <= 0)
        return false;
    double u = (double)d->mb_used, t = (double)d->mb_total, f = t - u;
    if (pct_used >= 0 && 100.0 * u / t < pct_used)
        return false;
    if (pct_free >= 0 && 100.0 * f / t < pct_free)
        return false;
    if (used >= 0 && u < used)
        return false;
    if (free_mb >= 0 && f < free_mb)
        return false;
    return true;
}

/* Source and destination device lists ("1,2"). */
static void pick_devices(const struct rebal_policy *p, char *sdevs, size_t sl, char *ddevs, size_t dl)
{
    struct mog_device *ds;
    size_t nd = mog_devices_copy(&ds);
    sdevs[0] = ddevs[0] = '\0';
    for (size_t i = 0; i < nd; i++) {
        const struct mog_device *d = &ds[i];
        struct mog_host h;
        bool have_host = mog_host_by_id(d->hostid, &h) == 0;
        bool src = mog_dev_can_read(d, have_host ? &h : NULL) &&
                   (!p->n_from_devices || in_list(p->from_devices, p->n_from_devices, d->devid)) &&
                   (!p->n_from_hosts || in_list(p->from_hosts, p->n_from_hosts, d->hostid)) &&
                   space_ok(d, p->from_pct_used, p->from_pct_free, p->from_space_used, p->from_space_free);
        bool dst = have_host && mog_dev_can_write(d, &h, mog.cfg.min_free_space) &&
                   (!p->n_to_devices || in_list(p->to_devices, p->n_to_devices, d->devid)) &&
                   (!p->n_to_hosts || in_list(p->to_hosts, p->n_to_hosts, d->hostid)) &&
                   !in_list(p->not_to_devices, p->n_not_to_devices, d->devid) &&
                   !in_list(p->not_to_hosts, p->n_not_to_hosts, d->hostid) &&
                   space_ok(d, p->to_pct_used, p->to_pct_free, p->to_space_used, p->to_space_free);
        if (src)
            snprintf(sdevs + strlen(sdevs), sl - strlen(sdevs), "%s%lld", sdevs[0] ? "," : "", (long long)d->devid);
        else if (dst) /* a device is never both */
            snprintf(ddevs + strlen(ddevs), dl - strlen(ddevs), "%s%lld", ddevs[0] ? "," : "", (long long)d->devid);
    }
    free(ds);
}

int mog_rebal_check_policy(const char *policy, char *err, size_t errlen)
{
    struct rebal_policy p;
    return policy_parse(policy, &p, err, errlen);
}

int mog_rebal_test(char *sdevs, size_t sl, char *ddevs, size_t dl)
{
    char pol[2048], err[256];
    struct rebal_policy p;
    if (mog_setting_get("rebal_policy", pol, sizeof pol) < 0 || !pol[0] || policy_parse(pol, &p, err, sizeof err) < 0)
        return -1;
    pick_devices(&p, sdevs, sl, ddevs, dl);
    return 0;
}

/* State string: "sdevs=1,2 ddevs=3 sdev_current=1 sdev_lastfid=0 fids_queued=0 bytes_queued=0
 * time_started=T time_finished=0 completed=0". */
int mog_rebal_new_state(char *out, size_t len)
{
    char sdevs[1024], ddevs[1024];
    if (mog_rebal_test(sdevs, sizeof sdevs, ddevs, sizeof ddevs) < 0)
        return -1;
    snprintf(out, len,
             "sdevs=%s ddevs=%s sdev_index=0 sdev_lastfid=0 sdev_moved=0 sdev_bytes=0 fids_queued=0 bytes_queued=0 "
             "time_started=%lld time_finished=0 completed=0",
             sdevs, ddevs, (long long)time(NULL));
    return 0;
}

static int64_t state_int(const char *st, const char *key)
{
    char k[64];
    snprintf(k, sizeof k, "%s=", key);
    const char *p = st;
    while ((p = strstr(p, k))) {
        if (p == st || p[-1] == ' ')
            return strtoll(p + strlen(k), NULL, 10);
        p++;
    }
    return 0;
}

static void state_list(const char *st, const char *key, int64_t *out, int *n)
{
    char k[64];
    snprintf(k, sizeof k, "%s=", key);
    const char *p = strstr(st, k);
    char v[1024] = "";
    if (p) {
        p += strlen(k);
        size_t l = strcspn(p, " ");
        snprintf(v, sizeof v, "%.*s", (int)(l < sizeof v ? l : sizeof v - 1), p);
    }
    if (parse_list(v, out, n) < 0)
        *n = 0;
}

/* Move one fid's copy off sdev onto a destination device. 0 moved, 1 skip
 * (already elsewhere everywhere / no destination), -1 error. */
static int move_copy(int64_t fid, int64_t sdev, const int64_t *ddevs, int nd, int64_t *bytes)
{
    struct db_value pf = DB_INT64(fid);
    struct mog_rows *on = mog_sql("SELECT devid FROM file_on WHERE fid=?", &pf, 1);
    struct mog_rows *f = mog_sql("SELECT length FROM file WHERE fid=?", &pf, 1);
    int rc = 1;
    if (!on || !f || f->nrows == 0)
        goto out;
    int64_t length = mog_cell_int(f, 0, 0);
    struct mog_device src;
    struct mog_host sh;
    if (mog_device_by_id(sdev, &src) < 0 || mog_host_by_id(src.hostid, &sh) < 0)
        goto out;
    /* A destination that holds no copy yet, on a host without one if any. */
    int64_t best = -1;
    for (int pass = 0; pass < 2 && best < 0; pass++)
        for (int i = 0; i < nd && best < 0; i++) {
            struct mog_device d;
            struct mog_host h;
            if (mog_device_by_id(ddevs[i], &d) < 0 || mog_host_by_id(d.hostid, &h) < 0 ||
                !mog_dev_can_write(&d, &h, mog.cfg.min_free_space))
                continue;
            bool holds = false, same_host = false;
            for (size_t k = 0; k < on->nrows; k++) {
                struct mog_device o;
                int64_t od = mog_cell_int(on, k, 0);
                if (od == d.devid)
                    holds = true;
                if (od != sdev && mog_device_by_id(od, &o) == 0 && o.hostid == d.hostid)
                    same_host = true;
            }
            if (!holds && (pass == 1 || !same_host))
                best = d.devid;
        }
    if (best < 0)
        goto out;
    struct mog_device dd;
    struct mog_host dh;
    mog_device_by_id(best, &dd);
    mog_host_by_id(dd.hostid, &dh);
    char surl[512], durl[512], err[256];
    mog_dev_url(surl, sizeof surl, &sh, sdev, fid, true, false);
    mog_dev_url(durl, sizeof durl, &dh, best, fid, false, false);
    int64_t got = -1;
    if (mog_http_copy(surl, durl, (int)(mog.cfg.node_timeout * 5000), &got, NULL, err, sizeof err) < 0 ||
        got != length) {
        log_warn("mogilefsd: rebalance fid %lld dev%lld -> dev%lld: %s", (long long)fid, (long long)sdev,
                 (long long)best, got >= 0 ? "length mismatch" : err);
        rc = -1;
        goto out;
    }
    /* The new copy is recorded and the old one forgotten together. */
    char sql[128];
    snprintf(sql, sizeof sql, "%s INTO file_on (fid, devid) VALUES (?, ?)", mog_insert_ignore());
    struct db_value pn[2] = { DB_INT64(fid), DB_INT64(best) }, po[2] = { DB_INT64(fid), DB_INT64(sdev) };
    struct mog_stmt st[2] = { { sql, pn, 2 }, { "DELETE FROM file_on WHERE fid=? AND devid=?", po, 2 } };
    if (mog_sql_txn(st, NULL, 2, NULL, err, sizeof err) < 0) {
        rc = -1;
        goto out;
    }
    char durl_del[512];
    mog_dev_url(durl_del, sizeof durl_del, &sh, sdev, fid, false, false);
    struct mog_http_res res;
    mog_http("DELETE", durl_del, NULL, 0, 0, (int)(mog.cfg.node_timeout * 1000), &res);
    mog_http_res_free(&res);
    *bytes += length;
    rc = 0;
out:
    mog_rows_free(on);
    mog_rows_free(f);
    return rc;
}

static void finish(const char *state, bool completed)
{
    char st[4096];
    snprintf(st, sizeof st, "%s", state);
    if (completed) {
        char *p = strstr(st, "completed=0");
        if (p)
            p[10] = '1';
        char *t = strstr(st, "time_finished=0");
        if (t) {
            char rest[4096];
            snprintf(rest, sizeof rest, "%s", t + strlen("time_finished=0"));
            snprintf(t, sizeof st - (size_t)(t - st), "time_finished=%lld%s", (long long)time(NULL), rest);
        }
    }
    mog_setting_set("rebal_state", st);
    mog_setting_set("rebal_host", "");
    mog_setting_set("rebal_signal", "");
}

/* One step of the rebalance this tracker runs: up to 20 fids. Returns true
 * while there is more to do. */
bool mog_rebal_step(void)
{
    char host[256] = "", sig[64] = "", state[4096] = "", pol[2048] = "", err[256];
    mog_setting_get("rebal_host", host, sizeof host);
    if (!host[0] || strcmp(host, mog.hostname))
        return false;
    mog_setting_get("rebal_state", state, sizeof state);
    mog_setting_get("rebal_signal", sig, sizeof sig);
    struct rebal_policy p;
    if (!strcmp(sig, "stop") || mog_setting_get("rebal_policy", pol, sizeof pol) < 0 ||
        policy_parse(pol, &p, err, sizeof err) < 0) {
        finish(state, false);
        return false;
    }
    int64_t sdevs[MAX_LIST], ddevs[MAX_LIST];
    int ns, nd;
    state_list(state, "sdevs", sdevs, &ns);
    state_list(state, "ddevs", ddevs, &nd);
    int64_t idx = state_int(state, "sdev_index"), lastfid = state_int(state, "sdev_lastfid");
    int64_t moved = state_int(state, "sdev_moved"), sbytes = state_int(state, "sdev_bytes");
    int64_t fq = state_int(state, "fids_queued"), bq = state_int(state, "bytes_queued");
    if (idx >= ns || nd == 0) {
        finish(state, true);
        return false;
    }
    int64_t sdev = sdevs[idx];
    bool limit_hit = false;
    int64_t used_count = p.limit_global ? fq : moved, used_bytes = p.limit_global ? bq : sbytes;
    if ((p.limit_by == 1 && used_count >= p.limit) || (p.limit_by == 2 && used_bytes >= p.limit))
        limit_hit = true;
    size_t n = 0;
    if (!limit_hit) {
        struct db_value q[2] = { DB_INT64(sdev), DB_INT64(lastfid) };
        struct mog_rows *r =
            mog_sql(p.fid_new ? "SELECT fid FROM file_on WHERE devid=? AND (fid < ? OR ? = 0) "
                                "ORDER BY fid DESC LIMIT 20"
                              : "SELECT fid FROM file_on WHERE devid=? AND fid > ? ORDER BY fid LIMIT 20",
                    p.fid_new ? (struct db_value[]){ q[0], q[1], q[1] } : q, p.fid_new ? 3 : 2);
        n = r ? r->nrows : 0;
        for (size_t i = 0; i < n; i++) {
            int64_t fid = mog_cell_int(r, i, 0), bytes = 0;
            lastfid = fid;
            if (move_copy(fid, sdev, ddevs, nd, &bytes) == 0) {
                moved++, fq++;
                sbytes += bytes, bq += bytes;
            }
            used_count = p.limit_global ? fq : moved;
            used_bytes = p.limit_global ? bq : sbytes;
            if ((p.limit_by == 1 && used_count >= p.limit) || (p.limit_by == 2 && used_bytes >= p.limit)) {
                limit_hit = true;
                break;
            }
        }
        mog_rows_free(r);
    }
    bool next_dev = limit_hit || n == 0;
    if (limit_hit && p.limit_global)
        idx = ns; /* the global budget is spent */
    else if (next_dev)
        idx++;
    char sl[1024] = "", dl[1024] = "";
    for (int i = 0; i < ns; i++)
        snprintf(sl + strlen(sl), sizeof sl - strlen(sl), "%s%lld", i ? "," : "", (long long)sdevs[i]);
    for (int i = 0; i < nd; i++)
        snprintf(dl + strlen(dl), sizeof dl - strlen(dl), "%s%lld", i ? "," : "", (long long)ddevs[i]);
    char st[4096];
    snprintf(st, sizeof st,
             "sdevs=%s ddevs=%s sdev_index=%lld sdev_lastfid=%lld sdev_moved=%lld sdev_bytes=%lld fids_queued=%lld "
             "bytes_queued=%lld time_started=%lld time_finished=0 completed=0",
             sl, dl, (long long)idx, (long long)(next_dev ? 0 : lastfid), (long long)(next_dev ? 0 : moved),
             (long long)(next_dev ? 0 : sbytes), (long long)fq, (long long)bq,
             (long long)state_int(state, "time_started"));
    if (idx >= ns) {
        finish(st, true);
        return false;
    }
    mog_setting_set("rebal_state", st);
    return true;
}
