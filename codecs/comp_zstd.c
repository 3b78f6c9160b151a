/* `zstd:LEVEL`: one zstd frame per block. Both contexts are kept per
 * thread: creating a ZSTD_CCtx costs more than compressing a small frame. */
#include "codecs/codecs.h"

#include <stdlib.h>
#include <zstd.h>
#include <zstd_errors.h>

typedef struct zstd_state {
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
} zstd_state;

static void zstd_ctx_free(void *ctx)
{
    zstd_state *z = ctx;
    if (!z)
        return;
    ZSTD_freeCCtx(z->cctx);
    ZSTD_freeDCtx(z->dctx);
    free(z);
}

static void *zstd_ctx_new(void)
{
    zstd_state *z = calloc(1, sizeof *z);
    if (!z)
        return NULL;
    z->cctx = ZSTD_createCCtx();
    z->dctx = ZSTD_createDCtx();
    if (!z->cctx || !z->dctx) {
        zstd_ctx_free(z);
        return NULL;
    }
    return z;
}

static size_t zstd_bound(size_t src_len) { return ZSTD_compressBound(src_len); }

static int zstd_compress(void *ctx, int level, const void *src, size_t src_len, void *dst,
                         size_t dst_cap, size_t *out_len)
{
    zstd_state *z = ctx;
    size_t n = ZSTD_compressCCtx(z->cctx, dst, dst_cap, src, src_len, level);
    if (ZSTD_isError(n)) {
        int code = ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall ? MS_ERR_LIMIT : MS_ERR_INVAL;
        return ms_error(code, "zstd: compressing %zu bytes at level %d: %s", src_len, level,
                        ZSTD_getErrorName(n));
    }
    *out_len = n;
    return MS_OK;
}

static int zstd_decompress(void *ctx, const void *src, size_t src_len, void *dst, size_t dst_len)
{
    zstd_state *z = ctx;
    size_t n = ZSTD_decompressDCtx(z->dctx, dst, dst_len, src, src_len);
    if (ZSTD_isError(n))
        return ms_error(MS_ERR_CORRUPT, "zstd: malformed block of %zu bytes: %s", src_len,
                        ZSTD_getErrorName(n));
    if (n != dst_len)
        return ms_error(MS_ERR_CORRUPT, "zstd: block decodes to %zu bytes, expected exactly %zu", n,
                        dst_len);
    return MS_OK;
}

const ms_compressor_ops ms_comp_zstd_ops = {
    .name = "zstd",
    .id = MS_COMP_ZSTD,
    .default_level = 3,
    .min_level = 1,
    .max_level = 19,
    .ctx_new = zstd_ctx_new,
    .ctx_free = zstd_ctx_free,
    .bound = zstd_bound,
    .compress = zstd_compress,
    .decompress = zstd_decompress,
};
