/* bench_rdma: CPU seconds per GiB moved by the rdma data path against the tcp
 * one, through the same ms_conn calls the stream layer makes (sendv of a
 * 56-byte header plus a body from reused buffers; recv of both).
 *
 * Local mode (default): sender and receiver threads in this process, over
 * ADDR, for each transport in turn (alternating over --reps). Reports
 * throughput and CPU per GiB split into user and system time, for the whole
 * process and for each thread (getrusage RUSAGE_THREAD), plus the machine's
 * busy CPU from /proc/stat. The split matters under Soft-RoCE: rxe emulates
 * the NIC in the kernel (payload copies, ICRC, UDP), charged as system time
 * to the thread that posts, which real RDMA hardware does in silicon; the
 * user time is what the rdma data path itself costs.
 *
 *   bench_rdma [--addr IP] [--bytes SIZE] [--body SIZE] [--transport rdma|tcp|both]
 *              [--reps N] [--rdma-opts SPEC] [--json]
 *
 * Two-host mode, for real hardware (bench/bench_rdma.sh drives it):
 *   bench_rdma --serve IP:PORT  --transport T [--bytes SIZE]   (receiver; one run)
 *   bench_rdma --connect IP:PORT --transport T [--bytes SIZE]  (sender)
 * Each side prints one result line with its own CPU. */
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "rdma/rdma.h"
#include "tcp/tcp.h"

#define HDR 56u

typedef struct cfg {
    const char *addr;
    uint64_t bytes;
    size_t body;
    ms_rdma_options ropt;
    bool json;
} cfg;

typedef struct cpu {
    double user, sys;
} cpu;

typedef struct result {
    const char *transport;
    double wall_s, mbps;
    cpu proc;                  /* the whole process (both ends in local mode) */
    cpu send, recv;            /* the sending and the receiving thread */
    double machine_s;          /* busy CPU of the whole machine (/proc/stat) */
    uint64_t zcopy_bytes, copy_bytes;
} result;

static double machine_busy_s(void)
{
    FILE *f = fopen("/proc/stat", "r");
    unsigned long long v[8] = {0};
    if (!f)
        return 0;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                   &v[6], &v[7]);
    fclose(f);
    if (n < 8)
        return 0;
    unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]; /* not idle, not iowait */
    return (double)busy / (double)sysconf(_SC_CLK_TCK);
}

static cpu cpu_now(int who)
{
    struct rusage ru;
    getrusage(who, &ru);
    return (cpu){(double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
                 (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6};
}

static cpu cpu_since(int who, cpu t0)
{
    cpu t = cpu_now(who);
    return (cpu){t.user - t0.user, t.sys - t0.sys};
}

static int open_pair(const char *transport, const char *addr, const ms_rdma_options *ro, bool listen_side,
                     const char *hostport, ms_listener **l, ms_conn **c)
{
    char host[128], port[16] = "0";
    snprintf(host, sizeof(host), "%s", addr ? addr : "");
    if (hostport) {
        const char *colon = strrchr(hostport, ':');
        if (!colon)
            return ms_error(MS_ERR_INVAL, "'%s': expected IP:PORT", hostport);
        snprintf(host, sizeof(host), "%.*s", (int)(colon - hostport), hostport);
        snprintf(port, sizeof(port), "%s", colon + 1);
    }
    bool rdma = !strcmp(transport, "rdma");
    if (listen_side) {
        ms_tcp_options to = {0};
        return rdma ? ms_rdma_listen(host, port, ro, l) : ms_tcp_listen(host, port, &to, l);
    }
    ms_tcp_options to = {.connect_retries = 50};
    ms_rdma_options o = *ro;
    o.connect_retries = 50;
    return rdma ? ms_rdma_connect(host, port, &o, c) : ms_tcp_connect(host, port, &to, c);
}

typedef struct side {
    ms_conn *c;
    uint64_t bytes;
    size_t body;
    int rc;
    cpu used;
    char err[256];
} side;

static void *sender(void *p)
{
    side *s = p;
    cpu t0 = cpu_now(RUSAGE_THREAD);
    uint8_t *hdr = calloc(1, HDR), *body = malloc(s->body);
    memset(body, 0x5a, s->body);
    uint64_t pos = 0;
    s->rc = MS_OK;
    while (pos < s->bytes && s->rc == MS_OK) {
        size_t b = s->bytes - pos < s->body ? (size_t)(s->bytes - pos) : s->body;
        struct iovec v[2] = {{hdr, HDR}, {body, b}};
        s->rc = ms_conn_sendv(s->c, v, 2);
        pos += b;
    }
    if (s->rc == MS_OK)
        s->rc = s->c->ops->shutdown_send(s->c);
    uint8_t ack;
    if (s->rc == MS_OK)
        s->rc = ms_conn_recv(s->c, &ack, 1, NULL);
    snprintf(s->err, sizeof(s->err), "%s", ms_last_error());
    s->used = cpu_since(RUSAGE_THREAD, t0);
    free(hdr);
    free(body);
    return NULL;
}

static void *receiver(void *p)
{
    side *s = p;
    cpu t0 = cpu_now(RUSAGE_THREAD);
    uint8_t *hdr = malloc(HDR), *body = malloc(s->body);
    uint64_t pos = 0;
    s->rc = MS_OK;
    while (pos < s->bytes && s->rc == MS_OK) {
        size_t b = s->bytes - pos < s->body ? (size_t)(s->bytes - pos) : s->body;
        if ((s->rc = ms_conn_recv(s->c, hdr, HDR, NULL)) == MS_OK)
            s->rc = ms_conn_recv(s->c, body, b, NULL);
        pos += b;
    }
    size_t got;
    if (s->rc == MS_OK && ms_conn_recv(s->c, hdr, 1, &got) == MS_ERR_CLOSED)
        s->rc = ms_conn_send(s->c, "K", 1);
    snprintf(s->err, sizeof(s->err), "%s", ms_last_error());
    s->used = cpu_since(RUSAGE_THREAD, t0);
    free(hdr);
    free(body);
    return NULL;
}

static void fill_stats(result *r, ms_conn *c)
{
    ms_rdma_stats st;
    if (ms_rdma_conn_stats(c, &st) == MS_OK) {
        r->zcopy_bytes = st.bytes_zcopy;
        r->copy_bytes = st.bytes_copied;
    }
}

typedef struct acceptor {
    ms_listener *l;
    ms_conn *c;
    int rc;
    char err[256];
} acceptor;

static void *accept_main(void *p)
{
    acceptor *a = p;
    a->rc = ms_listener_accept(a->l, &a->c, 30000);
    snprintf(a->err, sizeof(a->err), "%s", ms_last_error());
    return NULL;
}

static int run_local(const cfg *g, const char *transport, result *r)
{
    ms_listener *l = NULL;
    ms_conn *cc = NULL, *sc = NULL;
    int rc = open_pair(transport, g->addr, &g->ropt, true, NULL, &l, NULL);
    if (rc < 0)
        return rc;
    char hp[160];
    snprintf(hp, sizeof(hp), "%s:%u", g->addr, l->port);
    /* An rdma connect completes only once the other side accepts. */
    acceptor a = {.l = l};
    pthread_t ta;
    pthread_create(&ta, NULL, accept_main, &a);
    rc = open_pair(transport, g->addr, &g->ropt, false, hp, NULL, &cc);
    pthread_join(ta, NULL);
    ms_listener_close(l);
    sc = a.c;
    if (rc == MS_OK && a.rc < 0)
        rc = ms_error(a.rc, "%s", a.err);
    if (rc < 0) {
        ms_conn_close(cc);
        ms_conn_close(sc);
        return rc;
    }
    side s = {.c = cc, .bytes = g->bytes, .body = g->body}, d = {.c = sc, .bytes = g->bytes, .body = g->body};
    double busy0 = machine_busy_s();
    cpu cpu0 = cpu_now(RUSAGE_SELF);
    uint64_t t0 = ms_now_ns();
    pthread_t ts, td;
    pthread_create(&td, NULL, receiver, &d);
    pthread_create(&ts, NULL, sender, &s);
    pthread_join(ts, NULL);
    pthread_join(td, NULL);
    double wall = (double)(ms_now_ns() - t0) / 1e9;
    *r = (result){.transport = transport, .wall_s = wall, .mbps = (double)g->bytes / wall / 1e6,
                  .proc = cpu_since(RUSAGE_SELF, cpu0), .machine_s = machine_busy_s() - busy0,
                  .send = s.used, .recv = d.used};
    fill_stats(r, cc);
    ms_conn_close(cc);
    ms_conn_close(sc);
    if (s.rc < 0 || d.rc < 0)
        return ms_error(s.rc < 0 ? s.rc : d.rc, "%s transfer failed: sender: %s; receiver: %s", transport,
                        s.rc < 0 ? s.err : "ok", d.rc < 0 ? d.err : "ok");
    return MS_OK;
}

static void print_result(const cfg *g, const result *r)
{
    double gib = (double)g->bytes / (double)(1u << 30);
    if (g->json) {
        printf("{\"transport\":\"%s\",\"bytes\":%llu,\"wall_s\":%.3f,\"MBps\":%.1f,"
               "\"proc_user_s_per_GiB\":%.3f,\"proc_sys_s_per_GiB\":%.3f,"
               "\"send_user_s_per_GiB\":%.3f,\"send_sys_s_per_GiB\":%.3f,"
               "\"recv_user_s_per_GiB\":%.3f,\"recv_sys_s_per_GiB\":%.3f,"
               "\"machine_s_per_GiB\":%.3f,\"zcopy_bytes\":%llu,\"copy_bytes\":%llu}\n",
               r->transport, (unsigned long long)g->bytes, r->wall_s, r->mbps, r->proc.user / gib,
               r->proc.sys / gib, r->send.user / gib, r->send.sys / gib, r->recv.user / gib, r->recv.sys / gib,
               r->machine_s / gib, (unsigned long long)r->zcopy_bytes, (unsigned long long)r->copy_bytes);
        fflush(stdout);
        return;
    }
    printf("%-4s %7.1f MB/s  CPU s/GiB: process user %.3f sys %.3f | sender user %.3f sys %.3f | "
           "receiver user %.3f sys %.3f | machine %.3f",
           r->transport, r->mbps, r->proc.user / gib, r->proc.sys / gib, r->send.user / gib, r->send.sys / gib,
           r->recv.user / gib, r->recv.sys / gib, r->machine_s / gib);
    if (!strcmp(r->transport, "rdma"))
        printf(" | zero-copy %.0f%%", 100.0 * (double)r->zcopy_bytes / (double)(r->zcopy_bytes + r->copy_bytes + 1));
    printf("\n");
    fflush(stdout);
}

/* One side of a two-host run. */
static int run_remote(const cfg *g, const char *transport, const char *hostport, bool serve)
{
    ms_listener *l = NULL;
    ms_conn *c = NULL;
    int rc = open_pair(transport, NULL, &g->ropt, serve, hostport, &l, &c);
    if (rc == MS_OK && serve) {
        fprintf(stderr, "bench_rdma: %s listening on %s\n", transport, l->addr);
        rc = ms_listener_accept(l, &c, 120000);
        ms_listener_close(l);
    }
    if (rc < 0)
        return rc;
    side s = {.c = c, .bytes = g->bytes, .body = g->body};
    double busy0 = machine_busy_s();
    cpu cpu0 = cpu_now(RUSAGE_SELF);
    uint64_t t0 = ms_now_ns();
    serve ? receiver(&s) : sender(&s);
    double wall = (double)(ms_now_ns() - t0) / 1e9;
    result r = {.transport = transport, .wall_s = wall, .mbps = (double)g->bytes / wall / 1e6,
                .proc = cpu_since(RUSAGE_SELF, cpu0), .machine_s = machine_busy_s() - busy0};
    *(serve ? &r.recv : &r.send) = s.used;
    fill_stats(&r, c);
    ms_conn_close(c);
    if (s.rc < 0)
        return ms_error(s.rc, "%s", s.err);
    if (!g->json)
        printf("%s ", serve ? "receiver" : "sender  ");
    print_result(g, &r);
    return MS_OK;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: bench_rdma [--addr IP] [--bytes SIZE] [--body SIZE] [--transport rdma|tcp|both]\n"
               "                  [--reps N] [--rdma-opts SPEC] [--json]\n"
               "       bench_rdma --serve IP:PORT | --connect IP:PORT --transport rdma|tcp [--bytes SIZE]\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"addr", required_argument, NULL, 'a'},      {"bytes", required_argument, NULL, 'b'},
        {"body", required_argument, NULL, 'B'},      {"transport", required_argument, NULL, 't'},
        {"reps", required_argument, NULL, 'r'},      {"rdma-opts", required_argument, NULL, 'o'},
        {"json", no_argument, NULL, 'j'},            {"serve", required_argument, NULL, 's'},
        {"connect", required_argument, NULL, 'c'},   {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    cfg g = {.addr = "127.0.0.1", .bytes = 256ull << 20, .body = 1u << 20};
    const char *transport = "both", *serve = NULL, *connect = NULL;
    int reps = 1, ch;
    uint64_t v;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'a': g.addr = optarg; break;
        case 'b':
            if (ms_parse_size(optarg, &g.bytes) < 0 || !g.bytes)
                return usage(stderr), 2;
            break;
        case 'B':
            if (ms_parse_size(optarg, &v) < 0 || !v || v > (256u << 20))
                return usage(stderr), 2;
            g.body = (size_t)v;
            break;
        case 't': transport = optarg; break;
        case 'r': reps = atoi(optarg) > 0 ? atoi(optarg) : 1; break;
        case 'o':
            if (ms_rdma_options_parse(optarg, &g.ropt) < 0) {
                fprintf(stderr, "bench_rdma: %s\n", ms_last_error());
                return 2;
            }
            break;
        case 'j': g.json = true; break;
        case 's': serve = optarg; break;
        case 'c': connect = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (strcmp(transport, "rdma") && strcmp(transport, "tcp") && strcmp(transport, "both"))
        return usage(stderr), 2;
    if (serve || connect) {
        if (!strcmp(transport, "both"))
            return usage(stderr), 2;
        int rc = run_remote(&g, transport, serve ? serve : connect, serve != NULL);
        if (rc < 0)
            fprintf(stderr, "bench_rdma: %s\n", ms_last_error());
        return rc < 0 ? 1 : 0;
    }
    if (strcmp(transport, "tcp") && ms_rdma_available() < 0) {
        fprintf(stderr, "bench_rdma: %s\n", ms_last_error());
        return 77;
    }
    for (int i = 0; i < reps; i++) {
        /* Alternate so machine noise hits both transports alike. */
        const char *order[2] = {"tcp", "rdma"};
        for (int k = 0; k < 2; k++) {
            if (strcmp(transport, "both") && strcmp(transport, order[k]))
                continue;
            result r;
            if (run_local(&g, order[k], &r) < 0) {
                fprintf(stderr, "bench_rdma: %s\n", ms_last_error());
                return 1;
            }
            print_result(&g, &r);
        }
    }
    return 0;
}
