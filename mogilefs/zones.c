/* zones: MogileFS-Network's view of the network — which zone an address
 * is in (server settings network_zones = "a,b" and zone_<name> = netmask
 * list), the network MultipleNetworks counts copies by, and the ZoneLocal
 * plugin's rule: devices in the caller's zone first.
 *
 * The zone table is read from server_settings on first use and again
 * after network_reload_interval seconds (default 60, as the original) or
 * at once when this tracker changes a zone setting. Called from query and
 * job threads (it may read the database); the table is copied out under
 * a mutex, never held across a database call. */
#include "mogilefs/mogilefs.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/log.h"

#define ZONE_MAX_NETS 256

struct zone_net {
    uint32_t net, mask;
    char zone[64];
};

static struct {
    pthread_mutex_t mu;
    struct zone_net nets[ZONE_MAX_NETS];
    size_t n;
    time_t next_reload;
} Z = { .mu = PTHREAD_MUTEX_INITIALIZER };

bool mog_zone_local;        /* plugins = ZoneLocal */
char mog_local_network[64]; /* local_network (the replicator's own zone) */

void mog_zones_invalidate(void)
{
    pthread_mutex_lock(&Z.mu);
    Z.next_reload = 0;
    pthread_mutex_unlock(&Z.mu);
}

static int popcount32(uint32_t v)
{
    int n = 0;
    for (; v; v &= v - 1)
        n++;
    return n;
}

/* Read the table from the database (outside the mutex). */
static size_t zones_load(struct zone_net *out, size_t max)
{
    char list[1024];
    size_t n = 0;
    if (mog_setting_get("network_zones", list, sizeof list) < 0)
        return 0;
    char *save = NULL;
    for (char *z = strtok_r(list, ", \t", &save); z; z = strtok_r(NULL, ", \t", &save)) {
        char key[96], masks[1024];
        snprintf(key, sizeof key, "zone_%s", z);
        if (mog_setting_get(key, masks, sizeof masks) < 0 || !masks[0]) {
            log_warn("mogilefsd: network zone '%s' has no %s setting", z, key);
            continue;
        }
        char *s2 = NULL;
        for (char *m = strtok_r(masks, ", \t", &s2); m && n < max; m = strtok_r(NULL, ", \t", &s2)) {
            if (mog_netmask_parse(m, &out[n].net, &out[n].mask) < 0) {
                log_warn("mogilefsd: %s: '%s' is not a netmask", key, m);
                continue;
            }
            snprintf(out[n].zone, sizeof out[n].zone, "%s", z);
            n++;
        }
    }
    return n;
}

static void zones_fresh(void)
{
    time_t now = time(NULL);
    pthread_mutex_lock(&Z.mu);
    bool stale = now >= Z.next_reload;
    pthread_mutex_unlock(&Z.mu);
    if (!stale)
        return;
    struct zone_net *tmp = calloc(ZONE_MAX_NETS, sizeof *tmp);
    if (!tmp)
        return;
    size_t n = zones_load(tmp, ZONE_MAX_NETS);
    char iv[32];
    int interval = mog_setting_get("network_reload_interval", iv, sizeof iv) == 0 && atoi(iv) > 0 ? atoi(iv) : 60;
    pthread_mutex_lock(&Z.mu);
    memcpy(Z.nets, tmp, n * sizeof *tmp);
    Z.n = n;
    Z.next_reload = now + interval;
    pthread_mutex_unlock(&Z.mu);
    free(tmp);
}

static int ip4(const char *ip, uint32_t *out)
{
    struct in_addr a;
    if (!ip)
        return -1;
    if (!strncasecmp(ip, "::ffff:", 7))
        ip += 7;
    char buf[64];
    snprintf(buf, sizeof buf, "%s", ip);
    char *slash = strchr(buf, '/'); /* local_network may be a CIDR */
    if (slash)
        *slash = '\0';
    if (inet_pton(AF_INET, buf, &a) != 1)
        return -1;
    *out = ntohl(a.s_addr);
    return 0;
}

/* The most specific zone netmask holding ip; -1 if none. */
static int best_match(uint32_t a, struct zone_net *hit)
{
    int best = -1;
    pthread_mutex_lock(&Z.mu);
    for (size_t i = 0; i < Z.n; i++)
        if ((a & Z.nets[i].mask) == Z.nets[i].net && popcount32(Z.nets[i].mask) > best) {
            best = popcount32(Z.nets[i].mask);
            *hit = Z.nets[i];
        }
    pthread_mutex_unlock(&Z.mu);
    return best;
}

int mog_zone_for_ip(const char *ip, char *out, size_t len)
{
    uint32_t a;
    struct zone_net hit;
    if (ip4(ip, &a) < 0)
        return -1;
    zones_fresh();
    if (best_match(a, &hit) < 0)
        return -1;
    snprintf(out, len, "%s", hit.zone);
    return 0;
}

void mog_network_for_ip(const char *ip, char *out, size_t len)
{
    uint32_t a;
    struct zone_net hit;
    if (ip4(ip, &a) < 0) {
        snprintf(out, len, "0.0.0.0/0"); /* Net::Netmask 'default' */
        return;
    }
    zones_fresh();
    if (best_match(a, &hit) < 0) {
        hit.net = a & 0xffff0000u; /* the original's default: the /16 */
        hit.mask = 0xffff0000u;
    }
    snprintf(out, len, "%u.%u.%u.%u/%d", hit.net >> 24, (hit.net >> 16) & 255, (hit.net >> 8) & 255, hit.net & 255,
             popcount32(hit.mask));
}

size_t mog_zone_first(const char *ip, const char *const *host_ips, size_t n, size_t *order)
{
    char mine[64], z[64];
    size_t k = 0;
    bool have = ip && mog_zone_for_ip(ip, mine, sizeof mine) == 0;
    if (have)
        for (size_t i = 0; i < n; i++)
            if (mog_zone_for_ip(host_ips[i], z, sizeof z) == 0 && !strcmp(z, mine))
                order[k++] = i;
    size_t local = k;
    for (size_t i = 0; i < n; i++) {
        bool taken = false;
        for (size_t j = 0; j < local; j++)
            if (order[j] == i)
                taken = true;
        if (!taken)
            order[k++] = i;
    }
    return local;
}
