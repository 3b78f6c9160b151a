/* libFuzzer target: the delta-coded pfn list decoder. Input: 2 bytes of
 * count (mod MS_MAX_FRAME_PAGES + 1), then the encoded list. A decoded list
 * must hold only pfns below MS_PFN_LIMIT, consume no more than it was
 * given, and survive an encode/decode round trip. */
#include <stdlib.h>
#include <string.h>

#include "stream/stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint64_t pfns[MS_MAX_FRAME_PAGES], again[MS_MAX_FRAME_PAGES];
    ms_buf b = {0};
    size_t count;
    long used;

    if (size < 2)
        return 0;
    count = ms_get_le16(data) % (MS_MAX_FRAME_PAGES + 1);
    data += 2;
    size -= 2;
    used = ms_pfns_decode(data, size, pfns, count);
    if (used < 0) {
        if ((used != MS_ERR_CORRUPT && used != MS_ERR_TRUNCATED) || !ms_last_error()[0])
            abort();
        return 0;
    }
    if ((size_t)used > size)
        abort();
    for (size_t i = 0; i < count; i++)
        if (pfns[i] >= MS_PFN_LIMIT)
            abort();
    if (ms_pfns_encode(pfns, count, &b) != MS_OK)
        abort();
    /* Our encoder writes minimal varints, so it is never longer. */
    if (b.len > (size_t)used || ms_pfns_decode(b.data, b.len, again, count) != (long)b.len ||
        memcmp(pfns, again, count * sizeof *pfns))
        abort();
    ms_buf_free(&b);
    return 0;
}
