/* migstream stream layer: the wire format (frames, hello, sealing) and the
 * sender / receiver pipelines that carry pages and opaque records in order,
 * round by round, over one or more connections.
 *
 * See docs/wire-format.md for byte offsets. */
#ifndef MS_STREAM_H
#define MS_STREAM_H

#include <stdio.h>

#include "codecs/codecs.h"
#include "transport/transport.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ======================= wire format (wire.c) =========================== */

#define MS_WIRE_VERSION 2u
#define MS_FRAME_MAGIC 0x3146534du /* "MSF1" little-endian */
#define MS_FRAME_HDR_SIZE 56u
#define MS_MAX_FRAME_PAGES 1024u
/* Largest body accepted: a full frame of raw pages plus generous overhead. */
#define MS_MAX_FRAME_BODY (MS_MAX_FRAME_PAGES * 4096u * 2u + 65536u)
#define MS_SEAL_TAG_SIZE 16u

enum ms_frame_type {
    MS_FRAME_PAGES = 1,     /* a batch of pages of one fragment */
    MS_FRAME_OPAQUE = 2,    /* pass-through bytes (e.g. libxc records) */
    MS_FRAME_ROUND_END = 3, /* barrier: all frames of `round` were sent */
    MS_FRAME_END = 4,       /* end of session, body carries totals */
    MS_FRAME_PING = 5,      /* keep-alive while the producer is idle */
    MS_FRAME_ABORT = 6,     /* sender gives up; body is a reason string */
    MS_FRAME_ACK = 7,       /* receiver -> sender: round/end delivered */
    MS_FRAME_TYPE_MAX = 7
};

#define MS_FRAME_F_SEALED 0x01u

typedef struct ms_frame_hdr {
    uint8_t type;
    uint8_t flags;
    uint16_t channel;
    uint64_t seq;        /* global sequence number, from 0, one per frame */
    uint32_t round;
    uint32_t fragment;
    uint32_t page_count;
    uint32_t codec;      /* ms_chain_to_id() of the chain used for this frame */
    uint32_t raw_len;    /* decoded content bytes (pages or opaque bytes) */
    uint32_t enc_len;    /* body bytes on the wire after the header (incl. seal tag) */
    uint32_t stage_len;  /* body bytes after unsealing and decompression */
    uint64_t hash;       /* XXH3-64 of the decoded content (see ms_content_hash) */
} ms_frame_hdr;

/* Serialise with magic and header check (XXH32 of bytes 0..51 at 52). */
void ms_frame_hdr_pack(const ms_frame_hdr *h, uint8_t out[MS_FRAME_HDR_SIZE]);
/* Parse and validate magic, header check, type, and every length against
 * the protocol limits. MS_ERR_CORRUPT naming the field on failure. */
int ms_frame_hdr_unpack(const uint8_t in[MS_FRAME_HDR_SIZE], ms_frame_hdr *h);

/* Content hash: XXH3-64 over the pfns as little-endian u64 followed by the
 * page bytes (PAGES), or over the bytes (OPAQUE). */
uint64_t ms_content_hash(const uint64_t *pfns, size_t count, const void *data, size_t len);

/* PFN list, delta-coded: ULEB128 of zigzag(pfn[i] - pfn[i-1]), pfn[-1] = 0.
 * Every pfn must be below MS_PFN_LIMIT (Xen's 52-bit pfn field; with 4 KiB
 * pages pfn * page_size then always fits 64 bits): encode refuses a larger
 * one with MS_ERR_INVAL, decode with MS_ERR_CORRUPT. */
#define MS_PFN_LIMIT (1ull << 52)
int ms_pfns_encode(const uint64_t *pfns, size_t count, ms_buf *out);
/* Returns bytes consumed, or a negative MS_ERR_CORRUPT/TRUNCATED. */
long ms_pfns_decode(const uint8_t *in, size_t len, uint64_t *pfns, size_t count);

/* ======================= hello and keys (hello.c, seal.c) =============== */

#define MS_HELLO_MAGIC "MIGSTRM\0"
#define MS_HELLO_SIZE 160u
#define MS_SESSION_ID_SIZE 16u
#define MS_NONCE_SIZE 32u
#define MS_KEY_SIZE 32u
#define MS_CHAIN_TEXT_MAX 64u

enum ms_role { MS_ROLE_SENDER = 1, MS_ROLE_RECEIVER = 2 };
#define MS_HELLO_F_SEALED 0x01u  /* frames are sealed; a key is required */
#define MS_HELLO_F_ONEWAY 0x02u  /* no reverse direction (file, record) */
#define MS_HELLO_MAX_CHANNELS 256u
#define MS_HELLO_MIN_PAGE_SIZE 512u
#define MS_HELLO_MAX_PAGE_SIZE 65536u
#define MS_PROOF_SIZE 32u

/* Field rules (checked by ms_hello_unpack): a sender's hello states
 * channel < channels <= MS_HELLO_MAX_CHANNELS, a power-of-two page size in
 * [512, 65536] and a non-empty chain. A receiver's hello may leave
 * channels, page_size and chain zero/empty, meaning "whatever the sender
 * says"; a stated value must equal the sender's (else MS_ERR_MISMATCH). */

typedef struct ms_hello {
    uint32_t version;
    uint8_t role;
    uint8_t session_id[MS_SESSION_ID_SIZE];
    uint16_t channel, channels;
    uint32_t page_size;
    char chain[MS_CHAIN_TEXT_MAX]; /* canonical chain text, NUL-terminated */
    uint32_t flags;
    uint8_t nonce[MS_NONCE_SIZE];
    /* The sender's page-store bounds: the receiver's caches must mirror the
     * sender's exactly, so it adopts these (0 = the 64 MiB default). */
    uint64_t delta_cache_bytes;
    uint64_t dedup_bytes;
} ms_hello;

void ms_hello_pack(const ms_hello *h, uint8_t out[MS_HELLO_SIZE]);
/* MS_ERR_CORRUPT (bad magic/field), MS_ERR_VERSION (other version). */
int ms_hello_unpack(const uint8_t in[MS_HELLO_SIZE], ms_hello *h);

/* Load a pre-shared key: a file of exactly 32 bytes, or 64 hex digits
 * (optionally followed by a newline). */
int ms_key_load(const char *path, uint8_t key[MS_KEY_SIZE]);
/* Write a new random key as hex (mode 0600). */
int ms_key_generate(const char *path);

/* Per-session, per-direction keys derived from the pre-shared key, the
 * session id and both sides' nonces. */
typedef struct ms_session_keys {
    bool sealed;
    uint8_t tx[MS_KEY_SIZE]; /* key this side seals with */
    uint8_t rx[MS_KEY_SIZE]; /* key this side opens with */
    uint8_t role;            /* this side's ms_role: sets the nonce's direction byte */
} ms_session_keys;

/* The handshake sets MS_HELLO_F_SEALED itself (set iff psk != NULL) and
 * draws a fresh random nonce; the caller's flag bit and nonce are ignored.
 * The server's answer always echoes the client's session id and channel.
 *
 * Client side of the handshake on one connection: send `mine`, read the
 * peer's hello, exchange key proofs. With oneway, only `mine` is sent and
 * keys derive from the sender's nonce alone. psk may be NULL (unsealed).
 * Errors: MS_ERR_AUTH (peer lacks the key), MS_ERR_VERSION, MS_ERR_MISMATCH
 * (page size, chain, channel count), MS_ERR_TIMEOUT, MS_ERR_CLOSED. */
int ms_handshake_client(ms_conn *c, const ms_hello *mine, const uint8_t *psk,
                        ms_hello *peer, ms_session_keys *keys);
/* Server side, split so the listener can group connections by session id
 * before answering: first read the client's hello ... */
int ms_handshake_server_read(ms_conn *c, ms_hello *peer);
/* ... then answer and verify the client's key proof. */
int ms_handshake_server_finish(ms_conn *c, const ms_hello *peer, const ms_hello *mine,
                               const uint8_t *psk, ms_session_keys *keys);

/* Seal body in place (body must have MS_SEAL_TAG_SIZE spare bytes after
 * len); the nonce is built from (channel, seq, direction) and the packed
 * header is the associated data. The header must already say SEALED, the
 * same channel and seq, and enc_len = len + MS_SEAL_TAG_SIZE (else
 * MS_ERR_INVAL). ms_open refuses (MS_ERR_TAMPERED) a header without the
 * SEALED flag or naming another channel, MS_ERR_TRUNCATED if len is short
 * of the header's enc_len. */
int ms_seal(const ms_session_keys *k, const uint8_t hdr[MS_FRAME_HDR_SIZE], uint16_t channel,
            uint64_t seq, uint8_t *body, size_t len, size_t *out_len);
/* Open in place; MS_ERR_TAMPERED if the tag does not verify. */
int ms_open(const ms_session_keys *k, const uint8_t hdr[MS_FRAME_HDR_SIZE], uint16_t channel,
            uint64_t seq, uint8_t *body, size_t len, size_t *out_len);

/* Per-channel order check: sequence numbers on one channel strictly rise.
 * MS_ERR_REPLAY if seq was already seen, MS_ERR_REORDER if it is lower than
 * the last one (and not a duplicate of a tracked one).
 * Exact rule: seq > last is accepted; seq equal to one of the last
 * MS_SEQ_WINDOW accepted values is MS_ERR_REPLAY; any other seq <= last is
 * MS_ERR_REORDER (older than the window: could be either, reported as
 * reordered with a message saying so). Zero-initialise before use. */
#define MS_SEQ_WINDOW 16u
typedef struct ms_seq_check {
    uint64_t last;
    bool any;
    uint64_t recent[MS_SEQ_WINDOW]; /* ring of the last accepted seqs */
    unsigned nrecent, head;
} ms_seq_check;
int ms_seq_check_accept(ms_seq_check *sc, uint64_t seq);

/* ======================= statistics (stats.c) ========================= */

typedef struct ms_round_stats {
    uint32_t round;
    uint64_t frames, pages, opaque_bytes;
    uint64_t raw_bytes;   /* page + opaque bytes before encoding */
    uint64_t wire_bytes;  /* bytes on the wire incl. headers and tags */
    ms_stage_stats stage; /* per-stage page counts */
    uint64_t comp_in, comp_out;           /* block compressor bytes */
    uint64_t comp_bytes[MS_COMP_COUNT];   /* wire body bytes per compressor used */
    uint64_t t_start_ns, t_end_ns;
} ms_round_stats;

typedef struct ms_stats {
    ms_round_stats total;
    ms_round_stats *rounds; /* one per round seen, in order */
    size_t nrounds, rounds_cap;
    double wall_s;
    double cpu_s;           /* process CPU time spent during the session */
    bool verified;          /* receiver: every frame's hash matched */
    uint64_t content_hash;  /* receiver: hash over all delivered content in order */
} ms_stats;

void ms_stats_free(ms_stats *s);
ms_round_stats *ms_stats_round(ms_stats *s, uint32_t round); /* find or add */
void ms_round_stats_add(ms_round_stats *into, const ms_round_stats *r);
void ms_stats_print(const ms_stats *s, const char *title, FILE *f);
void ms_stats_json(const ms_stats *s, FILE *f); /* one JSON object, no newline */

/* ======================= sinks (sink.c) ================================ */

/* Where the receiver delivers, in sequence order, from one thread. */
typedef struct ms_sink_ops {
    int (*pages)(void *ctx, uint32_t round, uint32_t fragment, const uint64_t *pfns,
                 const uint8_t *pages, size_t count, size_t page_size);
    int (*opaque)(void *ctx, const uint8_t *data, size_t len);
    int (*round_end)(void *ctx, uint32_t round);
    int (*end)(void *ctx);
} ms_sink_ops;

/* Memory image sink: pages stored at pfn * page_size in a buffer that grows
 * to the highest pfn seen (bounded by max_bytes); opaque bytes appended to a
 * second buffer. */
typedef struct ms_image_sink {
    uint8_t *mem;
    uint64_t mem_len, max_bytes; /* max_bytes 0: 64 GiB */
    ms_buf opaque;
    uint64_t pages_written;
    uint64_t mem_cap;            /* allocated bytes of mem (>= mem_len) */
} ms_image_sink;
extern const ms_sink_ops ms_image_sink_ops;
void ms_image_sink_free(ms_image_sink *s);

/* File sink: pages written with pwrite at pfn * page_size (dropped when
 * fd < 0); opaque bytes appended to opaque_fd, ignored when it is < 0. */
typedef struct ms_file_sink {
    int fd, opaque_fd;
} ms_file_sink;
extern const ms_sink_ops ms_file_sink_ops;

/* Discard sink: keeps only counts (the receiver's hash check still runs). */
extern const ms_sink_ops ms_discard_sink_ops;

/* Image digest: a fingerprint of a memory image that needs no copy of it.
 * It is XXH3-64 over the little-endian XXH3-64 of every page, pfn 0 up to
 * the highest pfn written; pages never written count as zero pages, a short
 * last page as zero-padded. Sender and receiver compute it independently to
 * tell whether a reconstruction is byte-identical. */
uint64_t ms_image_digest(const uint8_t *mem, uint64_t len, size_t page_size);
uint64_t ms_page_hashes_digest(const uint64_t *page_hashes, uint64_t npages);

/* Digest sink: keeps one 8-byte hash per page (not the pages) and passes
 * everything on to `inner` (NULL: nowhere). Zero-initialise, then set
 * inner/inner_ctx and optionally max_pages (0: 64 GiB worth of pages). */
typedef struct ms_digest_sink {
    const ms_sink_ops *inner;
    void *inner_ctx;
    uint64_t max_pages;
    size_t page_size;       /* taken from the first batch */
    uint64_t *page_hash;    /* per pfn */
    uint64_t npages, cap;
    uint64_t opaque_bytes;
    void *opaque_state;     /* XXH3 state over all opaque bytes */
} ms_digest_sink;
extern const ms_sink_ops ms_digest_sink_ops;
uint64_t ms_digest_sink_value(const ms_digest_sink *d);  /* image digest */
uint64_t ms_digest_sink_opaque(const ms_digest_sink *d); /* XXH3-64 of the opaque bytes */
void ms_digest_sink_free(ms_digest_sink *d);

/* ======================= pipelines (sender.c, receiver.c) ============== */

/* Largest delta or dedup page store a receiver adopts from a hello: the
 * sender's choice is the receiver's memory, so it is bounded. */
#define MS_MAX_PAGE_STORE (16ull << 30)
#define MS_MIN_PAGE_STORE (1ull << 20) /* smaller holds almost nothing */
/* A page-store size as a user writes it ("64M", "1G"), within
 * MS_MIN_PAGE_STORE..MS_MAX_PAGE_STORE; MS_ERR_INVAL names the range. */
int ms_page_store_parse(const char *text, uint64_t *out);
bool ms_page_store_ok(uint64_t bytes);

typedef struct ms_session_config {
    ms_chain chain;
    uint32_t page_size;        /* default MS_PAGE_SIZE */
    unsigned workers;          /* encode/decode threads; 0 = number of cores */
    unsigned queue_depth;      /* frames in flight per side; 0 = 2 * workers + channels */
    uint32_t frame_pages;      /* pages per frame when a caller passes more; 0 = 256 */
    uint64_t timeout_ms;       /* peer silence that ends the session; 0 = 10 s */
    uint64_t max_bandwidth;    /* bytes/s on the wire, 0 = unlimited */
    uint64_t delta_cache_bytes;/* 0 = 64 MiB; at most MS_MAX_PAGE_STORE */
    uint64_t dedup_bytes;      /* 0 = 64 MiB; at most MS_MAX_PAGE_STORE */
    const uint8_t *key;        /* MS_KEY_SIZE bytes, or NULL for unsealed */
    bool oneway;               /* no acks (file, record, pipe) */
    ms_conn *record;           /* optional: every frame also written here, in seq order */
    uint8_t session_id[MS_SESSION_ID_SIZE]; /* all zero: random */
    bool insecure;             /* listener: allow no key on a non-loopback address */
} ms_session_config;

/* Sender and receiver pipelines (design and memory bound: docs/wire-format.md
 * sections 1 and 5, docs/benchmarks.md "Pipeline"). Frame seq s travels on
 * channel s % channels (strict round robin: a missing frame is noticed by
 * its channel's reader at once, and the receiver's reorder window needs no
 * more than queue_depth slots). One producer thread at a time calls the
 * ms_sender_* data functions; ms_sender_abort may come from any thread.
 * Resident memory per side is about queue_depth x 2 x frame size plus the
 * delta cache (delta_cache_bytes). */
typedef struct ms_sender ms_sender;

/* Handshake on every connection (channel i = conns[i]) and start the
 * workers. Takes ownership of the connections, even on failure. */
int ms_sender_open(const ms_session_config *cfg, ms_conn **conns, unsigned nconns, ms_sender **out);
/* Queue pages (copied before return; batches larger than frame_pages are
 * split). Blocks when the queues are full: back-pressure. Rounds: data of
 * one round until its ms_sender_round_end, then only later rounds
 * (MS_ERR_INVAL otherwise, without harming the session). Any other error
 * ends the session: the peer gets an ABORT with the reason. */
int ms_sender_pages(ms_sender *s, uint32_t round, uint32_t fragment, const uint64_t *pfns,
                    const void *pages, size_t count);
int ms_sender_opaque(ms_sender *s, uint32_t round, const void *data, size_t len);
/* Round barrier. Unless oneway, waits until the receiver acknowledged that
 * every frame of the round was delivered. */
int ms_sender_round_end(ms_sender *s, uint32_t round);
/* Send END, wait for the receiver's final ack (unless oneway) and check
 * that it delivered exactly what was sent (MS_ERR_VERIFY if not); then the
 * stats are complete (stats.verified set). */
int ms_sender_finish(ms_sender *s);
/* Stop the session and send ABORT with a reason (best effort) on every
 * channel; later calls return MS_ERR_ABORTED. ms_sender_free of an
 * unfinished sender does this itself. */
void ms_sender_abort(ms_sender *s, const char *reason);
const ms_stats *ms_sender_stats(const ms_sender *s);
/* Measured wire rate (bytes/s, smoothed) for policies and `auto`. */
double ms_sender_link_rate(const ms_sender *s);
/* The `auto` chain's choices so far; false (and *out untouched) when the
 * chain is not auto. */
bool ms_sender_auto_stats(const ms_sender *s, ms_auto_stats *out);
void ms_sender_free(ms_sender *s);

typedef struct ms_receiver_config {
    ms_session_config session; /* chain/page_size come from the hello */
    uint64_t max_image_bytes;  /* bound for image sinks */
} ms_receiver_config;

/* Serve one session on already-accepted, already-handshaken connections
 * (keys: one per channel, as ms_accepted has them); returns after END
 * (MS_OK) or the first error, which is also sent to the sender as an ABORT.
 * Does not close the connections. Every frame's content hash, the round
 * barriers and the END totals are checked before MS_OK; `stats` (may be
 * NULL) must be zero-initialised or previously used with ms_stats_free. */
int ms_receiver_run(const ms_session_config *cfg, const ms_hello *hello,
                    ms_conn **conns, const ms_session_keys *keys, unsigned nconns,
                    const ms_sink_ops *sink, void *sink_ctx, ms_stats *stats);

/* Accept connections on `l` until one full session (all channels of one
 * session id) has shaken hands. Connections that fail (wrong key, bad
 * hello, version) are logged, closed, and the wait goes on; stops with
 * MS_ERR_TIMEOUT after timeout_ms without a complete session (0: forever).
 * Each hello must arrive within min(timeout, 5 s), so a silent intruder
 * holds the others up only that long. A listener that is not loopback_only
 * refuses (MS_ERR_INVAL) to serve without cfg->key unless cfg->insecure.
 * Channels of other sessions still incomplete when one completes are
 * dropped: serve concurrent senders with one listener each. */
typedef struct ms_accepted {
    ms_hello hello;           /* the sender's hello of channel 0 */
    ms_conn **conns;          /* channels in index order */
    ms_session_keys *keys;    /* per channel */
    unsigned nconns;
} ms_accepted;
int ms_accept_session(ms_listener *l, const ms_session_config *cfg, uint64_t timeout_ms,
                      ms_accepted *out);
void ms_accepted_free(ms_accepted *a);

/* Serve a session that arrives on one connection alone (a recorded stream
 * file, a pipe): server handshake, then ms_receiver_run. The sender's hello
 * is stored in *hello when non-NULL. */
int ms_receive_stream(ms_conn *c, const ms_session_config *cfg, const ms_sink_ops *sink,
                      void *sink_ctx, ms_stats *stats, ms_hello *hello);

#ifdef __cplusplus
}
#endif
#endif
