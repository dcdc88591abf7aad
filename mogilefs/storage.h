/* storage.h: what mogstored.c and storage.c share (settings, counters, the
 * accept functions and the threads' start/stop). */
#ifndef MOG_STORAGE_H
#define MOG_STORAGE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/stats.h"

struct core_loop;

struct mog_st_cfg {
    char *httplisten, *mgmtlisten, *docroot;
    int maxconns;
    int threads; /* event loops */
    uint64_t max_put;
    int idle_timeout;
    int usage_interval;
    int max_hash_jobs;
    int disk_threads; /* the common/work pool of GET/HEAD disk work; 0: on the loop */
    char *config_dummy;
};
extern struct mog_st_cfg mog_st_cfg;

struct mog_st_state {
    struct stats_counter gets, heads, puts, deletes, moves, put_bytes, errors, side_cmds;
    _Atomic int hash_jobs;
    _Atomic bool stop;
    pthread_t usage_thread;
    bool usage_started;
};
extern struct mog_st_state mog_st;

void mog_st_http_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen, void *arg);
void mog_st_http_reject(int fd, void *arg);
void mog_st_side_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen, void *arg);
void mog_st_sync_start(int n);
void mog_st_sync_stop(void);
void mog_st_thread_exit(void);
void mog_st_watch_start(struct core_loop *loop);
void mog_st_watch_stop(struct core_loop *loop);
void mog_st_reload(void);

#endif
