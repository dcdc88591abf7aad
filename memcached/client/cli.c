/* memcached-cli: a small command-line client on libmc.
 *
 *   memcached-cli [-s servers] [-M] [-T ms] <command> [args]
 *   memcached-cli --help | --version
 *
 * Commands: get KEY..., set KEY VALUE [EXPTIME [FLAGS]], add, replace
 * (as set), delete KEY, incr KEY N, decr KEY N, touch KEY EXPTIME,
 * flush [DELAY], stats [GROUP], version, server KEY (which server a key
 * maps to). A VALUE of "-" is read from standard input. Servers come from
 * -s or $MEMCACHED_SERVERS (default 127.0.0.1:11211). Exit status 0 on
 * success, 1 on a miss / not stored, 2 on errors. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/client.h"
#include "memcached/client/libmc.h"

/* Speaks memcached 1.6.18's protocols (the daemon's version). */
#define CLI_VERSION "1.6.18"

static void usage(FILE *f)
{
    fprintf(f, "usage: memcached-cli [-s host:port,...] [-M] [-T timeout_ms] command [args]\n"
               "       memcached-cli --help | --version\n"
               "  get KEY...                      print each hit as KEY FLAGS BYTES, then the value\n"
               "  set|add|replace KEY VALUE [EXPTIME [FLAGS]]   VALUE - reads stdin\n"
               "  append|prepend KEY VALUE\n"
               "  delete KEY | incr KEY N | decr KEY N | touch KEY EXPTIME\n"
               "  flush [DELAY] | stats [GROUP] | version | server KEY\n"
               "  -s  servers (default $MEMCACHED_SERVERS or 127.0.0.1:11211)\n"
               "  -M  use the meta protocol   -T  I/O timeout in milliseconds\n"
               "  -h, --help     this text    -V, --version  print the version\n"
               "exit status: 0 ok, 1 miss or not stored, 2 error\n");
}

static int exit_code(int rc)
{
    if (rc == MC_CLIENT_OK)
        return 0;
    if (rc == MC_CLIENT_NOT_FOUND || rc == MC_CLIENT_NOT_STORED || rc == MC_CLIENT_EXISTS)
        return 1;
    return 2;
}

static int report(const char *what, int rc)
{
    if (rc != MC_CLIENT_OK)
        fprintf(stderr, "%s: %s\n", what, mc_client_strerror(rc));
    return exit_code(rc);
}

static void print_hit(const char *key, size_t nkey, const char *data, size_t len, uint32_t flags, uint64_t cas,
                      void *arg)
{
    (void)cas;
    int *hits = arg;
    (*hits)++;
    printf("%.*s %" PRIu32 " %zu\n", (int)nkey, key, flags, len);
    fwrite(data, 1, len, stdout);
    putchar('\n');
}

static void print_stat(const char *name, const char *value, void *arg)
{
    const char *server = arg;
    printf("%s %s %s\n", server, name, value);
}

int main(int argc, char **argv)
{
    const char *servers = getenv("MEMCACHED_SERVERS");
    struct mc_client_options o = { 0 };
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },          { "version", no_argument, NULL, 'V' },
        { "servers", required_argument, NULL, 's' }, { "meta", no_argument, NULL, 'M' },
        { "timeout", required_argument, NULL, 'T' }, { NULL, 0, NULL, 0 },
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "+s:MT:hV", longopts, NULL)) != -1) {
        switch (opt) {
        case 's': servers = optarg; break;
        case 'M': o.protocol = MC_CLIENT_META; break;
        case 'T': {
            char *end;
            long ms = strtol(optarg, &end, 10);
            if (end == optarg || *end || ms < 0 || ms > 3600000) {
                fprintf(stderr, "memcached-cli: bad timeout '%s' (0..3600000 ms)\n", optarg);
                return 2;
            }
            o.io_timeout_ms = (int)ms;
            break;
        }
        case 'h': usage(stdout); return 0;
        case 'V': printf("memcached-cli %s (libmc)\n", CLI_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    char err[256];
    struct mc_client *c = mc_client_new(servers ? servers : "127.0.0.1:11211", &o, err, sizeof err);
    if (!c) {
        fprintf(stderr, "memcached-cli: %s\n", err);
        return 2;
    }
    const char *cmd = argv[optind];
    char **a = argv + optind + 1;
    int na = argc - optind - 1;
    int code = 2;
    if (!strcmp(cmd, "get") && na >= 1) {
        size_t *lens = calloc((size_t)na, sizeof *lens);
        for (int i = 0; i < na && lens; i++)
            lens[i] = strlen(a[i]);
        int hits = 0;
        int rc = lens ? mc_client_get_multi(c, (const char *const *)a, lens, (size_t)na, print_hit, &hits)
                      : MC_CLIENT_NO_MEMORY;
        free(lens);
        code = rc != MC_CLIENT_OK ? report("get", rc) : hits == na ? 0 : 1;
    } else if ((!strcmp(cmd, "set") || !strcmp(cmd, "add") || !strcmp(cmd, "replace") || !strcmp(cmd, "append") ||
                !strcmp(cmd, "prepend")) &&
               na >= 2) {
        size_t len;
        char *val = NULL;
        if (!strcmp(a[1], "-")) {
            val = client_read_all(STDIN_FILENO, &len);
            if (!val) {
                fprintf(stderr, "out of memory\n");
                mc_client_free(c);
                return 2;
            }
        } else {
            len = strlen(a[1]);
        }
        const char *v = val ? val : a[1];
        int32_t exp = na >= 3 ? (int32_t)atol(a[2]) : 0;
        uint32_t flags = na >= 4 ? (uint32_t)strtoul(a[3], NULL, 10) : 0;
        size_t nk = strlen(a[0]);
        int rc;
        if (!strcmp(cmd, "set"))
            rc = mc_client_set(c, a[0], nk, v, len, flags, exp);
        else if (!strcmp(cmd, "add"))
            rc = mc_client_add(c, a[0], nk, v, len, flags, exp);
        else if (!strcmp(cmd, "replace"))
            rc = mc_client_replace(c, a[0], nk, v, len, flags, exp);
        else if (!strcmp(cmd, "append"))
            rc = mc_client_append(c, a[0], nk, v, len);
        else
            rc = mc_client_prepend(c, a[0], nk, v, len);
        free(val);
        code = report(cmd, rc);
    } else if (!strcmp(cmd, "delete") && na == 1) {
        code = report("delete", mc_client_delete(c, a[0], strlen(a[0])));
    } else if ((!strcmp(cmd, "incr") || !strcmp(cmd, "decr")) && na == 2) {
        uint64_t v = 0;
        uint64_t d = strtoull(a[1], NULL, 10);
        int rc =
            cmd[0] == 'i' ? mc_client_incr(c, a[0], strlen(a[0]), d, &v) : mc_client_decr(c, a[0], strlen(a[0]), d, &v);
        if (rc == MC_CLIENT_OK)
            printf("%" PRIu64 "\n", v);
        code = report(cmd, rc);
    } else if (!strcmp(cmd, "touch") && na == 2) {
        code = report("touch", mc_client_touch(c, a[0], strlen(a[0]), (int32_t)atol(a[1])));
    } else if (!strcmp(cmd, "flush") && na <= 1) {
        code = report("flush", mc_client_flush_all(c, na ? (int32_t)atol(a[0]) : 0));
    } else if (!strcmp(cmd, "stats") && na <= 1) {
        code = 0;
        for (size_t i = 0; i < mc_client_server_count(c); i++) {
            int rc = mc_client_stats(c, i, na ? a[0] : NULL, print_stat, (void *)mc_client_server_name(c, i));
            if (rc != MC_CLIENT_OK) {
                fprintf(stderr, "%s: %s\n", mc_client_server_name(c, i), mc_client_strerror(rc));
                code = 2;
            }
        }
    } else if (!strcmp(cmd, "version") && na == 0) {
        code = 0;
        for (size_t i = 0; i < mc_client_server_count(c); i++) {
            char v[128];
            int rc = mc_client_version(c, i, v, sizeof v);
            if (rc == MC_CLIENT_OK) {
                printf("%s %s\n", mc_client_server_name(c, i), v);
            } else {
                fprintf(stderr, "%s: %s\n", mc_client_server_name(c, i), mc_client_strerror(rc));
                code = 2;
            }
        }
    } else if (!strcmp(cmd, "server") && na == 1) {
        int i = mc_client_server_for_key(c, a[0], strlen(a[0]));
        if (i >= 0) {
            printf("%s\n", mc_client_server_name(c, (size_t)i));
            code = 0;
        }
    } else {
        usage(stderr);
    }
    mc_client_free(c);
    return code;
}
