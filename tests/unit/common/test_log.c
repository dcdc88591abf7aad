/* log: level parsing and filtering, file destination and reopen (log rotation). */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/log.h"
#include "tests/unit/unit.h"

static char dir[] = "/tmp/test_log.XXXXXX";

static char *slurp(const char *path)
{
    static char buf[4096];
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return NULL;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    buf[n < 0 ? 0 : n] = '\0';
    return buf;
}

static void test_level_parse(void)
{
    CHECK_EQ_INT(log_level_parse("error"), LOG_LEVEL_ERROR);
    CHECK_EQ_INT(log_level_parse("warn"), LOG_LEVEL_WARN);
    CHECK_EQ_INT(log_level_parse("info"), LOG_LEVEL_INFO);
    CHECK_EQ_INT(log_level_parse("debug"), LOG_LEVEL_DEBUG);
    CHECK_EQ_INT(log_level_parse("trace"), LOG_LEVEL_TRACE);
    CHECK_EQ_INT(log_level_parse("3"), LOG_LEVEL_DEBUG);
    CHECK_EQ_INT(log_level_parse("loud"), -1);
    CHECK_EQ_INT(log_level_parse(""), -1);
    CHECK_EQ_INT(log_level_parse("9"), -1);
}

static void test_file_filter_and_reopen(void)
{
    char path[256], moved[256];
    snprintf(path, sizeof(path), "%s/d.log", dir);
    snprintf(moved, sizeof(moved), "%s/d.log.1", dir);

    log_init("testd", LOG_LEVEL_WARN, false, path);
    log_info("hidden %d", 1);
    log_warn("shown %d", 2);
    log_error("error %s", "three");
    char *s = slurp(path);
    CHECK(s != NULL);
    if (s) {
        CHECK(strstr(s, "hidden") == NULL);
        CHECK(strstr(s, "shown 2") != NULL);
        CHECK(strstr(s, "error three") != NULL);
        CHECK(strstr(s, "testd") != NULL);
    }

    log_set_level(LOG_LEVEL_DEBUG);
    CHECK_EQ_INT(log_get_level(), LOG_LEVEL_DEBUG);
    CHECK(log_enabled(LOG_LEVEL_DEBUG));
    CHECK(!log_enabled(LOG_LEVEL_TRACE));

    /* logrotate moves the file away, then HUP makes us reopen the path */
    CHECK_EQ_INT(rename(path, moved), 0);
    log_debug("after move");
    log_reopen();
    log_debug("after reopen");
    s = slurp(moved);
    CHECK(s && strstr(s, "after move") && !strstr(s, "after reopen"));
    s = slurp(path);
    CHECK(s && strstr(s, "after reopen") && !strstr(s, "after move"));

    log_init("testd", LOG_LEVEL_INFO, false, NULL); /* back to stderr */
    unlink(path);
    unlink(moved);
}

/* stderr as journald's stream: native priorities, no name or pid, one
 * line per message; any other stderr: one name[pid] prefix. */
static void test_journal_stream_priorities(void)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/journal", dir);
    int saved = dup(STDERR_FILENO);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, STDERR_FILENO);
    close(fd);
    struct stat st;
    fstat(STDERR_FILENO, &st);
    char js[64];
    snprintf(js, sizeof js, "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", js, 1);
    log_init("jtest", LOG_LEVEL_INFO, false, NULL);
    log_error("disk on fire\nsecond line");
    log_warn("careful");
    log_info("hello");
    log_debug("not shown");
    /* a JOURNAL_STREAM naming another file: plain lines */
    snprintf(js, sizeof js, "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino + 1);
    setenv("JOURNAL_STREAM", js, 1);
    log_init("jtest", LOG_LEVEL_INFO, false, NULL);
    log_info("plain");
    unsetenv("JOURNAL_STREAM");
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    char want[256];
    snprintf(want, sizeof want,
             "<3>error: disk on fire second line\n<4>warn: careful\n<6>info: hello\njtest[%d]: info: plain\n",
             (int)getpid());
    CHECK_STR(slurp(path), want);
}

/* -vv: log_command lines at any level; secrets, line breaks and long
 * texts handled; nothing without -vv at info. */
static void test_command_lines(void)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/cmd.log", dir);
    log_init("cmdtest", LOG_LEVEL_INFO, false, path);
    log_verbosity = 0;
    log_command("10.0.0.1", "get_paths domain=d&key=k", 24, false, "OK paths=1", 10);
    log_verbosity = 2;
    CHECK(log_command_enabled());
    CHECK(!log_enabled(LOG_LEVEL_DEBUG)); /* -vv alone: commands only */
    log_command("10.0.0.1", "create_open domain=d&key=k\r\n", 28, false, "OK fid=7&path_1=x\r\nmore", 24);
    log_command("bob@ex", "AUTH PLAIN AGJvYgBzZWNyZXQ=", 27, true, "success", 7);
    char big[1000];
    memset(big, 'k', sizeof big);
    log_command(NULL, big, sizeof big, false, "", 0);
    log_verbosity = 3;
    log_debug("internal detail");
    log_verbosity = 0;
    char *s = slurp(path);
    CHECK(s != NULL);
    if (s) {
        CHECK(strstr(s, "get_paths") == NULL);
        CHECK(strstr(s, "debug: cmd 10.0.0.1: create_open domain=d&key=k   -> OK fid=7&path_1=x\n") != NULL);
        CHECK(strstr(s, "cmd bob@ex: AUTH <redacted> -> success\n") != NULL);
        CHECK(strstr(s, "AGJvYgBzZWNyZXQ") == NULL);
        char want[LOG_COMMAND_MAX + 16];
        memset(want, 'k', LOG_COMMAND_MAX);
        strcpy(want + LOG_COMMAND_MAX, "... -> \n");
        CHECK(strstr(s, want) != NULL); /* cut at LOG_COMMAND_MAX */
        CHECK(strstr(s, "internal detail") != NULL);
    }
    log_init("testd", LOG_LEVEL_INFO, false, NULL);
    unlink(path);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 2;
    RUN(test_level_parse);
    RUN(test_file_filter_and_reopen);
    RUN(test_journal_stream_priorities);
    RUN(test_command_lines);
    char j[256];
    snprintf(j, sizeof j, "%s/journal", dir);
    unlink(j);
    rmdir(dir);
    return unit_done();
}
