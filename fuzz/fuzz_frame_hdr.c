/* libFuzzer target: the 56-byte frame header parser. A header it accepts
 * must pack back to exactly the same bytes (every byte is a field or the
 * check), and the accepted fields must respect the documented limits. */
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "stream/stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t in[MS_FRAME_HDR_SIZE], out[MS_FRAME_HDR_SIZE];
    ms_frame_hdr h;

    if (size < MS_FRAME_HDR_SIZE)
        return 0;
    memcpy(in, data, sizeof in);
    if (size > MS_FRAME_HDR_SIZE && (data[MS_FRAME_HDR_SIZE] & 1))
        ms_put_le32(in + 52, XXH32(in, 52, 0));
    if (ms_frame_hdr_unpack(in, &h) != MS_OK) {
        if (!ms_last_error()[0])
            abort(); /* every refusal must say why */
        return 0;
    }
    if (h.type < MS_FRAME_PAGES || h.type > MS_FRAME_TYPE_MAX || h.page_count > MS_MAX_FRAME_PAGES ||
        h.raw_len > MS_MAX_FRAME_BODY || h.enc_len > MS_MAX_FRAME_BODY || h.stage_len > MS_MAX_FRAME_BODY)
        abort();
    ms_frame_hdr_pack(&h, out);
    if (memcmp(in, out, sizeof in))
        abort();
    return 0;
}
