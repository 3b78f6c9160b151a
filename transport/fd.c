/* fd transport: a connection over any pair of file descriptors.
 *
 * Sockets and pipes are switched to non-blocking mode so every wait goes
 * through poll() and honours the no-progress timeout; other fds (regular
 * files, character devices) stay blocking because poll() always reports them
 * ready. The TCP transport reuses this code: a TCP connection is an fd conn
 * on a socket. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <linux/sockios.h>
#include <netinet/in.h>

#include "transport/transport.h"

/* iovec entries handed to one writev/sendmsg; the caller's array may be
 * longer (it is walked in windows), entries are never merged or copied. */
#define FD_IOV_WINDOW 128

enum fd_kind { FD_KIND_NONE, FD_KIND_SOCKET, FD_KIND_PIPE, FD_KIND_OTHER };

typedef struct fd_end {
    int fd;
    enum fd_kind kind;
    int saved_flags;   /* O_* flags before we set O_NONBLOCK; -1 if untouched */
} fd_end;

typedef struct fd_priv {
    fd_end r, w;
    bool own;
} fd_priv;

static enum fd_kind fd_kind_of(int fd)
{
    struct stat st;
    if (fd < 0)
        return FD_KIND_NONE;
    if (fstat(fd, &st) < 0)
        return FD_KIND_OTHER;
    if (S_ISSOCK(st.st_mode))
        return FD_KIND_SOCKET;
    if (S_ISFIFO(st.st_mode))
        return FD_KIND_PIPE;
    return FD_KIND_OTHER;
}

static int end_init(fd_end *e, int fd, const char *role)
{
    e->fd = fd;
    e->kind = fd_kind_of(fd);
    e->saved_flags = -1;
    if (e->kind != FD_KIND_SOCKET && e->kind != FD_KIND_PIPE)
        return MS_OK;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return ms_error(MS_ERR_IO, "%s fd %d: fcntl(F_GETFL): %s", role, fd, strerror(errno));
    if (!(fl & O_NONBLOCK)) {
        if (fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
            return ms_error(MS_ERR_IO, "%s fd %d: cannot make non-blocking: %s", role, fd,
                            strerror(errno));
        e->saved_flags = fl;
    }
    return MS_OK;
}

static void end_restore(fd_end *e)
{
    if (e->saved_flags >= 0)
        (void)fcntl(e->fd, F_SETFL, e->saved_flags);
    e->saved_flags = -1;
}

/* Wait until fd is ready for `events` or the no-progress deadline passes.
 * deadline_ns == 0 means no deadline. A timeout returns MS_ERR_TIMEOUT
 * without a message: the caller knows how far the transfer got. */
static int wait_ready(ms_conn *c, int fd, short events, uint64_t deadline_ns)
{
    for (;;) {
        int tmo = -1;
        if (deadline_ns) {
            uint64_t now = ms_now_ns();
            if (now >= deadline_ns)
                return MS_ERR_TIMEOUT;
            uint64_t left_ms = (deadline_ns - now + 999999) / 1000000;
            tmo = left_ms > INT_MAX ? INT_MAX : (int)left_ms;
        }
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, tmo);
        if (r > 0) {
            if (p.revents & POLLNVAL)
                return ms_error(MS_ERR_IO, "%s: fd %d is not open", c->peer, fd);
            return MS_OK; /* ready, or HUP/ERR: the next syscall reports it */
        }
        if (r < 0 && errno != EINTR)
            return ms_error(MS_ERR_IO, "%s: poll: %s", c->peer, strerror(errno));
    }
}

/* Timeouts beyond ~30 years count as that, so the nanosecond deadline
 * cannot overflow. */
#define FD_MAX_TIMEOUT_MS (1000ull * 86400 * 365 * 30)

static uint64_t deadline_from_now(const ms_conn *c)
{
    uint64_t t = c->timeout_ms < FD_MAX_TIMEOUT_MS ? c->timeout_ms : FD_MAX_TIMEOUT_MS;
    return t ? ms_now_ns() + t * 1000000ull : 0;
}

static bool is_peer_gone(int err)
{
    return err == EPIPE || err == ECONNRESET || err == ENOTCONN || err == ECONNABORTED;
}

/* Writing to a pipe whose reader is gone raises SIGPIPE; sockets avoid it
 * with MSG_NOSIGNAL, pipes by blocking the signal around the write and
 * swallowing the one the write caused (the process's own handler is not
 * disturbed, and a SIGPIPE already pending for another reason is kept). */
static ssize_t pipe_writev(int fd, const struct iovec *iov, int n)
{
    sigset_t pipe_set, old, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    sigpending(&pending);
    bool was_pending = sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    ssize_t r = writev(fd, iov, n);
    int err = errno;
    if (r < 0 && err == EPIPE && !was_pending) {
        struct timespec zero = {0, 0};
        while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = err;
    return r;
}

static ssize_t write_window(const fd_end *w, const struct iovec *iov, int n)
{
    if (w->kind == FD_KIND_SOCKET) {
        struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n};
        return sendmsg(w->fd, &m, MSG_NOSIGNAL);
    }
    if (w->kind == FD_KIND_PIPE)
        return pipe_writev(w->fd, iov, n);
    return writev(w->fd, iov, n);
}

/* Position in the caller's iovec array: entry idx, off bytes into it. */
typedef struct iov_pos {
    int idx;
    size_t off;
} iov_pos;

/* The next up to FD_IOV_WINDOW non-empty pieces from pos; 0 when done. */
static int fill_window(const struct iovec *iov, int iovcnt, iov_pos pos, struct iovec *win)
{
    int n = 0;
    for (int i = pos.idx; i < iovcnt && n < FD_IOV_WINDOW; i++) {
        size_t skip = i == pos.idx ? pos.off : 0;
        if (iov[i].iov_len <= skip)
            continue;
        win[n++] = (struct iovec){(char *)iov[i].iov_base + skip, iov[i].iov_len - skip};
    }
    return n;
}

static void advance(const struct iovec *iov, iov_pos *pos, size_t bytes)
{
    while (bytes) {
        size_t room = iov[pos->idx].iov_len - pos->off;
        size_t step = bytes < room ? bytes : room;
        pos->off += step;
        bytes -= step;
        if (pos->off == iov[pos->idx].iov_len) {
            pos->idx++;
            pos->off = 0;
        }
    }
}

static int fd_sendv(ms_conn *c, const struct iovec *iov, int iovcnt)
{
    fd_priv *p = c->priv;
    if (p->w.fd < 0)
        return ms_error(MS_ERR_INVAL, "%s: connection is receive-only", c->peer);
    if (iovcnt < 0)
        return ms_error(MS_ERR_INVAL, "%s: negative iovec count %d", c->peer, iovcnt);

    iov_pos pos = {0, 0};
    uint64_t sent_before = c->bytes_sent;
    uint64_t deadline = deadline_from_now(c);
    for (;;) {
        struct iovec win[FD_IOV_WINDOW];
        int n = fill_window(iov, iovcnt, pos, win);
        if (n == 0)
            return MS_OK;
        ssize_t r = write_window(&p->w, win, n);
        if (r > 0) {
            c->bytes_sent += (uint64_t)r;
            advance(iov, &pos, (size_t)r);
            deadline = deadline_from_now(c);
            continue;
        }
        if (r == 0)
            return ms_error(MS_ERR_IO, "%s: write returned 0", c->peer);
        int err = errno;
        if (err == EINTR)
            continue;
        if (err == EAGAIN || err == EWOULDBLOCK) {
            int rc = wait_ready(c, p->w.fd, POLLOUT, deadline);
            if (rc == MS_ERR_TIMEOUT)
                return ms_error(rc, "%s: no progress sending for %llu ms (%llu bytes sent)",
                                c->peer, (unsigned long long)c->timeout_ms,
                                (unsigned long long)(c->bytes_sent - sent_before));
            if (rc < 0)
                return rc;
            continue;
        }
        if (is_peer_gone(err))
            return ms_error(MS_ERR_CLOSED, "%s: peer closed the connection while sending: %s",
                            c->peer, strerror(err));
        if (err == ETIMEDOUT) /* TCP_USER_TIMEOUT or keepalive gave up */
            return ms_error(MS_ERR_TIMEOUT, "%s: peer stopped answering while sending", c->peer);
        return ms_error(MS_ERR_IO, "%s: write: %s", c->peer, strerror(err));
    }
}

static int fd_recv(ms_conn *c, void *buf, size_t len, size_t *got)
{
    fd_priv *p = c->priv;
    size_t done = 0;
    int rc = MS_OK;
    if (got)
        *got = 0;
    if (p->r.fd < 0)
        return ms_error(MS_ERR_INVAL, "%s: connection is send-only", c->peer);

    uint64_t deadline = deadline_from_now(c);
    while (done < len) {
        ssize_t r = read(p->r.fd, (char *)buf + done, len - done);
        if (r > 0) {
            done += (size_t)r;
            c->bytes_recv += (uint64_t)r;
            deadline = deadline_from_now(c);
            continue;
        }
        if (r == 0) {
            rc = ms_error(MS_ERR_CLOSED, "%s: end of stream after %zu of %zu bytes", c->peer,
                          done, len);
            break;
        }
        int err = errno;
        if (err == EINTR)
            continue;
        if (err == EAGAIN || err == EWOULDBLOCK) {
            rc = wait_ready(c, p->r.fd, POLLIN, deadline);
            if (rc == MS_ERR_TIMEOUT)
                ms_error(rc, "%s: no progress receiving for %llu ms (%zu of %zu bytes received)",
                         c->peer, (unsigned long long)c->timeout_ms, done, len);
            if (rc < 0)
                break;
            continue;
        }
        if (is_peer_gone(err))
            rc = ms_error(MS_ERR_CLOSED, "%s: connection reset after %zu of %zu bytes: %s",
                          c->peer, done, len, strerror(err));
        else if (err == ETIMEDOUT)
            rc = ms_error(MS_ERR_TIMEOUT, "%s: peer stopped answering after %zu of %zu bytes",
                          c->peer, done, len);
        else
            rc = ms_error(MS_ERR_IO, "%s: read: %s", c->peer, strerror(err));
        break;
    }
    if (got)
        *got = done;
    return rc;
}

static int fd_shutdown_send(ms_conn *c)
{
    fd_priv *p = c->priv;
    if (p->w.fd < 0)
        return MS_OK;
    if (p->w.kind == FD_KIND_SOCKET) {
        if (shutdown(p->w.fd, SHUT_WR) < 0 && errno != ENOTCONN)
            return ms_error(MS_ERR_IO, "%s: shutdown: %s", c->peer, strerror(errno));
        return MS_OK;
    }
    if (p->w.kind != FD_KIND_PIPE)
        return MS_OK; /* a file has no reader waiting for end of stream */
    /* A pipe's reader sees EOF only when the write end is closed. */
    if (!p->own || p->w.fd == p->r.fd)
        return ms_error(MS_ERR_UNSUPPORTED,
                        "%s: cannot half-close a pipe the connection does not own", c->peer);
    end_restore(&p->w);
    close(p->w.fd);
    p->w.fd = -1;
    p->w.kind = FD_KIND_NONE;
    return MS_OK;
}

static void fd_close(ms_conn *c)
{
    fd_priv *p = c->priv;
    bool same = p->r.fd == p->w.fd;
    end_restore(&p->r);
    if (!same)
        end_restore(&p->w);
    if (p->own) {
        if (p->r.fd >= 0)
            close(p->r.fd);
        if (p->w.fd >= 0 && !same)
            close(p->w.fd);
    }
    free(p);
    free(c);
}

/* The TCP transport's ops are a renamed copy of these, so a conn is an fd
 * conn (of either name) when its sendv is this file's. */
int64_t ms_conn_unsent(ms_conn *c)
{
    if (!c || c->ops->sendv != fd_sendv)
        return -1;
    fd_priv *p = c->priv;
    int type = 0, proto = 0, queued = 0;
    socklen_t tl = sizeof type, pl = sizeof proto;
    if (p->w.kind != FD_KIND_SOCKET || getsockopt(p->w.fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 ||
        getsockopt(p->w.fd, SOL_SOCKET, SO_PROTOCOL, &proto, &pl) < 0 || type != SOCK_STREAM ||
        proto != IPPROTO_TCP || ioctl(p->w.fd, SIOCOUTQ, &queued) < 0 || queued < 0)
        return -1;
    return queued;
}

static const ms_conn_ops fd_ops = {
    .name = "fd",
    .sendv = fd_sendv,
    .recv = fd_recv,
    .shutdown_send = fd_shutdown_send,
    .close = fd_close,
};

int ms_fd_conn_new(int read_fd, int write_fd, bool own_fds, ms_conn **out)
{
    *out = NULL;
    if (read_fd < 0 && write_fd < 0)
        return ms_error(MS_ERR_INVAL, "fd connection needs a read or a write fd");
    ms_conn *c = calloc(1, sizeof(*c));
    fd_priv *p = calloc(1, sizeof(*p));
    int rc = MS_OK;
    if (!c || !p) {
        rc = ms_error(MS_ERR_NOMEM, "fd connection: out of memory");
        goto fail;
    }
    p->own = own_fds;
    p->r.fd = p->w.fd = -1;
    p->r.saved_flags = p->w.saved_flags = -1;
    rc = end_init(&p->r, read_fd, "read");
    if (rc < 0)
        goto fail;
    if (write_fd == read_fd)
        p->w = (fd_end){.fd = write_fd, .kind = p->r.kind, .saved_flags = -1};
    else if ((rc = end_init(&p->w, write_fd, "write")) < 0)
        goto fail;

    c->ops = &fd_ops;
    c->priv = p;
    c->timeout_ms = MS_DEFAULT_TIMEOUT_MS;
    if (read_fd == write_fd || write_fd < 0)
        snprintf(c->peer, sizeof(c->peer), "fd %d", read_fd);
    else if (read_fd < 0)
        snprintf(c->peer, sizeof(c->peer), "fd %d", write_fd);
    else
        snprintf(c->peer, sizeof(c->peer), "fd %d/%d", read_fd, write_fd);
    *out = c;
    return MS_OK;

fail:
    if (p) {
        /* Undo any flag change but never close fds the caller still owns on failure. */
        end_restore(&p->r);
        if (p->w.fd != p->r.fd)
            end_restore(&p->w);
    }
    free(p);
    free(c);
    return rc;
}
