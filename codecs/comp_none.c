/* `none`: the block goes on the wire as it is. */
#include "codecs/codecs.h"

#include <string.h>

static size_t none_bound(size_t src_len) { return src_len; }

static int none_compress(void *ctx, int level, const void *src, size_t src_len, void *dst,
                         size_t dst_cap, size_t *out_len)
{
    (void)ctx;
    (void)level;
    if (src_len > dst_cap)
        return ms_error(MS_ERR_LIMIT, "none: %zu bytes do not fit in %zu", src_len, dst_cap);
    memcpy(dst, src, src_len);
    *out_len = src_len;
    return MS_OK;
}

static int none_decompress(void *ctx, const void *src, size_t src_len, void *dst, size_t dst_len)
{
    (void)ctx;
    if (src_len != dst_len)
        return ms_error(MS_ERR_CORRUPT, "none: block is %zu bytes, expected exactly %zu", src_len,
                        dst_len);
    memcpy(dst, src, src_len);
    return MS_OK;
}

const ms_compressor_ops ms_comp_none_ops = {
    .name = "none",
    .id = MS_COMP_NONE,
    .bound = none_bound,
    .compress = none_compress,
    .decompress = none_decompress,
};
