/* pb_web: the web_server role — common/httpd's file serving with the
 * service's parameters (docroot, index_files, dirindexing, enable_put,
 * enable_delete, min_put_directory, max_put_size, enable_md5,
 * enable_atomic_put) and the
 * plugins' serve_path / file_sent / poststat hooks. Its disk work runs on a common/work
 * pool unless `SERVER aio_mode = none` (then on the loop, as Perlbal's). */
#include <string.h>

#include <event2/buffer.h>

#include "common/conn.h"
#include "common/work.h"
#include "perlbal/perlbal.h"
#include "perlbal/plugin.h"

static void web_rewrite_path(void *arg, struct httpd_conn *h, char *path, size_t cap)
{
    (void)h;
    struct pb_service *svc = arg;
    if (svc->nplugins)
        pb_plugins_serve_path(svc, path, cap);
}

static void web_file_sent(void *arg, struct httpd_conn *h)
{
    struct pb_service *svc = arg;
    if (svc->nplugins)
        pb_plugins_file_sent(svc, h->data, false);
}

static bool web_poststat(void *arg, struct httpd_conn *h, int what, int64_t mtime)
{
    struct pb_service *svc = arg;
    return svc->nplugins && pb_plugins_poststat(svc, h->data, what, mtime);
}

void pb_web_sync(struct pb_service *svc)
{
    struct httpd_files *f = &svc->files;
    f->docroot = svc->docroot;
    f->index_files = svc->index_files;
    f->dirindexing = svc->dirindexing;
    f->dir_disabled_status = 200; /* as Perlbal: a 200 page saying so */
    f->bad_method_status = 400;   /* as Perlbal: POST, OPTIONS, ... */
    f->enable_put = svc->enable_put;
    f->enable_delete = svc->enable_delete;
    f->min_put_directory = svc->min_put_directory;
    f->max_put_size = svc->max_put_size;
    f->skip_md5_check = !svc->enable_md5;
    /* Perlbal: 200 for a stored PUT, 201 when its Content-MD5 was verified,
     * each with its short page; its table of reason phrases has no 201, so
     * that one is "201 " and "<h1>201</h1>" */
    f->put_ok_status = 200;
    f->put_md5_ok_status = 201;
    f->put_md5_ok_reason = "";
    f->put_status_body = true;
    /* Perlbal writes a PUT without Content-MD5 in place; enable_atomic_put
     * (ours) writes every PUT to a temporary name and renames it */
    f->put_in_place = !svc->enable_atomic_put;
    f->concat_get = svc->enable_concatenate_get;
    f->rewrite_path = web_rewrite_path;
    f->file_sent = web_file_sent;
    f->poststat = web_poststat;
    f->hook_arg = svc;
    f->work = pb_aio_on ? pb_disk_pool : NULL;
}

/* ---- the disk worker pool (SERVER aio_mode / aio_threads) ---- */

struct work_pool *pb_disk_pool;
bool pb_aio_on = true;
int pb_aio_threads = 4;

void pb_set_aio(int on, int threads)
{
    if (on >= 0)
        pb_aio_on = on;
    if (threads > 0)
        pb_aio_threads = threads; /* takes effect at the next start */
    pthread_mutex_lock(&pb_lock);
    for (struct pb_service *s = pb_services; s; s = s->next)
        pb_web_sync(s);
    pthread_mutex_unlock(&pb_lock);
}

void pb_web_request(struct pb_client *cl, struct http_msg *req)
{
    pb_client_enter(cl, CL_RESPONDING);
    httpd_files_serve(cl->h, req, &cl->svc->files);
}
