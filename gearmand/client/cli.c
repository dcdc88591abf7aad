/* gearman-cli: a command-line Gearman client and worker on libgm, with
 * gearman(1)'s letters (Debian's gearman-tools, 1.1):
 *
 *   gearman-cli -f FUNC [-u UNIQUE] [-b] [-I|-L] [-n|-N] [-P] [-s] [DATA...]
 *       one job per DATA argument, or one with stdin (-n: one per line,
 *       -N: without its newline; -s: one with no data); each -f gets every
 *       job; results go to stdout (-P: each after "FUNC: ")
 *   gearman-cli -w -f FUNC [-c COUNT] [-n|-N] [-- COMMAND ARGS...]
 *       be a worker: each job's data goes to COMMAND's stdin, its stdout is
 *       the result (exit status != 0 fails the job; -n sends each line as
 *       WORK_DATA); no COMMAND echoes the data back
 *   --status HANDLE, --echo [TEXT], --id ID, --servers LIST: ours.
 *
 * Servers: -h HOST -p PORT (default 127.0.0.1:4730); -h also takes
 * "h1:4730,h2:4730". */
#include "common/client.h"
#include "gearmand/client/libgm.h"

#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef GM_CLI_VERSION
#define GM_CLI_VERSION "1.0.0"
#endif

static void usage(FILE *out)
{
    fputs("Client mode: gearman-cli [options] [<data> ...]\n"
          "Worker mode: gearman-cli -w [options] [<command> [<args> ...]]\n"
          "\n"
          "Common options to both client and worker modes (as gearman(1)):\n"
          "\t-f <function> - Function name to use for jobs (can give many)\n"
          "\t-h <host>     - Job server host (or a list: h1:4730,h2:4730)\n"
          "\t-H, --help    - Print this help menu\n"
          "\t-v            - Print diagnostic information to stdout\n"
          "\t-p <port>     - Job server port (4730)\n"
          "\t-t <timeout>  - Timeout in milliseconds\n"
          "\t-i <pidfile>  - Create a pidfile for the process\n"
          "\t-S            - Enable SSL connections (not built: libgm has no TLS)\n"
          "\t-V, --version - Print the version\n"
          "\n"
          "Client options:\n"
          "\t-b            - Run jobs in the background (-v prints the handle)\n"
          "\t-I            - Run jobs as high priority\n"
          "\t-L            - Run jobs as low priority\n"
          "\t-n            - Run one job per line\n"
          "\t-N            - Same as -n, but strip off the newline\n"
          "\t-P            - Prefix all output lines with functions names\n"
          "\t-s            - Send job without reading from standard input\n"
          "\t-u <unique>   - Unique key to use for job\n"
          "\n"
          "Worker options:\n"
          "\t-c <count>    - Number of jobs for worker to run before exiting\n"
          "\t-n            - Send data packet for each line\n"
          "\t-N            - Same as -n, but strip off the newline\n"
          "\t-w            - Run in worker mode\n"
          "\n"
          "Ours:\n"
          "\t--servers <list>  - Job servers, h1:4730,h2:4730 (as -h with a list)\n"
          "\t--status <handle> - Print the status of a background job\n"
          "\t--echo [<text>]   - Echo text through every server (also -e)\n"
          "\t--id <id>         - Worker id (SET_CLIENT_ID) shown by `workers`\n",
          out);
}

static char **worker_cmd;
static int line_mode; /* 0, 'n' or 'N' */

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
    *result = client_read_all(out[0], rlen);
    close(out[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    if (feeder > 0)
        waitpid(feeder, NULL, 0);
    if (line_mode && *result) {
        /* -n/-N: each line of the output is a WORK_DATA, the result empty */
        const char *p = *result, *end = p + *rlen;
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            const char *stop = nl ? nl + 1 : end;
            size_t n = (size_t)(stop - p);
            if (line_mode == 'N' && nl)
                n--;
            gm_worker_job_send_data(job, p, n);
            p = stop;
        }
        *rlen = 0;
    }
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? GM_CLIENT_OK : GM_CLIENT_WORK_FAIL;
}

static int write_pidfile(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f || fprintf(f, "%ld\n", (long)getpid()) < 0 || fclose(f) != 0) {
        fprintf(stderr, "gearman-cli: -i %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* The client's jobs: each argument, stdin whole, or stdin's lines. */
struct jobs {
    char **data;
    size_t *len;
    size_t n, cap;
};

static int jobs_add(struct jobs *j, const char *p, size_t len)
{
    if (j->n == j->cap) {
        size_t cap = j->cap ? j->cap * 2 : 16;
        char **d = realloc(j->data, cap * sizeof *d);
        if (!d)
            return -1;
        j->data = d;
        size_t *l = realloc(j->len, cap * sizeof *l);
        if (!l)
            return -1;
        j->len = l;
        j->cap = cap;
    }
    char *copy = malloc(len ? len : 1);
    if (!copy)
        return -1;
    memcpy(copy, p, len);
    j->data[j->n] = copy;
    j->len[j->n++] = len;
    return 0;
}

static int fail_rc(const char *what, int rc, const char *err)
{
    fprintf(stderr, "gearman-cli: %s: %s: %s\n", what, gm_client_rc_name(rc), err);
    return 1;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    const char *servers = NULL, *host = "127.0.0.1", *port = "4730", *unique = NULL, *status_handle = NULL;
    const char *funcs[32], *id = NULL, *pidfile = NULL;
    int nfuncs = 0, timeout = 0;
    long count = -1;
    bool bg = false, worker = false, echo = false, verbose = false, prefix = false, no_stdin = false;
    enum gm_client_prio prio = GM_CLIENT_NORMAL;
    enum { OPT_SERVERS = 256, OPT_STATUS, OPT_ID };
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'H' },
        { "version", no_argument, NULL, 'V' },
        { "servers", required_argument, NULL, OPT_SERVERS },
        { "status", required_argument, NULL, OPT_STATUS },
        { "echo", no_argument, NULL, 'e' },
        { "id", required_argument, NULL, OPT_ID },
        { NULL, 0, NULL, 0 },
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "f:h:Hvp:t:i:SVbILnNPsu:c:we", longopts, NULL)) != -1) {
        switch (opt) {
        case 'f':
            if (nfuncs == 32) {
                fprintf(stderr, "gearman-cli: at most 32 functions (-f)\n");
                return 2;
            }
            funcs[nfuncs++] = optarg;
            break;
        case 'h':
            if (strchr(optarg, ',') || strchr(optarg, ':'))
                servers = optarg;
            else
                host = optarg;
            break;
        case 'H': usage(stdout); return 0;
        case 'V': printf("gearman-cli %s (libgm, gearman(1)'s options)\n", GM_CLI_VERSION); return 0;
        case 'v': verbose = true; break;
        case 'p': port = optarg; break;
        case 't': timeout = atoi(optarg); break;
        case 'i': pidfile = optarg; break;
        case 'S':
            fprintf(stderr, "gearman-cli: -S: SSL is not built into libgm (gearmand's --ssl works with other "
                            "clients)\n");
            return 2;
        case 'b': bg = true; break;
        case 'I': prio = GM_CLIENT_HIGH; break;
        case 'L': prio = GM_CLIENT_LOW; break;
        case 'n':
        case 'N': line_mode = opt; break;
        case 'P': prefix = true; break;
        case 's': no_stdin = true; break;
        case 'u': unique = optarg; break;
        case 'c': count = atol(optarg); break;
        case 'w': worker = true; break;
        case 'e': echo = true; break;
        case OPT_SERVERS: servers = optarg; break;
        case OPT_STATUS: status_handle = optarg; break;
        case OPT_ID: id = optarg; break;
        default: usage(stderr); return 2;
        }
    }
    char list[600];
    if (!servers) {
        snprintf(list, sizeof list, "%s:%s", host, port);
        servers = list;
    }
    if (pidfile && write_pidfile(pidfile) < 0)
        return 1;
    struct gm_client_options o = { .timeout_ms = timeout };
    char err[256];

    if (worker) {
        if (nfuncs == 0) {
            fprintf(stderr, "gearman-cli: no function given (-f)\n");
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
            if (rc == GM_CLIENT_OK || rc == GM_CLIENT_WORK_FAIL) {
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
        if (rc != GM_CLIENT_OK)
            exit_code = fail_rc("status", rc, gm_client_error(c));
        else
            printf("%s known=%d running=%d numerator=%u denominator=%u\n", status_handle, st.known, st.running,
                   st.numerator, st.denominator);
        gm_client_free(c);
        return exit_code;
    }
    if (echo) {
        const char *text = optind < argc ? argv[optind] : "ping";
        int rc = gm_client_echo(c, text, strlen(text));
        if (rc != GM_CLIENT_OK)
            exit_code = fail_rc("echo", rc, gm_client_error(c));
        else
            printf("%s\n", text);
        gm_client_free(c);
        return exit_code;
    }
    if (nfuncs == 0) {
        fprintf(stderr, "gearman-cli: no function given (-f)\n");
        usage(stderr);
        gm_client_free(c);
        return 2;
    }
    struct jobs jobs = { 0 };
    bool oom = false;
    if (optind < argc) {
        for (int k = optind; k < argc && !oom; k++)
            oom = jobs_add(&jobs, argv[k], strlen(argv[k])) < 0;
    } else if (no_stdin)
        oom = jobs_add(&jobs, "", 0) < 0;
    else {
        size_t len;
        char *in = client_read_all(0, &len);
        if (!in)
            oom = true;
        else if (!line_mode)
            oom = jobs_add(&jobs, in, len) < 0;
        else
            for (const char *p = in, *end = in + len; p < end && !oom;) {
                const char *nl = memchr(p, '\n', (size_t)(end - p));
                const char *stop = nl ? nl + 1 : end;
                oom = jobs_add(&jobs, p, (size_t)(stop - p) - (line_mode == 'N' && nl)) < 0;
                p = stop;
            }
        free(in);
    }
    if (oom) {
        fprintf(stderr, "gearman-cli: out of memory\n");
        exit_code = 1;
    }
    for (size_t k = 0; k < jobs.n && !oom; k++)
        for (int f = 0; f < nfuncs; f++) {
            int rc;
            if (bg) {
                char handle[GM_CLIENT_HANDLE_MAX];
                rc = gm_client_do_background(c, funcs[f], unique, jobs.data[k], jobs.len[k], prio, handle);
                if (rc == GM_CLIENT_OK && verbose)
                    printf("Task created: %s\n", handle);
            } else {
                void *res = NULL;
                size_t rlen = 0;
                rc = gm_client_do(c, funcs[f], unique, jobs.data[k], jobs.len[k], prio, &res, &rlen);
                if (rc == GM_CLIENT_OK && prefix)
                    printf("%s: ", funcs[f]);
                if (rc == GM_CLIENT_OK && rlen)
                    fwrite(res, 1, rlen, stdout);
                free(res);
            }
            if (rc != GM_CLIENT_OK)
                exit_code = fail_rc(funcs[f], rc, gm_client_error(c));
        }
    for (size_t k = 0; k < jobs.n; k++)
        free(jobs.data[k]);
    free(jobs.data);
    free(jobs.len);
    fflush(stdout);
    gm_client_free(c);
    return exit_code;
}
