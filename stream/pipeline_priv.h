/* Private to the stream pipelines (sender.c, receiver.c, accept.c): bodies
 * of the control frames and the rules both ends share. Not installed.
 *
 * Frame bodies (before sealing; see docs/wire-format.md for the header):
 *   PAGES      compressed( pfn list (ms_pfns_encode) || page section
 *              (ms_page_coder_encode) ); stage_len is the uncompressed size,
 *              raw_len = page_count * page_size, hash over pfns + pages.
 *   OPAQUE     compressed( bytes ); raw_len = stage_len, hash over bytes.
 *   ROUND_END  le16 nchannels, then nchannels x le64: frames sent on each
 *              channel since the previous ROUND_END (this one excluded).
 *   END        le64 data frames, le64 pages, le64 raw bytes, le64 stream
 *              digest (see ms_stream_digest below) of the whole session.
 *   PING       empty.
 *   ABORT      the reason, UTF-8, at most MS_ABORT_MAX bytes, no NUL.
 *   ACK        u8 kind (1 round, 2 end), 3 zero bytes, le32 round, le64
 *              data frames delivered, le64 stream digest so far.
 * Control frames carry codec 0 and raw_len = stage_len = body length.
 *
 * Channels: frame seq s travels on channel s % channels (strict round
 * robin), so a receiver knows where every frame must come from and a
 * missing frame is detected by the reader of its channel at once. ABORT is
 * out of band: seq MS_ABORT_SEQ on any channel. The receiver answers (ACK,
 * PING, ABORT) only on channel 0 with its own sequence numbers from 0. */
#ifndef MS_PIPELINE_PRIV_H
#define MS_PIPELINE_PRIV_H

/* XXH3 states live on the stack and are copied to read a running digest. */
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "stream/stream.h"

#define MS_ABORT_SEQ UINT64_MAX
#define MS_ABORT_MAX 400u
#define MS_CTRL_BODY_MAX 4096u /* no control body is longer (256 channels x 8 + 2) */
#define MS_ACK_ROUND 1u
#define MS_ACK_END 2u
#define MS_ACK_SIZE 24u
#define MS_END_SIZE 32u

static inline uint64_t ms_effective_timeout(const ms_session_config *cfg)
{
    return cfg->timeout_ms ? cfg->timeout_ms : MS_DEFAULT_TIMEOUT_MS;
}

/* Idle time after which a side sends a PING so the peer's no-progress
 * deadline never fires on a healthy but quiet session. */
static inline uint64_t ms_ping_interval_ns(uint64_t timeout_ms)
{
    uint64_t ms = timeout_ms / 3;
    return (ms ? ms : 1) * 1000000ull;
}

/* Stream digest: XXH3-64 over the content hashes (little-endian u64) of the
 * PAGES and OPAQUE frames in sequence order. Both ends compute it, so the
 * sender learns from the END ack that the receiver took in exactly what was
 * sent. */
static inline void ms_stream_digest_add(XXH3_state_t *st, uint64_t frame_hash)
{
    uint8_t le[8];
    ms_put_le64(le, frame_hash);
    XXH3_64bits_update(st, le, sizeof le);
}

#endif
