/* Frame header, content hash and PFN list coding: the parts of the wire
 * format every frame goes through. Layout: docs/wire-format.md. */
#include "stream/stream.h"

/* For XXH3_state_t on the stack: the state layout comes from the same
 * libxxhash package as the library. */
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>
/* Debian's libxxhash is built for baseline x86-64 (SSE2: 7-8 GB/s here);
 * its dispatching entry points pick AVX2 at run time (26 GB/s), same
 * output. Every page byte goes through ms_content_hash on both sides of a
 * session, so this matters. */
#if defined(__x86_64__) && __has_include(<xxh_x86dispatch.h>)
#include <xxh_x86dispatch.h>
#endif

/* Byte offsets inside the 56-byte header. */
enum {
    OFF_MAGIC = 0,
    OFF_TYPE = 4,
    OFF_FLAGS = 5,
    OFF_CHANNEL = 6,
    OFF_SEQ = 8,
    OFF_ROUND = 16,
    OFF_FRAGMENT = 20,
    OFF_PAGE_COUNT = 24,
    OFF_CODEC = 28,
    OFF_RAW_LEN = 32,
    OFF_ENC_LEN = 36,
    OFF_HASH = 40,
    OFF_STAGE_LEN = 48,
    OFF_CHECK = 52,
};

static uint32_t header_check(const uint8_t *p) { return XXH32(p, OFF_CHECK, 0); }

void ms_frame_hdr_pack(const ms_frame_hdr *h, uint8_t out[MS_FRAME_HDR_SIZE])
{
    ms_put_le32(out + OFF_MAGIC, MS_FRAME_MAGIC);
    out[OFF_TYPE] = h->type;
    out[OFF_FLAGS] = h->flags;
    ms_put_le16(out + OFF_CHANNEL, h->channel);
    ms_put_le64(out + OFF_SEQ, h->seq);
    ms_put_le32(out + OFF_ROUND, h->round);
    ms_put_le32(out + OFF_FRAGMENT, h->fragment);
    ms_put_le32(out + OFF_PAGE_COUNT, h->page_count);
    ms_put_le32(out + OFF_CODEC, h->codec);
    ms_put_le32(out + OFF_RAW_LEN, h->raw_len);
    ms_put_le32(out + OFF_ENC_LEN, h->enc_len);
    ms_put_le64(out + OFF_HASH, h->hash);
    ms_put_le32(out + OFF_STAGE_LEN, h->stage_len);
    ms_put_le32(out + OFF_CHECK, header_check(out));
}

static int check_len(uint64_t seq, const char *field, uint32_t v)
{
    if (v > MS_MAX_FRAME_BODY)
        return ms_error(MS_ERR_CORRUPT, "frame %llu: %s %u exceeds limit %u",
                        (unsigned long long)seq, field, v, MS_MAX_FRAME_BODY);
    return MS_OK;
}

/* Checks that need only the header; the receiver adds the ones that need
 * session state (page size, chain, sealing, sequence order). */
static int check_fields(const ms_frame_hdr *h)
{
    unsigned long long seq = (unsigned long long)h->seq;
    int rc;

    if (h->type < MS_FRAME_PAGES || h->type > MS_FRAME_TYPE_MAX)
        return ms_error(MS_ERR_CORRUPT, "frame %llu: unknown frame type %u", seq, h->type);
    if (h->flags & ~MS_FRAME_F_SEALED)
        return ms_error(MS_ERR_CORRUPT, "frame %llu: unknown flag bits 0x%02x", seq,
                        h->flags & ~MS_FRAME_F_SEALED);
    if (h->page_count > MS_MAX_FRAME_PAGES)
        return ms_error(MS_ERR_CORRUPT, "frame %llu: page count %u exceeds limit %u", seq,
                        h->page_count, MS_MAX_FRAME_PAGES);
    if (h->type == MS_FRAME_PAGES && h->page_count == 0)
        return ms_error(MS_ERR_CORRUPT, "frame %llu: PAGES frame with page count 0", seq);
    if (h->type != MS_FRAME_PAGES && h->page_count != 0)
        return ms_error(MS_ERR_CORRUPT, "frame %llu: frame type %u carries page count %u (only PAGES may)",
                        seq, h->type, h->page_count);
    if ((rc = check_len(h->seq, "raw length", h->raw_len)) < 0 ||
        (rc = check_len(h->seq, "encoded length", h->enc_len)) < 0 ||
        (rc = check_len(h->seq, "stage length", h->stage_len)) < 0)
        return rc;
    if ((h->flags & MS_FRAME_F_SEALED) && h->enc_len < MS_SEAL_TAG_SIZE)
        return ms_error(MS_ERR_CORRUPT, "frame %llu: sealed frame with encoded length %u, below the %u-byte tag",
                        seq, h->enc_len, MS_SEAL_TAG_SIZE);
    return MS_OK;
}

int ms_frame_hdr_unpack(const uint8_t in[MS_FRAME_HDR_SIZE], ms_frame_hdr *h)
{
    uint32_t magic = ms_get_le32(in + OFF_MAGIC);
    uint32_t want = ms_get_le32(in + OFF_CHECK), got;

    if (magic != MS_FRAME_MAGIC)
        return ms_error(MS_ERR_CORRUPT, "frame header: bad magic 0x%08x (expected 0x%08x)",
                        magic, MS_FRAME_MAGIC);
    got = header_check(in);
    if (got != want)
        return ms_error(MS_ERR_CORRUPT, "frame header: header check 0x%08x does not match its content (0x%08x)",
                        want, got);
    h->type = in[OFF_TYPE];
    h->flags = in[OFF_FLAGS];
    h->channel = ms_get_le16(in + OFF_CHANNEL);
    h->seq = ms_get_le64(in + OFF_SEQ);
    h->round = ms_get_le32(in + OFF_ROUND);
    h->fragment = ms_get_le32(in + OFF_FRAGMENT);
    h->page_count = ms_get_le32(in + OFF_PAGE_COUNT);
    h->codec = ms_get_le32(in + OFF_CODEC);
    h->raw_len = ms_get_le32(in + OFF_RAW_LEN);
    h->enc_len = ms_get_le32(in + OFF_ENC_LEN);
    h->hash = ms_get_le64(in + OFF_HASH);
    h->stage_len = ms_get_le32(in + OFF_STAGE_LEN);
    return check_fields(h);
}

uint64_t ms_content_hash(const uint64_t *pfns, size_t count, const void *data, size_t len)
{
    XXH3_state_t st;
    uint8_t le[256 * 8];

    XXH3_64bits_reset(&st);
    /* PFNs are hashed in their wire byte order so both ends agree whatever
     * the host's endianness; converting in chunks keeps the stack small. */
    while (count) {
        size_t n = count < 256 ? count : 256;
        for (size_t i = 0; i < n; i++)
            ms_put_le64(le + 8 * i, pfns[i]);
        XXH3_64bits_update(&st, le, 8 * n);
        pfns += n;
        count -= n;
    }
    if (len)
        XXH3_64bits_update(&st, data, len);
    return XXH3_64bits_digest(&st);
}

int ms_pfns_encode(const uint64_t *pfns, size_t count, ms_buf *out)
{
    uint64_t prev = 0;
    int rc = ms_buf_reserve(out, count * 10);

    if (rc < 0)
        return rc;
    for (size_t i = 0; i < count; i++) {
        if (pfns[i] >= MS_PFN_LIMIT)
            return ms_error(MS_ERR_INVAL, "pfn %llu (index %zu) is beyond the 2^52 pfn limit",
                            (unsigned long long)pfns[i], i);
        /* Both pfns are below 2^52, so the difference fits an int64. */
        int64_t d = (int64_t)pfns[i] - (int64_t)prev;
        out->len += ms_uleb_put(out->data + out->len, ms_zigzag(d));
        prev = pfns[i];
    }
    return MS_OK;
}

/* ms_uleb_get gives 0 both for a varint cut short and for one that is too
 * long; the caller's message should say which. */
static bool uleb_is_truncated(const uint8_t *in, size_t len)
{
    for (size_t i = 0; i < len && i < 10; i++)
        if (!(in[i] & 0x80))
            return false;
    return len < 10;
}

long ms_pfns_decode(const uint8_t *in, size_t len, uint64_t *pfns, size_t count)
{
    size_t pos = 0;
    int64_t prev = 0;

    for (size_t i = 0; i < count; i++) {
        uint64_t z;
        int64_t pfn;
        size_t n = ms_uleb_get(in + pos, len - pos, &z);
        if (n == 0) {
            if (uleb_is_truncated(in + pos, len - pos))
                return ms_error(MS_ERR_TRUNCATED, "pfn list: ends after %zu of %zu pfns (%zu bytes)",
                                i, count, len);
            return ms_error(MS_ERR_CORRUPT, "pfn list: pfn %zu at byte %zu is an overlong varint", i, pos);
        }
        if (__builtin_add_overflow(prev, ms_unzigzag(z), &pfn) || pfn < 0 ||
            (uint64_t)pfn >= MS_PFN_LIMIT)
            return ms_error(MS_ERR_CORRUPT, "pfn list: pfn %zu at byte %zu is outside [0, 2^52)", i, pos);
        pfns[i] = (uint64_t)pfn;
        prev = pfn;
        pos += n;
    }
    return (long)pos;
}
