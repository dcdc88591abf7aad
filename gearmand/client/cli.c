/* gearman-cli: a command-line Gearman client and worker on libgm, in the
 * manner of gearman(1).
 *
 *   gearman-cli -f FUNC [-u UNIQUE] [-b] [-I|-L] [DATA...]
 *       call FUNC once per DATA argument, or once with stdin; the result
 *       goes to stdout (-b: background, the handle goes to stderr)
 *   gearman-cli -w -f FUNC [-c COUNT] [-- COMMAND ARGS...]
 *       be a worker: each job's data goes to COMMAND's stdin, its stdout is
 *       the result (exit status != 0 fails the job); no COMMAND echoes
 *   gearman-cli -S HANDLE      status of a background job
 *   gearman-cli -e [TEXT]      echo through every server
 *
 * Servers: -s "h1:4730,h2:4730" or -h HOST -p PORT (default 127.0.0.1:4730). */
#include "gearmand/client/libgm.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: gearman-cli [-s SERVERS | -h HOST -p PORT] [-t TIMEOUT_MS] -f FUNC [-u UNIQUE] [-b] [-I|-L] [DATA...]\n"
        "       gearman-cli [servers] -w -f FUNC [-f FUNC...] [-c COUNT] [-i ID] [-- COMMAND ARGS...]\n"
        "       gearman-cli [servers] -S HANDLE\n"
        "       gearman-cli [servers] -e [TEXT]\n");
}

static char *read_all(int fd, size_t *len)
{
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    if (!buf)
        return NULL;
    for (;;) {
        if (n == cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    *len = n;
    return buf;
}

static char **worker_cmd;

/* Run the worker command with the job's data on stdin; stdout is the result. */
static int run_command(struct gm_worker_job *job, void *arg, void **result, size_t *rlen)
{
    (void)arg;
    size_t len;
    const char *data = gm_worker_job_data(job, &len);
    if (!worker_cmd) {
        *result = malloc(len ? len : 1);
        if (!*result)
            return GM_CLIENT_WORK_FAIL;
        memcpy(*result, data, len);
        *rlen = len;
        return GM_CLIENT_OK;
    }
    int in[2], out[2];
    if (pipe(in) < 0 || pipe(out) < 0)
        return GM_CLIENT_WORK_FAIL;
    pid_t pid = fork();
    if (pid < 0)
        return GM_CLIENT_WORK_FAIL;
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        execvp(worker_cmd[0], worker_cmd);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    /* a writer child so a big result can't deadlock against a big input */
    pid_t feeder = fork();
    if (feeder == 0) {
        close(out[0]);
        size_t off = 0;
        while (off < len) {
            ssize_t w = write(in[1], data + off, len - off);
            if (w <= 0)
                break;
            off += (size_t)w;
        }
        _exit(0);
    }
    close(in[1]);
    *result = read_all(out[0], rlen);
    close(out[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    if (feeder > 0)
        waitpid(feeder, NULL, 0);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? GM_CLIENT_OK : GM_CLIENT_WORK_FAIL;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    const char *servers = NULL, *host = "127.0.0.1", *port = "4730", *unique = NULL, *status_handle = NULL;
    const char *funcs[32], *id = NULL;
    int nfuncs = 0, timeout = 0;
    long count = -1;
    bool bg = false, worker = false, echo = false;
    enum gm_client_prio prio = GM_CLIENT_NORMAL;
    int opt;
    while ((opt = getopt(argc, argv, "s:h:p:t:f:u:bILwc:i:S:e?")) != -1) {
        switch (opt) {
        case 's': servers = optarg; break;
        case 'h': host = optarg; break;
        case 'p': port = optarg; break;
        case 't': timeout = atoi(optarg); break;
        case 'f':
            if (nfuncs < 32)
                funcs[nfuncs++] = optarg;
            break;
        case 'u': unique = optarg; break;
        case 'b': bg = true; break;
        case 'I': prio = GM_CLIENT_HIGH; break;
        case 'L': prio = GM_CLIENT_LOW; break;
        case 'w': worker = true; break;
        case 'c': count = atol(optarg); break;
        case 'i': id = optarg; break;
        case 'S': status_handle = optarg; break;
        case 'e': echo = true; break;
        default: usage(opt == '?' && optopt == 0 ? stdout : stderr); return opt == '?' && optopt == 0 ? 0 : 2;
        }
    }
    char list[600];
    if (!servers) {
        snprintf(list, sizeof list, "%s:%s", host, port);
        servers = list;
    }
    struct gm_client_options o = { .timeout_ms = timeout };
    char err[256];

    if (worker) {
        if (nfuncs == 0) {
            usage(stderr);
            return 2;
        }
        worker_cmd = optind < argc ? argv + optind : NULL;
        struct gm_worker *w = gm_worker_new(servers, &o, err, sizeof err);
        if (!w) {
            fprintf(stderr, "gearman-cli: %s\n", err);
            return 1;
        }
        for (int i = 0; i < nfuncs; i++)
            gm_worker_register(w, funcs[i], 0, run_command, NULL);
        if (id)
            gm_worker_set_id(w, id);
        for (long done = 0; count < 0 || done < count;) {
            int rc = gm_worker_work(w);
            if (rc == GM_CLIENT_OK) {
                done++;
                continue;
            }
            if (rc == GM_CLIENT_NO_SERVER || rc == GM_CLIENT_LOST) {
                usleep(200000); /* every server down: try again shortly */
                continue;
            }
            fprintf(stderr, "gearman-cli: %s: %s\n", gm_client_rc_name(rc), gm_worker_error(w));
            gm_worker_free(w);
            return 1;
        }
        gm_worker_free(w);
        return 0;
    }

    struct gm_client *c = gm_client_new(servers, &o, err, sizeof err);
    if (!c) {
        fprintf(stderr, "gearman-cli: %s\n", err);
        return 1;
    }
    int exit_code = 0;
    if (status_handle) {
        struct gm_client_status st;
        int rc = gm_client_status(c, status_handle, &st);
        if (rc != GM_CLIENT_OK) {
            fprintf(stderr, "gearman-cli: %s: %s\n", gm_client_rc_name(rc), gm_client_error(c));
            exit_code = 1;
        } else
            printf("%s known=%d running=%d numerator=%u denominator=%u\n", status_handle, st.known, st.running,
                   st.numerator, st.denominator);
    } else if (echo) {
        const char *text = optind < argc ? argv[optind] : "ping";
        int rc = gm_client_echo(c, text, strlen(text));
        if (rc != GM_CLIENT_OK) {
            fprintf(stderr, "gearman-cli: %s: %s\n", gm_client_rc_name(rc), gm_client_error(c));
            exit_code = 1;
        } else
            printf("%s\n", text);
    } else {
        if (nfuncs != 1) {
            usage(stderr);
            gm_client_free(c);
            return 2;
        }
        int njobs = optind < argc ? argc - optind : 1;
        for (int k = 0; k < njobs; k++) {
            size_t len;
            char *data;
            if (optind < argc) {
                len = strlen(argv[optind + k]);
                data = strdup(argv[optind + k]);
            } else
                data = read_all(0, &len);
            if (!data) {
                fprintf(stderr, "gearman-cli: out of memory\n");
                exit_code = 1;
                break;
            }
            int rc;
            if (bg) {
                char handle[GM_CLIENT_HANDLE_MAX];
                rc = gm_client_do_background(c, funcs[0], unique, data, len, prio, handle);
                if (rc == GM_CLIENT_OK)
                    fprintf(stderr, "%s\n", handle);
            } else {
                void *res = NULL;
                size_t rlen = 0;
                rc = gm_client_do(c, funcs[0], unique, data, len, prio, &res, &rlen);
                if (rc == GM_CLIENT_OK && rlen)
                    fwrite(res, 1, rlen, stdout);
                free(res);
            }
            free(data);
            if (rc != GM_CLIENT_OK) {
                fprintf(stderr, "gearman-cli: %s: %s\n", gm_client_rc_name(rc), gm_client_error(c));
                exit_code = 1;
            }
        }
    }
    fflush(stdout);
    gm_client_free(c);
    return exit_code;
}
