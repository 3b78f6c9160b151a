/* Plain-TCP baseline and ms_conn transfer used by the benchmarks. */
#include "bench/bench_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/common.h"
#include "tcp/tcp.h"

#define BENCH_CHUNK (1u << 20)
#define BENCH_MAX_CONNS 64

static double last_cpu_s;

double ms_bench_last_cpu_s(void) { return last_cpu_s; }

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double ms_bench_median(double *v, int n)
{
    if (n <= 0)
        return 0;
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* One direction of one connection; `plain` selects raw fds or ms_conn. */
typedef struct leg {
    int fd;
    ms_conn *c;
    size_t bytes;
    const uint8_t *src;
    int rc;
    char err[160];
} leg;

static void leg_fail(leg *l, int rc)
{
    l->rc = rc;
    snprintf(l->err, sizeof(l->err), "%s", ms_last_error());
}

static void *plain_send(void *p)
{
    leg *l = p;
    for (size_t done = 0; done < l->bytes;) {
        size_t n = l->bytes - done < BENCH_CHUNK ? l->bytes - done : BENCH_CHUNK;
        ssize_t w = write(l->fd, l->src, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            leg_fail(l, ms_error(MS_ERR_IO, "plain send: %s", strerror(errno)));
            return NULL;
        }
        done += (size_t)w;
    }
    return NULL;
}

static void *plain_recv(void *p)
{
    leg *l = p;
    uint8_t *buf = malloc(BENCH_CHUNK);
    for (size_t done = 0; buf && done < l->bytes;) {
        size_t n = l->bytes - done < BENCH_CHUNK ? l->bytes - done : BENCH_CHUNK;
        ssize_t r = read(l->fd, buf, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            leg_fail(l, ms_error(MS_ERR_IO, "plain recv: %s", r ? strerror(errno) : "end of stream"));
            break;
        }
        done += (size_t)r;
    }
    free(buf);
    return NULL;
}

static void *conn_send(void *p)
{
    leg *l = p;
    for (size_t done = 0; done < l->bytes;) {
        size_t n = l->bytes - done < BENCH_CHUNK ? l->bytes - done : BENCH_CHUNK;
        struct iovec iov = {(void *)l->src, n};
        int rc = ms_conn_sendv(l->c, &iov, 1);
        if (rc < 0) {
            leg_fail(l, rc);
            return NULL;
        }
        done += n;
    }
    return NULL;
}

static void *conn_recv(void *p)
{
    leg *l = p;
    uint8_t *buf = malloc(BENCH_CHUNK);
    for (size_t done = 0; buf && done < l->bytes;) {
        size_t n = l->bytes - done < BENCH_CHUNK ? l->bytes - done : BENCH_CHUNK;
        int rc = ms_conn_recv(l->c, buf, n, NULL);
        if (rc < 0) {
            leg_fail(l, rc);
            break;
        }
        done += n;
    }
    free(buf);
    return NULL;
}

/* Run the legs of `conns` connections at once; GB/s of all payload. */
static double run_legs(leg *snd, leg *rcv, int conns, void *(*send_fn)(void *),
                       void *(*recv_fn)(void *))
{
    pthread_t st[BENCH_MAX_CONNS], rt[BENCH_MAX_CONNS];
    double cpu0 = ms_process_cpu_s();
    uint64_t t0 = ms_now_ns();
    for (int i = 0; i < conns; i++) {
        pthread_create(&rt[i], NULL, recv_fn, &rcv[i]);
        pthread_create(&st[i], NULL, send_fn, &snd[i]);
    }
    int rc = MS_OK;
    size_t total = 0;
    for (int i = 0; i < conns; i++) {
        pthread_join(st[i], NULL);
        pthread_join(rt[i], NULL);
        total += rcv[i].bytes;
        if (rc == MS_OK && (snd[i].rc || rcv[i].rc)) {
            leg *bad = snd[i].rc ? &snd[i] : &rcv[i];
            rc = ms_error(bad->rc, "connection %d: %s", i, bad->err);
        }
    }
    double s = (double)(ms_now_ns() - t0) / 1e9;
    last_cpu_s = ms_process_cpu_s() - cpu0;
    return rc < 0 ? rc : (double)total / s / 1e9;
}

static uint8_t *source_chunk(void)
{
    uint8_t *src = malloc(BENCH_CHUNK);
    if (!src)
        return NULL;
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < BENCH_CHUNK; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        src[i] = (uint8_t)x;
    }
    return src;
}

static int check_conns(int conns)
{
    if (conns < 1 || conns > BENCH_MAX_CONNS)
        return ms_error(MS_ERR_INVAL, "connections %d not in 1..%d", conns, BENCH_MAX_CONNS);
    return MS_OK;
}

double ms_bench_plain_tcp_gbps_n(size_t bytes, int conns)
{
    int rc = check_conns(conns);
    if (rc < 0)
        return rc;
    leg snd[BENCH_MAX_CONNS] = {0}, rcv[BENCH_MAX_CONNS] = {0};
    uint8_t *src = source_chunk();
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    int made = 0;
    double result;
    for (int i = 0; i < conns; i++)
        snd[i].fd = rcv[i].fd = -1;
    if (!src || lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(lfd, BENCH_MAX_CONNS) < 0 || getsockname(lfd, (struct sockaddr *)&sa, &sl) < 0) {
        result = ms_error(MS_ERR_IO, "plain baseline: listen on 127.0.0.1: %s", strerror(errno));
        goto out;
    }
    for (; made < conns; made++) {
        snd[made].fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (snd[made].fd < 0 || connect(snd[made].fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
            (rcv[made].fd = accept(lfd, NULL, NULL)) < 0) {
            result = ms_error(MS_ERR_IO, "plain baseline: connect: %s", strerror(errno));
            made++;
            goto out;
        }
        snd[made].src = src;
        snd[made].bytes = rcv[made].bytes = bytes / (size_t)conns;
    }
    result = run_legs(snd, rcv, conns, plain_send, plain_recv);
out:
    for (int i = 0; i < made; i++) {
        if (snd[i].fd >= 0)
            close(snd[i].fd);
        if (rcv[i].fd >= 0)
            close(rcv[i].fd);
    }
    if (lfd >= 0)
        close(lfd);
    free(src);
    return result;
}

double ms_bench_plain_tcp_gbps(size_t bytes) { return ms_bench_plain_tcp_gbps_n(bytes, 1); }

double ms_bench_conn_tcp_gbps(size_t bytes, int conns)
{
    int rc = check_conns(conns);
    if (rc < 0)
        return rc;
    leg snd[BENCH_MAX_CONNS] = {0}, rcv[BENCH_MAX_CONNS] = {0};
    uint8_t *src = source_chunk();
    ms_listener *l = NULL;
    double result = src ? ms_tcp_listen("127.0.0.1", "0", NULL, &l) : ms_error(MS_ERR_NOMEM, "bench: out of memory");
    char port[16];
    for (int i = 0; result == MS_OK && i < conns; i++) {
        snprintf(port, sizeof(port), "%u", l->port);
        int r = ms_tcp_connect("127.0.0.1", port, NULL, &snd[i].c);
        if (r == MS_OK)
            r = ms_listener_accept(l, &rcv[i].c, 5000);
        result = r;
        snd[i].src = src;
        snd[i].bytes = rcv[i].bytes = bytes / (size_t)conns;
    }
    if (result == MS_OK)
        result = run_legs(snd, rcv, conns, conn_send, conn_recv);
    for (int i = 0; i < conns; i++) {
        ms_conn_close(snd[i].c);
        ms_conn_close(rcv[i].c);
    }
    ms_listener_close(l);
    free(src);
    return result;
}
