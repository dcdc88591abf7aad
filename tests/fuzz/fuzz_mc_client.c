/* libFuzzer target: libmc's reply readers (text, meta and binary frames,
 * compressed values) over whatever a server might send. A thread serves
 * the input as the reply to every connection on a unix socket, then
 * closes; the client makes each kind of call in each protocol with
 * compression on. Every call must come back (no hang, no read outside
 * what arrived, no unbounded allocation). */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "memcached/client/libmc.h"

static char path[108];
static int lfd = -1;
/* The input being served: a copy, since a connection may be accepted
 * after its input's run is over (the client gave up on it). */
static pthread_mutex_t cur_lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t *cur_data;
static size_t cur_size;

static void *server(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            continue;
        pthread_mutex_lock(&cur_lock);
        size_t n = cur_size, off = 0;
        uint8_t *d = malloc(n ? n : 1);
        if (d)
            memcpy(d, cur_data, n);
        pthread_mutex_unlock(&cur_lock);
        while (d && off < n) {
            ssize_t w = send(fd, d + off, n - off, MSG_NOSIGNAL);
            if (w <= 0)
                break;
            off += (size_t)w;
        }
        free(d);
        close(fd);
    }
    return NULL;
}

static void cleanup(void) { unlink(path); }

static void setup(void)
{
    snprintf(path, sizeof path, "/tmp/fuzz_mc_client.%d.sock", (int)getpid());
    unlink(path);
    lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    memcpy(sun.sun_path, path, strlen(path) + 1);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sun, sizeof sun) < 0 || listen(lfd, 64) < 0)
        abort();
    atexit(cleanup);
    pthread_t t;
    pthread_create(&t, NULL, server, NULL);
    pthread_detach(t);
}

static void on_hit(const char *key, size_t nkey, const char *data, size_t len, uint32_t flags, uint64_t cas, void *arg)
{
    (void)flags;
    (void)cas;
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < nkey; i++)
        sink ^= (uint8_t)key[i];
    if (len)
        sink ^= (uint8_t)data[0] ^ (uint8_t)data[len - 1];
    *(size_t *)arg += len + sink * 0;
}

static void on_stat(const char *name, const char *value, void *arg) { *(size_t *)arg += strlen(name) + strlen(value); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (lfd < 0)
        setup();
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    pthread_mutex_lock(&cur_lock);
    free(cur_data);
    cur_data = copy;
    cur_size = size;
    pthread_mutex_unlock(&cur_lock);
    for (int proto = 0; proto < 3; proto++) {
        struct mc_client_options o = { .connect_timeout_ms = 200,
                                       .io_timeout_ms = 200,
                                       .failure_limit = 1000,
                                       .retry_interval_ms = 1,
                                       .protocol = (enum mc_client_protocol)proto,
                                       .compress_threshold = 1 };
        struct mc_client *c = mc_client_new(path, &o, NULL, 0);
        if (!c)
            abort();
        size_t total = 0;
        const char *keys[3] = { "a", "bb", "ccc" };
        size_t nkeys[3] = { 1, 2, 3 };
        mc_client_get_multi(c, keys, nkeys, 3, on_hit, &total);
        struct mc_client_value v;
        if (mc_client_get(c, "a", 1, &v) == MC_CLIENT_OK) {
            if (v.data[v.len] != 0)
                abort();
            mc_client_value_free(&v);
        }
        mc_client_set(c, "a", 1, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", 32, 0, 0);
        uint64_t n;
        mc_client_incr(c, "a", 1, 1, &n);
        mc_client_stats(c, 0, proto == 1 ? "settings" : NULL, on_stat, &total);
        char ver[64];
        mc_client_version(c, 0, ver, sizeof ver);
        mc_client_free(c);
    }
    return 0;
}
