/* libFuzzer target: the receiver pipeline on a hostile one-channel stream.
 *
 * Raw bytes would almost never get past the hello and header checksums, so
 * the input is read as a recipe: a chain choice, then frames whose header
 * fields and bodies come from the input and whose magic, header check and
 * (for control frames, when asked) content hash are made valid. That drives
 * the reader, the reorder window, decompression, pfn lists, the stateful
 * page decoder, round barriers and the END checks with hostile content.
 * With the first byte odd, the input goes in raw instead (after a valid
 * hello). Whatever the input, ms_receive_stream must return (never hang,
 * never crash) and a failure must say why. */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "stream/stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const chains[] = {"none", "lz4", "zstd:1", "zero", "zero,delta", "zero,delta,lz4", "delta,zstd:3", "zero,none"};

typedef struct cursor {
    const uint8_t *p;
    size_t n;
} cursor;

static uint32_t take(cursor *c, unsigned bytes)
{
    uint32_t v = 0;
    for (unsigned i = 0; i < bytes && c->n; i++, c->p++, c->n--)
        v |= (uint32_t)*c->p << (8 * i);
    return v;
}

static void put(int fd, const void *p, size_t n)
{
    if (n && write(fd, p, n) != (ssize_t)n)
        abort();
}

static void write_hello(int fd, const char *chain)
{
    ms_hello h = {.version = MS_WIRE_VERSION, .role = MS_ROLE_SENDER, .channels = 1, .page_size = MS_PAGE_SIZE,
                  .flags = MS_HELLO_F_ONEWAY};
    uint8_t b[MS_HELLO_SIZE];
    snprintf(h.chain, sizeof h.chain, "%s", chain);
    ms_hello_pack(&h, b);
    put(fd, b, sizeof b);
}

/* One frame from the recipe. */
static void write_frame(int fd, cursor *c, uint64_t *seq, uint32_t chain_id)
{
    uint8_t hdr[MS_FRAME_HDR_SIZE], body[4096];
    uint32_t ctl = take(c, 2);
    ms_frame_hdr h = {0};
    h.type = (uint8_t)(1 + ctl % 7);
    h.seq = (ctl & 0x100) ? *seq + (take(c, 1) % 3) : *seq; /* mostly in order */
    h.round = take(c, 1) % 4;
    h.fragment = take(c, 1);
    size_t blen = take(c, 2) % sizeof body;
    if (blen > c->n)
        blen = c->n;
    memcpy(body, c->p, blen);
    c->p += blen;
    c->n -= blen;
    if (h.type == MS_FRAME_PAGES) {
        h.page_count = 1 + take(c, 1) % 8;
        h.raw_len = h.page_count * MS_PAGE_SIZE;
        h.codec = (ctl & 0x200) ? take(c, 4) : chain_id;
        h.stage_len = (ctl & 0x400) ? take(c, 3) % (MS_MAX_FRAME_BODY + 2) : (uint32_t)blen;
        h.hash = ((uint64_t)take(c, 4) << 32) | take(c, 4);
    } else if (h.type == MS_FRAME_OPAQUE) {
        h.codec = (ctl & 0x200) ? take(c, 4) : chain_id;
        h.raw_len = h.stage_len = (ctl & 0x400) ? take(c, 2) : (uint32_t)blen;
        h.hash = (ctl & 0x800) ? ms_content_hash(NULL, 0, body, blen) : take(c, 4);
    } else {
        if (h.type == MS_FRAME_ROUND_END && (ctl & 0x1000) && blen >= 10) {
            ms_put_le16(body, 1); /* a well-formed count, the number itself from the input */
            blen = 10;
        }
        h.raw_len = h.stage_len = (uint32_t)blen;
        h.hash = (ctl & 0x800) ? ms_content_hash(NULL, 0, body, blen) : take(c, 4);
        if (ctl & 0x2000)
            h.codec = take(c, 1);
    }
    h.enc_len = (uint32_t)blen;
    ms_frame_hdr_pack(&h, hdr);
    put(fd, hdr, sizeof hdr);
    put(fd, body, blen);
    *seq = h.seq + 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const ms_sink_ops *sinks[] = {&ms_discard_sink_ops, &ms_image_sink_ops};
    cursor c = {data, size};
    ms_image_sink img = {.max_bytes = 64u << 20};
    ms_stats st = {0};
    ms_conn *conn = NULL;
    if (size < 2)
        return 0;
    unsigned mode = take(&c, 1);
    const char *chain = chains[(mode >> 1) % (sizeof chains / sizeof *chains)];
    ms_chain parsed;
    if (ms_chain_parse(chain, &parsed) < 0)
        abort();
    int fd = memfd_create("fuzz_receiver", MFD_CLOEXEC);
    if (fd < 0)
        abort();
    write_hello(fd, chain);
    if (mode & 1) {
        put(fd, c.p, c.n);
    } else {
        uint64_t seq = 0;
        for (int i = 0; i < 64 && c.n; i++)
            write_frame(fd, &c, &seq, ms_chain_to_id(&parsed));
    }
    if (lseek(fd, 0, SEEK_SET) != 0 || ms_fd_conn_new(fd, -1, true, &conn) < 0)
        abort();
    ms_session_config cfg = {.workers = 1 + (mode >> 5) % 2, .queue_depth = 1 + (mode >> 6), .timeout_ms = 2000,
                             .delta_cache_bytes = 1u << 20};
    const ms_sink_ops *sink = sinks[(mode >> 4) & 1];
    int rc = ms_receive_stream(conn, &cfg, sink, sink == &ms_image_sink_ops ? (void *)&img : NULL, &st, NULL);
    if (rc < 0 && !ms_last_error()[0])
        abort(); /* every refusal says why */
    if (rc == MS_OK && !st.verified)
        abort(); /* success means every frame was checked and END arrived */
    ms_conn_close(conn);
    ms_stats_free(&st);
    ms_image_sink_free(&img);
    return 0;
}
