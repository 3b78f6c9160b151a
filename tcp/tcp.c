/* TCP transport: connect and listen; the connection itself is an fd conn on
 * the socket (transport/fd.c does sendmsg with MSG_NOSIGNAL straight from
 * the caller's iovecs), relabelled "tcp". */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tcp/tcp.h"

#define TCP_DEFAULT_BUF (4 * 1024 * 1024)
#define TCP_MAX_LISTEN 8
#define TCP_BACKLOG 128
#define TCP_RETRY_FIRST_MS 20
#define TCP_RETRY_MAX_MS 500

/* ---- helpers ------------------------------------------------------------ */

/* strerror with a lower-case first letter, to read well after "host:port: ". */
static const char *lc_strerror(int err, char *buf, size_t n)
{
    snprintf(buf, n, "%s", strerror(err));
    if (buf[0] && isupper((unsigned char)buf[0]) && !(buf[1] && isupper((unsigned char)buf[1])))
        buf[0] = (char)tolower((unsigned char)buf[0]);
    return buf;
}

static void format_addr(const struct sockaddr *sa, char *out, size_t n)
{
    char host[INET6_ADDRSTRLEN + 16] = "?";
    unsigned port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
        port = ntohs(s4->sin_port);
        snprintf(out, n, "%s:%u", host, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
        port = ntohs(s6->sin6_port);
        snprintf(out, n, "[%s]:%u", host, port);
    } else {
        snprintf(out, n, "address family %d", sa->sa_family);
    }
}

static bool addr_is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        return (ntohl(s4->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a))
            return true;
        return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
    }
    return false;
}

/* Timeouts beyond ~30 years are treated as that, so deadline arithmetic in
 * nanoseconds cannot overflow. */
#define TCP_MAX_TIMEOUT_MS (1000ull * 86400 * 365 * 30)

static uint64_t effective_timeout(const ms_tcp_options *opt)
{
    uint64_t t = opt && opt->timeout_ms ? opt->timeout_ms : MS_DEFAULT_TIMEOUT_MS;
    return t > TCP_MAX_TIMEOUT_MS ? TCP_MAX_TIMEOUT_MS : t;
}

/* The n-th (0-based) number in a /proc/sys file, -1 if unreadable. */
static long read_sysctl_field(const char *path, int n)
{
    FILE *f = fopen(path, "r");
    long v = -1;
    if (!f)
        return -1;
    for (int i = 0; i <= n; i++)
        if (fscanf(f, "%ld", &v) != 1) {
            v = -1;
            break;
        }
    fclose(f);
    return v;
}

/* Large buffers let one connection fill a long fat link. Linux autotunes
 * each socket up to net.ipv4.tcp_[wr]mem's maximum, and setting SO_SNDBUF
 * turns that off: a fixed 4 MiB measured 10-20% slower than autotuning on
 * loopback (more data in flight, colder caches; docs/benchmarks.md). So by
 * default the size is fixed only when autotuning could not reach it; an
 * explicit size is always applied. */
static void set_buffer(int fd, int opt_force, int opt_plain, int want, bool explicit_size,
                       const char *auto_path, const char *max_path)
{
    long auto_max = read_sysctl_field(auto_path, 2);
    if (!explicit_size && auto_max >= want)
        return;
    if (setsockopt(fd, SOL_SOCKET, opt_force, &want, sizeof(want)) == 0)
        return;
    /* Unprivileged: the kernel clamps to net.core.[wr]mem_max, which is
     * only worth it when that beats autotuning. */
    long core_max = read_sysctl_field(max_path, 0);
    if (explicit_size || core_max > auto_max)
        (void)setsockopt(fd, SOL_SOCKET, opt_plain, &want, sizeof(want));
}

static void set_buffers(int fd, const ms_tcp_options *opt)
{
    int snd = opt && opt->sndbuf > 0 ? opt->sndbuf : TCP_DEFAULT_BUF;
    int rcv = opt && opt->rcvbuf > 0 ? opt->rcvbuf : TCP_DEFAULT_BUF;
    set_buffer(fd, SO_SNDBUFFORCE, SO_SNDBUF, snd, opt && opt->sndbuf > 0,
               "/proc/sys/net/ipv4/tcp_wmem", "/proc/sys/net/core/wmem_max");
    set_buffer(fd, SO_RCVBUFFORCE, SO_RCVBUF, rcv, opt && opt->rcvbuf > 0,
               "/proc/sys/net/ipv4/tcp_rmem", "/proc/sys/net/core/rmem_max");
}

/* A peer that vanishes (power loss, cable pulled) sends no RST: keepalive
 * finds it while idle, TCP_USER_TIMEOUT while data is unacknowledged. Both
 * follow the connection timeout so the stream layer's deadline and the
 * kernel's agree. */
static void set_liveness(int fd, uint64_t timeout_ms)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    /* The kernel refuses keepalive times above 32767 s. */
    int secs = timeout_ms / 1000 > 2 * 32767 ? 2 * 32767 : (int)(timeout_ms / 1000);
    int idle = secs / 2 > 0 ? secs / 2 : 1;
    int intvl = secs / 6 > 0 ? secs / 6 : 1;
    int cnt = 3;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    unsigned ut = timeout_ms > UINT_MAX ? UINT_MAX : (unsigned)timeout_ms;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof(ut));
}

/* ---- connections -------------------------------------------------------- */

/* The tcp ops are the fd ops under another name; the fd table is only
 * reachable through a conn, so it is copied from the first one made. */
static ms_conn_ops tcp_conn_ops;
static bool tcp_ops_ready;
static pthread_mutex_t tcp_ops_lock = PTHREAD_MUTEX_INITIALIZER;

static const ms_conn_ops *tcp_ops_from(const ms_conn_ops *fd_ops)
{
    pthread_mutex_lock(&tcp_ops_lock);
    if (!tcp_ops_ready) {
        tcp_conn_ops = *fd_ops;
        tcp_conn_ops.name = "tcp";
        tcp_ops_ready = true;
    }
    pthread_mutex_unlock(&tcp_ops_lock);
    return &tcp_conn_ops;
}

/* Wrap a connected socket; on failure the socket is closed. */
static int wrap_socket(int fd, const char *peer, uint64_t timeout_ms, ms_conn **out)
{
    ms_conn *c = NULL;
    int rc = ms_fd_conn_new(fd, fd, true, &c);
    if (rc < 0) {
        close(fd);
        return ms_error_wrap(rc, "%s", peer);
    }
    c->ops = tcp_ops_from(c->ops);
    c->timeout_ms = timeout_ms;
    snprintf(c->peer, sizeof(c->peer), "%s", peer);
    *out = c;
    return MS_OK;
}

static int strip_brackets(const char *host, char *out, size_t n)
{
    size_t len = host ? strlen(host) : 0;
    if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
        host++;
        len -= 2;
    }
    if (len >= n)
        return ms_error(MS_ERR_INVAL, "host name too long (%zu bytes)", len);
    memcpy(out, host ? host : "", len);
    out[len] = '\0';
    return MS_OK;
}

/* One non-blocking connect attempt; returns the fd or a negative status
 * with *err_out set to the errno that ended it (0 for a timeout). */
static int connect_one(const struct addrinfo *ai, const ms_tcp_options *opt, uint64_t timeout_ms,
                       int *err_out)
{
    *err_out = 0;
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) {
        *err_out = errno;
        return MS_ERR_IO;
    }
    set_buffers(fd, opt);
    set_liveness(fd, timeout_ms);
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
        return fd;
    if (errno != EINPROGRESS && errno != EINTR) {
        *err_out = errno;
        close(fd);
        return MS_ERR_IO;
    }
    uint64_t deadline = ms_now_ns() + timeout_ms * 1000000ull;
    for (;;) {
        uint64_t now = ms_now_ns();
        if (now >= deadline) {
            close(fd);
            return MS_ERR_TIMEOUT;
        }
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        uint64_t left = (deadline - now + 999999) / 1000000;
        int r = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            *err_out = errno;
            close(fd);
            return MS_ERR_IO;
        }
        if (r == 0)
            continue;
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
            soerr = errno;
        if (soerr == 0)
            return fd;
        *err_out = soerr;
        close(fd);
        return MS_ERR_IO;
    }
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

int ms_tcp_connect(const char *host, const char *port, const ms_tcp_options *opt, ms_conn **out)
{
    *out = NULL;
    char h[256];
    int rc = strip_brackets(host, h, sizeof(h));
    if (rc < 0)
        return rc;
    if (!h[0] || !port || !port[0])
        return ms_error(MS_ERR_INVAL, "connect needs a host and a port (got \"%s\", \"%s\")",
                        host ? host : "", port ? port : "");
    const char *hp_fmt = strchr(h, ':') ? "[%s]:%s" : "%s:%s";
    char target[300];
    snprintf(target, sizeof(target), hp_fmt, h, port);

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int g = getaddrinfo(h, port, &hints, &res);
    if (g != 0)
        return ms_error(MS_ERR_INVAL, "%s: cannot resolve: %s", target,
                        g == EAI_SYSTEM ? strerror(errno) : gai_strerror(g));

    uint64_t timeout_ms = effective_timeout(opt);
    unsigned retries = opt ? opt->connect_retries : 0;
    unsigned backoff = TCP_RETRY_FIRST_MS;
    char last_peer[96] = "";
    int last_err = 0, last_rc = MS_ERR_IO;
    for (unsigned attempt = 0;; attempt++) {
        bool refused = false;
        for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
            format_addr(ai->ai_addr, last_peer, sizeof(last_peer));
            int fd = connect_one(ai, opt, timeout_ms, &last_err);
            if (fd >= 0) {
                rc = wrap_socket(fd, last_peer, timeout_ms, out);
                goto done;
            }
            last_rc = fd;
            refused |= last_err == ECONNREFUSED;
        }
        if (!refused || attempt >= retries)
            break;
        sleep_ms(backoff);
        backoff = backoff * 2 > TCP_RETRY_MAX_MS ? TCP_RETRY_MAX_MS : backoff * 2;
    }

    char eb[128];
    if (last_rc == MS_ERR_TIMEOUT)
        rc = ms_error(MS_ERR_TIMEOUT, "%s: connect timed out after %llu ms", last_peer,
                      (unsigned long long)timeout_ms);
    else if (retries && last_err == ECONNREFUSED)
        rc = ms_error(MS_ERR_IO, "%s: %s (%u attempts)", last_peer,
                      lc_strerror(last_err, eb, sizeof(eb)), retries + 1);
    else
        rc = ms_error(MS_ERR_IO, "%s: %s", last_peer, lc_strerror(last_err, eb, sizeof(eb)));
done:
    freeaddrinfo(res);
    return rc;
}

/* ---- listeners ---------------------------------------------------------- */

typedef struct tcp_listener {
    int fds[TCP_MAX_LISTEN];
    int nfds;
    unsigned next; /* round-robin start so no address starves the others */
    ms_tcp_options opt;
} tcp_listener;

static int tcp_accept(ms_listener *l, ms_conn **out, uint64_t timeout_ms)
{
    tcp_listener *t = l->priv;
    *out = NULL;
    if (timeout_ms > TCP_MAX_TIMEOUT_MS)
        timeout_ms = TCP_MAX_TIMEOUT_MS;
    uint64_t deadline = timeout_ms ? ms_now_ns() + timeout_ms * 1000000ull : 0;
    for (;;) {
        int tmo = -1;
        if (deadline) {
            uint64_t now = ms_now_ns();
            if (now >= deadline)
                return ms_error(MS_ERR_TIMEOUT, "%s: no connection within %llu ms", l->addr,
                                (unsigned long long)timeout_ms);
            uint64_t left = (deadline - now + 999999) / 1000000;
            tmo = left > INT_MAX ? INT_MAX : (int)left;
        }
        struct pollfd p[TCP_MAX_LISTEN];
        for (int i = 0; i < t->nfds; i++)
            p[i] = (struct pollfd){.fd = t->fds[i], .events = POLLIN};
        int r = poll(p, (nfds_t)t->nfds, tmo);
        if (r < 0 && errno != EINTR)
            return ms_error(MS_ERR_IO, "%s: poll: %s", l->addr, strerror(errno));
        if (r <= 0)
            continue;
        for (int k = 0; k < t->nfds; k++) {
            int i = (int)((t->next + (unsigned)k) % (unsigned)t->nfds);
            if (!(p[i].revents & POLLIN))
                continue;
            struct sockaddr_storage ss;
            socklen_t sl = sizeof(ss);
            int fd = accept4(t->fds[i], (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (fd < 0) {
                /* The client gave up between poll and accept, or the fd
                 * table is full for a moment: keep serving. */
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED ||
                    errno == EINTR || errno == EPROTO)
                    continue;
                return ms_error(MS_ERR_IO, "%s: accept: %s", l->addr, strerror(errno));
            }
            t->next = (unsigned)i + 1;
            uint64_t to = effective_timeout(&t->opt);
            set_liveness(fd, to);
            char peer[96];
            format_addr((struct sockaddr *)&ss, peer, sizeof(peer));
            return wrap_socket(fd, peer, to, out);
        }
    }
}

static void tcp_listener_close(ms_listener *l)
{
    tcp_listener *t = l->priv;
    for (int i = 0; i < t->nfds; i++)
        close(t->fds[i]);
    free(t);
    free(l);
}

static const ms_listener_ops tcp_listener_ops = {
    .accept = tcp_accept,
    .close = tcp_listener_close,
};

static void set_port(struct sockaddr *sa, uint16_t port)
{
    if (sa->sa_family == AF_INET)
        ((struct sockaddr_in *)sa)->sin_port = htons(port);
    else if (sa->sa_family == AF_INET6)
        ((struct sockaddr_in6 *)sa)->sin6_port = htons(port);
}

static uint16_t get_port(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)sa)->sin_port);
    if (sa->sa_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    return 0;
}

/* Bind one address. With `port` non-zero (a later address of a port-0
 * listen) the port chosen for the first address is reused, so every
 * address of the listener shares one port. Returns fd, or -errno. */
static int bind_one(const struct addrinfo *ai, uint16_t port, const ms_tcp_options *opt,
                    struct sockaddr_storage *bound)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0)
        return -errno;
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    /* Each family gets its own socket: a dual-stack "::" would collide
     * with "0.0.0.0" on the same port and hide which addresses are bound. */
    if (ai->ai_family == AF_INET6)
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    set_buffers(fd, opt); /* inherited by accepted sockets, before the handshake */
    struct sockaddr_storage sa;
    memcpy(&sa, ai->ai_addr, ai->ai_addrlen);
    if (port)
        set_port((struct sockaddr *)&sa, port);
    socklen_t sl = sizeof(*bound);
    if (bind(fd, (struct sockaddr *)&sa, ai->ai_addrlen) < 0 || listen(fd, TCP_BACKLOG) < 0 ||
        getsockname(fd, (struct sockaddr *)bound, &sl) < 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

static bool same_addr(const struct addrinfo *a, const struct addrinfo *b)
{
    return a->ai_addrlen == b->ai_addrlen && memcmp(a->ai_addr, b->ai_addr, a->ai_addrlen) == 0;
}

static bool seen_before(const struct addrinfo *res, const struct addrinfo *ai)
{
    for (const struct addrinfo *p = res; p != ai; p = p->ai_next)
        if (same_addr(p, ai))
            return true;
    return false;
}

static void set_port_str(char *out, size_t n, const struct sockaddr *sa, uint16_t port)
{
    struct sockaddr_storage ss;
    memcpy(&ss, sa, sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
    set_port((struct sockaddr *)&ss, port);
    format_addr((struct sockaddr *)&ss, out, n);
}

static void close_all(tcp_listener *t)
{
    for (int i = 0; i < t->nfds; i++)
        close(t->fds[i]);
    t->nfds = 0;
}

/* Bind every distinct address of res to one port. Returns MS_OK, a
 * negative ms status with the error set, or -EADDRINUSE (error set too) when
 * an automatically chosen port was taken on a later address. */
static int bind_all(const struct addrinfo *res, const ms_tcp_options *opt, bool auto_port,
                    ms_listener *l)
{
    tcp_listener *t = l->priv;
    uint16_t chosen = 0;
    int soft_err = 0, hard_err = 0;
    char soft_at[96] = "", hard_at[96] = "", eb[128];
    size_t alen = 0;
    l->loopback_only = true;
    l->addr[0] = '\0';
    for (const struct addrinfo *ai = res; ai && t->nfds < TCP_MAX_LISTEN; ai = ai->ai_next) {
        if (seen_before(res, ai))
            continue;
        struct sockaddr_storage bound;
        int fd = bind_one(ai, chosen, opt, &bound);
        if (fd < 0) {
            /* An address family or address this host lacks (no IPv6, "::1"
             * of "localhost" with IPv6 off) is skipped while another binds;
             * anything else (port in use, permission) is fatal. */
            bool soft = -fd == EAFNOSUPPORT || -fd == EADDRNOTAVAIL;
            if (soft && !soft_err) {
                soft_err = -fd;
                format_addr(ai->ai_addr, soft_at, sizeof(soft_at));
            } else if (!soft && !hard_err) {
                hard_err = -fd;
                format_addr(ai->ai_addr, hard_at, sizeof(hard_at));
                if (chosen)
                    set_port_str(hard_at, sizeof(hard_at), ai->ai_addr, chosen);
            }
            continue;
        }
        t->fds[t->nfds++] = fd;
        if (!chosen)
            chosen = get_port((struct sockaddr *)&bound);
        l->loopback_only &= addr_is_loopback((struct sockaddr *)&bound);
        char a[96];
        format_addr((struct sockaddr *)&bound, a, sizeof(a));
        int w = snprintf(l->addr + alen, sizeof(l->addr) - alen, "%s%s", alen ? "," : "", a);
        if (w > 0)
            alen = alen + (size_t)w < sizeof(l->addr) ? alen + (size_t)w : sizeof(l->addr) - 1;
    }
    l->port = chosen;
    if (hard_err) {
        int rc = ms_error(MS_ERR_IO, "%s: cannot listen: %s", hard_at,
                          lc_strerror(hard_err, eb, sizeof(eb)));
        return hard_err == EADDRINUSE && auto_port && t->nfds ? -EADDRINUSE : rc;
    }
    if (t->nfds == 0)
        return ms_error(MS_ERR_IO, "%s: cannot listen: %s", soft_at[0] ? soft_at : "?",
                        soft_err ? lc_strerror(soft_err, eb, sizeof(eb)) : "no address");
    return MS_OK;
}

int ms_tcp_listen(const char *host, const char *port, const ms_tcp_options *opt, ms_listener **out)
{
    *out = NULL;
    char h[256];
    int rc = strip_brackets(host, h, sizeof(h));
    if (rc < 0)
        return rc;
    const char *p = port && port[0] ? port : "0";
    bool wildcard = !h[0];
    char target[300];
    snprintf(target, sizeof(target), strchr(h, ':') ? "[%s]:%s" : "%s:%s", wildcard ? "*" : h, p);

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    int g = getaddrinfo(wildcard ? NULL : h, p, &hints, &res);
    if (g != 0)
        return ms_error(MS_ERR_INVAL, "%s: cannot resolve: %s", target,
                        g == EAI_SYSTEM ? strerror(errno) : gai_strerror(g));

    ms_listener *l = calloc(1, sizeof(*l));
    tcp_listener *t = calloc(1, sizeof(*t));
    if (!l || !t) {
        rc = ms_error(MS_ERR_NOMEM, "%s: out of memory", target);
        goto fail;
    }
    if (opt)
        t->opt = *opt;
    l->ops = &tcp_listener_ops;
    l->priv = t;
    l->loopback_only = true;

    bool auto_port = strcmp(p, "0") == 0;
    for (int round = 0;; round++) {
        rc = bind_all(res, opt, auto_port, l);
        /* Port 0: the port the kernel picked for the first address may be
         * taken on another; pick again a few times before giving up. */
        if (rc != -EADDRINUSE || !auto_port || round >= 4)
            break;
        close_all(t);
    }
    if (rc == -EADDRINUSE)
        rc = MS_ERR_IO; /* message already set by bind_all */
    if (rc < 0)
        goto fail;
    freeaddrinfo(res);
    *out = l;
    return MS_OK;

fail:
    if (t)
        for (int i = 0; i < t->nfds; i++)
            close(t->fds[i]);
    free(t);
    free(l);
    freeaddrinfo(res);
    return rc;
}

/* ---- "host:port" -------------------------------------------------------- */

static int copy_part(const char *s, size_t len, char *dst, size_t n, const char *what,
                     const char *whole)
{
    if (len >= n)
        return ms_error(MS_ERR_INVAL, "\"%s\": %s too long", whole, what);
    memcpy(dst, s, len);
    dst[len] = '\0';
    return MS_OK;
}

int ms_split_hostport(const char *s, char *host, size_t hn, char *port, size_t pn)
{
    if (!s)
        return ms_error(MS_ERR_INVAL, "empty address");
    const char *host_start = s, *host_end, *colon;
    if (s[0] == '[') {
        host_start = s + 1;
        host_end = strchr(host_start, ']');
        if (!host_end)
            return ms_error(MS_ERR_INVAL, "\"%s\": missing ']' after IPv6 address", s);
        if (host_end[1] != ':')
            return ms_error(MS_ERR_INVAL, "\"%s\": expected \":PORT\" after ']'", s);
        colon = host_end + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return ms_error(MS_ERR_INVAL, "\"%s\": expected HOST:PORT", s);
        if (memchr(s, ':', (size_t)(colon - s)))
            return ms_error(MS_ERR_INVAL, "\"%s\": write an IPv6 address in brackets: [ADDR]:PORT", s);
        host_end = colon;
    }
    const char *ps = colon + 1;
    if (!ps[0])
        return ms_error(MS_ERR_INVAL, "\"%s\": missing port", s);
    int rc = copy_part(host_start, (size_t)(host_end - host_start), host, hn, "host", s);
    if (rc == MS_OK)
        rc = copy_part(ps, strlen(ps), port, pn, "port", s);
    return rc;
}
