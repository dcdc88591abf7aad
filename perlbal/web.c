/* pb_web: the web_server role — common/httpd's file serving with the
 * service's parameters (docroot, index_files, dirindexing, enable_put,
 * enable_delete, min_put_directory, max_put_size, enable_md5) and the
 * plugins' serve_path / file_sent hooks. */
#include "common/conn.h"
#include "perlbal/perlbal.h"
#include "perlbal/plugin.h"

static void web_rewrite_path(void *arg, struct httpd_conn *h, char *path, size_t cap)
{
    (void)h;
    struct pb_service *svc = arg;
    if (svc->nplugins) pb_plugins_serve_path(svc, path, cap);
}

static void web_file_sent(void *arg, struct httpd_conn *h)
{
    struct pb_service *svc = arg;
    if (svc->nplugins) pb_plugins_file_sent(svc, h->data, false);
}

void pb_web_sync(struct pb_service *svc)
{
    struct httpd_files *f = &svc->files;
    f->docroot = svc->docroot;
    f->index_files = svc->index_files;
    f->dirindexing = svc->dirindexing;
    f->dir_disabled_status = 200; /* as Perlbal: a 200 page saying so */
    f->enable_put = svc->enable_put;
    f->enable_delete = svc->enable_delete;
    f->min_put_directory = svc->min_put_directory;
    f->max_put_size = svc->max_put_size;
    f->skip_md5_check = !svc->enable_md5;
    f->rewrite_path = web_rewrite_path;
    f->file_sent = web_file_sent;
    f->hook_arg = svc;
}

void pb_web_request(struct pb_client *cl, struct http_msg *req)
{
    cl->state = CL_RESPONDING;
    httpd_files_serve(cl->h, req, &cl->svc->files);
}
