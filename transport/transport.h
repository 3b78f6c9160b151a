/* migstream transports: byte connections that frames travel on.
 *
 * A transport gives connections (ms_conn) with one small ops table; tcp/,
 * rdma/ and the fd transport here all fill it in. A session of N channels is
 * N connections; grouping them by session id is the stream layer's job, so a
 * listener only accepts single connections. */
#ifndef MS_TRANSPORT_H
#define MS_TRANSPORT_H

#include <sys/uio.h>

#include "common/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ms_conn ms_conn;

typedef struct ms_conn_ops {
    const char *name; /* "tcp", "fd", "rdma" */
    /* Send every byte of iov or fail. MS_ERR_TIMEOUT if no byte could be
     * written for c->timeout_ms, MS_ERR_CLOSED if the peer went away. */
    int (*sendv)(ms_conn *c, const struct iovec *iov, int iovcnt);
    /* Receive exactly len bytes. MS_ERR_CLOSED on end of stream (with
     * *got, when non-NULL, set to the bytes read before it, so callers can
     * tell a clean close between frames from a truncation),
     * MS_ERR_TIMEOUT after c->timeout_ms without progress. */
    int (*recv)(ms_conn *c, void *buf, size_t len, size_t *got);
    /* Half-close the sending side (the peer sees end of stream). */
    int (*shutdown_send)(ms_conn *c);
    void (*close)(ms_conn *c); /* frees c */
} ms_conn_ops;

struct ms_conn {
    const ms_conn_ops *ops;
    uint64_t timeout_ms;   /* 0: wait forever; default 10000 */
    char peer[96];         /* printable peer name for messages */
    uint64_t bytes_sent, bytes_recv;
    void *priv;
};

static inline int ms_conn_sendv(ms_conn *c, const struct iovec *iov, int n) { return c->ops->sendv(c, iov, n); }
static inline int ms_conn_send(ms_conn *c, const void *p, size_t n)
{
    struct iovec v = {(void *)p, n};
    return c->ops->sendv(c, &v, 1);
}
static inline int ms_conn_recv(ms_conn *c, void *p, size_t n, size_t *got) { return c->ops->recv(c, p, n, got); }
static inline void ms_conn_close(ms_conn *c) { if (c) c->ops->close(c); }

/* Bytes this connection accepted from sendv that the peer has not yet
 * acknowledged (still in the kernel's send queue or on the wire): for fd
 * and TCP connections on a TCP socket, the socket's SIOCOUTQ. -1 where it
 * is unknown (pipes, files, other transports). bytes_sent minus this is
 * what the peer's kernel holds, so a sender can measure the rate the link
 * really delivers, not the rate its send buffer absorbs. */
int64_t ms_conn_unsent(ms_conn *c);

#define MS_DEFAULT_TIMEOUT_MS 10000u

/* ---- listeners --------------------------------------------------------- */

typedef struct ms_listener ms_listener;
typedef struct ms_listener_ops {
    /* Accept one connection; MS_ERR_TIMEOUT after timeout_ms (0 = forever). */
    int (*accept)(ms_listener *l, ms_conn **out, uint64_t timeout_ms);
    void (*close)(ms_listener *l); /* frees l */
} ms_listener_ops;

struct ms_listener {
    const ms_listener_ops *ops;
    char addr[96];       /* bound address, e.g. "127.0.0.1:40123" */
    uint16_t port;       /* bound port (useful after binding port 0) */
    bool loopback_only;  /* every bound address is a loopback address */
    void *priv;
};

static inline int ms_listener_accept(ms_listener *l, ms_conn **out, uint64_t t) { return l->ops->accept(l, out, t); }
static inline void ms_listener_close(ms_listener *l) { if (l) l->ops->close(l); }

/* ---- fd transport: any file descriptor (pipe, file, socket, ssh) ------- */

/* Wrap read_fd/write_fd (either may be -1 for a one-way connection; they may
 * be equal). With own_fds the fds are closed by ms_conn_close; if this
 * call fails the caller still owns them. */
int ms_fd_conn_new(int read_fd, int write_fd, bool own_fds, ms_conn **out);

/* ---- bandwidth cap: a token bucket shared by a session's channels ------ */

typedef struct ms_ratelimit ms_ratelimit;
/* bytes_per_s == 0 means unlimited (ms_ratelimit_take returns at once). */
ms_ratelimit *ms_ratelimit_new(uint64_t bytes_per_s);
void ms_ratelimit_free(ms_ratelimit *rl);
/* Block until n bytes may be sent. Thread-safe. */
void ms_ratelimit_take(ms_ratelimit *rl, uint64_t n);

#ifdef __cplusplus
}
#endif
#endif
