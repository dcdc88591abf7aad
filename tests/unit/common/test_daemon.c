/* daemon: pidfile, fd limit, sd_notify datagrams, privilege drop errors. */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/daemon.h"
#include "tests/unit/unit.h"

static char dir[] = "/tmp/test_daemon.XXXXXX";

static void test_pidfile(void)
{
    char path[256], err[256], buf[64] = "";
    snprintf(path, sizeof(path), "%s/d.pid", dir);
    CHECK_EQ_INT(daemon_write_pidfile(path, err, sizeof(err)), 0);
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK(read(fd, buf, sizeof(buf) - 1) > 0);
        close(fd);
    }
    CHECK_EQ_INT(atoi(buf), getpid());
    unlink(path);

    snprintf(path, sizeof(path), "%s/no/such/dir/d.pid", dir);
    CHECK_EQ_INT(daemon_write_pidfile(path, err, sizeof(err)), -1);
    CHECK(strstr(err, "cannot write pidfile") != NULL);
}

static void test_fd_limit(void)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    long now = daemon_raise_fd_limit(256);
    CHECK(now >= 256 || (rlim_t)now == rl.rlim_max);
    CHECK(now >= (long)rl.rlim_cur); /* never lowered */
    long more = daemon_raise_fd_limit(now + 100);
    CHECK(more >= now);
}

static void test_notify(void)
{
    char path[256], buf[64];
    snprintf(path, sizeof(path), "%s/notify", dir);
    int s = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    strcpy(sun.sun_path, path);
    CHECK_EQ_INT(bind(s, (struct sockaddr *)&sun, sizeof(sun)), 0);

    unsetenv("NOTIFY_SOCKET");
    daemon_notify("READY=1"); /* not under systemd: nothing sent */
    setenv("NOTIFY_SOCKET", path, 1);
    daemon_notify("STOPPING=1");
    ssize_t n = recv(s, buf, sizeof(buf) - 1, MSG_DONTWAIT);
    CHECK_EQ_INT(n, 10);
    if (n > 0) {
        buf[n] = '\0';
        CHECK_STR(buf, "STOPPING=1");
    }
    CHECK(recv(s, buf, sizeof(buf), MSG_DONTWAIT) < 0); /* exactly one datagram */
    unsetenv("NOTIFY_SOCKET");
    close(s);
    unlink(path);
}

static void test_drop_privileges_unknown_user(void)
{
    char err[256] = "";
    if (geteuid() != 0) {
        CHECK_EQ_INT(daemon_drop_privileges("nobody", err, sizeof(err)), 0); /* nothing to drop */
        return;
    }
    CHECK_EQ_INT(daemon_drop_privileges("no-such-user-here", err, sizeof(err)), -1);
    CHECK(strstr(err, "unknown user") != NULL);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 2;
    RUN(test_pidfile);
    RUN(test_fd_limit);
    RUN(test_notify);
    RUN(test_drop_privileges_unknown_user);
    rmdir(dir);
    return unit_done();
}
