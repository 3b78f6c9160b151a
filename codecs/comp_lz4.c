/* `lz4[:ACCEL]`: LZ4 block format, one block per frame. The compression
 * state (16 KiB) lives in the thread's codec context so no call allocates. */
#include "codecs/codecs.h"

#include <limits.h>
#include <lz4.h>
#include <stdlib.h>

static void *lz4_ctx_new(void) { return malloc((size_t)LZ4_sizeofState()); }

static void lz4_ctx_free(void *ctx) { free(ctx); }

static size_t lz4_bound(size_t src_len)
{
    if (src_len > LZ4_MAX_INPUT_SIZE)
        return 0; /* compress refuses it anyway */
    return (size_t)LZ4_compressBound((int)src_len);
}

static int lz4_compress(void *ctx, int level, const void *src, size_t src_len, void *dst,
                        size_t dst_cap, size_t *out_len)
{
    if (src_len > LZ4_MAX_INPUT_SIZE)
        return ms_error(MS_ERR_LIMIT, "lz4: block of %zu bytes exceeds the LZ4 limit of %d", src_len,
                        LZ4_MAX_INPUT_SIZE);
    int cap = dst_cap > INT_MAX ? INT_MAX : (int)dst_cap;
    int n = LZ4_compress_fast_extState(ctx, src, dst, (int)src_len, cap, level);
    if (n <= 0 && src_len)
        return ms_error(MS_ERR_LIMIT, "lz4: %zu bytes do not compress into %zu", src_len, dst_cap);
    *out_len = (size_t)n;
    return MS_OK;
}

static int lz4_decompress(void *ctx, const void *src, size_t src_len, void *dst, size_t dst_len)
{
    (void)ctx;
    if (src_len > INT_MAX || dst_len > INT_MAX)
        return ms_error(MS_ERR_CORRUPT, "lz4: block of %zu bytes (to %zu) exceeds the LZ4 limits",
                        src_len, dst_len);
    int n = LZ4_decompress_safe(src, dst, (int)src_len, (int)dst_len);
    if (n < 0)
        return ms_error(MS_ERR_CORRUPT, "lz4: malformed block of %zu bytes (error at input byte %d)",
                        src_len, -n - 1);
    if ((size_t)n != dst_len)
        return ms_error(MS_ERR_CORRUPT, "lz4: block decodes to %d bytes, expected exactly %zu", n,
                        dst_len);
    return MS_OK;
}

const ms_compressor_ops ms_comp_lz4_ops = {
    .name = "lz4",
    .id = MS_COMP_LZ4,
    .default_level = 1,
    .min_level = 1,
    .max_level = 65537, /* LZ4_ACCELERATION_MAX; chains clip it to 127 */
    .ctx_new = lz4_ctx_new,
    .ctx_free = lz4_ctx_free,
    .bound = lz4_bound,
    .compress = lz4_compress,
    .decompress = lz4_decompress,
};
