/* schwartz: command-line client and worker for schwartzd.
 *
 *   schwartz [-s HOST:PORT] insert FUNC [ARG] [--uniqkey K] [--priority N]
 *            [--run-after EPOCH] [--coalesce V]        (ARG absent: stdin)
 *   schwartz [-s HOST:PORT] work FUNC [FUNC...] [--max-jobs N]
 *            [--idle-exit SECONDS] [--grab-for SECONDS] -- CMD [ARGS...]
 *   schwartz [-s HOST:PORT] queues
 *
 * work runs CMD once per job, the job's arg on its stdin and
 * SCHWARTZ_JOB_HANDLE in its environment, extending the job's lease while
 * CMD runs: exit 0 = completed, 75
 * (EX_TEMPFAIL) = failed and retried per the function's policy, any other
 * exit = failed for good with that exit status. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "schwartz/client/libschwartz.h"
#include "schwartz/schwartzd.h"

/* --help (stdout, exit 0) is also the man page's text (help2man); a usage
 * error prints the same to stderr and exits 64 (EX_USAGE). */
static void help(FILE *f, int code)
{
    fprintf(f, "Usage: schwartz [-s HOST:PORT] insert FUNC [ARG] [--uniqkey K] [--priority N] [--run-after EPOCH] "
               "[--coalesce V]\n"
               "  or:  schwartz [-s HOST:PORT] work FUNC [FUNC...] [--max-jobs N] [--idle-exit SECONDS] "
               "[--grab-for SECONDS] -- CMD [ARGS...]\n"
               "  or:  schwartz [-s HOST:PORT] queues\n"
               "Insert jobs into schwartzd, run a command for each job of some functions, or list the queues.\n"
               "\n"
               "Options:\n"
               "  -s HOST:PORT         the schwartzd to use (default 127.0.0.1:7003)\n"
               "  -h, --help           show this help and exit\n"
               "  -V, --version        show the version and exit\n"
               "\n"
               "insert: ARG is the job's argument (read from stdin when absent); prints the job handle once\n"
               "it is committed. --uniqkey K: at most one job per function and key; --priority N: higher runs\n"
               "first; --run-after EPOCH: not before then; --coalesce V: a value workers may grab together.\n"
               "\n"
               "work: grabs jobs of the functions and runs CMD once per job, the argument on its stdin and\n"
               "SCHWARTZ_JOB_HANDLE in its environment, extending the job's lease while CMD runs. CMD's exit\n"
               "status decides: 0 completed, 75 (EX_TEMPFAIL) failed and retried per the function's policy,\n"
               "anything else failed for good with that status. --max-jobs N: stop after N jobs;\n"
               "--idle-exit SECONDS: stop when no job came for that long; --grab-for SECONDS: the lease.\n"
               "\n"
               "queues: one line per function: its name and its job counts.\n"
               "\n"
               "Exit status: 0 on success, 1 when schwartzd refused or could not be reached, 64 on a usage\n"
               "error.\n");
    exit(code);
}

static void usage(void) { help(stderr, 64); }

static long long num(const char *s, const char *what)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || !*s || *end || v < 0) {
        fprintf(stderr, "schwartz: bad %s '%s'\n", what, s);
        exit(64);
    }
    return v;
}

static int do_insert(struct sw_client *c, int argc, char **argv)
{
    const char *func = NULL, *arg = NULL;
    struct sw_insert_opts o = { NULL, -1, 0, NULL };
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--uniqkey") && i + 1 < argc)
            o.uniqkey = argv[++i];
        else if (!strcmp(argv[i], "--priority") && i + 1 < argc)
            o.priority = (int)num(argv[++i], "priority");
        else if (!strcmp(argv[i], "--run-after") && i + 1 < argc)
            o.run_after = num(argv[++i], "run-after");
        else if (!strcmp(argv[i], "--coalesce") && i + 1 < argc)
            o.coalesce = argv[++i];
        else if (!func)
            func = argv[i];
        else if (!arg)
            arg = argv[i];
        else
            usage();
    }
    if (!func)
        usage();
    char *buf = NULL;
    size_t len = 0;
    if (arg) {
        len = strlen(arg);
    } else {
        size_t cap = 0;
        for (;;) {
            if (len == cap) {
                cap = cap ? cap * 2 : 65536;
                char *b = realloc(buf, cap);
                if (!b) {
                    fprintf(stderr, "schwartz: out of memory\n");
                    return 1;
                }
                buf = b;
            }
            size_t n = fread(buf + len, 1, cap - len, stdin);
            if (n == 0)
                break;
            len += n;
        }
    }
    char handle[128];
    int rc = sw_client_insert(c, func, arg ? arg : buf, len, &o, handle, sizeof handle);
    free(buf);
    if (rc < 0) {
        fprintf(stderr, "schwartz: insert: %s\n", sw_client_error(c));
        return 1;
    }
    printf("%s\n", handle);
    return 0;
}

/* Run cmd with the job's arg on stdin; returns its exit status (or 128+sig).
 * While it runs, the job's lease is extended every grab_for/2 seconds, so a
 * long job is not handed to another worker while this one is alive. */
static int run_job(struct sw_client *c, char **cmd, const struct sw_client_job *j, long long grab_for)
{
    int p[2];
    if (pipe(p) < 0)
        return 127;
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return 127;
    }
    if (pid == 0) {
        close(p[1]);
        dup2(p[0], 0);
        close(p[0]);
        setenv("SCHWARTZ_JOB_HANDLE", j->handle, 1);
        setenv("SCHWARTZ_JOB_FUNC", j->func, 1);
        execvp(cmd[0], cmd);
        fprintf(stderr, "schwartz: %s: %s\n", cmd[0], strerror(errno));
        _exit(127);
    }
    close(p[0]);
    /* A command that doesn't read all its stdin must not stop us. */
    signal(SIGPIPE, SIG_IGN);
    size_t off = 0;
    while (off < j->arglen) {
        ssize_t w = write(p[1], j->arg + off, j->arglen - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    close(p[1]);
    int st;
    long long every_ms = grab_for > 1 ? grab_for * 1000 / 2 : 500;
    /* by the monotonic clock, not by counting sleeps: on a loaded machine
     * each sleep runs long, and the lease would run out between touches */
    uint64_t next_touch = clock_now_ms() + (uint64_t)every_ms;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR))
            break;
        usleep(50000);
        uint64_t now = clock_now_ms();
        if (now >= next_touch) {
            next_touch = now + (uint64_t)every_ms;
            /* +1: leases are whole seconds of the database's clock */
            if (sw_client_touch(c, j->handle, (int)grab_for + 1) < 0)
                fprintf(stderr, "schwartz: %s: lease: %s\n", j->handle, sw_client_error(c));
        }
    }
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    return 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

static int do_work(struct sw_client *c, int argc, char **argv)
{
    const char *funcs[64];
    int nfuncs = 0;
    long long max_jobs = 0, idle_exit = -1, grab_for = 3600;
    char **cmd = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--")) {
            cmd = argv + i + 1;
            if (!cmd[0])
                usage();
            break;
        } else if (!strcmp(argv[i], "--max-jobs") && i + 1 < argc)
            max_jobs = num(argv[++i], "max-jobs");
        else if (!strcmp(argv[i], "--idle-exit") && i + 1 < argc)
            idle_exit = num(argv[++i], "idle-exit");
        else if (!strcmp(argv[i], "--grab-for") && i + 1 < argc)
            grab_for = num(argv[++i], "grab-for");
        else if (nfuncs < 64 && argv[i][0] != '-')
            funcs[nfuncs++] = argv[i];
        else
            usage();
    }
    if (!cmd || !nfuncs)
        usage();
    long long done = 0;
    struct timespec idle_since;
    clock_gettime(CLOCK_MONOTONIC, &idle_since);
    useconds_t nap = 10000;
    while (!max_jobs || done < max_jobs) {
        struct sw_client_job *jobs;
        int n = sw_client_grab(c, funcs, nfuncs, 1, (int)grab_for, &jobs);
        if (n < 0) {
            fprintf(stderr, "schwartz: grab: %s\n", sw_client_error(c));
            sleep(1);
            n = 0;
            jobs = NULL;
        }
        if (n == 0) {
            sw_client_jobs_free(jobs, 0);
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            double idle = (double)(now.tv_sec - idle_since.tv_sec) + (double)(now.tv_nsec - idle_since.tv_nsec) / 1e9;
            if (idle_exit >= 0 && idle >= (double)idle_exit)
                break;
            usleep(nap);
            if (nap < 500000)
                nap *= 2; /* poll less while idle, as TheSchwartz's work() sleeps */
            continue;
        }
        nap = 10000;
        struct sw_client_job *j = &jobs[0];
        int st = run_job(c, cmd, j, grab_for);
        int rc;
        if (st == 0)
            rc = sw_client_completed(c, j->handle);
        else {
            char msg[64];
            snprintf(msg, sizeof msg, "command exited with status %d", st);
            rc = sw_client_failed(c, j->handle, msg, st, st != 75);
        }
        if (rc < 0)
            fprintf(stderr, "schwartz: %s: %s\n", j->handle, sw_client_error(c));
        sw_client_jobs_free(jobs, n);
        done++;
        clock_gettime(CLOCK_MONOTONIC, &idle_since);
    }
    return 0;
}

static void print_line(const char *line, void *arg)
{
    (void)arg;
    if (!strncmp(line, "QUEUE ", 6))
        printf("%s\n", line + 6);
}

int main(int argc, char **argv)
{
    const char *server = "127.0.0.1:7003";
    int i = 1;
    while (i < argc && argv[i][0] == '-') {
        if (!strcmp(argv[i], "-s") && i + 1 < argc) {
            server = argv[i + 1];
            i += 2;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
            help(stdout, 0);
        else if (!strcmp(argv[i], "-V") || !strcmp(argv[i], "--version")) {
            printf("schwartz %s\n", SW_VERSION);
            return 0;
        } else
            usage();
    }
    if (i >= argc)
        usage();
    struct sw_client *c = sw_client_new(server, 30000);
    if (!c)
        return 1;
    int rc;
    if (!strcmp(argv[i], "insert"))
        rc = do_insert(c, argc - i - 1, argv + i + 1);
    else if (!strcmp(argv[i], "work"))
        rc = do_work(c, argc - i - 1, argv + i + 1);
    else if (!strcmp(argv[i], "queues")) {
        rc = sw_client_lines(c, "queues", print_line, NULL) < 0 ? 1 : 0;
        if (rc)
            fprintf(stderr, "schwartz: queues: %s\n", sw_client_error(c));
    } else
        usage();
    sw_client_free(c);
    return rc;
}
