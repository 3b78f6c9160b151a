/* rdma_stream: a whole migstream session (hello, keys, sealing, codec chain,
 * rounds, acks) over rdma connections, for the VM lane: the stream layer's
 * own sender and receiver on the rdma transport, the image rebuilt on the
 * receiver compared byte for byte with the one the sender had.
 *
 *   rdma_stream recv HOST:PORT [--key FILE] [--mb N] [--accept-timeout SECS]
 *   rdma_stream send HOST:PORT [--key FILE] [--mb N] [--rounds R] [--channels N]
 *                              [--chain CHAIN] [--delay-ms N]
 *   rdma_stream hello HOST:PORT --wire-version V
 *
 * Both ends derive the same image from --mb: 4 KiB pages, a fifth of them
 * zero, the rest text-like or random; each round after the first changes 5%
 * of the pages. `hello` sends a hand-made hello claiming wire version V and
 * reports what the receiver answers. Each mode prints one line, "... OK ..."
 * or "... FAILED (code): message", and exits 0, 3 (image differs), 4 (peer
 * or transport), 5 (key or integrity). */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rdma/rdma.h"
#include "stream/stream.h"

#define PAGE 4096u

typedef struct opts {
    const char *where, *key_file, *chain;
    unsigned mb, rounds, channels, delay_ms, wire_version;
    uint64_t accept_timeout_ms;
    uint8_t key[MS_KEY_SIZE];
    bool have_key;
} opts;

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Does round r (>= 2) change page pfn? */
static bool changed(uint64_t pfn, unsigned r) { return mix(pfn * 131 + r) % 20 == 0; }

static void make_page(uint8_t *p, uint64_t pfn, unsigned version)
{
    if (pfn % 5 == 0 && version == 1) {
        memset(p, 0, PAGE);
        return;
    }
    uint64_t s = mix(pfn ^ ((uint64_t)version << 40));
    if (pfn % 5 == 1) {
        for (unsigned i = 0; i < PAGE; i++)
            p[i] = (uint8_t)"migstream page text "[(i + s % 7) % 20];
        memcpy(p, &s, sizeof(s));
        return;
    }
    for (unsigned i = 0; i < PAGE; i += 8) {
        s = mix(s);
        memcpy(p + i, &s, 8);
    }
}

static unsigned final_version(uint64_t pfn, unsigned rounds)
{
    unsigned v = 1;
    for (unsigned r = 2; r <= rounds; r++)
        if (changed(pfn, r))
            v = r;
    return v;
}

static int exit_for(int rc)
{
    switch (rc) {
    case MS_OK: return 0;
    case MS_ERR_VERIFY: case MS_ERR_HASH: return 3;
    case MS_ERR_AUTH: case MS_ERR_TAMPERED: case MS_ERR_REPLAY: case MS_ERR_REORDER: return 5;
    default: return 4;
    }
}

static int report(const char *mode, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int report(const char *mode, int rc, const char *fmt, ...)
{
    if (rc < 0) {
        printf("rdma_stream %s: FAILED (%s): %s\n", mode, ms_strerror(rc), ms_last_error());
    } else {
        va_list ap;
        va_start(ap, fmt);
        printf("rdma_stream %s: OK ", mode);
        vprintf(fmt, ap);
        printf("\n");
        va_end(ap);
    }
    fflush(stdout);
    return exit_for(rc);
}

static void base_config(const opts *o, ms_session_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    ms_chain_parse(o->chain, &cfg->chain);
    cfg->workers = 2;
    cfg->timeout_ms = 30000;
    cfg->key = o->have_key ? o->key : NULL;
    cfg->insecure = !o->have_key;
}

static int do_send(const opts *o)
{
    ms_session_config cfg;
    base_config(o, &cfg);
    ms_rdma_options ro = {.timeout_ms = 30000, .connect_retries = 100};
    ms_conn *conns[16] = {0};
    ms_sender *s = NULL;
    int rc = ms_rdma_connect_n(o->where, o->channels, &ro, conns);
    if (rc < 0)
        return report("send", rc, " ");
    if ((rc = ms_sender_open(&cfg, conns, o->channels, &s)) < 0)
        return report("send", rc, " ");
    uint64_t npages = (uint64_t)o->mb * 256;
    enum { BATCH = 64 };
    uint8_t *buf = malloc((size_t)BATCH * PAGE);
    uint64_t pfns[BATCH], sent = 0;
    for (unsigned r = 1; r <= o->rounds && rc == MS_OK; r++) {
        size_t n = 0;
        for (uint64_t pfn = 0; pfn < npages && rc == MS_OK; pfn++) {
            if (r > 1 && !changed(pfn, r))
                continue;
            make_page(buf + n * PAGE, pfn, r);
            pfns[n++] = pfn;
            if (n == BATCH || pfn + 1 == npages) {
                rc = ms_sender_pages(s, r, 0, pfns, buf, n);
                sent += n;
                n = 0;
                if (o->delay_ms)
                    usleep(o->delay_ms * 1000u);
            }
        }
        if (rc == MS_OK && n)
            rc = ms_sender_pages(s, r, 0, pfns, buf, n), sent += n;
        if (rc == MS_OK)
            rc = ms_sender_round_end(s, r);
    }
    if (rc == MS_OK)
        rc = ms_sender_finish(s);
    else
        ms_sender_abort(s, ms_last_error());
    free(buf);
    const ms_stats *st = ms_sender_stats(s);
    rc = report("send", rc, "%llu pages in %u rounds, %llu wire bytes, %u channel(s)%s", (unsigned long long)sent,
                o->rounds, (unsigned long long)(st ? st->total.wire_bytes : 0), o->channels,
                o->have_key ? ", sealed" : "");
    ms_sender_free(s);
    return rc;
}

static int compare_image(const ms_image_sink *img, uint64_t npages, unsigned rounds)
{
    uint8_t want[PAGE], zero[PAGE] = {0};
    for (uint64_t pfn = 0; pfn < npages; pfn++) {
        make_page(want, pfn, final_version(pfn, rounds));
        const uint8_t *got = (pfn + 1) * PAGE <= img->mem_len ? img->mem + pfn * PAGE : zero;
        if (memcmp(want, got, PAGE))
            return ms_error(MS_ERR_VERIFY, "page %llu differs from the sender's", (unsigned long long)pfn);
    }
    if (img->mem_len > npages * PAGE)
        return ms_error(MS_ERR_VERIFY, "image of %llu bytes, expected %llu", (unsigned long long)img->mem_len,
                        (unsigned long long)(npages * PAGE));
    return MS_OK;
}

static int do_recv(const opts *o)
{
    ms_session_config cfg;
    base_config(o, &cfg);
    ms_rdma_options ro = {.timeout_ms = 30000};
    ms_listener *l = NULL;
    ms_accepted a;
    ms_stats st = {0};
    ms_image_sink img = {.max_bytes = (uint64_t)o->mb << 21};
    int rc = ms_rdma_listen_str(o->where, &ro, &l);
    if (rc < 0)
        return report("recv", rc, " ");
    printf("rdma_stream recv: listening on %s\n", l->addr);
    fflush(stdout);
    rc = ms_accept_session(l, &cfg, o->accept_timeout_ms, &a);
    ms_listener_close(l);
    if (rc < 0)
        return report("recv", rc, " ");
    rc = ms_receiver_run(&cfg, &a.hello, a.conns, a.keys, a.nconns, &ms_image_sink_ops, &img, &st);
    unsigned rounds = (unsigned)st.nrounds;
    ms_accepted_free(&a);
    if (rc == MS_OK)
        rc = compare_image(&img, (uint64_t)o->mb * 256, rounds);
    rc = report("recv", rc, "%llu pages in %u rounds byte-identical to the sender's image (%s, %llu wire bytes)",
                (unsigned long long)st.total.pages, rounds, st.verified ? "frame hashes verified" : "unverified",
                (unsigned long long)st.total.wire_bytes);
    ms_image_sink_free(&img);
    ms_stats_free(&st);
    return rc;
}

/* A peer of another wire version: what does the receiver say? */
static int do_hello(const opts *o)
{
    ms_rdma_options ro = {.timeout_ms = 15000, .connect_retries = 100};
    ms_conn *c = NULL;
    int rc = ms_rdma_connect_str(o->where, &ro, &c);
    if (rc < 0)
        return report("hello", rc, " ");
    ms_hello h = {.version = o->wire_version, .role = MS_ROLE_SENDER, .channel = 0, .channels = 1,
                  .page_size = PAGE};
    snprintf(h.chain, sizeof(h.chain), "%s", o->chain);
    for (unsigned i = 0; i < MS_SESSION_ID_SIZE; i++)
        h.session_id[i] = (uint8_t)(i + 1);
    uint8_t out[MS_HELLO_SIZE], in[MS_HELLO_SIZE];
    ms_hello_pack(&h, out);
    size_t got = 0;
    if ((rc = ms_conn_send(c, out, sizeof(out))) == MS_OK)
        rc = ms_conn_recv(c, in, sizeof(in), &got);
    uint32_t peer_version = 0;
    if (rc == MS_OK) {
        peer_version = ms_get_le32(in + 8);
        rc = peer_version == o->wire_version
                 ? ms_error(MS_ERR_CORRUPT, "receiver accepted wire version %u", o->wire_version)
                 : ms_error(MS_ERR_VERSION, "receiver speaks wire version %u, we claimed %u", peer_version,
                            o->wire_version);
    }
    ms_conn_close(c);
    /* The expected outcome is the receiver naming its own version. */
    if (rc == MS_ERR_VERSION) {
        printf("rdma_stream hello: OK %s\n", ms_last_error());
        fflush(stdout);
        return 0;
    }
    return report("hello", rc < 0 ? rc : MS_ERR_CORRUPT, " ");
}

static void usage(FILE *f)
{
    fprintf(f, "usage: rdma_stream recv|send|hello HOST:PORT [--key FILE] [--mb N] [--rounds R] [--channels N]\n"
               "                   [--chain CHAIN] [--delay-ms N] [--accept-timeout SECS] [--wire-version V]\n");
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"key", required_argument, NULL, 'k'},       {"mb", required_argument, NULL, 'm'},
        {"rounds", required_argument, NULL, 'r'},    {"channels", required_argument, NULL, 'n'},
        {"chain", required_argument, NULL, 'c'},     {"delay-ms", required_argument, NULL, 'd'},
        {"accept-timeout", required_argument, NULL, 'a'}, {"wire-version", required_argument, NULL, 'v'},
        {NULL, 0, NULL, 0},
    };
    opts o = {.chain = "zero,delta,lz4", .mb = 16, .rounds = 3, .channels = 2, .accept_timeout_ms = 60000,
              .wire_version = MS_WIRE_VERSION + 1};
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'k': o.key_file = optarg; break;
        case 'm': o.mb = (unsigned)atoi(optarg); break;
        case 'r': o.rounds = (unsigned)atoi(optarg); break;
        case 'n': o.channels = (unsigned)atoi(optarg); break;
        case 'c': o.chain = optarg; break;
        case 'd': o.delay_ms = (unsigned)atoi(optarg); break;
        case 'a': o.accept_timeout_ms = (uint64_t)atoi(optarg) * 1000; break;
        case 'v': o.wire_version = (unsigned)atoi(optarg); break;
        default: usage(stderr); return 2;
        }
    }
    if (argc - optind != 2 || !o.mb || !o.rounds || !o.channels || o.channels > 16) {
        usage(stderr);
        return 2;
    }
    o.where = argv[optind + 1];
    if (getenv("MIGSTREAM_LOG"))
        ms_log_set_level(ms_log_level_parse(getenv("MIGSTREAM_LOG")));
    ms_chain c;
    if (ms_chain_parse(o.chain, &c) < 0) {
        fprintf(stderr, "rdma_stream: %s\n", ms_last_error());
        return 2;
    }
    if (o.key_file) {
        if (ms_key_load(o.key_file, o.key) < 0) {
            fprintf(stderr, "rdma_stream: %s\n", ms_last_error());
            return 2;
        }
        o.have_key = true;
    }
    const char *mode = argv[optind];
    if (!strcmp(mode, "send"))
        return do_send(&o);
    if (!strcmp(mode, "recv"))
        return do_recv(&o);
    if (!strcmp(mode, "hello"))
        return do_hello(&o);
    usage(stderr);
    return 2;
}
