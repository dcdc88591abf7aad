/* client: the blocking kit under every C client library (libmc, libgm,
 * and the mogilefs and schwartz libraries to come).
 *
 * What each of them would otherwise write again: parsing a server list,
 * connecting with a timeout over every address a name has, marking a
 * server dead after failures in a row and trying it again later, sending a
 * whole request, and reading buffered lines and blocks with a deadline.
 *
 * The model: one struct client_server per server, embedded in (or pointed
 * to by) the library's own server struct. Sockets are non-blocking; every
 * wait is a poll() bounded by an absolute deadline (client_deadline(),
 * monotonic milliseconds; 0 = wait forever). Input collects in the
 * server's buffer; client_read_line / client_read_block return pointers
 * into it, valid until the next read on that server. While a request is
 * being sent, replies already coming back are read into the buffer, so a
 * big pipelined request cannot deadlock against a server whose own output
 * is full.
 *
 * Not thread-safe (one library handle per thread, as the libraries say).
 * Never used by the daemons: they have loops; this is for the blocking
 * world of the tools and applications that call them. */
#ifndef CORE_CLIENT_H
#define CORE_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Results: 0, or one of these (negative). */
enum client_status {
    CLIENT_OK = 0,
    CLIENT_TIMEOUT = -1, /* the deadline passed */
    CLIENT_CLOSED = -2,  /* connect, read or write failed, or the peer closed */
    CLIENT_NO_MEMORY = -3,
    CLIENT_TOO_LONG = -4, /* a line longer than allowed */
    CLIENT_DEAD = -5,     /* marked dead and its retry time has not come */
};

struct client_server {
    char host[256];  /* name or address; the path for a unix socket */
    int port;        /* 0 for a unix socket */
    uint32_t weight; /* "host:port:weight" (1 when not given) */
    char name[300];  /* "host:port", "[v6]:port" or the path: for messages */
    int fd;          /* -1 when not connected */
    int failures;    /* transport failures in a row */
    bool dead;
    uint64_t retry_at_ms; /* when a dead server may be tried again */
    char error[400];      /* why the last failure happened */
    /* buffered input: in[in_pos .. in_len) is unread */
    char *in;
    size_t in_pos, in_len, in_cap;
};

/* "host[:port[:weight]]", "[v6addr][:port[:weight]]", a bare IPv6 address,
 * or "/path" (unix socket), separated by commas or white space. Weights
 * are accepted only when allow_weight. Ports must be 1..65535, weights
 * 1..1000000. Returns the number of servers (>= 1) in a new array *out
 * (free with client_servers_free), or -1 with a message in err. */
int client_parse_servers(const char *list, int default_port, bool allow_weight, struct client_server **out, char *err,
                         size_t errlen);
void client_servers_free(struct client_server *servers, int n);

/* Monotonic ms (common/clock), and a deadline ms from now (0 = none). */
uint64_t client_now_ms(void);
uint64_t client_deadline(int timeout_ms);

/* Connect if not connected: resolve (a blocking lookup, as every blocking
 * client library does), then try each address in turn, each bounded by
 * what is left of timeout_ms, until one answers. TCP_NODELAY on TCP. A
 * dead server whose retry time has not come is CLIENT_DEAD without a try.
 * On failure s->error says why. */
int client_connect(struct client_server *s, int timeout_ms);
/* Close the socket and drop buffered input (the stream position is lost). */
void client_close(struct client_server *s);

/* Dead-server policy: a transport failure closes the connection and counts;
 * failure_limit in a row marks the server dead for retry_ms. Returns true
 * when this call made it dead. client_ok resets the count. client_revive
 * brings a dead server back once its time has come (then one more failure
 * kills it again); true when it did. */
bool client_failed(struct client_server *s, int failure_limit, int retry_ms);
void client_ok(struct client_server *s);
bool client_revive(struct client_server *s, int failure_limit);

/* Wait for events (POLLIN/POLLOUT) on fd until deadline. */
int client_wait(int fd, short events, uint64_t deadline, short *revents);
/* Send all of buf, reading replies into the buffer while the socket is
 * full. */
int client_send_all(struct client_server *s, const void *buf, size_t len, uint64_t deadline);
/* Read what the socket has now into the buffer (never waits). CLIENT_OK
 * with nothing read is possible; CLIENT_CLOSED on EOF or error. */
int client_fill(struct client_server *s);
/* Wait until readable, then client_fill; CLIENT_CLOSED if nothing came. */
int client_read_more(struct client_server *s, uint64_t deadline);
/* The next line without its LF (and a CR before it), NUL-terminated in the
 * buffer. A line longer than max bytes is CLIENT_TOO_LONG. */
int client_read_line(struct client_server *s, uint64_t deadline, size_t max, char **line, size_t *len);
/* Exactly n bytes, consumed; *data points at them in the buffer (not
 * NUL-terminated: what follows may be unread input). */
int client_read_block(struct client_server *s, size_t n, uint64_t deadline, char **data);
/* The unread bytes now buffered, and dropping n of them (binary framing:
 * peek, parse, consume). */
static inline const char *client_buffered(const struct client_server *s, size_t *len)
{
    *len = s->in_len - s->in_pos;
    return s->in ? s->in + s->in_pos : "";
}
void client_consume(struct client_server *s, size_t n);

const char *client_strerror(int status);

/* For the CLIs: all of fd (stdin) up to its end, in one malloc'd block
 * (*len bytes); NULL when out of memory. */
char *client_read_all(int fd, size_t *len);

#endif
