/* ms_migrate: connect the engine to a destination. "local" runs the
 * receiver in this process on loopback TCP into a memory image, which is
 * what lets us verify the destination page for page; HOST:PORT sends to a
 * `migstream recv` elsewhere (its frame hashes are checked there). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fragsched/fragsched.h"
#include "fragsched/sched_priv.h"
#include "tcp/tcp.h"

typedef struct local_rx {
    ms_listener *l;
    ms_session_config cfg;
    uint64_t timeout_ms;
    ms_image_sink sink;
    ms_stats stats;
    int rc;
    ms_errbuf err;
    pthread_t th;
    bool running;
} local_rx;

static void *rx_main(void *arg)
{
    local_rx *rx = arg;
    ms_accepted acc;
    memset(&acc, 0, sizeof(acc));
    int rc = ms_accept_session(rx->l, &rx->cfg, rx->timeout_ms, &acc);
    if (!rc)
        rc = ms_receiver_run(&rx->cfg, &acc.hello, acc.conns, acc.keys, acc.nconns,
                             &ms_image_sink_ops, &rx->sink, &rx->stats);
    if (rc) {
        ms_error_wrap(rc, "local receiver");
        ms_errbuf_capture(&rx->err);
    }
    ms_accepted_free(&acc);
    rx->rc = rc;
    return NULL;
}

static int rx_join(local_rx *rx)
{
    if (rx->running) {
        pthread_join(rx->th, NULL);
        rx->running = false;
    }
    return rx->rc ? ms_errbuf_raise(&rx->err) : MS_OK;
}

/* Compare the receiver's image with the source's hashes at the pause. */
static int verify_local(void *ctx, const uint64_t *hashes, uint64_t npages, uint32_t page_size,
                        uint64_t *mismatches, int64_t *first_bad)
{
    local_rx *rx = ctx;
    int rc = rx_join(rx);
    if (rc)
        return rc;
    enum { CHUNK = 4096 };
    uint64_t h[CHUNK];
    *mismatches = 0;
    *first_bad = -1;
    for (uint64_t first = 0; first < npages; first += CHUNK) {
        uint64_t n = npages - first < CHUNK ? npages - first : CHUNK;
        ms_page_hashes(rx->sink.mem, rx->sink.mem_len, first, n, page_size, h);
        for (uint64_t i = 0; i < n; i++) {
            if (h[i] == hashes[first + i])
                continue;
            if (*first_bad < 0)
                *first_bad = (int64_t)(first + i);
            (*mismatches)++;
        }
    }
    if (*mismatches)
        return ms_error(MS_ERR_VERIFY, "destination differs from the source at the pause in %llu "
                        "of %llu pages (first: page %lld)", (unsigned long long)*mismatches,
                        (unsigned long long)npages, (long long)*first_bad);
    return MS_OK;
}

/* Bind the listener inside another network namespace: the socket keeps
 * that namespace, so the receiver thread and the sender (in ours) talk
 * across whatever link joins the two. Only this thread switches, briefly. */
static int listen_in_netns(const char *netns, const char *host, const ms_tcp_options *topt,
                           ms_listener **l)
{
    char path[256];
    snprintf(path, sizeof(path), "%s%s", strchr(netns, '/') ? "" : "/var/run/netns/", netns);
    int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    int target = open(path, O_RDONLY | O_CLOEXEC);
    int rc = MS_OK;
    if (self < 0 || target < 0) {
        rc = ms_error(MS_ERR_IO, "network namespace %s: %s", path, strerror(errno));
        goto out;
    }
    if (setns(target, CLONE_NEWNET) < 0) {
        rc = ms_error(MS_ERR_IO, "cannot enter network namespace %s: %s", path, strerror(errno));
        goto out;
    }
    rc = ms_tcp_listen(host, "0", topt, l);
    if (setns(self, CLONE_NEWNET) < 0) {
        /* Staying in the other namespace would misroute everything after. */
        ms_listener_close(*l);
        *l = NULL;
        rc = ms_error(MS_ERR_IO, "cannot return to our network namespace: %s", strerror(errno));
    }
out:
    if (self >= 0)
        close(self);
    if (target >= 0)
        close(target);
    return rc;
}

static int connect_all(const char *host, const char *port, unsigned n, const ms_tcp_options *topt,
                       ms_conn **conns)
{
    for (unsigned i = 0; i < n; i++) {
        int rc = ms_tcp_connect(host, port, topt, &conns[i]);
        if (rc) {
            ms_error_wrap(rc, "channel %u of %u to %s:%s", i, n, host, port);
            for (unsigned j = 0; j < i; j++) {
                ms_conn_close(conns[j]);
                conns[j] = NULL;
            }
            return rc;
        }
    }
    return MS_OK;
}

static void describe_link(ms_migration_report *rep, const ms_engine_config *cfg, bool local,
                          unsigned n)
{
    char cap[48] = "";
    if (cfg->session.max_bandwidth)
        snprintf(cap, sizeof(cap), ", cap %.1f MB/s", cfg->session.max_bandwidth / 1e6);
    char where[80];
    if (!local)
        snprintf(where, sizeof(where), "%s", cfg->to);
    else if (cfg->receiver_netns)
        snprintf(where, sizeof(where), "local receiver in netns %s (%s)", cfg->receiver_netns,
                 cfg->local_listen ? cfg->local_listen : "127.0.0.1");
    else
        snprintf(where, sizeof(where), "loopback");
    /* Precisions keep the sum inside rep->link; a long netns name may be cut. */
    snprintf(rep->link, sizeof(rep->link), "%.40s tcp x%u%.40s", where, n, cap);
}

int ms_migrate(ms_page_source *src, const ms_engine_config *cfg, ms_migration_report *rep)
{
    bool local = !cfg->to || !strcmp(cfg->to, "local");
    unsigned n = cfg->channels ? cfg->channels : 1;
    if (n > MS_HELLO_MAX_CHANNELS)
        return ms_error(MS_ERR_INVAL, "%u channels is above the limit of %u", n, MS_HELLO_MAX_CHANNELS);
    char host[256] = "127.0.0.1", port[32] = "";
    local_rx rx;
    memset(&rx, 0, sizeof(rx));
    ms_conn **conns = calloc(n, sizeof(*conns));
    ms_sender *snd = NULL;
    ms_tcp_options topt = {.timeout_ms = cfg->session.timeout_ms, .connect_retries = 20};
    int rc;
    if (!conns)
        return ms_error(MS_ERR_NOMEM, "engine: out of memory");
    if (local) {
        if (cfg->local_listen)
            snprintf(host, sizeof(host), "%s", cfg->local_listen);
        rc = cfg->receiver_netns ? listen_in_netns(cfg->receiver_netns, host, &topt, &rx.l)
                                 : ms_tcp_listen(host, "0", &topt, &rx.l);
        if (rc)
            goto out;
        snprintf(port, sizeof(port), "%u", rx.l->port);
        rx.cfg = cfg->session;
        /* Our own receiver, reached over a link we were told to use (a veth
         * into a namespace): not a listener open to strangers. */
        rx.cfg.insecure = rx.cfg.insecure || cfg->receiver_netns || cfg->local_listen;
        rx.timeout_ms = cfg->session.timeout_ms ? cfg->session.timeout_ms : MS_DEFAULT_TIMEOUT_MS;
        uint64_t cap = ms_source_max_pages(src);
        rx.sink.max_bytes = (cap > src->npages ? cap : src->npages) * src->page_size;
        if (pthread_create(&rx.th, NULL, rx_main, &rx)) {
            rc = ms_error(MS_ERR_IO, "cannot start the local receiver thread");
            goto out;
        }
        rx.running = true;
    } else if (ms_split_hostport(cfg->to, host, sizeof(host), port, sizeof(port))) {
        rc = ms_error(MS_ERR_INVAL, "destination '%s' is not HOST:PORT or 'local'", cfg->to);
        goto out;
    }
    describe_link(rep, cfg, local, n);
    if ((rc = connect_all(host, port, n, &topt, conns)))
        goto out;
    rc = ms_sender_open(&cfg->session, conns, n, &snd);
    memset(conns, 0, n * sizeof(*conns)); /* the sender owns them now, even on failure */
    if (rc)
        goto out;
    rc = ms_migrate_sender(src, snd, cfg, local ? verify_local : NULL, &rx, rep);
out:
    if (rc) {
        ms_errbuf eb = {0};
        ms_errbuf_capture(&eb);
        ms_sender_free(snd);
        snd = NULL;
        rx_join(&rx); /* its error is a consequence of ours */
        ms_errbuf_raise(&eb);
    }
    ms_sender_free(snd);
    if (!rc)
        rc = rx_join(&rx);
    for (unsigned i = 0; i < n; i++)
        ms_conn_close(conns[i]);
    free(conns);
    ms_listener_close(rx.l);
    ms_image_sink_free(&rx.sink);
    ms_stats_free(&rx.stats);
    return rc;
}
