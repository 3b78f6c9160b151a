/* Sender pipeline: pages and opaque records in, sealed frames out on N
 * channels, in order, with back-pressure.
 *
 * Threads and what each owns:
 *  - the caller runs the stateful page stages (ms_page_coder_encode) and
 *    hands out global sequence numbers, so the page caches of both ends
 *    evolve in the one order the receiver delivers in;
 *  - `workers` threads compress and seal (stateless per frame);
 *  - one writer per channel sends that channel's frames in seq order;
 *  - a record writer copies every frame, renumbered as a one-channel
 *    stream, to cfg->record;
 *  - an ack reader on channel 0 takes the receiver's ACK / PING / ABORT;
 *  - a keepalive thread sends a PING on every channel while the caller is
 *    idle, so the receiver's no-progress deadline only fires on a dead peer.
 * Frame s goes to channel s % channels (see pipeline_priv.h for why).
 * At most queue_depth data frames exist at once: the caller blocks for a
 * free one, which is the back-pressure from a slow link. */
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stream/pipeline_priv.h"

typedef struct sframe sframe;
struct sframe {
    sframe *ch_next, *rec_next, *work_next, *free_next;
    ms_frame_hdr h;
    uint8_t hdr[MS_FRAME_HDR_SIZE];
    uint8_t rec_hdr[MS_FRAME_HDR_SIZE];
    ms_buf stage;    /* uncompressed body (room for the seal tag) */
    ms_buf wire;     /* compressed body (room for the seal tag) */
    ms_buf rec_src;  /* ROUND_END: the record's own body */
    ms_buf rec_wire; /* sealed copy for the record */
    uint8_t *body;   /* what follows the header on the wire */
    const uint8_t *rbody;
    size_t rbody_len;
    uint64_t rec_seq;
    uint64_t comp_out; /* compressed bytes (before the tag) */
    uint8_t comp_used;
    /* auto's pick for this data frame, made at enqueue in sequence order
     * (so a frame sent as is, with nothing to explore, skips the workers). */
    uint8_t auto_cand, auto_shadow;
    int refs;
    bool pooled, record, ready;
};

typedef struct chan {
    sframe *head, *tail;
    uint64_t since_round; /* frames since the last ROUND_END */
    bool broken;          /* a send failed: no ABORT can follow on it */
    /* Frame bytes written, and of those the ones the peer acknowledged
     * (written minus the connection's unsent bytes) as last seen. */
    uint64_t written, acked;
} chan;

typedef struct writer_arg {
    struct ms_sender *s;
    unsigned ch;
} writer_arg;

struct ms_sender {
    ms_chain chain;
    size_t page_size;
    unsigned nch, nworkers, depth;
    uint32_t frame_pages;
    uint64_t timeout_ms;
    bool sealed, oneway;
    ms_conn **conns;
    ms_session_keys *keys;
    ms_conn *record;
    ms_session_keys rec_keys;
    ms_page_coder *pc;
    ms_ratelimit *rl;
    ms_auto *autoc; /* chain "auto": picks each data frame's compressor */

    pthread_mutex_t lock;
    pthread_cond_t work_cv, ready_cv, free_cv, ack_cv, ka_cv;
    sframe *pool, *free_list;
    sframe *work_head, *work_tail;
    chan *ch;
    sframe *rec_head, *rec_tail;
    uint64_t inflight; /* frames not yet released */
    uint64_t next_seq, rec_seq, rec_since_round;

    /* Written by the caller's thread only, read without the lock. Kept in
     * a block of its own so no wider load of neighbouring fields that
     * other threads write can straddle it. */
    struct {
        _Alignas(16) bool round_open, any_ended, ended, finished;
        uint32_t cur_round, last_ended;
    } c;

    bool have_ack, end_acked;
    uint32_t acked_round;
    uint64_t peer_frames, peer_digest;

    bool failed, peer_aborted, abort_wanted, ended, shutdown, finished; /* under the lock */
    ms_errbuf err;
    char abort_reason[MS_ABORT_MAX + 1];
    uint64_t last_enqueue_ns;
    uint32_t last_round; /* round of the newest frame, for PINGs */

    uint64_t data_frames, pages, raw_bytes;
    XXH3_state_t *digest;
    ms_stats stats;
    double thread_cpu, caller_cpu;
    uint64_t t_open;
    double link_rate;
    /* The current rate window: its start, bytes acknowledged in it (or
     * written, on connections that cannot tell), and of its writes, how
     * many left a backlog behind the frame just written. */
    uint64_t rate_t0, rate_bytes;
    unsigned rate_writes, rate_backlogged, rate_work_waiting, rate_windows;
    unsigned rate_full_run; /* link-limited windows in a row, up to 2 */

    pthread_t *workers, *writers, rec_thread, ack_thread, ka_thread;
    struct writer_arg *wargs;
    unsigned nworkers_started, nwriters_started;
    unsigned nhandshaken; /* channels whose handshake completed */
    bool rec_started, ack_started, ka_started;
};


static bool is_data(const ms_frame_hdr *h) { return h->type == MS_FRAME_PAGES || h->type == MS_FRAME_OPAQUE; }

static void broadcast_all(ms_sender *s)
{
    pthread_cond_broadcast(&s->work_cv);
    pthread_cond_broadcast(&s->ready_cv);
    pthread_cond_broadcast(&s->free_cv);
    pthread_cond_broadcast(&s->ack_cv);
    pthread_cond_broadcast(&s->ka_cv);
}

/* Record the calling thread's error as the session's (first one wins) and
 * stop everything. Lock held. */
static void fail_locked(ms_sender *s)
{
    if (!s->failed) {
        ms_errbuf_capture(&s->err);
        s->failed = true;
        if (!s->peer_aborted) {
            s->abort_wanted = true;
            if (!s->abort_reason[0])
                snprintf(s->abort_reason, sizeof s->abort_reason, "%.*s", (int)MS_ABORT_MAX, s->err.msg);
        }
    }
    broadcast_all(s);
}

static int fail(ms_sender *s, int rc)
{
    pthread_mutex_lock(&s->lock);
    fail_locked(s);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int failed_rc_locked(ms_sender *s) { return ms_errbuf_raise(&s->err); }

static void add_thread_cpu(ms_sender *s, double t0)
{
    double d = ms_thread_cpu_s() - t0;
    pthread_mutex_lock(&s->lock);
    s->thread_cpu += d;
    pthread_mutex_unlock(&s->lock);
}

static void frame_bufs_free(sframe *f)
{
    ms_buf_free(&f->stage);
    ms_buf_free(&f->wire);
    ms_buf_free(&f->rec_src);
    ms_buf_free(&f->rec_wire);
}

static void release_locked(ms_sender *s, sframe *f)
{
    if (--f->refs > 0)
        return;
    s->inflight--;
    if (f->pooled) {
        f->free_next = s->free_list;
        s->free_list = f;
    } else {
        frame_bufs_free(f);
        free(f);
    }
    pthread_cond_broadcast(&s->free_cv);
}

/* ---- building frames ---------------------------------------------------- */

/* An explored frame compressed again with `shadow`, into a buffer of the
 * worker's own, only to compare the two compressors on the same data. */
static _Thread_local ms_buf shadow_buf;

static int compare_auto(ms_sender *s, ms_codec_ctx *ctx, unsigned shadow, const uint8_t *body, size_t len,
                        unsigned cand, uint64_t cand_out, double cand_cpu)
{
    ms_chain ch;
    size_t out = 0;
    ms_auto_chain(shadow, s->chain.stages, &ch);
    size_t bound = ms_compress_bound(&ch, len), cap = shadow_buf.cap;
    int rc = ms_buf_reserve(&shadow_buf, bound);
    if (rc < 0)
        return rc;
    if (shadow_buf.cap != cap)
        memset(shadow_buf.data, 0, shadow_buf.cap);
    double t0 = ms_thread_cpu_s();
    if ((rc = ms_compress(ctx, &ch, body, len, shadow_buf.data, bound, &out)) < 0)
        return ms_error_wrap(rc, "comparing %s with %s", ms_auto_name(shadow), ms_auto_name(cand));
    ms_auto_compare(s->autoc, len, cand, cand_out, cand_cpu, shadow, out < len ? out : len, ms_thread_cpu_s() - t0);
    return MS_OK;
}

/* Compress (data frames), pack the header, make the record's copy, seal.
 * Needs the seq and channel assigned. */
static int finalize(ms_sender *s, sframe *f, ms_codec_ctx *ctx)
{
    ms_frame_hdr *h = &f->h;
    uint8_t *body = f->stage.data;
    size_t len = f->stage.len, out = 0;
    int rc;

    h->codec = 0;
    f->comp_used = MS_COMP_NONE;
    if (is_data(h)) {
        ms_chain used = s->chain;
        unsigned cand = 0, shadow = MS_AUTO_NCAND;
        double t0 = 0;
        if (s->autoc) {
            cand = f->auto_cand;
            shadow = f->auto_shadow;
            ms_auto_chain(cand, s->chain.stages, &used);
        }
        if (used.comp != MS_COMP_NONE && len) {
            size_t bound = ms_compress_bound(&used, len), cap = f->wire.cap;
            if ((rc = ms_buf_reserve(&f->wire, bound + MS_SEAL_TAG_SIZE)) < 0)
                return rc;
            /* A new buffer's page faults are no part of the compressor's speed. */
            if (s->autoc && f->wire.cap != cap)
                memset(f->wire.data, 0, f->wire.cap);
            /* The compressor's own speed: time the thread spent on the
             * CPU, as a worker preempted mid-frame would otherwise make
             * one sample look many times slower. What the cores shared
             * with the rest of the pipeline really give shows in what the
             * choice delivers. */
            t0 = ms_thread_cpu_s();
            if ((rc = ms_compress(ctx, &used, body, len, f->wire.data, bound, &out)) < 0)
                return ms_error_wrap(rc, "frame %llu: compressing", (unsigned long long)h->seq);
        }
        if (s->autoc) {
            double cpu = used.comp != MS_COMP_NONE && len ? ms_thread_cpu_s() - t0 : 0;
            uint64_t sent = used.comp != MS_COMP_NONE && len && out < len ? out : len;
            if (shadow < MS_AUTO_NCAND && (rc = compare_auto(s, ctx, shadow, body, len, cand, sent, cpu)) < 0)
                return rc;
            ms_auto_record(s->autoc, cand, len, sent, cpu);
        }
        /* Incompressible content goes out as it is, saying so in its codec. */
        if (used.comp != MS_COMP_NONE && len && out < len) {
            body = f->wire.data;
            len = out;
        } else {
            used.comp = MS_COMP_NONE;
            used.level = 0;
        }
        h->codec = ms_chain_to_id(&used);
        f->comp_used = used.comp;
    }
    f->comp_out = len;
    h->flags = s->sealed ? MS_FRAME_F_SEALED : 0;
    h->enc_len = (uint32_t)(len + (s->sealed ? MS_SEAL_TAG_SIZE : 0));
    ms_frame_hdr_pack(h, f->hdr);

    if (f->record) {
        ms_frame_hdr rh = *h;
        const uint8_t *rsrc = body;
        size_t rlen = len;
        if (h->type == MS_FRAME_ROUND_END) {
            rsrc = f->rec_src.data;
            rlen = f->rec_src.len;
            rh.raw_len = rh.stage_len = (uint32_t)rlen;
            rh.hash = ms_content_hash(NULL, 0, rsrc, rlen);
            rh.enc_len = (uint32_t)(rlen + (s->sealed ? MS_SEAL_TAG_SIZE : 0));
        }
        rh.channel = 0;
        rh.seq = f->rec_seq;
        ms_frame_hdr_pack(&rh, f->rec_hdr);
        f->rbody = rsrc;
        f->rbody_len = rlen;
        if (s->sealed) {
            size_t sl;
            f->rec_wire.len = 0;
            if ((rc = ms_buf_reserve(&f->rec_wire, rlen + MS_SEAL_TAG_SIZE)) < 0)
                return rc;
            if (rlen)
                memcpy(f->rec_wire.data, rsrc, rlen);
            if ((rc = ms_seal(&s->rec_keys, f->rec_hdr, 0, rh.seq, f->rec_wire.data, rlen, &sl)) < 0)
                return rc;
            f->rbody = f->rec_wire.data;
            f->rbody_len = sl;
        }
    }
    if (s->sealed) {
        size_t sl;
        if ((rc = ms_seal(&s->keys[h->channel], f->hdr, h->channel, h->seq, body, len, &sl)) < 0)
            return rc;
    }
    f->body = body;
    return MS_OK;
}

/* Give a built frame its seq and channel and queue it everywhere. Control
 * frames are finalized here, under the lock, because their bodies (the
 * round's per-channel counts, the totals) depend on the queue state at this
 * very point. Lock held. */
static int enqueue_locked(ms_sender *s, sframe *f)
{
    ms_frame_hdr *h = &f->h;
    int rc;

    h->seq = s->next_seq++;
    h->channel = (uint16_t)(h->seq % s->nch);
    f->record = s->record && h->type != MS_FRAME_PING;
    if (f->record)
        f->rec_seq = s->rec_seq++;
    /* Control frames, and data frames with nothing to compress or seal,
     * are finished here: a worker would only add two thread handoffs. With
     * auto that is known once it has picked: sending as is, exploring
     * nothing, is what it chooses on a fast link, where handoffs cost most. */
    bool as_is = s->chain.comp == MS_COMP_NONE && !s->autoc;
    if (s->autoc && is_data(h)) {
        unsigned shadow = MS_AUTO_NCAND;
        f->auto_cand = (uint8_t)ms_auto_pick(s->autoc, h->seq, f->stage.len, &shadow);
        f->auto_shadow = (uint8_t)shadow;
        as_is = f->auto_cand == MS_AUTO_NONE && shadow == MS_AUTO_NCAND;
    }
    bool inline_finish = !is_data(h) || (as_is && !s->sealed);
    if (inline_finish && (rc = finalize(s, f, NULL)) < 0) {
        fail_locked(s);
        return rc;
    }
    f->refs = 1 + f->record;
    s->inflight++;
    chan *c = &s->ch[h->channel];
    f->ch_next = NULL;
    if (c->tail)
        c->tail->ch_next = f;
    else
        c->head = f;
    c->tail = f;
    if (h->type != MS_FRAME_ROUND_END)
        c->since_round++;
    if (f->record) {
        f->rec_next = NULL;
        if (s->rec_tail)
            s->rec_tail->rec_next = f;
        else
            s->rec_head = f;
        s->rec_tail = f;
        if (h->type != MS_FRAME_ROUND_END)
            s->rec_since_round++;
    }
    if (is_data(h)) {
        ms_stream_digest_add(s->digest, h->hash);
        s->data_frames++;
        s->pages += h->page_count;
        s->raw_bytes += h->raw_len;
    }
    if (!inline_finish) {
        f->ready = false;
        f->work_next = NULL;
        if (s->work_tail)
            s->work_tail->work_next = f;
        else
            s->work_head = f;
        s->work_tail = f;
        pthread_cond_signal(&s->work_cv);
    } else {
        f->ready = true;
        pthread_cond_broadcast(&s->ready_cv);
    }
    if (h->type != MS_FRAME_PING) {
        s->last_enqueue_ns = ms_now_ns();
        s->last_round = h->round;
    }
    return MS_OK;
}

static sframe *control_new(uint8_t type, uint32_t round)
{
    sframe *f = calloc(1, sizeof *f);
    if (!f) {
        ms_error(MS_ERR_NOMEM, "out of memory for a control frame");
        return NULL;
    }
    f->h.type = type;
    f->h.round = round;
    return f;
}

/* Set the body of a control frame (with room for the tag). */
static int control_body(sframe *f, const void *p, size_t n)
{
    int rc = ms_buf_reserve(&f->stage, n + MS_SEAL_TAG_SIZE);
    if (rc < 0)
        return rc;
    if (n)
        memcpy(f->stage.data, p, n);
    f->stage.len = n;
    f->h.raw_len = f->h.stage_len = (uint32_t)n;
    f->h.hash = ms_content_hash(NULL, 0, p, n);
    return MS_OK;
}

/* Queue a control frame; lock held. */
static int send_control_locked(ms_sender *s, sframe *f)
{
    int rc = enqueue_locked(s, f);
    if (rc < 0) {
        frame_bufs_free(f);
        free(f);
    }
    return rc;
}

static int get_free_frame(ms_sender *s, sframe **out)
{
    pthread_mutex_lock(&s->lock);
    while (!s->failed && !s->free_list)
        pthread_cond_wait(&s->free_cv, &s->lock);
    if (s->failed) {
        int rc = failed_rc_locked(s);
        pthread_mutex_unlock(&s->lock);
        return rc;
    }
    sframe *f = s->free_list;
    s->free_list = f->free_next;
    pthread_mutex_unlock(&s->lock);
    memset(&f->h, 0, sizeof f->h);
    f->stage.len = f->wire.len = f->rec_src.len = f->rec_wire.len = 0;
    f->body = NULL;
    f->rbody = NULL;
    *out = f;
    return MS_OK;
}

static void return_frame(ms_sender *s, sframe *f)
{
    pthread_mutex_lock(&s->lock);
    f->free_next = s->free_list;
    s->free_list = f;
    pthread_cond_broadcast(&s->free_cv);
    pthread_mutex_unlock(&s->lock);
}

/* Stats of a frame entering the pipeline; lock held. */
static void account_enqueue_locked(ms_sender *s, const sframe *f, const ms_stage_stats *st)
{
    ms_round_stats *r = ms_stats_round(&s->stats, f->h.round);
    if (!r)
        return;
    if (!r->t_start_ns)
        r->t_start_ns = ms_now_ns();
    r->frames++;
    r->pages += f->h.page_count;
    r->raw_bytes += f->h.raw_len;
    if (f->h.type == MS_FRAME_OPAQUE)
        r->opaque_bytes += f->h.raw_len;
    if (st)
        ms_stage_stats_add(&r->stage, st);
}

static int queue_data_frame(ms_sender *s, sframe *f, const ms_stage_stats *st)
{
    pthread_mutex_lock(&s->lock);
    if (s->failed) {
        int rc = failed_rc_locked(s);
        f->free_next = s->free_list;
        s->free_list = f;
        pthread_mutex_unlock(&s->lock);
        return rc;
    }
    account_enqueue_locked(s, f, st);
    int rc = enqueue_locked(s, f);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int build_pages(ms_sender *s, sframe *f, uint32_t round, uint32_t fragment, const uint64_t *pfns,
                       const uint8_t *pages, size_t n, ms_stage_stats *st)
{
    size_t raw = n * s->page_size;
    int rc = ms_pfns_encode(pfns, n, &f->stage);
    if (rc < 0)
        return rc;
    if ((rc = ms_page_coder_encode(s->pc, pfns, pages, n, &f->stage, st)) < 0 ||
        (rc = ms_buf_reserve(&f->stage, MS_SEAL_TAG_SIZE)) < 0)
        return rc;
    f->h.type = MS_FRAME_PAGES;
    f->h.round = round;
    f->h.fragment = fragment;
    f->h.page_count = (uint32_t)n;
    f->h.raw_len = (uint32_t)raw;
    f->h.stage_len = (uint32_t)f->stage.len;
    f->h.hash = ms_content_hash(pfns, n, pages, raw);
    return MS_OK;
}

/* ---- caller API --------------------------------------------------------- */

static int check_round(ms_sender *s, uint32_t round)
{
    if (s->c.ended)
        return ms_error(MS_ERR_INVAL, "sender: the session has already ended");
    if (s->c.round_open) {
        if (round != s->c.cur_round)
            return ms_error(MS_ERR_INVAL, "sender: data for round %u while round %u is open "
                                          "(end a round with ms_sender_round_end first)",
                            round, s->c.cur_round);
        return MS_OK;
    }
    if (s->c.any_ended && round <= s->c.last_ended)
        return ms_error(MS_ERR_INVAL, "sender: data for round %u after round %u ended", round, s->c.last_ended);
    s->c.round_open = true;
    s->c.cur_round = round;
    return MS_OK;
}

int ms_sender_pages(ms_sender *s, uint32_t round, uint32_t fragment, const uint64_t *pfns,
                    const void *pages, size_t count)
{
    double t0 = ms_thread_cpu_s();
    int rc;

    if (count && (!pfns || !pages))
        return ms_error(MS_ERR_INVAL, "sender: NULL pages or pfns");
    if ((rc = check_round(s, round)) < 0)
        return rc;
    for (size_t i = 0; i < count && rc == MS_OK;) {
        size_t n = count - i < s->frame_pages ? count - i : s->frame_pages;
        ms_stage_stats st = {0};
        sframe *f = NULL;
        if ((rc = get_free_frame(s, &f)) < 0)
            break;
        rc = build_pages(s, f, round, fragment, pfns + i, (const uint8_t *)pages + i * s->page_size, n, &st);
        if (rc < 0) {
            /* The page caches may have moved: the session cannot go on. */
            return_frame(s, f);
            rc = fail(s, rc);
            break;
        }
        rc = queue_data_frame(s, f, &st);
        i += n;
    }
    s->caller_cpu += ms_thread_cpu_s() - t0;
    return rc;
}

int ms_sender_opaque(ms_sender *s, uint32_t round, const void *data, size_t len)
{
    double t0 = ms_thread_cpu_s();
    size_t chunk = (size_t)s->frame_pages * s->page_size;
    int rc;

    if (len && !data)
        return ms_error(MS_ERR_INVAL, "sender: NULL opaque data");
    if ((rc = check_round(s, round)) < 0)
        return rc;
    for (size_t off = 0; off < len && rc == MS_OK;) {
        size_t n = len - off < chunk ? len - off : chunk;
        sframe *f = NULL;
        if ((rc = get_free_frame(s, &f)) < 0)
            break;
        if ((rc = ms_buf_reserve(&f->stage, n + MS_SEAL_TAG_SIZE)) < 0) {
            return_frame(s, f);
            break;
        }
        memcpy(f->stage.data, (const uint8_t *)data + off, n);
        f->stage.len = n;
        f->h.type = MS_FRAME_OPAQUE;
        f->h.round = round;
        f->h.raw_len = f->h.stage_len = (uint32_t)n;
        f->h.hash = ms_content_hash(NULL, 0, f->stage.data, n);
        rc = queue_data_frame(s, f, NULL);
        off += n;
    }
    s->caller_cpu += ms_thread_cpu_s() - t0;
    return rc;
}

static int build_round_end_locked(ms_sender *s, uint32_t round)
{
    uint8_t body[2 + 8 * MS_HELLO_MAX_CHANNELS], rec[10];
    sframe *f = control_new(MS_FRAME_ROUND_END, round);
    int rc;

    if (!f)
        return MS_ERR_NOMEM;
    ms_put_le16(body, (uint16_t)s->nch);
    for (unsigned i = 0; i < s->nch; i++) {
        ms_put_le64(body + 2 + 8 * i, s->ch[i].since_round);
        s->ch[i].since_round = 0;
    }
    ms_put_le16(rec, 1);
    ms_put_le64(rec + 2, s->rec_since_round);
    s->rec_since_round = 0;
    if ((rc = control_body(f, body, 2 + 8 * (size_t)s->nch)) < 0 || (rc = ms_buf_append(&f->rec_src, rec, sizeof rec)) < 0) {
        frame_bufs_free(f);
        free(f);
        return rc;
    }
    return send_control_locked(s, f);
}

int ms_sender_round_end(ms_sender *s, uint32_t round)
{
    double t0 = ms_thread_cpu_s();
    int rc = MS_OK;

    if (s->c.ended)
        return ms_error(MS_ERR_INVAL, "sender: the session has already ended");
    if (s->c.round_open ? round != s->c.cur_round : (s->c.any_ended && round <= s->c.last_ended))
        return ms_error(MS_ERR_INVAL, "sender: round_end %u does not close the open round %u", round,
                        s->c.round_open ? s->c.cur_round : s->c.last_ended);
    pthread_mutex_lock(&s->lock);
    if (s->failed) {
        rc = failed_rc_locked(s);
        goto out;
    }
    if ((rc = build_round_end_locked(s, round)) < 0)
        goto out;
    s->c.round_open = false;
    s->c.any_ended = true;
    s->c.last_ended = round;
    while (!s->oneway && !s->failed && !(s->have_ack && s->acked_round >= round))
        pthread_cond_wait(&s->ack_cv, &s->lock);
    if (s->failed) {
        rc = failed_rc_locked(s);
        goto out;
    }
    ms_round_stats *r = ms_stats_round(&s->stats, round);
    if (r) {
        if (!r->t_start_ns)
            r->t_start_ns = ms_now_ns();
        r->t_end_ns = ms_now_ns();
    }
out:
    pthread_mutex_unlock(&s->lock);
    s->caller_cpu += ms_thread_cpu_s() - t0;
    return rc;
}

static void join_all(ms_sender *s)
{
    for (unsigned i = 0; i < s->nwriters_started; i++)
        pthread_join(s->writers[i], NULL);
    s->nwriters_started = 0;
    for (unsigned i = 0; i < s->nworkers_started; i++)
        pthread_join(s->workers[i], NULL);
    s->nworkers_started = 0;
    if (s->rec_started)
        pthread_join(s->rec_thread, NULL);
    if (s->ack_started)
        pthread_join(s->ack_thread, NULL);
    if (s->ka_started)
        pthread_join(s->ka_thread, NULL);
    s->rec_started = s->ack_started = s->ka_started = false;
}

static void finish_stats(ms_sender *s)
{
    ms_stats *st = &s->stats;
    memset(&st->total, 0, sizeof st->total);
    for (size_t i = 0; i < st->nrounds; i++)
        ms_round_stats_add(&st->total, &st->rounds[i]);
    st->wall_s = (double)(ms_now_ns() - s->t_open) / 1e9;
    st->cpu_s = s->thread_cpu + s->caller_cpu;
    st->content_hash = XXH3_64bits_digest(s->digest);
}

int ms_sender_finish(ms_sender *s)
{
    double t0 = ms_thread_cpu_s();
    uint8_t body[MS_END_SIZE];
    sframe *f = NULL;
    int rc = MS_OK;

    if (s->c.finished)
        return MS_OK;
    if (s->c.ended)
        return ms_error(MS_ERR_INVAL, "sender: finish called again after a failure");
    pthread_mutex_lock(&s->lock);
    if (s->failed) {
        rc = failed_rc_locked(s);
        goto unlock;
    }
    ms_put_le64(body, s->data_frames);
    ms_put_le64(body + 8, s->pages);
    ms_put_le64(body + 16, s->raw_bytes);
    ms_put_le64(body + 24, XXH3_64bits_digest(s->digest));
    if (!(f = control_new(MS_FRAME_END, s->c.round_open ? s->c.cur_round : s->c.last_ended)) ||
        (rc = control_body(f, body, sizeof body)) < 0) {
        if (f) {
            frame_bufs_free(f);
            free(f);
        }
        fail_locked(s);
        rc = failed_rc_locked(s);
        goto unlock;
    }
    if ((rc = send_control_locked(s, f)) < 0)
        goto unlock;
    s->ended = true;
    s->c.ended = true;
    /* Everything sent (and, two-way, delivered) before the threads stop. */
    while (!s->failed && (s->inflight || (!s->oneway && !s->end_acked)))
        pthread_cond_wait(s->inflight ? &s->free_cv : &s->ack_cv, &s->lock);
    if (s->failed)
        rc = failed_rc_locked(s);
    s->shutdown = true;
    broadcast_all(s);
unlock:
    pthread_mutex_unlock(&s->lock);
    if (rc < 0)
        goto out;
    join_all(s);
    pthread_mutex_lock(&s->lock);
    if (s->failed)
        rc = failed_rc_locked(s);
    pthread_mutex_unlock(&s->lock);
    if (rc < 0)
        goto out;
    s->caller_cpu += ms_thread_cpu_s() - t0;
    finish_stats(s);
    if (!s->oneway) {
        if (s->peer_frames != s->data_frames || s->peer_digest != s->stats.content_hash) {
            rc = ms_error(MS_ERR_VERIFY, "receiver delivered %llu frames with stream digest %016llx; "
                                         "sent %llu frames with digest %016llx",
                          (unsigned long long)s->peer_frames, (unsigned long long)s->peer_digest,
                          (unsigned long long)s->data_frames, (unsigned long long)s->stats.content_hash);
            goto out;
        }
        s->stats.verified = true;
    }
    pthread_mutex_lock(&s->lock);
    s->finished = true;
    pthread_mutex_unlock(&s->lock);
    s->c.finished = true;
    return MS_OK;
out:
    s->caller_cpu += ms_thread_cpu_s() - t0;
    return rc;
}

void ms_sender_abort(ms_sender *s, const char *reason)
{
    ms_errbuf saved = {0};
    if (!s)
        return;
    /* The caller's own error message (often the reason) must survive. */
    if (ms_last_code())
        ms_errbuf_capture(&saved);
    pthread_mutex_lock(&s->lock);
    if (!s->finished && !s->shutdown) {
        if (!s->abort_reason[0])
            snprintf(s->abort_reason, sizeof s->abort_reason, "%.*s", (int)MS_ABORT_MAX,
                     reason && *reason ? reason : "aborted by the sender");
        if (!s->failed) {
            ms_error(MS_ERR_ABORTED, "session aborted by this side: %s", s->abort_reason);
            s->abort_wanted = true;
            fail_locked(s);
        }
    }
    pthread_mutex_unlock(&s->lock);
    if (saved.code)
        ms_errbuf_raise(&saved);
}

const ms_stats *ms_sender_stats(const ms_sender *s) { return &s->stats; }

bool ms_sender_auto_stats(const ms_sender *s, ms_auto_stats *out)
{
    if (!s->autoc)
        return false;
    ms_auto_get_stats(s->autoc, out);
    return true;
}

double ms_sender_link_rate(const ms_sender *s)
{
    pthread_mutex_lock((pthread_mutex_t *)&s->lock);
    double r = s->link_rate;
    pthread_mutex_unlock((pthread_mutex_t *)&s->lock);
    return r;
}

/* ---- threads ------------------------------------------------------------ */

/* Set up every candidate's compression context for a full frame before
 * the first one (zstd sizes its tables by the input), so that cost does not
 * count as the first frame's compression speed. */
static void warm_auto(ms_sender *s, ms_codec_ctx *ctx)
{
    size_t len = (size_t)s->frame_pages * s->page_size;
    ms_chain ch;
    ms_auto_chain(MS_AUTO_ZSTD3, s->chain.stages, &ch);
    size_t cap = ms_compress_bound(&ch, len);
    uint8_t *src = calloc(1, len), *dst = malloc(cap);
    for (unsigned c = 1; src && dst && c < MS_AUTO_NCAND; c++) {
        size_t n;
        ms_auto_chain(c, s->chain.stages, &ch);
        (void)ms_compress(ctx, &ch, src, len, dst, cap, &n);
    }
    free(src);
    free(dst);
}

static void *worker_main(void *arg)
{
    ms_sender *s = arg;
    double t0 = ms_thread_cpu_s();
    ms_codec_ctx *ctx = ms_codec_ctx_new();
    if (ctx && s->autoc)
        warm_auto(s, ctx);

    pthread_mutex_lock(&s->lock);
    if (!ctx) {
        ms_error(MS_ERR_NOMEM, "sender worker: cannot create codec contexts");
        fail_locked(s);
    }
    for (;;) {
        while (!s->failed && !s->shutdown && !s->work_head)
            pthread_cond_wait(&s->work_cv, &s->lock);
        if (s->failed || (s->shutdown && !s->work_head))
            break;
        sframe *f = s->work_head;
        s->work_head = f->work_next;
        if (!s->work_head)
            s->work_tail = NULL;
        pthread_mutex_unlock(&s->lock);
        int rc = finalize(s, f, ctx);
        pthread_mutex_lock(&s->lock);
        if (rc < 0) {
            fail_locked(s);
            break;
        }
        f->ready = true;
        pthread_cond_broadcast(&s->ready_cv);
    }
    pthread_mutex_unlock(&s->lock);
    ms_codec_ctx_free(ctx);
    ms_buf_free(&shadow_buf);
    add_thread_cpu(s, t0);
    return NULL;
}

/* Send header and body; with a bandwidth cap, in slices so a slow cap
 * still shows the peer steady progress. */
static int send_frame(ms_sender *s, ms_conn *c, const uint8_t *hdr, const uint8_t *body, size_t len)
{
    struct iovec iov[2] = {{(void *)hdr, MS_FRAME_HDR_SIZE}, {(void *)body, len}};
    const size_t slice = 64 * 1024;

    if (!s->rl)
        return ms_conn_sendv(c, iov, len ? 2 : 1);
    ms_ratelimit_take(s->rl, MS_FRAME_HDR_SIZE + (len < slice ? len : slice));
    size_t first = len < slice ? len : slice;
    iov[1].iov_len = first;
    int rc = ms_conn_sendv(c, iov, first ? 2 : 1);
    for (size_t off = first; rc == MS_OK && off < len; off += slice) {
        size_t n = len - off < slice ? len - off : slice;
        ms_ratelimit_take(s->rl, n);
        rc = ms_conn_send(c, body + off, n);
    }
    return rc;
}

static int send_abort(ms_sender *s, ms_conn *c, const ms_session_keys *k, uint16_t channel)
{
    uint8_t hdr[MS_FRAME_HDR_SIZE], body[MS_ABORT_MAX + MS_SEAL_TAG_SIZE];
    size_t n = strnlen(s->abort_reason, MS_ABORT_MAX), out = n;
    ms_frame_hdr h = {.type = MS_FRAME_ABORT, .channel = channel, .seq = MS_ABORT_SEQ,
                      .raw_len = (uint32_t)n, .stage_len = (uint32_t)n};
    memcpy(body, s->abort_reason, n);
    h.hash = ms_content_hash(NULL, 0, body, n);
    h.flags = s->sealed ? MS_FRAME_F_SEALED : 0;
    h.enc_len = (uint32_t)(n + (s->sealed ? MS_SEAL_TAG_SIZE : 0));
    ms_frame_hdr_pack(&h, hdr);
    if (s->sealed && ms_seal(k, hdr, channel, h.seq, body, n, &out) < 0)
        return MS_ERR_INVAL;
    struct iovec iov[2] = {{hdr, sizeof hdr}, {body, out}};
    return ms_conn_sendv(c, iov, out ? 2 : 1);
}

/* The link's rate is what the peer acknowledged, not what the socket took:
 * a send buffer and the queues on the path absorb megabytes at memory
 * speed before the first byte arrives. A write that leaves more unsent than
 * the frame it just wrote found the previous frames still queued: the link,
 * not the producer, set the pace; frames waiting for a worker instead mean
 * the workers did. Windows are short (RATE_WINDOW_NS; until two in a row
 * were link-limited, which is when auto takes the link as known, at most
 * FIRST_WINDOWS of FIRST_WINDOW_NS) so auto knows the link a few tens of
 * milliseconds in. */
#define RATE_WINDOW_NS 50000000ull
#define FIRST_WINDOW_NS 10000000ull
#define FIRST_WINDOWS 5
#define BACKLOG_MIN (64 * 1024)

static void update_rate_locked(ms_sender *s, chan *c, uint64_t wire, int64_t unsent)
{
    uint64_t now = ms_now_ns();
    c->written += wire;
    uint64_t acked = c->written;
    bool backlog = !s->free_list && !s->work_head;
    if (unsent >= 0) {
        acked = (uint64_t)unsent < c->written ? c->written - (uint64_t)unsent : 0;
        backlog = (uint64_t)unsent > wire + BACKLOG_MIN;
    }
    /* What was acknowledged before the first window began is no rate. */
    if (!s->rate_t0) {
        s->rate_t0 = now;
        c->acked = acked;
    }
    if (acked > c->acked) {
        s->rate_bytes += acked - c->acked;
        c->acked = acked;
    }
    s->rate_writes++;
    s->rate_backlogged += backlog;
    s->rate_work_waiting += s->work_head != NULL;
    bool starting = s->rate_full_run < 2 && s->rate_windows < FIRST_WINDOWS;
    if (now - s->rate_t0 < (starting ? FIRST_WINDOW_NS : RATE_WINDOW_NS))
        return;
    double sample = (double)s->rate_bytes * 1e9 / (double)(now - s->rate_t0);
    bool saturated = 2 * s->rate_backlogged >= s->rate_writes;
    s->rate_windows++;
    if (s->rate_full_run < 2)
        s->rate_full_run = saturated ? s->rate_full_run + 1 : 0;
    int limit = saturated ? MS_AUTO_BY_LINK
                : 2 * s->rate_work_waiting >= s->rate_writes ? MS_AUTO_BY_WORKERS
                                                             : MS_AUTO_BY_PRODUCER;
    s->link_rate = s->link_rate > 0 ? 0.7 * s->link_rate + 0.3 * sample : sample;
    if (s->autoc)
        ms_auto_link_sample(s->autoc, sample, limit);
    s->rate_t0 = now;
    s->rate_bytes = 0;
    s->rate_writes = s->rate_backlogged = s->rate_work_waiting = 0;
}

static void account_sent_locked(ms_sender *s, const sframe *f, int64_t unsent)
{
    uint64_t wire = MS_FRAME_HDR_SIZE + (uint64_t)f->h.enc_len;
    ms_round_stats *r = ms_stats_round(&s->stats, f->h.round);
    if (r) {
        r->wire_bytes += wire;
        if (is_data(&f->h)) {
            r->comp_in += f->h.stage_len;
            r->comp_out += f->comp_out;
            r->comp_bytes[f->comp_used] += f->h.enc_len;
        }
    }
    update_rate_locked(s, &s->ch[f->h.channel], wire, unsent);
}

static void *writer_main(void *arg)
{
    writer_arg *wa = arg;
    ms_sender *s = wa->s;
    unsigned ci = wa->ch;
    chan *c = &s->ch[ci];
    ms_conn *conn = s->conns[ci];
    double t0 = ms_thread_cpu_s();
    bool abort_now;

    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->failed && !(c->head && c->head->ready) && !(s->shutdown && !c->head))
            pthread_cond_wait(&s->ready_cv, &s->lock);
        if (s->failed || !c->head)
            break;
        sframe *f = c->head;
        c->head = f->ch_next;
        if (!c->head)
            c->tail = NULL;
        pthread_mutex_unlock(&s->lock);
        int rc = send_frame(s, conn, f->hdr, f->body, f->h.enc_len);
        int64_t unsent = rc < 0 ? -1 : ms_conn_unsent(conn);
        pthread_mutex_lock(&s->lock);
        if (rc < 0) {
            ms_error_wrap(rc, "channel %u: sending frame %llu", ci, (unsigned long long)f->h.seq);
            c->broken = true;
            release_locked(s, f);
            fail_locked(s);
            break;
        }
        account_sent_locked(s, f, unsent);
        release_locked(s, f);
    }
    /* Failed: what is still queued will never be sent. */
    while (c->head) {
        sframe *f = c->head;
        c->head = f->ch_next;
        release_locked(s, f);
    }
    c->tail = NULL;
    abort_now = s->failed && s->abort_wanted && !c->broken;
    pthread_mutex_unlock(&s->lock);
    if (abort_now)
        (void)send_abort(s, conn, &s->keys[ci], (uint16_t)ci);
    /* The peer sees end of stream now rather than at close. */
    (void)conn->ops->shutdown_send(conn);
    add_thread_cpu(s, t0);
    return NULL;
}

static void *record_main(void *arg)
{
    ms_sender *s = arg;
    double t0 = ms_thread_cpu_s();
    bool broken = false, abort_now;

    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->failed && !(s->rec_head && s->rec_head->ready) && !(s->shutdown && !s->rec_head))
            pthread_cond_wait(&s->ready_cv, &s->lock);
        if (s->failed || !s->rec_head)
            break;
        sframe *f = s->rec_head;
        s->rec_head = f->rec_next;
        if (!s->rec_head)
            s->rec_tail = NULL;
        pthread_mutex_unlock(&s->lock);
        struct iovec iov[2] = {{f->rec_hdr, MS_FRAME_HDR_SIZE}, {(void *)f->rbody, f->rbody_len}};
        int rc = ms_conn_sendv(s->record, iov, f->rbody_len ? 2 : 1);
        pthread_mutex_lock(&s->lock);
        release_locked(s, f);
        if (rc < 0) {
            ms_error_wrap(rc, "writing the record");
            broken = true;
            fail_locked(s);
            break;
        }
    }
    while (s->rec_head) {
        sframe *f = s->rec_head;
        s->rec_head = f->rec_next;
        release_locked(s, f);
    }
    s->rec_tail = NULL;
    /* A record of a failed session says why it ends where it does. */
    abort_now = s->failed && !broken;
    if (abort_now && !s->abort_reason[0])
        snprintf(s->abort_reason, sizeof s->abort_reason, "%.*s", (int)MS_ABORT_MAX, s->err.msg);
    pthread_mutex_unlock(&s->lock);
    if (abort_now)
        (void)send_abort(s, s->record, &s->rec_keys, 0);
    add_thread_cpu(s, t0);
    return NULL;
}

/* One frame from the receiver on channel 0. */
static int read_reverse(ms_sender *s, ms_seq_check *sc, ms_frame_hdr *h, uint8_t *body, size_t *len)
{
    uint8_t hdr[MS_FRAME_HDR_SIZE];
    ms_conn *c = s->conns[0];
    size_t got = 0, n;
    int rc = ms_conn_recv(c, hdr, sizeof hdr, &got);

    if (rc == MS_ERR_CLOSED && got == 0)
        return ms_error(MS_ERR_CLOSED, "receiver closed the connection before acknowledging the end "
                                       "of the session");
    if (rc < 0)
        return ms_error_wrap(rc, "reading from the receiver");
    if ((rc = ms_frame_hdr_unpack(hdr, h)) < 0)
        return ms_error_wrap(rc, "frame from the receiver");
    if (h->type != MS_FRAME_ACK && h->type != MS_FRAME_PING && h->type != MS_FRAME_ABORT)
        return ms_error(MS_ERR_CORRUPT, "receiver sent a frame of type %u (only ACK, PING, ABORT may come back)",
                        h->type);
    if (h->channel != 0 || h->enc_len > MS_CTRL_BODY_MAX || h->codec != 0 || h->stage_len != h->raw_len)
        return ms_error(MS_ERR_CORRUPT, "receiver frame %llu: bad channel, codec or length",
                        (unsigned long long)h->seq);
    if (!!(h->flags & MS_FRAME_F_SEALED) != s->sealed)
        return ms_error(s->sealed ? MS_ERR_TAMPERED : MS_ERR_CORRUPT, "receiver frame %llu is %s",
                        (unsigned long long)h->seq, s->sealed ? "not sealed" : "sealed in an unsealed session");
    if ((rc = ms_seq_check_accept(sc, h->seq)) < 0)
        return ms_error_wrap(rc, "receiver frame");
    if (h->enc_len && (rc = ms_conn_recv(c, body, h->enc_len, &got)) < 0)
        return ms_error_wrap(rc == MS_ERR_CLOSED ? MS_ERR_TRUNCATED : rc, "receiver frame %llu body",
                             (unsigned long long)h->seq);
    n = h->enc_len;
    if (s->sealed && (rc = ms_open(&s->keys[0], hdr, 0, h->seq, body, n, &n)) < 0)
        return ms_error_wrap(rc, "receiver frame %llu", (unsigned long long)h->seq);
    if (n != h->raw_len || ms_content_hash(NULL, 0, body, n) != h->hash)
        return ms_error(MS_ERR_HASH, "receiver frame %llu: content hash or length mismatch",
                        (unsigned long long)h->seq);
    *len = n;
    return MS_OK;
}

static void *ack_main(void *arg)
{
    ms_sender *s = arg;
    double t0 = ms_thread_cpu_s();
    uint8_t body[MS_CTRL_BODY_MAX + 1];
    ms_seq_check sc = {0};

    for (;;) {
        ms_frame_hdr h;
        size_t len = 0;
        int rc = read_reverse(s, &sc, &h, body, &len);
        pthread_mutex_lock(&s->lock);
        if (rc == MS_OK && h.type == MS_FRAME_ABORT) {
            body[len] = 0;
            for (size_t i = 0; i < len; i++)
                if (body[i] < 0x20 || body[i] == 0x7f)
                    body[i] = '?';
            rc = ms_error(MS_ERR_ABORTED, "receiver aborted the session: %s", (char *)body);
            s->peer_aborted = true;
        } else if (rc == MS_OK && h.type == MS_FRAME_ACK) {
            if (len != MS_ACK_SIZE || (body[0] != MS_ACK_ROUND && body[0] != MS_ACK_END)) {
                rc = ms_error(MS_ERR_CORRUPT, "receiver sent a malformed ACK");
            } else {
                s->peer_frames = ms_get_le64(body + 8);
                s->peer_digest = ms_get_le64(body + 16);
                if (body[0] == MS_ACK_END) {
                    s->end_acked = true;
                } else {
                    s->have_ack = true;
                    s->acked_round = ms_get_le32(body + 4);
                }
                pthread_cond_broadcast(&s->ack_cv);
            }
        }
        if (rc < 0 && !s->shutdown)
            fail_locked(s);
        /* After a failure it keeps reading until the receiver hangs up:
         * closing with its frames unread would reset the connection, and
         * a reset can discard the ABORT that tells the receiver why. */
        bool done = rc < 0 || s->end_acked;
        pthread_mutex_unlock(&s->lock);
        if (done)
            break;
    }
    add_thread_cpu(s, t0);
    return NULL;
}

static void *keepalive_main(void *arg)
{
    ms_sender *s = arg;
    double t0 = ms_thread_cpu_s();
    uint64_t interval = ms_ping_interval_ns(s->timeout_ms);

    pthread_mutex_lock(&s->lock);
    while (!s->shutdown && !s->failed) {
        uint64_t now = ms_now_ns(), due = s->last_enqueue_ns + interval;
        if (now >= due && !s->ended) {
            /* One per channel: each receiver reader needs to see life. */
            for (unsigned i = 0; i < s->nch && !s->failed; i++) {
                sframe *f = control_new(MS_FRAME_PING, s->last_round);
                int rc = f ? control_body(f, NULL, 0) : MS_ERR_NOMEM;
                if (rc == MS_OK) {
                    rc = send_control_locked(s, f);
                } else if (f) {
                    frame_bufs_free(f);
                    free(f);
                }
                if (rc < 0)
                    fail_locked(s);
            }
            s->last_enqueue_ns = now;
            due = now + interval;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t wait = due > now ? due - now : interval;
        uint64_t ns = (uint64_t)ts.tv_nsec + wait;
        ts.tv_sec += (time_t)(ns / 1000000000ull);
        ts.tv_nsec = (long)(ns % 1000000000ull);
        pthread_cond_timedwait(&s->ka_cv, &s->lock, &ts);
    }
    pthread_mutex_unlock(&s->lock);
    add_thread_cpu(s, t0);
    return NULL;
}

/* ---- open / free -------------------------------------------------------- */

static unsigned default_workers(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

static int handshake_all(ms_sender *s, const ms_session_config *cfg, ms_conn **conns, unsigned n)
{
    ms_hello mine = {0}, peer;
    int rc;

    mine.version = MS_WIRE_VERSION;
    mine.role = MS_ROLE_SENDER;
    if (sodium_is_zero(cfg->session_id, MS_SESSION_ID_SIZE))
        randombytes_buf(mine.session_id, MS_SESSION_ID_SIZE);
    else
        memcpy(mine.session_id, cfg->session_id, MS_SESSION_ID_SIZE);
    mine.channels = (uint16_t)n;
    mine.page_size = (uint32_t)s->page_size;
    mine.flags = s->oneway ? MS_HELLO_F_ONEWAY : 0;
    ms_chain_format(&s->chain, mine.chain, sizeof mine.chain);
    /* The receiver mirrors our page stores, so it must use our bounds. */
    mine.delta_cache_bytes = cfg->delta_cache_bytes ? cfg->delta_cache_bytes : 64ull << 20;
    mine.dedup_bytes = cfg->dedup_bytes ? cfg->dedup_bytes : 64ull << 20;
    /* One connection after the other: a receiver answers each hello as
     * soon as it reads it, so no channel waits for another. */
    for (unsigned i = 0; i < n; i++) {
        mine.channel = (uint16_t)i;
        if ((rc = ms_handshake_client(conns[i], &mine, cfg->key, &peer, &s->keys[i])) < 0)
            return ms_error_wrap(rc, "channel %u handshake", i);
        s->nhandshaken = i + 1;
    }
    if (s->record) {
        mine.channel = 0;
        mine.channels = 1;
        mine.flags = MS_HELLO_F_ONEWAY;
        if ((rc = ms_handshake_client(s->record, &mine, cfg->key, &peer, &s->rec_keys)) < 0)
            return ms_error_wrap(rc, "writing the record's hello");
    }
    return MS_OK;
}

static int check_config(const ms_session_config *cfg, unsigned nconns, size_t page_size, uint32_t frame_pages)
{
    if (!cfg)
        return ms_error(MS_ERR_INVAL, "sender: no configuration");
    if (nconns < 1 || nconns > MS_HELLO_MAX_CHANNELS)
        return ms_error(MS_ERR_INVAL, "sender: %u channels (1..%u)", nconns, MS_HELLO_MAX_CHANNELS);
    if (page_size < MS_HELLO_MIN_PAGE_SIZE || page_size > MS_HELLO_MAX_PAGE_SIZE || (page_size & (page_size - 1)))
        return ms_error(MS_ERR_INVAL, "sender: page size %zu is not a power of two in %u..%u", page_size,
                        MS_HELLO_MIN_PAGE_SIZE, MS_HELLO_MAX_PAGE_SIZE);
    if (frame_pages > MS_MAX_FRAME_PAGES || (uint64_t)frame_pages * page_size > MS_MAX_FRAME_PAGES * 4096ull)
        return ms_error(MS_ERR_INVAL, "sender: %u pages of %zu bytes per frame exceed the %u KiB frame limit",
                        frame_pages, page_size, MS_MAX_FRAME_PAGES * 4);
    /* The receiver adopts these from the hello and refuses what it cannot
     * hold: refuse them here, before any connection is made. */
    if ((cfg->delta_cache_bytes && !ms_page_store_ok(cfg->delta_cache_bytes)) ||
        (cfg->dedup_bytes && !ms_page_store_ok(cfg->dedup_bytes)))
        return ms_error(MS_ERR_INVAL, "sender: page stores of %llu / %llu bytes (delta / dedup) outside 1 MiB..16 GiB",
                        (unsigned long long)cfg->delta_cache_bytes, (unsigned long long)cfg->dedup_bytes);
    return MS_OK;
}

static int start_threads(ms_sender *s)
{
    int e = 0;
    for (; s->nworkers_started < s->nworkers && !e; s->nworkers_started += !e)
        e = pthread_create(&s->workers[s->nworkers_started], NULL, worker_main, s);
    for (; s->nwriters_started < s->nch && !e; s->nwriters_started += !e) {
        writer_arg *wa = &s->wargs[s->nwriters_started];
        wa->s = s;
        wa->ch = s->nwriters_started;
        e = pthread_create(&s->writers[s->nwriters_started], NULL, writer_main, wa);
    }
    if (!e && s->record && !(e = pthread_create(&s->rec_thread, NULL, record_main, s)))
        s->rec_started = true;
    if (!e && !s->oneway && !(e = pthread_create(&s->ack_thread, NULL, ack_main, s)))
        s->ack_started = true;
    if (!e && !(e = pthread_create(&s->ka_thread, NULL, keepalive_main, s)))
        s->ka_started = true;
    if (e)
        return ms_error(MS_ERR_NOMEM, "sender: cannot start threads: %s", strerror(e));
    return MS_OK;
}

static int alloc_state(ms_sender *s, const ms_session_config *cfg)
{
    ms_page_coder_config pcc = {
        .stages = s->chain.stages,
        .page_size = s->page_size,
        .delta_cache_bytes = cfg->delta_cache_bytes ? cfg->delta_cache_bytes : 64ull << 20,
        .dedup_bytes = cfg->dedup_bytes ? cfg->dedup_bytes : 64ull << 20,
        .gate = s->chain.is_auto,
    };
    s->pool = calloc(s->depth, sizeof *s->pool);
    s->ch = calloc(s->nch, sizeof *s->ch);
    s->keys = calloc(s->nch, sizeof *s->keys);
    s->workers = calloc(s->nworkers, sizeof *s->workers);
    s->writers = calloc(s->nch, sizeof *s->writers);
    s->wargs = calloc(s->nch, sizeof *s->wargs);
    s->digest = XXH3_createState();
    s->pc = ms_page_coder_new(&pcc);
    s->rl = cfg->max_bandwidth ? ms_ratelimit_new(cfg->max_bandwidth) : NULL;
    if (s->chain.is_auto)
        s->autoc = ms_auto_new(&(ms_auto_config){.workers = s->nworkers, .link_cap = (double)cfg->max_bandwidth});
    if (!s->pool || !s->ch || !s->keys || !s->workers || !s->writers || !s->wargs || !s->digest || !s->pc ||
        (cfg->max_bandwidth && !s->rl) || (s->chain.is_auto && !s->autoc))
        return ms_error(MS_ERR_NOMEM, "sender: out of memory");
    XXH3_64bits_reset(s->digest);
    for (unsigned i = 0; i < s->depth; i++) {
        s->pool[i].pooled = true;
        s->pool[i].free_next = s->free_list;
        s->free_list = &s->pool[i];
    }
    return MS_OK;
}

int ms_sender_open(const ms_session_config *cfg, ms_conn **conns, unsigned nconns, ms_sender **out)
{
    ms_sender *s = NULL;
    size_t page_size = cfg && cfg->page_size ? cfg->page_size : MS_PAGE_SIZE;
    uint32_t frame_pages = cfg && cfg->frame_pages ? cfg->frame_pages : 256;
    int rc;

    *out = NULL;
    if ((rc = check_config(cfg, nconns, page_size, frame_pages)) < 0)
        goto fail_conns;
    if (!(s = calloc(1, sizeof *s))) {
        rc = ms_error(MS_ERR_NOMEM, "sender: out of memory");
        goto fail_conns;
    }
    pthread_mutex_init(&s->lock, NULL);
    s->t_open = ms_now_ns();
    s->chain = cfg->chain;
    s->page_size = page_size;
    s->frame_pages = frame_pages;
    s->nch = nconns;
    s->nworkers = cfg->workers ? cfg->workers : default_workers();
    /* Two frames per worker (one being compressed, one waiting) and one per
     * channel keep everything busy; more only spreads the data over more
     * memory, which costs cache misses in every copy. */
    s->depth = cfg->queue_depth ? cfg->queue_depth : 2 * s->nworkers + nconns;
    s->timeout_ms = ms_effective_timeout(cfg);
    s->sealed = cfg->key != NULL;
    s->oneway = cfg->oneway;
    s->record = cfg->record;
    s->last_enqueue_ns = ms_now_ns();
    pthread_cond_init(&s->work_cv, NULL);
    pthread_cond_init(&s->ready_cv, NULL);
    pthread_cond_init(&s->free_cv, NULL);
    pthread_cond_init(&s->ack_cv, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->ka_cv, &ca);
    pthread_condattr_destroy(&ca);
    if (!(s->conns = calloc(nconns, sizeof *s->conns))) {
        rc = ms_error(MS_ERR_NOMEM, "sender: out of memory");
        goto fail_conns;
    }
    /* From here on ms_sender_free closes the connections. */
    for (unsigned i = 0; i < nconns; i++) {
        s->conns[i] = conns[i];
        conns[i]->timeout_ms = s->timeout_ms;
    }
    if ((rc = alloc_state(s, cfg)) < 0 || (rc = handshake_all(s, cfg, conns, nconns)) < 0 ||
        (rc = start_threads(s)) < 0)
        goto fail;
    *out = s;
    return MS_OK;

fail_conns:
    for (unsigned i = 0; conns && i < nconns; i++)
        ms_conn_close(conns[i]);
fail:
    if (s) {
        ms_errbuf saved = {0};
        ms_errbuf_capture(&saved);
        fail(s, rc);
        /* A receiver that already shook hands learns why nothing follows. */
        if (!s->nworkers_started && !s->nwriters_started)
            for (unsigned i = 0; i < s->nhandshaken; i++)
                (void)send_abort(s, s->conns[i], &s->keys[i], (uint16_t)i);
        s->finished = s->c.finished = true; /* nothing to abort: it never started */
        ms_sender_free(s);
        ms_errbuf_raise(&saved);
    }
    return rc;
}

void ms_sender_free(ms_sender *s)
{
    if (!s)
        return;
    if (!s->c.finished)
        ms_sender_abort(s, "the sender stopped before the end of the session");
    pthread_mutex_lock(&s->lock);
    s->shutdown = true;
    broadcast_all(s);
    pthread_mutex_unlock(&s->lock);
    join_all(s);
    for (unsigned i = 0; s->conns && i < s->nch; i++)
        ms_conn_close(s->conns[i]);
    for (unsigned i = 0; s->pool && i < s->depth; i++)
        frame_bufs_free(&s->pool[i]);
    if (s->keys)
        sodium_memzero(s->keys, s->nch * sizeof *s->keys);
    sodium_memzero(&s->rec_keys, sizeof s->rec_keys);
    free(s->pool);
    free(s->ch);
    free(s->keys);
    free(s->workers);
    free(s->writers);
    free(s->wargs);
    free(s->conns);
    XXH3_freeState(s->digest);
    ms_page_coder_free(s->pc);
    ms_ratelimit_free(s->rl);
    ms_auto_free(s->autoc);
    ms_stats_free(&s->stats);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->work_cv);
    pthread_cond_destroy(&s->ready_cv);
    pthread_cond_destroy(&s->free_cv);
    pthread_cond_destroy(&s->ack_cv);
    pthread_cond_destroy(&s->ka_cv);
    free(s);
}
