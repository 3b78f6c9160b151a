/* rdma_xfer: move a verified byte pattern over one rdma connection, for the
 * VM lane's transport-level fault cases (peer killed, link deleted).
 *
 *   rdma_xfer recv HOST:PORT [--bytes SIZE] [--timeout MS]
 *   rdma_xfer send HOST:PORT [--bytes SIZE] [--timeout MS] [--delay-ms N]
 *
 * The sender writes SIZE bytes in 56 + 1 MiB pieces (a frame header and a
 * body, as the stream layer does), sleeping --delay-ms between pieces,
 * half-closes, and waits for the receiver's one-byte acknowledgement. The
 * receiver checks every byte and the clean end of stream. Each prints one
 * line: "rdma_xfer send: OK ..." or "rdma_xfer send: FAILED (code): message"
 * and exits 0, 3 (data differ) or 4 (transport error); the receiver also
 * prints "progress N MiB" every 4 MiB. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rdma/rdma.h"

#define PIECE (1u << 20)

static uint8_t pat(uint64_t i) { return (uint8_t)((i * 7u) ^ (i >> 8) * 131u ^ (i >> 19)); }

static int fail(const char *role, int rc, uint64_t moved, double t0)
{
    printf("rdma_xfer %s: FAILED (%s) after %llu bytes, %.2f s: %s\n", role, ms_strerror(rc),
           (unsigned long long)moved, (double)ms_now_ns() / 1e9 - t0, ms_last_error());
    fflush(stdout);
    return rc == MS_ERR_VERIFY ? 3 : 4;
}

static int do_send(const char *where, uint64_t bytes, uint64_t timeout, unsigned delay_ms)
{
    double t0 = (double)ms_now_ns() / 1e9;
    ms_rdma_options o = {.timeout_ms = timeout, .connect_retries = 50};
    ms_conn *c = NULL;
    int rc = ms_rdma_connect_str(where, &o, &c);
    if (rc < 0)
        return fail("send", rc, 0, t0);
    uint8_t *hdr = malloc(56), *body = malloc(PIECE);
    uint64_t pos = 0;
    while (pos < bytes && rc == MS_OK) {
        size_t h = bytes - pos < 56 ? (size_t)(bytes - pos) : 56;
        size_t b = bytes - pos - h < PIECE ? (size_t)(bytes - pos - h) : PIECE;
        for (size_t i = 0; i < h; i++)
            hdr[i] = pat(pos + i);
        for (size_t i = 0; i < b; i++)
            body[i] = pat(pos + h + i);
        struct iovec v[2] = {{hdr, h}, {body, b}};
        rc = ms_conn_sendv(c, v, 2);
        if (rc == MS_OK)
            pos += h + b;
        if (delay_ms)
            usleep(delay_ms * 1000u);
    }
    if (rc == MS_OK)
        rc = c->ops->shutdown_send(c);
    uint8_t ack = 0;
    if (rc == MS_OK && (rc = ms_conn_recv(c, &ack, 1, NULL)) == MS_OK && ack != 'K')
        rc = ms_error(MS_ERR_VERIFY, "receiver answered '%c' instead of 'K'", ack);
    int ret = 0;
    if (rc < 0)
        ret = fail("send", rc, pos, t0);
    else
        printf("rdma_xfer send: OK %llu bytes in %.2f s\n", (unsigned long long)pos,
               (double)ms_now_ns() / 1e9 - t0);
    free(hdr);
    free(body);
    ms_conn_close(c);
    return ret;
}

static int do_recv(const char *where, uint64_t bytes, uint64_t timeout)
{
    double t0 = (double)ms_now_ns() / 1e9;
    ms_rdma_options o = {.timeout_ms = timeout};
    ms_listener *l = NULL;
    ms_conn *c = NULL;
    int rc = ms_rdma_listen_str(where, &o, &l);
    if (rc == MS_OK) {
        printf("rdma_xfer recv: listening on %s\n", l->addr);
        fflush(stdout);
        rc = ms_listener_accept(l, &c, 60000);
    }
    if (rc < 0)
        return fail("recv", rc, 0, t0);
    uint8_t *buf = malloc(PIECE);
    uint64_t pos = 0;
    while (pos < bytes && rc == MS_OK) {
        size_t want = bytes - pos < PIECE ? (size_t)(bytes - pos) : PIECE;
        size_t got = 0;
        rc = ms_conn_recv(c, buf, want, &got);
        for (size_t i = 0; i < got && rc != MS_ERR_VERIFY; i++)
            if (buf[i] != pat(pos + i))
                rc = ms_error(MS_ERR_VERIFY, "byte %llu differs", (unsigned long long)(pos + i));
        /* The lane injects its faults once data flows. */
        if (pos / (4u << 20) != (pos + got) / (4u << 20))
            printf("rdma_xfer recv: progress %llu MiB\n", (unsigned long long)((pos + got) >> 20));
        pos += got;
    }
    size_t got = 0;
    if (rc == MS_OK && (rc = ms_conn_recv(c, buf, 1, &got)) == MS_ERR_CLOSED && got == 0)
        rc = ms_conn_send(c, "K", 1);
    else if (rc == MS_OK)
        rc = ms_error(MS_ERR_CORRUPT, "more bytes than the %llu expected", (unsigned long long)bytes);
    int ret = 0;
    if (rc < 0)
        ret = fail("recv", rc, pos, t0);
    else
        printf("rdma_xfer recv: OK %llu bytes verified in %.2f s\n", (unsigned long long)pos,
               (double)ms_now_ns() / 1e9 - t0);
    free(buf);
    ms_conn_close(c);
    ms_listener_close(l);
    return ret;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"bytes", required_argument, NULL, 'b'}, {"timeout", required_argument, NULL, 't'},
        {"delay-ms", required_argument, NULL, 'd'}, {NULL, 0, NULL, 0},
    };
    uint64_t bytes = 64ull << 20, timeout = 10000;
    unsigned delay = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (ch == 'b' && ms_parse_size(optarg, &bytes) == 0)
            continue;
        if (ch == 't' && ms_parse_duration_ms(optarg, &timeout) == 0)
            continue;
        if (ch == 'd') {
            delay = (unsigned)atoi(optarg);
            continue;
        }
        fprintf(stderr, "usage: rdma_xfer send|recv HOST:PORT [--bytes SIZE] [--timeout MS] [--delay-ms N]\n");
        return 2;
    }
    if (argc - optind != 2) {
        fprintf(stderr, "usage: rdma_xfer send|recv HOST:PORT [--bytes SIZE] [--timeout MS] [--delay-ms N]\n");
        return 2;
    }
    if (getenv("MIGSTREAM_LOG"))
        ms_log_set_level(ms_log_level_parse(getenv("MIGSTREAM_LOG")));
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(argv[optind], "send"))
        return do_send(argv[optind + 1], bytes, timeout, delay);
    if (!strcmp(argv[optind], "recv"))
        return do_recv(argv[optind + 1], bytes, timeout);
    fprintf(stderr, "rdma_xfer: unknown mode '%s'\n", argv[optind]);
    return 2;
}
