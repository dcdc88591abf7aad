/* jobs: the tracker's background workers, one thread each (their count from
 * replicate_jobs, delete_jobs, monitor_jobs): monitor, replicate (which also
 * drains and reaps dead devices' copies), delete.
 *
 * Queues live in the database (file_to_replicate, file_to_delete2), as in
 * MogileFS: a row is claimed by moving its nexttry forward with a
 * conditional UPDATE, so several trackers on one database never work on the
 * same fid at once. Threads block on the database and on HTTP; nothing here
 * runs on an event loop. */
#include "mogilefs/mogilefs.h"

#include <errno.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common/db.h"
#include "common/log.h"

#define END_OF_TIME 2147483647

struct waker {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool kicked;
};

static struct {
    _Atomic bool stop;
    pthread_t threads[64];
    int nthreads;
    struct waker monitor, repl, del, fsck, rebal;
    pthread_mutex_t round_mu;
    pthread_cond_t round_cv;
} J = {
    .monitor = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false },
    .repl = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false },
    .del = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false },
    .fsck = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false },
    .rebal = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false },
    .round_mu = PTHREAD_MUTEX_INITIALIZER,
    .round_cv = PTHREAD_COND_INITIALIZER,
};

static void kick(struct waker *w)
{
    pthread_mutex_lock(&w->mu);
    w->kicked = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Sleep up to ms or until kicked / stopping. */
static void nap(struct waker *w, int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&w->mu);
    while (!w->kicked && !J.stop)
        if (pthread_cond_timedwait(&w->cv, &w->mu, &ts) == ETIMEDOUT)
            break;
    w->kicked = false;
    pthread_mutex_unlock(&w->mu);
}

void mog_monitor_kick(void) { kick(&J.monitor); }
void mog_replicate_kick(void) { kick(&J.repl); }
void mog_delete_kick(void) { kick(&J.del); }
void mog_fsck_kick(void) { kick(&J.fsck); }
void mog_rebal_kick(void) { kick(&J.rebal); }

void mog_wait_monitor(int timeout_ms)
{
    if (mog.monitor_round > 0)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000 + 1;
    pthread_mutex_lock(&J.round_mu);
    while (mog.monitor_round == 0 && !J.stop)
        if (pthread_cond_timedwait(&J.round_cv, &J.round_mu, &ts) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&J.round_mu);
}

static struct db_value I(int64_t v) {
    return DB_INT64(v);
}

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

int mog_enqueue_device(int64_t devid)
{
    char sql[200];
    snprintf(sql, sizeof sql, "%s INTO file_to_replicate (fid, nexttry) SELECT fid, 0 FROM file_on WHERE devid=?",
             mog_insert_ignore());
    struct db_value p = I(devid);
    int rc = exec_w(sql, &p, 1, NULL);
    kick(&J.repl);
    return rc;
}

static int node_ms(void) { return (int)(mog.cfg.node_timeout * 1000); }

/* ---- monitor ---------------------------------------------------------------------------- */

static void monitor_device(const struct mog_device *d, const struct mog_host *h, int64_t now)
{
    char base[256], url[512];
    snprintf(base, sizeof base, "http://%s:%d/dev%lld", h->ip, h->http_port, (long long)d->devid);
    snprintf(url, sizeof url, "%s/usage", base);
    struct mog_http_res res;
    int64_t total = -1, used = -1;
    bool reachable = false;
    if (mog_http("GET", url, NULL, 0, 65536, node_ms(), &res) == 0 && res.status == 200) {
        reachable = true;
        int64_t t, u;
        if (mog_usage_parse(res.body, res.body_len, &t, &u) == 0) {
            total = t / 1024;
            used = u / 1024;
        }
    }
    mog_http_res_free(&res);
    enum mog_observed obs = MOG_OBS_UNREACHABLE;
    if (reachable) {
        obs = MOG_OBS_READABLE;
        char body[64];
        int bl = snprintf(body, sizeof body, "time=%lld rand=%ld\n", (long long)now, random());
        snprintf(url, sizeof url, "%s/test-write/test-write-%ld", base, random() % 100);
        if (mog_http("PUT", url, body, (size_t)bl, 0, node_ms(), &res) == 0 && res.status >= 200 && res.status < 300) {
            mog_http_res_free(&res);
            if (mog_http("GET", url, NULL, 0, 4096, node_ms(), &res) == 0 && res.status == 200 &&
                res.body_len == (size_t)bl && !memcmp(res.body, body, (size_t)bl))
                obs = MOG_OBS_WRITEABLE;
        }
        mog_http_res_free(&res);
        if (obs == MOG_OBS_WRITEABLE && d->reject_bad_md5 < 0) {
            /* Once per device: does the node refuse a body whose
             * Content-MD5 is wrong? (the digest below is of "x") */
            snprintf(url, sizeof url, "%s/test-write/test-md5", base);
            int rc =
                mog_http_ex("PUT", url, "Content-MD5: ndTkYSaMgDT1yFZOFVxnpg==\r\n", "test", 4, 0, node_ms(), &res);
            if (rc == 0 && res.status > 0)
                mog_device_set_reject_md5(d->devid, res.status >= 400 && res.status < 500 ? 1 : 0);
            mog_http_res_free(&res);
        }
    }
    if (obs != d->observed)
        log_info("mogilefsd: dev%lld on %s is %s", (long long)d->devid, h->name, mog_observed_name(obs));
    mog_device_set_observed(d->devid, obs, total, used);
    if (total >= 0 && (d->mb_asof < 0 || now - d->mb_asof >= 15 || d->mb_total != total)) {
        struct db_value p[4] = { I(total), I(used), I(now), I(d->devid) };
        exec_w("UPDATE device SET mb_total=?, mb_used=?, mb_asof=? WHERE devid=?", p, 4, NULL);
    }
}

static void *monitor_thread(void *arg)
{
    (void)arg;
    while (!J.stop) {
        mog_cache_reload();
        struct mog_device *ds;
        size_t nd = mog_devices_copy(&ds);
        int64_t now = (int64_t)time(NULL);
        for (size_t i = 0; i < nd && !J.stop; i++) {
            struct mog_host h;
            if (ds[i].status == MOG_DEV_DEAD || ds[i].status == MOG_DEV_DOWN)
                continue;
            if (mog_host_by_id(ds[i].hostid, &h) < 0 || h.status == MOG_HOST_DEAD || h.status == MOG_HOST_DOWN)
                continue;
            monitor_device(&ds[i], &h, now);
        }
        free(ds);
        pthread_mutex_lock(&J.round_mu);
        mog.monitor_round++;
        pthread_cond_broadcast(&J.round_cv);
        pthread_mutex_unlock(&J.round_mu);
        stats_counter_add(&mog.n.monitor_rounds, 1);
        nap(&J.monitor, mog.cfg.monitor_interval_ms);
    }
    return NULL;
}

/* ---- queue claims ------------------------------------------------------------------------ */

/* Claim up to max due rows of a queue table; returns their fids. */
static size_t claim(const char *table, int64_t *fids, size_t max)
{
    int64_t now = (int64_t)time(NULL);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT fid, nexttry FROM %s WHERE nexttry <= ? ORDER BY nexttry LIMIT %zu", table, max);
    struct db_value p = I(now);
    struct mog_rows *r = mog_sql(sql, &p, 1);
    size_t n = 0;
    for (size_t i = 0; r && i < r->nrows; i++) {
        int64_t fid = mog_cell_int(r, i, 0), nt = mog_cell_int(r, i, 1);
        snprintf(sql, sizeof sql, "UPDATE %s SET nexttry=? WHERE fid=? AND nexttry=?", table);
        struct db_value u[3] = { I(now + 1000), I(fid), I(nt) };
        uint64_t got = 0;
        if (exec_w(sql, u, 3, &got) == 0 && got == 1)
            fids[n++] = fid;
    }
    mog_rows_free(r);
    return n;
}

static void retry_later(const char *table, int64_t fid, bool fatal)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT failcount FROM %s WHERE fid=?", table);
    struct db_value p = I(fid);
    struct mog_rows *r = mog_sql(sql, &p, 1);
    int64_t fc = mog_cell_int(r, 0, 0);
    mog_rows_free(r);
    int64_t delay = fc < 10 ? (int64_t)1 << fc : 600;
    if (delay > 600)
        delay = 600;
    int64_t next = fatal ? END_OF_TIME : (int64_t)time(NULL) + delay;
    snprintf(sql, sizeof sql, "UPDATE %s SET nexttry=?, failcount=? WHERE fid=?", table);
    struct db_value u[3] = { I(next), I(fc < 250 ? fc + 1 : fc), I(fid) };
    exec_w(sql, u, 3, NULL);
}

/* ---- replicate ------------------------------------------------------------------------------ */

/* Replication policies: MultipleHosts(N) (copies on N hosts),
 * MultipleDevices(N) (N devices), and MogileFS-Network's
 * MultipleNetworks(N): copies on as many networks (zones, else /16s) as
 * there are, up to N, and on N hosts; HostsPerNetwork(z=N, ...): N hosts
 * of zone z each (N devices there when the zone has fewer hosts). */
enum repl_policy { POL_HOSTS, POL_DEVICES, POL_NETWORKS, POL_HOSTS_PER_NET };

#define REPL_MAX 64
struct repl_have {
    size_t ncopies, nhosts, nnets;
    int64_t hosts[REPL_MAX];
    char nets[REPL_MAX][40];
    /* per copy: its host and zone ("" = none) */
    int64_t copy_host[REPL_MAX];
    char copy_zone[REPL_MAX][64];
};

static bool repl_have_host(const struct repl_have *H, int64_t hostid)
{
    for (size_t k = 0; k < H->nhosts; k++)
        if (H->hosts[k] == hostid)
            return true;
    return false;
}

static bool repl_have_net(const struct repl_have *H, const char *ip)
{
    char net[40];
    mog_network_for_ip(ip, net, sizeof net);
    for (size_t k = 0; k < H->nnets; k++)
        if (!strcmp(H->nets[k], net))
            return true;
    return false;
}

static void repl_have_add(struct repl_have *H, const struct mog_device *d, const struct mog_host *h)
{
    if (H->ncopies < REPL_MAX) {
        H->copy_host[H->ncopies] = d->hostid;
        if (mog_zone_for_ip(h->ip, H->copy_zone[H->ncopies], sizeof H->copy_zone[0]) < 0)
            H->copy_zone[H->ncopies][0] = '\0';
    }
    H->ncopies++;
    if (!repl_have_host(H, d->hostid) && H->nhosts < REPL_MAX)
        H->hosts[H->nhosts++] = d->hostid;
    if (!repl_have_net(H, h->ip) && H->nnets < REPL_MAX)
        mog_network_for_ip(h->ip, H->nets[H->nnets++], sizeof H->nets[0]);
}

/* Hosts and networks of the devices that may hold files (MultipleNetworks
 * aims for as many networks as exist). */
struct repl_totals {
    size_t nhosts, nnets;
};
static void repl_totals(struct repl_totals *T)
{
    struct mog_device *ds;
    size_t nd = mog_devices_copy(&ds);
    struct repl_have all = { 0 };
    for (size_t i = 0; i < nd; i++) {
        struct mog_host h;
        if (ds[i].status == MOG_DEV_DEAD || ds[i].status == MOG_DEV_DOWN || mog_host_by_id(ds[i].hostid, &h) < 0)
            continue;
        repl_have_add(&all, &ds[i], &h);
    }
    free(ds);
    T->nhosts = all.nhosts;
    T->nnets = all.nnets ? all.nnets : 1;
}

/* HostsPerNetwork: does zone z still need a copy? Hosts holding one
 * count, or devices when the zone has fewer hosts than asked for. */
static bool hpn_needs(const struct mog_hpn *sp, int k, const struct repl_have *H)
{
    struct mog_device *ds;
    size_t nd = mog_devices_copy(&ds);
    int64_t avail[REPL_MAX];
    size_t navail = 0;
    for (size_t i = 0; i < nd; i++) {
        struct mog_host h;
        char z[64];
        if (ds[i].status == MOG_DEV_DEAD || ds[i].status == MOG_DEV_DOWN || mog_host_by_id(ds[i].hostid, &h) < 0 ||
            mog_zone_for_ip(h.ip, z, sizeof z) < 0 || strcmp(z, sp->zone[k]))
            continue;
        bool seen = false;
        for (size_t j = 0; j < navail; j++)
            seen |= avail[j] == ds[i].hostid;
        if (!seen && navail < REPL_MAX)
            avail[navail++] = ds[i].hostid;
    }
    free(ds);
    size_t hosts_on = 0, devs_on = 0;
    size_t nc = H->ncopies < REPL_MAX ? H->ncopies : REPL_MAX;
    for (size_t i = 0; i < nc; i++) {
        if (strcmp(H->copy_zone[i], sp->zone[k]))
            continue;
        devs_on++;
        bool seen = false;
        for (size_t j = 0; j < i; j++)
            seen |= H->copy_host[j] == H->copy_host[i] && !strcmp(H->copy_zone[j], sp->zone[k]);
        if (!seen)
            hosts_on++;
    }
    size_t need = (size_t)sp->need[k];
    return (need <= navail ? hosts_on : devs_on) < need;
}

static bool hpn_zone_needed(const struct mog_hpn *sp, const struct repl_have *H, const char *ip)
{
    char z[64];
    if (mog_zone_for_ip(ip, z, sizeof z) < 0)
        return false;
    for (int k = 0; k < sp->n; k++)
        if (!strcmp(sp->zone[k], z))
            return hpn_needs(sp, k, H);
    return false;
}

static bool repl_satisfied(enum repl_policy pol, const struct mog_hpn *sp, const struct repl_have *H,
                           const struct repl_totals *T, int mindev)
{
    size_t min = mindev > 0 ? (size_t)mindev : 1;
    switch (pol) {
    case POL_DEVICES: return H->ncopies >= min;
    case POL_HOSTS: return H->nhosts >= min;
    case POL_NETWORKS: {
        if (min == 1 && H->ncopies > 0)
            return true;
        size_t target = min < T->nnets ? min : T->nnets;
        if ((H->nnets ? H->nnets : 1) < target)
            return false;
        return H->nhosts >= min || (H->nhosts >= T->nhosts && H->ncopies >= min);
    }
    case POL_HOSTS_PER_NET:
        for (int k = 0; k < sp->n; k++)
            if (hpn_needs(sp, k, H))
                return false;
        return true;
    }
    return false;
}

struct copy_loc {
    struct mog_device d;
    struct mog_host h;
    bool have_host;
};

static bool http_delete_ok(const char *url)
{
    struct mog_http_res res;
    bool ok = mog_http("DELETE", url, NULL, 0, 0, node_ms(), &res) == 0 &&
              ((res.status >= 200 && res.status < 300) || res.status == 404);
    mog_http_res_free(&res);
    return ok;
}

/* Bring one fid to its class's policy. 0 done, 1 retry later, 2 no source. */
static int replicate_fid(int64_t fid)
{
    struct db_value pf = I(fid);
    struct mog_rows *f = mog_sql("SELECT dmid, classid, length FROM file WHERE fid=?", &pf, 1);
    if (!f || f->status != 0) {
        mog_rows_free(f);
        return 1;
    }
    if (f->nrows == 0) {
        mog_rows_free(f);
        return 0; /* deleted meanwhile */
    }
    int64_t dmid = mog_cell_int(f, 0, 0), classid = mog_cell_int(f, 0, 1), length = mog_cell_int(f, 0, 2);
    mog_rows_free(f);
    struct mog_class cl;
    int mindev = mog.cfg.default_mindevcount;
    enum repl_policy pol = POL_HOSTS;
    struct mog_hpn hpn = { 0 };
    if (mog_class_by_id(dmid, classid, &cl) == 0) {
        mindev = cl.mindevcount;
        if (!strncmp(cl.replpolicy, "MultipleDevices", 15))
            pol = POL_DEVICES;
        else if (!strncmp(cl.replpolicy, "MultipleNetworks", 16))
            pol = POL_NETWORKS;
        else if (mog_hpn_parse(cl.replpolicy, &hpn) == 0)
            pol = POL_HOSTS_PER_NET;
        const char *paren = strchr(cl.replpolicy, '(');
        if (paren && paren[1] >= '1' && paren[1] <= '9')
            mindev = atoi(paren + 1);
    } else {
        cl.hashtype = 0;
    }
    unsigned char want_md5[16];
    bool have_md5 = false;
    struct mog_rows *ck = mog_sql("SELECT checksum FROM checksum WHERE fid=? AND hashtype=1", &pf, 1);
    if (ck && ck->nrows == 1 && ck->len[0] == 16) {
        memcpy(want_md5, mog_cell(ck, 0, 0), 16);
        have_md5 = true;
    }
    mog_rows_free(ck);

    struct mog_rows *on = mog_sql("SELECT devid FROM file_on WHERE fid=?", &pf, 1);
    if (!on || on->status != 0) {
        mog_rows_free(on);
        return 1;
    }
    size_t n = on->nrows;
    struct copy_loc *locs = calloc(n + 8, sizeof *locs);
    int64_t *have = calloc(n + 8, sizeof *have);
    size_t nl = 0, nhave = 0;
    for (size_t i = 0; locs && have && i < n; i++) {
        int64_t devid = mog_cell_int(on, i, 0);
        struct copy_loc L = { 0 };
        if (mog_device_by_id(devid, &L.d) < 0) {
            L.d.devid = devid;
            L.d.status = MOG_DEV_DEAD; /* a device that no longer exists */
        }
        L.have_host = mog_host_by_id(L.d.hostid, &L.h) == 0;
        if (L.d.status == MOG_DEV_DEAD) {
            /* Reaper: a dead device's copies are gone for good. */
            struct db_value p[2] = { I(fid), I(devid) };
            exec_w("DELETE FROM file_on WHERE fid=? AND devid=?", p, 2, NULL);
            continue;
        }
        have[nhave++] = devid;
        locs[nl++] = L;
    }
    mog_rows_free(on);
    if (!locs || !have) {
        free(locs);
        free(have);
        return 1;
    }
    /* Count the copies that satisfy the policy: readable, not draining. */
    struct repl_have H = { 0 };
    int src = -1;
    for (size_t i = 0; i < nl; i++) {
        bool readable = locs[i].have_host && mog_dev_can_read(&locs[i].d, &locs[i].h);
        if (readable && (src < 0 || locs[src].d.status == MOG_DEV_DRAIN))
            src = (int)i;
        if (!readable || locs[i].d.status == MOG_DEV_DRAIN)
            continue;
        /* A down-but-kept copy is not lost: only readable ones count. */
        repl_have_add(&H, &locs[i].d, &locs[i].h);
    }
    struct repl_totals T = { 0 };
    if (pol == POL_NETWORKS)
        repl_totals(&T);
    int rc = 0;
    while (!repl_satisfied(pol, &hpn, &H, &T, mindev)) {
        if (src < 0) {
            rc = 2;
            break;
        }
        struct mog_device *ds;
        size_t nd = mog_devices_copy(&ds);
        /* The best writable device without a copy: by rank (0 ideal:
         * a host without a copy — and for MultipleNetworks a network
         * without one; 1 a new host on a network already holding a copy;
         * 2 "desperate": a host already holding one), then, with the
         * ZoneLocal plugin, in local_network's zone, then by free space x
         * weight with some randomness. */
        struct mog_device *best = NULL;
        struct mog_host besth;
        double bestw = -1;
        int best_rank = 99;
        bool best_local = false;
        char local_zone[64] = "";
        bool zl = mog_zone_local && mog_zone_for_ip(mog_local_network, local_zone, sizeof local_zone) == 0;
        bool skip_hosts = pol != POL_NETWORKS || H.nhosts < T.nhosts;
        for (size_t i = 0; i < nd; i++) {
            struct mog_host h;
            if (mog_host_by_id(ds[i].hostid, &h) < 0 || !mog_dev_can_write(&ds[i], &h, mog.cfg.min_free_space))
                continue;
            bool dup = false;
            for (size_t k = 0; k < nhave; k++)
                if (have[k] == ds[i].devid)
                    dup = true;
            if (dup)
                continue;
            int rank = 0;
            if (pol == POL_HOSTS_PER_NET && !hpn_zone_needed(&hpn, &H, h.ip))
                continue; /* a zone with all it asked for */
            if (pol != POL_DEVICES && skip_hosts && repl_have_host(&H, ds[i].hostid))
                rank = 2;
            else if (pol == POL_NETWORKS && skip_hosts && repl_have_net(&H, h.ip))
                rank = 1;
            bool local = false;
            if (zl) {
                char z[64];
                local = mog_zone_for_ip(h.ip, z, sizeof z) == 0 && !strcmp(z, local_zone);
            }
            double w = (double)(ds[i].mb_total > 0 ? ds[i].mb_total - ds[i].mb_used : 1) *
                       (ds[i].weight > 0 ? ds[i].weight : 1) * (0.5 + (double)random() / RAND_MAX);
            if (rank < best_rank || (rank == best_rank && local && !best_local) ||
                (rank == best_rank && local == best_local && w > bestw)) {
                best_rank = rank;
                best_local = local;
                bestw = w;
                best = &ds[i];
                besth = h;
            }
        }
        if (!best) {
            free(ds);
            rc = 1;
            break;
        }
        struct mog_device dest = *best;
        free(ds);
        char surl[512], durl[512], err[256];
        mog_dev_url(surl, sizeof surl, &locs[src].h, locs[src].d.devid, fid, true, false);
        mog_dev_url(durl, sizeof durl, &besth, dest.devid, fid, false, false);
        int64_t got = -1;
        unsigned char md5[16];
        if (mog_http_copy(surl, durl, node_ms() * 5, &got, md5, err, sizeof err) < 0 || got != length ||
            (have_md5 && memcmp(md5, want_md5, 16))) {
            log_warn("mogilefsd: replicating fid %lld %s -> %s failed: %s", (long long)fid, surl, durl,
                     got >= 0 && got != length ? "length mismatch"
                     : have_md5                ? "copy or checksum failed"
                                               : err);
            stats_counter_add(&mog.n.repl_failed, 1);
            if (got >= 0)
                http_delete_ok(durl);
            rc = 1;
            break;
        }
        char sql[160];
        snprintf(sql, sizeof sql, "%s INTO file_on (fid, devid) VALUES (?, ?)", mog_insert_ignore());
        struct db_value p[2] = { I(fid), I(dest.devid) };
        if (exec_w(sql, p, 2, NULL) < 0) {
            rc = 1;
            break;
        }
        stats_counter_add(&mog.n.replicated, 1);
        have[nhave++] = dest.devid;
        repl_have_add(&H, &dest, &besth);
        if (nhave >= n + 8)
            break;
    }
    /* Policy met: copies on draining devices can go. */
    if (rc == 0 && repl_satisfied(pol, &hpn, &H, &T, mindev))
        for (size_t i = 0; i < nl; i++) {
            if (locs[i].d.status != MOG_DEV_DRAIN || !locs[i].have_host)
                continue;
            char url[512];
            mog_dev_url(url, sizeof url, &locs[i].h, locs[i].d.devid, fid, false, false);
            if (http_delete_ok(url)) {
                struct db_value p[2] = { I(fid), I(locs[i].d.devid) };
                exec_w("DELETE FROM file_on WHERE fid=? AND devid=?", p, 2, NULL);
            }
        }
    struct mog_rows *cnt = mog_sql("SELECT COUNT(*) FROM file_on WHERE fid=?", &pf, 1);
    struct db_value pc[2] = { I(mog_cell_int(cnt, 0, 0)), I(fid) };
    mog_rows_free(cnt);
    exec_w("UPDATE file SET devcount=? WHERE fid=?", pc, 2, NULL);
    free(locs);
    free(have);
    return rc;
}

static void *replicate_thread(void *arg)
{
    (void)arg;
    int64_t fids[32];
    while (!J.stop) {
        if (mog.monitor_round == 0) {
            nap(&J.repl, 200);
            continue;
        }
        size_t n = claim("file_to_replicate", fids, 32);
        for (size_t i = 0; i < n && !J.stop; i++) {
            int rc = replicate_fid(fids[i]);
            struct db_value p = I(fids[i]);
            if (rc == 0) {
                exec_w("DELETE FROM file_to_replicate WHERE fid=?", &p, 1, NULL);
            } else {
                if (rc == 2) {
                    char sql[160];
                    snprintf(sql, sizeof sql, "REPLACE INTO unreachable_fids (fid, lastupdate) VALUES (?, ?)");
                    struct db_value u[2] = { I(fids[i]), I((int64_t)time(NULL)) };
                    exec_w(sql, u, 2, NULL);
                }
                retry_later("file_to_replicate", fids[i], false);
            }
        }
        if (n == 0)
            nap(&J.repl, 1000);
    }
    return NULL;
}

/* ---- delete ------------------------------------------------------------------------------------ */

/* Remove every copy of a fid. 0 done, 1 retry later. */
static int delete_fid(int64_t fid)
{
    struct db_value pf = I(fid);
    struct mog_rows *f = mog_sql("SELECT fid FROM file WHERE fid=?", &pf, 1);
    bool alive = f && f->nrows > 0;
    mog_rows_free(f);
    if (alive)
        return 0; /* the fid got a name again (never reused, but be safe) */
    struct mog_rows *on = mog_sql("SELECT devid FROM file_on WHERE fid=?", &pf, 1);
    if (!on || on->status != 0) {
        mog_rows_free(on);
        return 1;
    }
    int rc = 0;
    for (size_t i = 0; i < on->nrows; i++) {
        int64_t devid = mog_cell_int(on, i, 0);
        struct mog_device d;
        struct mog_host h;
        bool gone = mog_device_by_id(devid, &d) < 0 || d.status == MOG_DEV_DEAD;
        if (!gone) {
            if (mog_host_by_id(d.hostid, &h) < 0) {
                gone = true;
            } else {
                char url[512];
                mog_dev_url(url, sizeof url, &h, devid, fid, false, false);
                if (!http_delete_ok(url)) {
                    rc = 1;
                    continue;
                }
            }
        }
        struct db_value p[2] = { I(fid), I(devid) };
        exec_w("DELETE FROM file_on WHERE fid=? AND devid=?", p, 2, NULL);
    }
    mog_rows_free(on);
    if (rc == 0) {
        exec_w("DELETE FROM checksum WHERE fid=?", &pf, 1, NULL);
        exec_w("DELETE FROM file_to_replicate WHERE fid=?", &pf, 1, NULL);
        stats_counter_add(&mog.n.deleted_files, 1);
    }
    return rc;
}

static void reap_tempfiles(void)
{
    /* Uploads never closed for a day: their devices may hold a copy. */
    int64_t cutoff = (int64_t)time(NULL) - 86400;
    struct db_value p = I(cutoff);
    struct mog_rows *r = mog_sql("SELECT fid, devids FROM tempfile WHERE createtime < ? LIMIT 100", &p, 1);
    for (size_t i = 0; r && i < r->nrows; i++) {
        int64_t fid = mog_cell_int(r, i, 0);
        const char *list = mog_cell(r, i, 1);
        char sql[160];
        snprintf(sql, sizeof sql, "%s INTO file_on (fid, devid) VALUES (?, ?)", mog_insert_ignore());
        for (const char *q = list; q && *q;) {
            struct db_value u[2] = { I(fid), I(strtoll(q, NULL, 10)) };
            exec_w(sql, u, 2, NULL);
            q = strchr(q, ',');
            if (q)
                q++;
        }
        snprintf(sql, sizeof sql, "%s INTO file_to_delete2 (fid, nexttry) VALUES (?, 0)", mog_insert_ignore());
        struct db_value pf = I(fid);
        exec_w(sql, &pf, 1, NULL);
        exec_w("DELETE FROM tempfile WHERE fid=?", &pf, 1, NULL);
    }
    mog_rows_free(r);
}

static void *delete_thread(void *arg)
{
    (void)arg;
    int64_t fids[64];
    time_t last_reap = 0;
    while (!J.stop) {
        if (mog.monitor_round == 0) {
            nap(&J.del, 200);
            continue;
        }
        if (time(NULL) - last_reap > 60) {
            last_reap = time(NULL);
            char sql[200];
            snprintf(sql, sizeof sql, "%s INTO file_to_delete2 (fid, nexttry) SELECT fid, 0 FROM file_to_delete",
                     mog_insert_ignore());
            if (exec_w(sql, NULL, 0, NULL) == 0)
                exec_w("DELETE FROM file_to_delete", NULL, 0, NULL);
            reap_tempfiles();
        }
        size_t n = claim("file_to_delete2", fids, 64);
        for (size_t i = 0; i < n && !J.stop; i++) {
            struct db_value p = I(fids[i]);
            if (delete_fid(fids[i]) == 0)
                exec_w("DELETE FROM file_to_delete2 WHERE fid=?", &p, 1, NULL);
            else
                retry_later("file_to_delete2", fids[i], false);
        }
        if (n == 0)
            nap(&J.del, 1000);
    }
    return NULL;
}

/* ---- fsck ---------------------------------------------------------------------------------- */

static void fsck_log(int64_t fid, const char *ev, int64_t devid)
{
    struct db_value p[4] = { I((int64_t)time(NULL)), I(fid), DB_TEXTN(ev, 4),
                             devid > 0 ? I(devid) : (struct db_value){ .type = DB_NULL } };
    exec_w("INSERT INTO fsck_log (utime, fid, evcode, devid) VALUES (?,?,?,?)", p, 4, NULL);
}

static int md5_of_url(const char *url, unsigned char *md5)
{
    int64_t len;
    int status;
    return mog_http_md5(url, node_ms() * 10, md5, &len, &status);
}

/* Drop a bad copy: its row first (readers stop getting it), then the file. */
static void drop_copy(int64_t fid, int64_t devid, const char *url)
{
    struct db_value p[2] = { I(fid), I(devid) };
    exec_w("DELETE FROM file_on WHERE fid=? AND devid=?", p, 2, NULL);
    http_delete_ok(url);
}

/* Check one fid as MogileFS's Fsck worker does: every copy present with the
 * right length (and checksum when the class keeps one), enough copies.
 * Problems are logged to fsck_log and fixed by re-replication. */
static void fsck_fid(int64_t fid, bool policy_only, const char *sum_mode)
{
    struct db_value pf = I(fid);
    struct mog_rows *f = mog_sql("SELECT dmid, classid, length FROM file WHERE fid=?", &pf, 1);
    if (!f || f->nrows == 0) {
        mog_rows_free(f);
        return;
    }
    int64_t dmid = mog_cell_int(f, 0, 0), classid = mog_cell_int(f, 0, 1), length = mog_cell_int(f, 0, 2);
    mog_rows_free(f);
    struct mog_class cl;
    int mindev = mog.cfg.default_mindevcount, hashtype = 0;
    if (mog_class_by_id(dmid, classid, &cl) == 0) {
        mindev = cl.mindevcount;
        hashtype = cl.hashtype;
    }
    bool check_sum = strcmp(sum_mode, "off") && (hashtype == 1 || !strcmp(sum_mode, "MD5"));
    unsigned char want[16];
    bool have_sum = false;
    struct mog_rows *ck = mog_sql("SELECT checksum FROM checksum WHERE fid=? AND hashtype=1", &pf, 1);
    if (ck && ck->nrows == 1 && ck->len[0] == 16) {
        memcpy(want, mog_cell(ck, 0, 0), 16);
        have_sum = true;
    }
    mog_rows_free(ck);
    struct mog_rows *on = mog_sql("SELECT devid FROM file_on WHERE fid=?", &pf, 1);
    size_t n = on ? on->nrows : 0;
    int good = 0;
    bool repl = false;
    for (size_t i = 0; i < n; i++) {
        int64_t devid = mog_cell_int(on, i, 0);
        struct mog_device d;
        struct mog_host h;
        if (mog_device_by_id(devid, &d) < 0 || d.status == MOG_DEV_DEAD || mog_host_by_id(d.hostid, &h) < 0)
            continue; /* the reaper's business */
        if (policy_only || !mog_dev_can_read(&d, &h)) {
            good++; /* not checkable now: assumed fine */
            continue;
        }
        char url[512];
        mog_dev_url(url, sizeof url, &h, devid, fid, false, false);
        struct mog_http_res res;
        int hr = mog_http("HEAD", url, NULL, 0, 0, node_ms(), &res);
        int status = res.status;
        int64_t got = res.length;
        mog_http_res_free(&res);
        if (hr < 0) {
            good++; /* unreachable right now: not evidence of loss */
            continue;
        }
        if (status == 404) {
            fsck_log(fid, "MISS", devid);
            drop_copy(fid, devid, url);
            repl = true;
            continue;
        }
        if (status != 200 || got != length) {
            fsck_log(fid, "BLEN", devid);
            drop_copy(fid, devid, url);
            repl = true;
            continue;
        }
        if (check_sum) {
            unsigned char md5[16];
            if (md5_of_url(url, md5) == 0) {
                if (!have_sum) {
                    /* First sight of a class that keeps checksums: record it. */
                    fsck_log(fid, "NSUM", devid);
                    struct db_value pc[3] = { I(fid), I(1), DB_BLOBN(md5, 16) };
                    exec_w("REPLACE INTO checksum (fid, hashtype, checksum) VALUES (?,?,?)", pc, 3, NULL);
                    memcpy(want, md5, 16);
                    have_sum = true;
                } else if (memcmp(md5, want, 16)) {
                    fsck_log(fid, "BSUM", devid);
                    drop_copy(fid, devid, url);
                    repl = true;
                    continue;
                }
            }
        }
        good++;
    }
    mog_rows_free(on);
    if (good == 0) {
        fsck_log(fid, "NOPA", 0);
        return;
    }
    if (good < mindev) {
        fsck_log(fid, "POVI", 0);
        repl = true;
    }
    if (repl) {
        char sql[160];
        snprintf(sql, sizeof sql, "%s INTO file_to_replicate (fid, nexttry) VALUES (?, 0)", mog_insert_ignore());
        exec_w(sql, &pf, 1, NULL);
        fsck_log(fid, "REPL", 0);
        kick(&J.repl);
    }
}

static void *fsck_thread(void *arg)
{
    (void)arg;
    while (!J.stop) {
        char host[256] = "", v[64] = "", mode[32] = "class";
        mog_setting_get("fsck_host", host, sizeof host);
        if (!host[0] || strcmp(host, mog.hostname) || mog.monitor_round == 0) {
            nap(&J.fsck, 1000);
            continue;
        }
        int64_t highest = mog_setting_get("fsck_highest_fid_checked", v, sizeof v) == 0 ? strtoll(v, NULL, 10) : 0;
        int64_t end = mog_setting_get("fsck_fid_at_end", v, sizeof v) == 0 ? strtoll(v, NULL, 10) : 0;
        bool policy_only = mog_setting_get("fsck_opt_policy_only", v, sizeof v) == 0 && atoi(v);
        mog_setting_get("fsck_checksum", mode, sizeof mode);
        struct db_value p[2] = { I(highest), I(end) };
        struct mog_rows *r = mog_sql("SELECT fid FROM file WHERE fid > ? AND fid <= ? ORDER BY fid LIMIT 50", p, 2);
        size_t n = r ? r->nrows : 0;
        for (size_t i = 0; i < n && !J.stop; i++) {
            fsck_fid(mog_cell_int(r, i, 0), policy_only, mode);
            highest = mog_cell_int(r, i, 0);
        }
        mog_rows_free(r);
        snprintf(v, sizeof v, "%lld", (long long)highest);
        mog_setting_set("fsck_highest_fid_checked", v);
        if (n == 0 || highest >= end) {
            /* Done: stop as fsck_stop does. */
            snprintf(v, sizeof v, "%lld", (long long)time(NULL));
            mog_setting_set("fsck_host", "");
            mog_setting_set("fsck_stop_time", v);
            if (end > highest) {
                snprintf(v, sizeof v, "%lld", (long long)end);
                mog_setting_set("fsck_highest_fid_checked", v);
            }
        }
    }
    return NULL;
}

/* ---- rebalance (the moves are in rebalance.c) ------------------------------------------------ */

static void *rebal_thread(void *arg)
{
    (void)arg;
    while (!J.stop) {
        if (mog.monitor_round == 0 || !mog_rebal_step())
            nap(&J.rebal, 1000);
    }
    return NULL;
}

/* ---- life cycle ------------------------------------------------------------------------------------ */

static int spawn(void *(*fn)(void *))
{
    if (J.nthreads >= (int)(sizeof J.threads / sizeof J.threads[0]))
        return -1;
    if (pthread_create(&J.threads[J.nthreads], NULL, fn, NULL) != 0)
        return -1;
    J.nthreads++;
    return 0;
}

int mog_jobs_start(void)
{
    srandom((unsigned)time(NULL) ^ (unsigned)getpid());
    int rc = 0;
    for (int i = 0; i < (mog.cfg.monitor_jobs > 0 ? 1 : 0); i++) {
        rc |= spawn(monitor_thread);
    }
    for (int i = 0; i < mog.cfg.replicate_jobs && i < 16; i++)
        rc |= spawn(replicate_thread);
    for (int i = 0; i < mog.cfg.delete_jobs && i < 16; i++)
        rc |= spawn(delete_thread);
    if (mog.cfg.fsck_jobs > 0)
        rc |= spawn(fsck_thread);
    rc |= spawn(rebal_thread);
    return rc;
}

void mog_jobs_stop(void)
{
    J.stop = true;
    kick(&J.monitor);
    kick(&J.repl);
    kick(&J.del);
    kick(&J.fsck);
    kick(&J.rebal);
    pthread_mutex_lock(&J.round_mu);
    pthread_cond_broadcast(&J.round_cv);
    pthread_mutex_unlock(&J.round_mu);
    for (int i = 0; i < J.nthreads; i++)
        pthread_join(J.threads[i], NULL);
    J.nthreads = 0;
}
