/* mogile-bench: a load driver for MogileFS trackers, on libmogile.
 *
 *   mogile-bench TRACKERS DOMAIN CLASS MODE THREADS SECONDS [SIZE]
 *   MODE: upload    create_open + PUT SIZE bytes + create_close (MogileFS::Client's store_content)
 *         get_paths get_paths noverify=1 of keys stored beforehand
 * Prints "ops=N errors=E secs=S ops_per_sec=R". Each thread has its own
 * connection (clients are not thread-safe). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mogilefs/client/libmogile.h"
#include "mogilefs/mogilefs.h"

static const char *trackers, *domain, *cls, *mode;
static int seconds;
static size_t size = 1024;
static _Atomic long ops, errors;
static double t_end;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *worker(void *arg)
{
    long id = (long)arg;
    struct mog_client_options o = { .timeout_ms = 10000 };
    struct mog_client *c = mog_client_new(trackers, domain, &o);
    char *data = malloc(size + 1);
    memset(data, 'x', size);
    char key[128];
    long n = 0;
    while (now() < t_end) {
        int rc;
        if (!strcmp(mode, "upload")) {
            snprintf(key, sizeof key, "up-%ld-%ld", id, n);
            rc = mog_client_store(c, key, cls, data, size);
        } else {
            char *paths[4];
            snprintf(key, sizeof key, "gp-%ld", (id + n) % 20);
            rc = mog_client_get_paths(c, key, 1, paths, 4);
            for (int i = 0; i < rc; i++)
                free(paths[i]);
        }
        if (rc < 0)
            errors++;
        else
            ops++;
        n++;
    }
    free(data);
    mog_client_free(c);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("Usage: mogile-bench TRACKERS DOMAIN CLASS upload|get_paths THREADS SECONDS [SIZE]\n"
               "Drive mogilefsd trackers with THREADS connections for SECONDS.\n"
               "\n"
               "  upload     create_open, PUT of SIZE bytes (default 1024), create_close per operation\n"
               "  get_paths  get_paths noverify=1 of keys stored beforehand\n"
               "\n"
               "Prints \"ops=N errors=E secs=S ops_per_sec=R\".\n"
               "  -h, --help     show this help and exit\n"
               "  -V, --version  show the version and exit\n");
        return 0;
    }
    if (argc == 2 && (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V"))) {
        printf("mogile-bench %s\n", MOG_VERSION);
        return 0;
    }
    if (argc < 7) {
        fprintf(stderr, "usage: mogile-bench TRACKERS DOMAIN CLASS upload|get_paths THREADS SECONDS [SIZE]\n");
        return 2;
    }
    trackers = argv[1];
    domain = argv[2];
    cls = argv[3];
    mode = argv[4];
    int threads = atoi(argv[5]);
    seconds = atoi(argv[6]);
    if (argc > 7)
        size = (size_t)atol(argv[7]);
    if (threads < 1 || threads > 256)
        threads = 1;
    if (!strcmp(mode, "get_paths")) {
        /* The keys read are stored before the clock starts. */
        struct mog_client *c = mog_client_new(trackers, domain, NULL);
        char *data = calloc(1, size + 1), key[64];
        for (int i = 0; i < 20; i++) {
            snprintf(key, sizeof key, "gp-%d", i);
            if (mog_client_store(c, key, cls, data, size) < 0) {
                fprintf(stderr, "seed store failed: %s\n", mog_client_error(c));
                return 1;
            }
        }
        free(data);
        mog_client_free(c);
    }
    pthread_t *t = calloc((size_t)threads, sizeof *t);
    double start = now();
    t_end = start + seconds;
    for (long i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    double secs = now() - start;
    printf("ops=%ld errors=%ld secs=%.2f ops_per_sec=%.1f\n", (long)ops, (long)errors, secs, ops / secs);
    free(t);
    return 0;
}
