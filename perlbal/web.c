/* pb_web: the web_server role — common/httpd's file serving with the
 * service's parameters (docroot, index_files, dirindexing, enable_put,
 * enable_delete, min_put_directory, max_put_size, enable_md5) and the
 * plugins' serve_path / file_sent hooks. Its disk work runs on a common/work
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
    /* Perlbal: 200 for a stored PUT, 201 when its Content-MD5 was verified,
     * each with its short page */
    f->put_ok_status = 200;
    f->put_md5_ok_status = 201;
    f->put_status_body = true;
    f->concat_get = svc->enable_concatenate_get;
    f->rewrite_path = web_rewrite_path;
    f->file_sent = web_file_sent;
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

/* Perlbal's answer to a PUT whose Content-MD5 was verified is "201 " with
 * no reason phrase and the page "<h1>201</h1>" (its table of reason
 * phrases has no 201); common/httpd words it "201 Created". The answer is
 * still whole in the scratch buffer when the request ends: it is rewritten
 * there, as Perl Perlbal sends it. */
void pb_web_request_end(struct pb_client *cl)
{
    static const char line[] = " 201 Created\r\n", page[] = "<h1>201 - Created</h1>\n";
    static const char len_old[] = "\r\nContent-Length: 23\r\n", page_new[] = "<h1>201</h1>\n";
    if (cl->svc->role != PB_ROLE_WEB_SERVER || cl->h->method != HTTP_M_PUT)
        return;
    struct evbuffer *tx = httpd_tx();
    size_t len = evbuffer_get_length(tx);
    if (len < 8 + sizeof line || len > 4096)
        return;
    char *b = (char *)evbuffer_pullup(tx, (ssize_t)len);
    char *end = b ? memmem(b, len, "\r\n\r\n", 4) : NULL;
    if (!end || memcmp(b, "HTTP/1.", 7) || memcmp(b + 8, line, sizeof line - 1))
        return;
    size_t hl = (size_t)(end + 4 - b);
    char *cl_line = memmem(b, hl, len_old, sizeof len_old - 1);
    if (len - hl != sizeof page - 1 || memcmp(b + hl, page, sizeof page - 1) || !cl_line)
        return;
    char out[4096];
    size_t o = 0;
    memcpy(out, b, 8); /* "HTTP/1.x" */
    o = 8;
    memcpy(out + o, " 201 \r\n", 7);
    o += 7;
    size_t rest = (size_t)(cl_line - (b + 8 + sizeof line - 1)); /* the headers before Content-Length */
    memcpy(out + o, b + 8 + sizeof line - 1, rest);
    o += rest;
    memcpy(out + o, "\r\nContent-Length: 13\r\n", sizeof len_old - 1);
    o += sizeof len_old - 1;
    size_t after = hl - (size_t)(cl_line + sizeof len_old - 1 - b);
    memcpy(out + o, cl_line + sizeof len_old - 1, after);
    o += after;
    memcpy(out + o, page_new, sizeof page_new - 1);
    o += sizeof page_new - 1;
    evbuffer_drain(tx, len);
    evbuffer_add(tx, out, o);
}

void pb_web_request(struct pb_client *cl, struct http_msg *req)
{
    pb_client_enter(cl, CL_RESPONDING);
    httpd_files_serve(cl->h, req, &cl->svc->files);
}
