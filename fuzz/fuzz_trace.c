/* libFuzzer target: the dirty-trace reader and player (sources/trace.c).
 * Any input must either be refused with an error or play back without
 * touching memory out of bounds or hanging. Inputs whose first byte is odd
 * get their checksums recomputed first (format: docs/trace-format.md), so
 * the fuzzer also reaches playback instead of stopping at checksums.
 * Links: sources_lib, common_lib, libxxhash. */
#include "sources/sources.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool skip_uleb(const uint8_t *b, size_t len, size_t *pos, uint64_t *v)
{
    size_t n = ms_uleb_get(b + *pos, len - *pos, v);
    *pos += n;
    return n != 0;
}

/* Rewrite the header and record checksums in place, as a writer would. */
static void reseal(uint8_t *b, size_t len)
{
    if (len < 38)
        return;
    size_t d = ms_get_le16(b + 32), pos = 34 + d;
    if (pos + 4 > len)
        return;
    ms_put_le32(b + pos, XXH32(b, pos, 0));
    pos += 4;
    for (uint32_t idx = 0; pos < len; idx++) {
        size_t start = pos;
        uint8_t type = b[pos++];
        uint64_t a, n;
        if (type != 0x01 && type != 0xFF)
            return;
        if (!skip_uleb(b, len, &pos, &a) || !skip_uleb(b, len, &pos, &n))
            return;
        for (uint64_t i = 0; type == 0x01 && i < n; i++)
            if (!skip_uleb(b, len, &pos, &a))
                return;
        if (pos + 4 > len)
            return;
        ms_put_le32(b + pos, XXH32(b + start, pos - start, idx));
        pos += 4;
        if (type == 0xFF)
            return;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    bool fix = data[0] & 1;
    data++, size--;
    /* A valid header may ask for up to 2^40 pages; the reader would then
     * allocate the bitmap for real. Keep inputs within the fuzzer's memory
     * limit by skipping those before parsing. */
    if (size >= 24 && ms_get_le64(data + 16) > (1u << 20))
        return 0;
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    if (fix)
        reseal(buf, size);
    ms_trace_opts o = {.loop = size & 1, .seed = size};
    ms_page_source *s = NULL;
    int rc = ms_trace_source_open_mem(buf, size, &o, &s);
    free(buf);
    if (rc != MS_OK)
        return 0;
    uint64_t *bm = calloc(ms_bitmap_words(s->npages), 8);
    uint8_t *page = malloc(s->page_size);
    if (bm && page && ms_source_start(s) == MS_OK) {
        const double steps[] = {0.0, 1e-9, 1e-6, 0.01, 0.5, 3.0, 1e3, 1e9};
        for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
            if (s->ops->advance(s, steps[i]) != MS_OK || ms_source_dirty(s, bm) != MS_OK)
                break;
            uint64_t idx = s->npages - 1;
            if (ms_source_read(s, &idx, 1, page) != MS_OK)
                break;
        }
    }
    free(bm);
    free(page);
    ms_source_destroy(s);
    return 0;
}
