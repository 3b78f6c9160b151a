/* Receiver pipeline: frames from N channels back into one ordered stream.
 *
 * Threads:
 *  - one reader per channel: header, checks that need no body (channel,
 *    sealing flag, per-channel order, the frame's expected seq), then the
 *    body straight into its slot of the reorder window;
 *  - `workers` threads open the seal, decompress and decode the pfn list;
 *  - the calling thread delivers in seq order: page stages (stateful),
 *    content hash, round barriers, the sink, and the answers to the sender.
 * The window has W slots indexed by seq % W. A reader holding frame s waits
 * while s >= next + W. That cannot deadlock: frame `next` travels on channel
 * next % channels, whose reader has delivered every earlier frame of that
 * channel (they all have smaller seqs), so it is never the one waiting. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stream/pipeline_priv.h"

enum { SLOT_EMPTY, SLOT_READING, SLOT_QUEUED, SLOT_DONE };

typedef struct rslot {
    struct rslot *work_next;
    ms_frame_hdr h;
    uint8_t hdr[MS_FRAME_HDR_SIZE];
    uint64_t seq;     /* valid once claimed by a reader */
    int state;
    ms_buf wire;      /* body as read (decoded in place when not compressed) */
    ms_buf stage;     /* decompressed body */
    uint8_t *body;    /* stage content: wire.data or stage.data */
    size_t body_len, body_cap;
    uint64_t *pfns;
    uint8_t *section; /* PAGES: page section, decoded in place */
    size_t section_len, section_cap;
    uint64_t comp_out;
    uint8_t comp_used;
    bool hashed;      /* content hash already taken (hash below) */
    uint64_t hash;
} rslot;

typedef struct rx {
    ms_conn **conns;
    const ms_session_keys *keys;
    unsigned nch, nworkers, W;
    const ms_sink_ops *sink;
    void *sink_ctx;
    ms_stats *stats;
    ms_chain chain;
    size_t ps;
    bool sealed, oneway;
    uint64_t timeout_ms;
    ms_page_coder *pc;
    rslot *slots;

    pthread_mutex_t lock;
    pthread_cond_t slot_cv, work_cv, done_cv;
    rslot *work_head, *work_tail;
    uint64_t next;
    bool stop, failed, peer_aborted, end_done;
    ms_errbuf err;
    bool *eof;
    double thread_cpu;

    /* Delivery thread only. */
    bool round_open, barrier_any;
    uint32_t cur_round, barrier_round;
    uint64_t *since_round;
    uint64_t data_frames, pages, raw_bytes;
    XXH3_state_t *digest;
    uint64_t rev_seq, last_rev_ns;

    pthread_t *readers, *workers;
    unsigned nreaders_started, nworkers_started;
} rx;

typedef struct reader_arg {
    rx *r;
    unsigned ch;
} reader_arg;

static bool is_data(const ms_frame_hdr *h) { return h->type == MS_FRAME_PAGES || h->type == MS_FRAME_OPAQUE; }

static void fail_locked(rx *r)
{
    if (!r->failed) {
        ms_errbuf_capture(&r->err);
        r->failed = true;
    }
    r->stop = true;
    pthread_cond_broadcast(&r->slot_cv);
    pthread_cond_broadcast(&r->work_cv);
    pthread_cond_broadcast(&r->done_cv);
}

static void fail(rx *r)
{
    pthread_mutex_lock(&r->lock);
    fail_locked(r);
    pthread_mutex_unlock(&r->lock);
}

static void add_thread_cpu(rx *r, double t0)
{
    double d = ms_thread_cpu_s() - t0;
    pthread_mutex_lock(&r->lock);
    r->thread_cpu += d;
    pthread_mutex_unlock(&r->lock);
}

/* ---- readers ------------------------------------------------------------ */

static void printable(char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            s[i] = '?';
    s[n] = 0;
}

static int read_abort(rx *r, unsigned ch, const ms_frame_hdr *h, const uint8_t *hdr)
{
    uint8_t body[MS_ABORT_MAX + MS_SEAL_TAG_SIZE + 1];
    size_t n = h->enc_len;
    int rc;

    if (h->enc_len > MS_ABORT_MAX + (r->sealed ? MS_SEAL_TAG_SIZE : 0) || h->codec || h->raw_len != h->stage_len)
        return ms_error(MS_ERR_CORRUPT, "channel %u: malformed ABORT frame", ch);
    if (n && (rc = ms_conn_recv(r->conns[ch], body, n, NULL)) < 0)
        return ms_error_wrap(rc == MS_ERR_CLOSED ? MS_ERR_TRUNCATED : rc, "channel %u: ABORT frame", ch);
    if (r->sealed && (rc = ms_open(&r->keys[ch], hdr, (uint16_t)ch, h->seq, body, n, &n)) < 0)
        return ms_error_wrap(rc, "channel %u: ABORT frame", ch);
    if (n != h->raw_len || ms_content_hash(NULL, 0, body, n) != h->hash)
        return ms_error(MS_ERR_HASH, "channel %u: ABORT frame content hash mismatch", ch);
    printable((char *)body, n);
    pthread_mutex_lock(&r->lock);
    r->peer_aborted = true;
    pthread_mutex_unlock(&r->lock);
    return ms_error(MS_ERR_ABORTED, "sender aborted the session: %s", (char *)body);
}

/* Checks on a header that need the session but not the body. */
static int check_header(rx *r, unsigned ch, const ms_frame_hdr *h)
{
    unsigned long long seq = (unsigned long long)h->seq;
    if (h->channel != ch)
        return ms_error(MS_ERR_CORRUPT, "channel %u: frame %llu names channel %u", ch, seq, h->channel);
    if (r->sealed && !(h->flags & MS_FRAME_F_SEALED))
        return ms_error(MS_ERR_TAMPERED, "channel %u: frame %llu is not sealed in a sealed session", ch, seq);
    if (!r->sealed && (h->flags & MS_FRAME_F_SEALED))
        return ms_error(MS_ERR_CORRUPT, "channel %u: frame %llu is sealed in an unsealed session", ch, seq);
    if (h->type == MS_FRAME_ACK)
        return ms_error(MS_ERR_CORRUPT, "channel %u: frame %llu is an ACK, which only receivers send", ch, seq);
    if (h->type == MS_FRAME_PAGES && (uint64_t)h->page_count * r->ps != h->raw_len)
        return ms_error(MS_ERR_CORRUPT, "frame %llu: raw length %u is not %u pages of %zu bytes", seq, h->raw_len,
                        h->page_count, r->ps);
    if (!is_data(h) && (h->codec || h->stage_len != h->raw_len || h->stage_len > MS_CTRL_BODY_MAX))
        return ms_error(MS_ERR_CORRUPT, "frame %llu: control frame with codec 0x%x, lengths %u/%u", seq, h->codec,
                        h->stage_len, h->raw_len);
    return MS_OK;
}

static int claim_slot(rx *r, uint64_t seq, rslot **out)
{
    pthread_mutex_lock(&r->lock);
    while (!r->stop && seq >= r->next + r->W)
        pthread_cond_wait(&r->slot_cv, &r->lock);
    if (r->stop) {
        pthread_mutex_unlock(&r->lock);
        return MS_ERR_ABORTED; /* quiet: the session is over either way */
    }
    rslot *s = &r->slots[seq % r->W];
    s->state = SLOT_READING;
    s->seq = seq;
    pthread_mutex_unlock(&r->lock);
    *out = s;
    return MS_OK;
}

static int open_slot(rx *r, rslot *s, ms_codec_ctx *ctx);

/* Hand a read frame on. Without a seal or compression there is nothing for
 * a worker to do but decode the pfn list: the reader does that itself and
 * saves two thread handoffs. */
static int queue_slot(rx *r, rslot *s)
{
    if (!r->sealed && (!is_data(&s->h) || (s->h.codec & 0xffu) == MS_COMP_NONE)) {
        int rc = open_slot(r, s, NULL);
        if (rc < 0)
            return rc;
        pthread_mutex_lock(&r->lock);
        s->state = SLOT_DONE;
        pthread_cond_broadcast(&r->done_cv);
        pthread_mutex_unlock(&r->lock);
        return MS_OK;
    }
    pthread_mutex_lock(&r->lock);
    s->state = SLOT_QUEUED;
    s->work_next = NULL;
    if (r->work_tail)
        r->work_tail->work_next = s;
    else
        r->work_head = s;
    r->work_tail = s;
    pthread_cond_signal(&r->work_cv);
    pthread_mutex_unlock(&r->lock);
    return MS_OK;
}

/* Room to decode a PAGES body of `len` bytes in place: the pfn list (at
 * most 10 bytes a pfn) stays in front of the pages it expands to. */
static size_t decode_room(const rx *r, const ms_frame_hdr *h, size_t len)
{
    size_t need = (size_t)h->page_count * (r->ps + 10);
    return len > need ? len : need;
}

/* Read frames until end of stream, END, the session stops, or an error. */
static int read_channel(rx *r, unsigned ch)
{
    ms_conn *c = r->conns[ch];
    ms_seq_check sc;
    uint64_t expect = ch;
    int rc;

    memset(&sc, 0, sizeof sc);
    for (;;) {
        uint8_t hdr[MS_FRAME_HDR_SIZE];
        ms_frame_hdr h;
        size_t got = 0;
        rslot *s;

        rc = ms_conn_recv(c, hdr, sizeof hdr, &got);
        if (rc == MS_ERR_CLOSED && got == 0) {
            pthread_mutex_lock(&r->lock);
            r->eof[ch] = true;
            pthread_cond_broadcast(&r->done_cv);
            pthread_mutex_unlock(&r->lock);
            return MS_OK;
        }
        if (rc == MS_ERR_CLOSED)
            return ms_error(MS_ERR_TRUNCATED, "channel %u: connection closed inside a frame header (%zu of %u bytes)",
                            ch, got, MS_FRAME_HDR_SIZE);
        if (rc < 0)
            return ms_error_wrap(rc, "channel %u", ch);
        if ((rc = ms_frame_hdr_unpack(hdr, &h)) < 0)
            return ms_error_wrap(rc, "channel %u", ch);
        if ((rc = check_header(r, ch, &h)) < 0)
            return rc;
        if (h.type == MS_FRAME_ABORT)
            return read_abort(r, ch, &h, hdr);
        if ((rc = ms_seq_check_accept(&sc, h.seq)) < 0)
            return ms_error_wrap(rc, "channel %u", ch);
        if (h.seq != expect)
            return ms_error(MS_ERR_REORDER, "channel %u: frame %llu arrived where frame %llu was due (frames missing)",
                            ch, (unsigned long long)h.seq, (unsigned long long)expect);
        expect += r->nch;
        if ((rc = claim_slot(r, h.seq, &s)) < 0)
            return rc;
        s->wire.len = 0;
        /* Uncompressed pages are decoded in place in this buffer. */
        size_t room = h.enc_len;
        if (h.type == MS_FRAME_PAGES && (h.codec & 0xffu) == MS_COMP_NONE)
            room = decode_room(r, &h, room);
        if ((rc = ms_buf_reserve(&s->wire, room)) < 0)
            return rc;
        if (h.enc_len && (rc = ms_conn_recv(c, s->wire.data, h.enc_len, &got)) < 0) {
            if (rc == MS_ERR_CLOSED)
                return ms_error(MS_ERR_TRUNCATED, "channel %u: connection closed inside frame %llu (%zu of %u body bytes)",
                                ch, (unsigned long long)h.seq, got, h.enc_len);
            return ms_error_wrap(rc, "channel %u: frame %llu body", ch, (unsigned long long)h.seq);
        }
        s->wire.len = h.enc_len;
        s->h = h;
        memcpy(s->hdr, hdr, sizeof hdr);
        if ((rc = queue_slot(r, s)) < 0)
            return rc;
        /* END is the last frame of the session: read no further, so a
         * stream sharing its fd with other data is consumed exactly. */
        if (h.type == MS_FRAME_END)
            return MS_OK;
    }
}

/* Errors that leave the connection itself usable. */
static bool connection_alive_after(int rc)
{
    return rc != MS_OK && rc != MS_ERR_CLOSED && rc != MS_ERR_TRUNCATED && rc != MS_ERR_TIMEOUT &&
           rc != MS_ERR_IO;
}

/* After a failure, read and discard until the sender hangs up (or goes
 * quiet for the timeout). Closing with unread data would make TCP send a
 * reset, and a reset discards the ABORT that tells the sender why. */
static void drain(ms_conn *c)
{
    uint8_t buf[16384];
    while (ms_conn_recv(c, buf, sizeof buf, NULL) == MS_OK)
        ;
}

static void *reader_main(void *arg)
{
    reader_arg *ra = arg;
    rx *r = ra->r;
    double t0 = ms_thread_cpu_s();
    int rc = read_channel(r, ra->ch);

    pthread_mutex_lock(&r->lock);
    /* After END (or once stopped) a late error is no news. */
    if (rc < 0 && !r->stop)
        fail_locked(r);
    bool linger = r->failed && !r->oneway && connection_alive_after(rc);
    pthread_mutex_unlock(&r->lock);
    if (linger)
        drain(r->conns[ra->ch]);
    add_thread_cpu(r, t0);
    return NULL;
}

/* ---- workers ------------------------------------------------------------ */

static int open_slot(rx *r, rslot *s, ms_codec_ctx *ctx)
{
    ms_frame_hdr *h = &s->h;
    unsigned long long seq = (unsigned long long)h->seq;
    size_t len = h->enc_len;
    int rc;

    if (r->sealed && (rc = ms_open(&r->keys[h->channel], s->hdr, h->channel, h->seq, s->wire.data, len, &len)) < 0)
        return ms_error_wrap(rc, "frame %llu (channel %u)", seq, h->channel);
    s->body = s->wire.data;
    s->body_len = len;
    s->body_cap = s->wire.cap;
    s->hashed = false;
    s->comp_out = len;
    s->comp_used = MS_COMP_NONE;
    if (!is_data(h)) {
        if (len != h->stage_len)
            return ms_error(MS_ERR_CORRUPT, "frame %llu: control body of %zu bytes, header says %u", seq, len,
                            h->stage_len);
        return MS_OK;
    }
    ms_chain fc;
    if ((rc = ms_chain_from_id(h->codec, &fc)) < 0)
        return ms_error_wrap(rc, "frame %llu", seq);
    if (fc.stages != r->chain.stages)
        return ms_error(MS_ERR_CORRUPT, "frame %llu: page stages 0x%x differ from the session's 0x%x", seq,
                        fc.stages, r->chain.stages);
    if (h->type == MS_FRAME_OPAQUE && h->stage_len != h->raw_len)
        return ms_error(MS_ERR_CORRUPT, "frame %llu: opaque stage length %u differs from raw length %u", seq,
                        h->stage_len, h->raw_len);
    s->comp_used = fc.comp;
    if (fc.comp == MS_COMP_NONE) {
        if (len != h->stage_len)
            return ms_error(MS_ERR_CORRUPT, "frame %llu: uncompressed body of %zu bytes, stage length %u", seq, len,
                            h->stage_len);
    } else {
        size_t room = h->type == MS_FRAME_PAGES ? decode_room(r, h, h->stage_len) : h->stage_len;
        s->stage.len = 0;
        if ((rc = ms_buf_reserve(&s->stage, room)) < 0)
            return rc;
        if ((rc = ms_decompress(ctx, &fc, s->wire.data, len, s->stage.data, h->stage_len)) < 0)
            return ms_error_wrap(rc, "frame %llu (channel %u): decompressing", seq, h->channel);
        s->body = s->stage.data;
        s->body_len = h->stage_len;
        s->body_cap = s->stage.cap;
    }
    /* Where decoding leaves the bytes as they are (opaque records, pages
     * of a chain without page stages), hash them here, while they are
     * still in this core's cache, instead of in the one delivery thread. */
    if (h->type != MS_FRAME_PAGES) {
        s->hash = ms_content_hash(NULL, 0, s->body, s->body_len);
        s->hashed = true;
        return MS_OK;
    }
    long n = ms_pfns_decode(s->body, s->body_len, s->pfns, h->page_count);
    if (n < 0)
        return ms_error_wrap((int)n, "frame %llu", seq);
    s->section = s->body + n;
    s->section_len = s->body_len - (size_t)n;
    s->section_cap = s->body_cap - (size_t)n;
    if (ms_page_section_is_identity(r->chain.stages) && s->section_len == h->raw_len) {
        s->hash = ms_content_hash(s->pfns, h->page_count, s->section, s->section_len);
        s->hashed = true;
    }
    return MS_OK;
}

static void *worker_main(void *arg)
{
    rx *r = arg;
    double t0 = ms_thread_cpu_s();
    ms_codec_ctx *ctx = ms_codec_ctx_new();

    pthread_mutex_lock(&r->lock);
    if (!ctx) {
        ms_error(MS_ERR_NOMEM, "receiver worker: cannot create codec contexts");
        fail_locked(r);
    }
    for (;;) {
        while (!r->stop && !r->work_head)
            pthread_cond_wait(&r->work_cv, &r->lock);
        if (r->stop)
            break;
        rslot *s = r->work_head;
        r->work_head = s->work_next;
        if (!r->work_head)
            r->work_tail = NULL;
        pthread_mutex_unlock(&r->lock);
        int rc = open_slot(r, s, ctx);
        pthread_mutex_lock(&r->lock);
        if (rc < 0) {
            fail_locked(r);
            break;
        }
        s->state = SLOT_DONE;
        pthread_cond_broadcast(&r->done_cv);
    }
    pthread_mutex_unlock(&r->lock);
    ms_codec_ctx_free(ctx);
    add_thread_cpu(r, t0);
    return NULL;
}

/* ---- answers to the sender (delivery thread only) ----------------------- */

static int send_reverse(rx *r, uint8_t type, uint32_t round, uint64_t seq, const uint8_t *body, size_t n)
{
    uint8_t hdr[MS_FRAME_HDR_SIZE], buf[MS_CTRL_BODY_MAX + MS_SEAL_TAG_SIZE];
    ms_frame_hdr h = {.type = type, .seq = seq, .round = round, .raw_len = (uint32_t)n, .stage_len = (uint32_t)n};
    size_t out = n;
    int rc;

    if (n)
        memcpy(buf, body, n);
    h.hash = ms_content_hash(NULL, 0, buf, n);
    h.flags = r->sealed ? MS_FRAME_F_SEALED : 0;
    h.enc_len = (uint32_t)(n + (r->sealed ? MS_SEAL_TAG_SIZE : 0));
    ms_frame_hdr_pack(&h, hdr);
    if (r->sealed && (rc = ms_seal(&r->keys[0], hdr, 0, seq, buf, n, &out)) < 0)
        return rc;
    struct iovec iov[2] = {{hdr, sizeof hdr}, {buf, out}};
    rc = ms_conn_sendv(r->conns[0], iov, out ? 2 : 1);
    r->last_rev_ns = ms_now_ns();
    if (rc < 0)
        return ms_error_wrap(rc, "answering the sender");
    return MS_OK;
}

static int send_ack(rx *r, uint8_t kind, uint32_t round)
{
    uint8_t b[MS_ACK_SIZE] = {kind};
    if (r->oneway)
        return MS_OK;
    ms_put_le32(b + 4, round);
    ms_put_le64(b + 8, r->data_frames);
    XXH3_state_t copy = *r->digest;
    ms_put_le64(b + 16, XXH3_64bits_digest(&copy));
    return send_reverse(r, MS_FRAME_ACK, round, r->rev_seq++, b, sizeof b);
}

static int ping_if_due(rx *r)
{
    if (r->oneway || ms_now_ns() - r->last_rev_ns < ms_ping_interval_ns(r->timeout_ms))
        return MS_OK;
    return send_reverse(r, MS_FRAME_PING, 0, r->rev_seq++, NULL, 0);
}

/* ---- delivery ----------------------------------------------------------- */

static int check_data_round(rx *r, const ms_frame_hdr *h)
{
    unsigned long long seq = (unsigned long long)h->seq;
    if (r->round_open) {
        if (h->round != r->cur_round)
            return ms_error(MS_ERR_CORRUPT, "frame %llu: data of round %u inside round %u (no ROUND_END between)",
                            seq, h->round, r->cur_round);
        return MS_OK;
    }
    if (r->barrier_any && h->round <= r->barrier_round)
        return ms_error(MS_ERR_CORRUPT, "frame %llu: data of round %u after the end of round %u", seq, h->round,
                        r->barrier_round);
    r->round_open = true;
    r->cur_round = h->round;
    return MS_OK;
}

static int deliver_pages(rx *r, rslot *s, ms_round_stats *rs)
{
    ms_frame_hdr *h = &s->h;
    ms_stage_stats st = {0};
    int rc = ms_page_coder_decode_inplace(r->pc, s->pfns, h->page_count, s->section, s->section_len,
                                          s->section_cap, &st);
    if (rc < 0)
        return ms_error_wrap(rc, "frame %llu (channel %u, round %u)", (unsigned long long)h->seq, h->channel,
                             h->round);
    uint64_t hash = s->hashed ? s->hash : ms_content_hash(s->pfns, h->page_count, s->section, h->raw_len);
    if (hash != h->hash)
        return ms_error(MS_ERR_HASH, "frame %llu (channel %u, round %u, %u pages from pfn %llu): content hash "
                                     "%016llx, header says %016llx",
                        (unsigned long long)h->seq, h->channel, h->round, h->page_count,
                        (unsigned long long)s->pfns[0], (unsigned long long)hash, (unsigned long long)h->hash);
    if ((rc = r->sink->pages(r->sink_ctx, h->round, h->fragment, s->pfns, s->section, h->page_count, r->ps)) < 0)
        return ms_error_wrap(rc, "sink, frame %llu", (unsigned long long)h->seq);
    if (rs)
        ms_stage_stats_add(&rs->stage, &st);
    return MS_OK;
}

static int deliver_opaque(rx *r, rslot *s)
{
    ms_frame_hdr *h = &s->h;
    uint64_t hash = s->hashed ? s->hash : ms_content_hash(NULL, 0, s->body, s->body_len);
    if (hash != h->hash)
        return ms_error(MS_ERR_HASH, "frame %llu (channel %u, round %u, opaque): content hash %016llx, header says %016llx",
                        (unsigned long long)h->seq, h->channel, h->round, (unsigned long long)hash,
                        (unsigned long long)h->hash);
    int rc = r->sink->opaque(r->sink_ctx, s->body, s->body_len);
    if (rc < 0)
        return ms_error_wrap(rc, "sink, frame %llu", (unsigned long long)h->seq);
    return MS_OK;
}

static int deliver_round_end(rx *r, rslot *s, ms_round_stats *rs)
{
    ms_frame_hdr *h = &s->h;
    unsigned long long seq = (unsigned long long)h->seq;
    int rc;

    if (s->body_len < 2 || ms_get_le16(s->body) != r->nch || s->body_len != 2 + 8 * (size_t)r->nch)
        return ms_error(MS_ERR_CORRUPT, "frame %llu: ROUND_END body does not list %u channels", seq, r->nch);
    for (unsigned i = 0; i < r->nch; i++) {
        uint64_t want = ms_get_le64(s->body + 2 + 8 * i);
        if (want != r->since_round[i])
            return ms_error(MS_ERR_CORRUPT, "round %u: channel %u delivered %llu frames, the sender says %llu",
                            h->round, i, (unsigned long long)r->since_round[i], (unsigned long long)want);
    }
    if (r->round_open ? h->round != r->cur_round : (r->barrier_any && h->round <= r->barrier_round))
        return ms_error(MS_ERR_CORRUPT, "frame %llu: ROUND_END %u does not close the open round", seq, h->round);
    if ((rc = r->sink->round_end(r->sink_ctx, h->round)) < 0)
        return ms_error_wrap(rc, "sink, end of round %u", h->round);
    memset(r->since_round, 0, r->nch * sizeof *r->since_round);
    r->round_open = false;
    r->barrier_any = true;
    r->barrier_round = h->round;
    if (rs) {
        if (!rs->t_start_ns)
            rs->t_start_ns = ms_now_ns();
        rs->t_end_ns = ms_now_ns();
    }
    return send_ack(r, MS_ACK_ROUND, h->round);
}

static int deliver_end(rx *r, rslot *s)
{
    ms_frame_hdr *h = &s->h;
    XXH3_state_t copy = *r->digest;
    uint64_t digest = XXH3_64bits_digest(&copy);
    int rc;

    if (s->body_len != MS_END_SIZE)
        return ms_error(MS_ERR_CORRUPT, "frame %llu: END body of %zu bytes", (unsigned long long)h->seq, s->body_len);
    if (ms_get_le64(s->body) != r->data_frames || ms_get_le64(s->body + 8) != r->pages ||
        ms_get_le64(s->body + 16) != r->raw_bytes || ms_get_le64(s->body + 24) != digest)
        return ms_error(MS_ERR_VERIFY, "END: sender sent %llu frames, %llu pages, %llu bytes (digest %016llx); "
                                       "delivered %llu, %llu, %llu (digest %016llx)",
                        (unsigned long long)ms_get_le64(s->body), (unsigned long long)ms_get_le64(s->body + 8),
                        (unsigned long long)ms_get_le64(s->body + 16), (unsigned long long)ms_get_le64(s->body + 24),
                        (unsigned long long)r->data_frames, (unsigned long long)r->pages,
                        (unsigned long long)r->raw_bytes, (unsigned long long)digest);
    if ((rc = r->sink->end(r->sink_ctx)) < 0)
        return ms_error_wrap(rc, "sink, end of session");
    r->end_done = true;
    return send_ack(r, MS_ACK_END, h->round);
}

static int deliver(rx *r, rslot *s)
{
    ms_frame_hdr *h = &s->h;
    ms_round_stats *rs = ms_stats_round(r->stats, h->round);
    int rc = MS_OK;

    if (!rs)
        return ms_error(MS_ERR_NOMEM, "receiver: out of memory for statistics");
    rs->wire_bytes += MS_FRAME_HDR_SIZE + (uint64_t)h->enc_len;
    if (h->type != MS_FRAME_ROUND_END)
        r->since_round[h->channel]++;
    if (is_data(h)) {
        if ((rc = check_data_round(r, h)) < 0)
            return rc;
        if (!rs->t_start_ns)
            rs->t_start_ns = ms_now_ns();
        rc = h->type == MS_FRAME_PAGES ? deliver_pages(r, s, rs) : deliver_opaque(r, s);
        if (rc < 0)
            return rc;
        ms_stream_digest_add(r->digest, h->hash);
        r->data_frames++;
        r->pages += h->page_count;
        r->raw_bytes += h->raw_len;
        rs->frames++;
        rs->pages += h->page_count;
        rs->raw_bytes += h->raw_len;
        if (h->type == MS_FRAME_OPAQUE)
            rs->opaque_bytes += h->raw_len;
        rs->comp_in += h->stage_len;
        rs->comp_out += s->comp_out;
        rs->comp_bytes[s->comp_used] += h->enc_len;
        return MS_OK;
    }
    if (ms_content_hash(NULL, 0, s->body, s->body_len) != h->hash)
        return ms_error(MS_ERR_HASH, "frame %llu (channel %u, %s): content hash mismatch", (unsigned long long)h->seq,
                        h->channel, h->type == MS_FRAME_ROUND_END ? "ROUND_END" : h->type == MS_FRAME_END ? "END" : "PING");
    if (h->type == MS_FRAME_ROUND_END)
        return deliver_round_end(r, s, rs);
    if (h->type == MS_FRAME_END)
        return deliver_end(r, s);
    return MS_OK; /* PING */
}

/* Wait until frame `next` is ready; lock held. Fails on a channel that
 * ended before bringing it. */
static rslot *wait_next_locked(rx *r)
{
    uint64_t interval = ms_ping_interval_ns(r->timeout_ms);
    for (;;) {
        if (r->failed)
            return NULL;
        rslot *s = &r->slots[r->next % r->W];
        bool claimed = s->state != SLOT_EMPTY && s->seq == r->next;
        if (claimed && s->state == SLOT_DONE)
            return s;
        unsigned ch = (unsigned)(r->next % r->nch);
        if (!claimed && r->eof[ch]) {
            ms_error(MS_ERR_TRUNCATED, "channel %u ended before frame %llu (the session ended without END)", ch,
                     (unsigned long long)r->next);
            fail_locked(r);
            return NULL;
        }
        uint64_t now = ms_now_ns(), due = r->last_rev_ns + interval;
        if (!r->oneway && now >= due) {
            pthread_mutex_unlock(&r->lock);
            int rc = ping_if_due(r);
            pthread_mutex_lock(&r->lock);
            if (rc < 0)
                fail_locked(r);
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + (r->oneway ? interval : due - now);
        ts.tv_sec += (time_t)(ns / 1000000000ull);
        ts.tv_nsec = (long)(ns % 1000000000ull);
        pthread_cond_timedwait(&r->done_cv, &r->lock, &ts);
    }
}

static void deliver_loop(rx *r)
{
    for (;;) {
        pthread_mutex_lock(&r->lock);
        rslot *s = wait_next_locked(r);
        pthread_mutex_unlock(&r->lock);
        if (!s)
            return;
        int rc = deliver(r, s);
        if (rc == MS_OK)
            rc = ping_if_due(r);
        pthread_mutex_lock(&r->lock);
        s->state = SLOT_EMPTY;
        r->next++;
        pthread_cond_broadcast(&r->slot_cv);
        if (rc < 0)
            fail_locked(r);
        bool done = rc < 0 || r->end_done;
        if (r->end_done)
            r->stop = true; /* readers and workers: nothing more to do */
        pthread_cond_broadcast(&r->work_cv);
        pthread_mutex_unlock(&r->lock);
        if (done)
            return;
    }
}

/* ---- run ---------------------------------------------------------------- */

/* Largest page store a sender may ask this receiver to keep. */

/* The sender's bound wins (the stores must evict alike); a sender that
 * does not say (0) uses the receiver's own setting or the default. */
static uint64_t store_bound(uint64_t from_hello, uint64_t own)
{
    if (from_hello)
        return from_hello;
    return own ? own : 64ull << 20;
}

static int setup(rx *r, const ms_session_config *cfg, const ms_hello *hello, unsigned nconns)
{
    r->sealed = hello->flags & MS_HELLO_F_SEALED;
    r->oneway = hello->flags & MS_HELLO_F_ONEWAY;
    /* The chain fixes the page stages; the compressor may change from frame
     * to frame ("auto"), each frame naming its own in the header. */
    int rc = ms_chain_parse(hello->chain, &r->chain);
    if (rc < 0)
        return ms_error_wrap(rc, "sender's codec chain");
    if (nconns != hello->channels || !nconns)
        return ms_error(MS_ERR_INVAL, "receiver: %u connections for a session of %u channels", nconns, hello->channels);
    r->ps = hello->page_size;
    for (unsigned i = 0; i < nconns; i++)
        if (r->keys[i].sealed != r->sealed)
            return ms_error(MS_ERR_INVAL, "receiver: channel %u keys disagree with the hello's sealing flag", i);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    r->nch = nconns;
    r->nworkers = cfg->workers ? cfg->workers : (cores > 0 ? (unsigned)cores : 1);
    r->W = cfg->queue_depth ? cfg->queue_depth : 2 * r->nworkers + nconns;
    r->timeout_ms = ms_effective_timeout(cfg);
    ms_page_coder_config pcc = {
        .stages = r->chain.stages,
        .page_size = r->ps,
        .delta_cache_bytes = store_bound(hello->delta_cache_bytes, cfg->delta_cache_bytes),
        .dedup_bytes = store_bound(hello->dedup_bytes, cfg->dedup_bytes),
    };
    if (pcc.delta_cache_bytes > MS_MAX_PAGE_STORE || pcc.dedup_bytes > MS_MAX_PAGE_STORE)
        return ms_error(MS_ERR_LIMIT, "receiver: sender asks for page stores of %llu + %llu bytes; this receiver allows at most %llu each",
                        (unsigned long long)pcc.delta_cache_bytes, (unsigned long long)pcc.dedup_bytes,
                        (unsigned long long)MS_MAX_PAGE_STORE);
    r->pc = ms_page_coder_new(&pcc);
    r->slots = calloc(r->W, sizeof *r->slots);
    r->eof = calloc(nconns, sizeof *r->eof);
    r->since_round = calloc(nconns, sizeof *r->since_round);
    r->readers = calloc(nconns, sizeof *r->readers);
    r->workers = calloc(r->nworkers, sizeof *r->workers);
    r->digest = XXH3_createState();
    if (!r->pc || !r->slots || !r->eof || !r->since_round || !r->readers || !r->workers || !r->digest)
        return ms_error(MS_ERR_NOMEM, "receiver: out of memory");
    for (unsigned i = 0; i < r->W; i++)
        if (!(r->slots[i].pfns = malloc(MS_MAX_FRAME_PAGES * sizeof(uint64_t))))
            return ms_error(MS_ERR_NOMEM, "receiver: out of memory");
    XXH3_64bits_reset(r->digest);
    for (unsigned i = 0; i < nconns; i++)
        r->conns[i]->timeout_ms = r->timeout_ms;
    return MS_OK;
}

static void teardown(rx *r, reader_arg *ra)
{
    pthread_mutex_lock(&r->lock);
    r->stop = true;
    pthread_cond_broadcast(&r->slot_cv);
    pthread_cond_broadcast(&r->work_cv);
    pthread_cond_broadcast(&r->done_cv);
    pthread_mutex_unlock(&r->lock);
    for (unsigned i = 0; i < r->nworkers_started; i++)
        pthread_join(r->workers[i], NULL);
    for (unsigned i = 0; i < r->nreaders_started; i++)
        pthread_join(r->readers[i], NULL);
    for (unsigned i = 0; r->slots && i < r->W; i++) {
        ms_buf_free(&r->slots[i].wire);
        ms_buf_free(&r->slots[i].stage);
        free(r->slots[i].pfns);
    }
    free(ra);
    free(r->slots);
    free(r->eof);
    free(r->since_round);
    free(r->readers);
    free(r->workers);
    ms_page_coder_free(r->pc);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->slot_cv);
    pthread_cond_destroy(&r->work_cv);
    pthread_cond_destroy(&r->done_cv);
}

static int start_threads(rx *r, reader_arg *ra)
{
    int e = 0;
    for (; r->nworkers_started < r->nworkers && !e; r->nworkers_started += !e)
        e = pthread_create(&r->workers[r->nworkers_started], NULL, worker_main, r);
    for (; r->nreaders_started < r->nch && !e; r->nreaders_started += !e) {
        ra[r->nreaders_started] = (reader_arg){r, r->nreaders_started};
        e = pthread_create(&r->readers[r->nreaders_started], NULL, reader_main, &ra[r->nreaders_started]);
    }
    if (e)
        return ms_error(MS_ERR_NOMEM, "receiver: cannot start threads: %s", strerror(e));
    return MS_OK;
}

static void finish_stats(rx *r, uint64_t t0, double cpu0)
{
    ms_stats *st = r->stats;
    memset(&st->total, 0, sizeof st->total);
    for (size_t i = 0; i < st->nrounds; i++)
        ms_round_stats_add(&st->total, &st->rounds[i]);
    st->wall_s = (double)(ms_now_ns() - t0) / 1e9;
    st->cpu_s = r->thread_cpu + (ms_thread_cpu_s() - cpu0);
    st->content_hash = r->digest ? XXH3_64bits_digest(r->digest) : 0;
    st->verified = r->end_done && !r->failed;
}

int ms_receiver_run(const ms_session_config *cfg, const ms_hello *hello, ms_conn **conns,
                    const ms_session_keys *keys, unsigned nconns, const ms_sink_ops *sink, void *sink_ctx,
                    ms_stats *stats)
{
    uint64_t t0 = ms_now_ns();
    double cpu0 = ms_thread_cpu_s();
    rx r;
    reader_arg *ra = NULL;
    ms_stats local_stats = {0};
    int rc;

    memset(&r, 0, sizeof r);
    r.conns = conns;
    r.keys = keys;
    r.sink = sink;
    r.sink_ctx = sink_ctx;
    r.last_rev_ns = ms_now_ns();
    pthread_mutex_init(&r.lock, NULL);
    pthread_cond_init(&r.slot_cv, NULL);
    pthread_cond_init(&r.work_cv, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r.done_cv, &ca);
    pthread_condattr_destroy(&ca);
    if (!stats)
        stats = &local_stats;
    ms_stats_free(stats);
    memset(stats, 0, sizeof *stats);

    r.stats = stats;
    if (!cfg || !hello || !conns || !keys || !sink) {
        rc = ms_error(MS_ERR_INVAL, "receiver: missing argument");
        goto out;
    }
    if ((rc = setup(&r, cfg, hello, nconns)) < 0) {
        /* The sender is waiting for an answer: give it the reason. */
        if (!r.oneway && nconns && keys[0].sealed == r.sealed) {
            char reason[MS_ABORT_MAX + 1];
            snprintf(reason, sizeof reason, "%.*s", (int)MS_ABORT_MAX, ms_last_error());
            ms_errbuf saved = {0};
            ms_errbuf_capture(&saved);
            (void)send_reverse(&r, MS_FRAME_ABORT, 0, MS_ABORT_SEQ, (const uint8_t *)reason, strlen(reason));
            ms_errbuf_raise(&saved);
        }
        goto out;
    }
    if (!(ra = calloc(nconns, sizeof *ra))) {
        rc = ms_error(MS_ERR_NOMEM, "receiver: out of memory");
        goto out;
    }
    if ((rc = start_threads(&r, ra)) < 0) {
        fail(&r);
        goto out;
    }
    deliver_loop(&r);
    if (r.failed && !r.peer_aborted && !r.oneway) {
        /* Tell the sender why, so both ends report the same cause. */
        char reason[MS_ABORT_MAX + 1];
        snprintf(reason, sizeof reason, "%.*s", (int)MS_ABORT_MAX, r.err.msg);
        (void)send_reverse(&r, MS_FRAME_ABORT, 0, MS_ABORT_SEQ, (const uint8_t *)reason, strlen(reason));
    }
    rc = MS_OK;
out:
    teardown(&r, ra);
    if (rc == MS_OK && r.failed)
        rc = ms_errbuf_raise(&r.err);
    if (rc == MS_OK && !r.end_done)
        rc = ms_error(MS_ERR_TRUNCATED, "the session ended without END");
    finish_stats(&r, t0, cpu0);
    XXH3_freeState(r.digest);
    ms_stats_free(&local_stats);
    return rc;
}
