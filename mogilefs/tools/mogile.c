/* mogile: one command line tool for what mogadm and the mog* file tools do,
 * on libmogile.
 *
 *   mogile [--trackers=H:P,...] [--domain=D] [--class=C] COMMAND ...
 *   domain list | add D | delete D
 *   class list | add D C [--mindevcount=N] [--replpolicy=P] [--hashtype=MD5]
 *         | modify D C --mindevcount=N ... | delete D C
 *   host list | add NAME --ip=IP --port=P [--status=alive] | modify NAME --status=S ... | delete NAME
 *   device list | add HOST DEVID [--state=alive] | mark HOST DEVID STATE | weight HOST DEVID W
 *   check                       hosts and devices with their state and space
 *   upload KEY FILE | fetch KEY [FILE] | delete KEY | rename FROM TO
 *   info KEY | paths KEY | list [PREFIX]
 *   raw CMD [k=v ...]           any tracker command; prints the reply pairs
 *   ping                        check that a tracker answers */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mogilefs/client/libmogile.h"
#include "mogilefs/mogilefs.h"

static const char *trackers = "127.0.0.1:7001";
static const char *domain;
static const char *cls;
/* --name=value options other than the three above, passed to the tracker. */
static const char *opt_k[32], *opt_v[32];
static int nopt;

/* --help (stdout, exit 0) is also the man page's text (help2man); a usage
 * error prints the same to stderr and exits 2. */
static void help(FILE *f, int code)
{
    fprintf(
        f, "Usage: mogile [OPTION]... COMMAND [ARG]...\n"
           "Administer a MogileFS domain and its files through mogilefsd trackers.\n"
           "\n"
           "Options:\n"
           "  --trackers=H:P,...   trackers to ask, tried in turn (default 127.0.0.1:7001, or\n"
           "                       $MOGILE_TRACKERS when set)\n"
           "  --domain=D           the domain file commands act on\n"
           "  --class=C            the class of uploaded files (default: the domain's default)\n"
           "  --KEY=VALUE          further arguments of a command (see below)\n"
           "  -h, --help           show this help and exit\n"
           "  -V, --version        show the version and exit\n"
           "\n"
           "Commands:\n"
           "  domain list | add D | delete D\n"
           "  class list | add D C [--mindevcount=N] [--replpolicy=P] [--hashtype=MD5] | modify D C ... | delete D C\n"
           "  host list | add NAME --ip=IP --port=P [--status=alive] | modify NAME --status=S | delete NAME\n"
           "  device list | add HOST DEVID [--state=alive] | mark HOST DEVID STATE | weight HOST DEVID W\n"
           "  check | ping\n"
           "  upload KEY FILE | fetch KEY [FILE] | delete KEY | rename FROM TO | info KEY | paths KEY | list [PREFIX]\n"
           "  raw CMD [k=v ...]    any tracker command, its reply printed as k=v lines\n"
           "\n"
           "Exit status: 0 on success, 1 when the tracker answered an error or a transfer failed,\n"
           "2 on a usage error or a bad tracker list.\n");
    exit(code);
}

static void usage(void) { help(stderr, 2); }

static int die(struct mog_client *c, const char *what)
{
    fprintf(stderr, "mogile: %s: %s (%s)\n", what, mog_client_error(c), mog_client_error_text(c));
    return 1;
}

/* Request with the extra --k=v options appended to kv. */
static int req(struct mog_client *c, const char *cmd, const char **kv, struct mog_client_res **res)
{
    const char *all[80];
    int n = 0;
    for (int i = 0; kv && kv[i] && n < 60; i++)
        all[n++] = kv[i];
    for (int i = 0; i < nopt && n < 78; i++) {
        all[n++] = opt_k[i];
        all[n++] = opt_v[i];
    }
    all[n] = NULL;
    return mog_client_request(c, cmd, all, res);
}

static int simple(struct mog_client *c, const char *cmd, const char **kv)
{
    struct mog_client_res *res;
    if (req(c, cmd, kv, &res) < 0)
        return die(c, cmd);
    mog_client_res_free(res);
    return 0;
}

static const char *g(const struct mog_client_res *r, const char *fmt, int a, int b)
{
    char k[128];
    snprintf(k, sizeof k, fmt, a, b);
    const char *v = mog_client_res_get(r, k);
    return v ? v : "";
}

static int domain_cmd(struct mog_client *c, int argc, char **argv)
{
    if (argc < 1)
        usage();
    if (!strcmp(argv[0], "list") || (!strcmp(argv[0], "class") && 0)) {
        struct mog_client_res *r;
        if (req(c, "get_domains", NULL, &r) < 0)
            return die(c, "get_domains");
        int n = atoi(g(r, "domains", 0, 0));
        printf("%-20s %-20s %-11s %-18s %s\n", "domain", "class", "mindevcount", "replpolicy", "hashtype");
        for (int i = 1; i <= n; i++) {
            int nc = atoi(g(r, "domain%dclasses", i, 0));
            for (int j = 1; j <= nc; j++)
                printf("%-20s %-20s %-11s %-18s %s\n", g(r, "domain%d", i, 0), g(r, "domain%dclass%dname", i, j),
                       g(r, "domain%dclass%dmindevcount", i, j), g(r, "domain%dclass%dreplpolicy", i, j),
                       g(r, "domain%dclass%dhashtype", i, j));
        }
        mog_client_res_free(r);
        return 0;
    }
    if (argc < 2)
        usage();
    const char *kv[] = { "domain", argv[1], NULL };
    if (!strcmp(argv[0], "add"))
        return simple(c, "create_domain", kv);
    if (!strcmp(argv[0], "delete"))
        return simple(c, "delete_domain", kv);
    usage();
    return 2;
}

static int class_cmd(struct mog_client *c, int argc, char **argv)
{
    if (argc < 1)
        usage();
    if (!strcmp(argv[0], "list")) {
        char *l[] = { "list" };
        return domain_cmd(c, 1, l);
    }
    if (argc < 3)
        usage();
    const char *kv[] = { "domain", argv[1], "class", argv[2], NULL };
    if (!strcmp(argv[0], "add"))
        return simple(c, "create_class", kv);
    if (!strcmp(argv[0], "modify"))
        return simple(c, "update_class", kv);
    if (!strcmp(argv[0], "delete"))
        return simple(c, "delete_class", kv);
    usage();
    return 2;
}

static int host_list(struct mog_client *c)
{
    struct mog_client_res *r;
    if (req(c, "get_hosts", NULL, &r) < 0)
        return die(c, "get_hosts");
    int n = atoi(g(r, "hosts", 0, 0));
    printf("%-6s %-20s %-16s %-6s %s\n", "hostid", "hostname", "ip", "port", "status");
    for (int i = 1; i <= n; i++)
        printf("%-6s %-20s %-16s %-6s %s\n", g(r, "host%d_hostid", i, 0), g(r, "host%d_hostname", i, 0),
               g(r, "host%d_hostip", i, 0), g(r, "host%d_http_port", i, 0), g(r, "host%d_status", i, 0));
    mog_client_res_free(r);
    return 0;
}

static int host_cmd(struct mog_client *c, int argc, char **argv)
{
    if (argc < 1)
        usage();
    if (!strcmp(argv[0], "list"))
        return host_list(c);
    if (argc < 2)
        usage();
    const char *kv[] = { "host", argv[1], NULL };
    if (!strcmp(argv[0], "add"))
        return simple(c, "create_host", kv);
    if (!strcmp(argv[0], "modify"))
        return simple(c, "update_host", kv);
    if (!strcmp(argv[0], "delete"))
        return simple(c, "delete_host", kv);
    usage();
    return 2;
}

static int device_list(struct mog_client *c)
{
    struct mog_client_res *r;
    if (req(c, "get_devices", NULL, &r) < 0)
        return die(c, "get_devices");
    int n = atoi(g(r, "devices", 0, 0));
    printf("%-6s %-6s %-9s %-12s %-6s %10s %10s\n", "devid", "hostid", "status", "observed", "weight", "mb_used",
           "mb_total");
    for (int i = 1; i <= n; i++)
        printf("%-6s %-6s %-9s %-12s %-6s %10s %10s\n", g(r, "dev%d_devid", i, 0), g(r, "dev%d_hostid", i, 0),
               g(r, "dev%d_status", i, 0), g(r, "dev%d_observed_state", i, 0), g(r, "dev%d_weight", i, 0),
               g(r, "dev%d_mb_used", i, 0), g(r, "dev%d_mb_total", i, 0));
    mog_client_res_free(r);
    return 0;
}

static int device_cmd(struct mog_client *c, int argc, char **argv)
{
    if (argc < 1)
        usage();
    if (!strcmp(argv[0], "list"))
        return device_list(c);
    if (argc < 3)
        usage();
    if (!strcmp(argv[0], "add")) {
        const char *kv[] = { "hostname", argv[1], "devid", argv[2], NULL };
        return simple(c, "create_device", kv);
    }
    if (argc < 4)
        usage();
    if (!strcmp(argv[0], "mark")) {
        const char *kv[] = { "host", argv[1], "device", argv[2], "state", argv[3], NULL };
        return simple(c, "set_state", kv);
    }
    if (!strcmp(argv[0], "weight")) {
        const char *kv[] = { "host", argv[1], "device", argv[2], "weight", argv[3], NULL };
        return simple(c, "set_weight", kv);
    }
    usage();
    return 2;
}

static int write_file(const char *path, const void *data, size_t len)
{
    FILE *f = (!path || !strcmp(path, "-")) ? stdout : fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, len, f);
    int rc = (w == len) ? 0 : -1;
    if (f != stdout)
        rc |= fclose(f);
    else
        fflush(f);
    return rc;
}

int main(int argc, char **argv)
{
    int i = 1;
    char *pos[16];
    int npos = 0;
    for (; i < argc; i++) {
        char *a = argv[i];
        if (!strncmp(a, "--", 2) && strchr(a, '=')) {
            char *eq = strchr(a, '=');
            *eq = '\0';
            const char *k = a + 2, *v = eq + 1;
            if (!strcmp(k, "trackers"))
                trackers = v;
            else if (!strcmp(k, "domain"))
                domain = v;
            else if (!strcmp(k, "class"))
                cls = v;
            else if (nopt < 32) {
                opt_k[nopt] = k;
                opt_v[nopt++] = v;
            }
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help(stdout, 0);
        } else if (!strcmp(a, "-V") || !strcmp(a, "--version")) {
            printf("mogile %s\n", MOG_VERSION);
            return 0;
        } else if (npos < 16) {
            pos[npos++] = a;
        }
    }
    if (npos < 1)
        usage();
    const char *env = getenv("MOGILE_TRACKERS");
    if (env && !strcmp(trackers, "127.0.0.1:7001"))
        trackers = env;
    struct mog_client *c = mog_client_new(trackers, domain, NULL);
    if (!c) {
        fprintf(stderr, "mogile: bad tracker list '%s'\n", trackers);
        return 2;
    }
    const char *cmd = pos[0];
    int rc = 0;
    if (!strcmp(cmd, "domain"))
        rc = domain_cmd(c, npos - 1, pos + 1);
    else if (!strcmp(cmd, "class"))
        rc = class_cmd(c, npos - 1, pos + 1);
    else if (!strcmp(cmd, "host"))
        rc = host_cmd(c, npos - 1, pos + 1);
    else if (!strcmp(cmd, "device"))
        rc = device_cmd(c, npos - 1, pos + 1);
    else if (!strcmp(cmd, "check")) {
        rc = host_list(c);
        printf("\n");
        rc |= device_list(c);
    } else if (!strcmp(cmd, "ping")) {
        struct mog_client_res *r;
        if (req(c, "noop", NULL, &r) < 0)
            rc = die(c, "noop");
        else {
            mog_client_res_free(r);
            printf("tracker %s answers\n", trackers);
        }
    } else if (!strcmp(cmd, "upload") && npos == 3) {
        if (!domain)
            usage();
        if (mog_client_store_file(c, pos[1], cls, pos[2]) < 0)
            rc = die(c, "upload");
    } else if (!strcmp(cmd, "fetch") && npos >= 2) {
        void *data;
        size_t len;
        if (mog_client_fetch(c, pos[1], &data, &len) < 0)
            rc = die(c, "fetch");
        else {
            if (write_file(npos > 2 ? pos[2] : NULL, data, len) < 0) {
                fprintf(stderr, "mogile: write: %s\n", strerror(errno));
                rc = 1;
            }
            free(data);
        }
    } else if (!strcmp(cmd, "delete") && npos == 2) {
        if (mog_client_delete(c, pos[1]) < 0)
            rc = die(c, "delete");
    } else if (!strcmp(cmd, "rename") && npos == 3) {
        if (mog_client_rename(c, pos[1], pos[2]) < 0)
            rc = die(c, "rename");
    } else if (!strcmp(cmd, "paths") && npos == 2) {
        char *paths[16];
        int n = mog_client_get_paths(c, pos[1], 0, paths, 16);
        if (n < 0)
            rc = die(c, "get_paths");
        for (int k = 0; k < n; k++) {
            printf("%s\n", paths[k]);
            free(paths[k]);
        }
    } else if (!strcmp(cmd, "info") && npos == 2) {
        const char *kv[] = { "key", pos[1], "devices", "1", NULL };
        struct mog_client_res *r;
        if (req(c, "file_info", kv, &r) < 0)
            rc = die(c, "file_info");
        else {
            for (int k = 0; k < mog_client_res_count(r); k++)
                printf("%s: %s\n", mog_client_res_key(r, k), mog_client_res_value(r, k));
            mog_client_res_free(r);
        }
    } else if (!strcmp(cmd, "list")) {
        char *keys[1000], *after = NULL;
        for (;;) {
            int n = mog_client_list_keys(c, npos > 1 ? pos[1] : "", after, 1000, keys);
            if (n < 0) {
                rc = die(c, "list_keys");
                break;
            }
            if (n == 0)
                break;
            free(after);
            after = strdup(keys[n - 1]);
            for (int k = 0; k < n; k++) {
                printf("%s\n", keys[k]);
                free(keys[k]);
            }
        }
        free(after);
    } else if (!strcmp(cmd, "raw") && npos >= 2) {
        const char *kv[40];
        int n = 0;
        for (int k = 2; k < npos && n < 36; k++) {
            char *eq = strchr(pos[k], '=');
            if (!eq)
                continue;
            *eq = '\0';
            kv[n++] = pos[k];
            kv[n++] = eq + 1;
        }
        kv[n] = NULL;
        struct mog_client_res *r;
        if (req(c, pos[1], kv, &r) < 0)
            rc = die(c, pos[1]);
        else {
            for (int k = 0; k < mog_client_res_count(r); k++)
                printf("%s=%s\n", mog_client_res_key(r, k), mog_client_res_value(r, k));
            mog_client_res_free(r);
        }
    } else {
        usage();
    }
    mog_client_free(c);
    return rc;
}
