/* libFuzzer target for the block compressors.
 * Byte 0: compressor (none, lz4, zstd) and mode; bytes 1-2: the decoded
 * length the frame claims (little-endian); the rest: a block.
 *  - decode: ms_decompress must produce exactly that many bytes or refuse;
 *  - round trip: the block is compressed and must decompress to itself. */
#include <stdlib.h>
#include <string.h>

#include "codecs/codecs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static ms_codec_ctx *ctx;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    if (!ctx && !(ctx = ms_codec_ctx_new()))
        abort();
    ms_chain c = {.comp = (uint8_t)(data[0] % MS_COMP_COUNT)};
    c.level = c.comp == MS_COMP_NONE ? 0 : (int8_t)(1 + (data[0] >> 3) % 3);
    size_t dst_len = ms_get_le16(data + 1);
    const uint8_t *src = data + 3;
    size_t src_len = size - 3;
    if (data[0] & 4) {
        size_t cap = ms_compress_bound(&c, src_len), out;
        uint8_t *comp = malloc(cap ? cap : 1), *back = malloc(src_len ? src_len : 1);
        if (ms_compress(ctx, &c, src, src_len, comp, cap, &out) != MS_OK)
            abort();
        if (ms_decompress(ctx, &c, comp, out, back, src_len) != MS_OK || memcmp(back, src, src_len))
            abort();
        free(comp);
        free(back);
        return 0;
    }
    /* Exact-size copies so any read or write outside them is caught. */
    uint8_t *in = malloc(src_len ? src_len : 1), *dst = malloc(dst_len ? dst_len : 1);
    memcpy(in, src, src_len);
    int rc = ms_decompress(ctx, &c, in, src_len, dst, dst_len);
    if (rc != MS_OK && rc != MS_ERR_CORRUPT)
        abort();
    free(in);
    free(dst);
    return 0;
}
