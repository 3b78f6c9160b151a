/* Compressor registry and the per-thread codec context. A new compressor is
 * one file with its ops table plus one line in `registry` below. */
#include "codecs/codecs.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

extern const ms_compressor_ops ms_comp_none_ops;
extern const ms_compressor_ops ms_comp_lz4_ops;
extern const ms_compressor_ops ms_comp_zstd_ops;

/* Indexed by enum ms_compressor_id: the id is what travels on the wire. */
static const ms_compressor_ops *const registry[MS_COMP_COUNT] = {
    [MS_COMP_NONE] = &ms_comp_none_ops,
    [MS_COMP_LZ4] = &ms_comp_lz4_ops,
    [MS_COMP_ZSTD] = &ms_comp_zstd_ops,
};

const ms_compressor_ops *ms_compressor_by_id(unsigned id)
{
    return id < MS_COMP_COUNT ? registry[id] : NULL;
}

const ms_compressor_ops *ms_compressor_by_name(const char *name)
{
    for (unsigned i = 0; i < MS_COMP_COUNT; i++)
        if (registry[i] && !strcasecmp(registry[i]->name, name))
            return registry[i];
    return NULL;
}

struct ms_codec_ctx {
    void *comp[MS_COMP_COUNT];
};

ms_codec_ctx *ms_codec_ctx_new(void)
{
    ms_codec_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        ms_error(MS_ERR_NOMEM, "cannot allocate a codec context");
    return ctx;
}

void ms_codec_ctx_free(ms_codec_ctx *ctx)
{
    if (!ctx)
        return;
    for (unsigned i = 0; i < MS_COMP_COUNT; i++)
        if (ctx->comp[i])
            registry[i]->ctx_free(ctx->comp[i]);
    free(ctx);
}

/* The compressor of a concrete chain and its context in `ctx`, created on
 * first use so a thread pays only for the compressors it runs. */
static int resolve(ms_codec_ctx *ctx, const ms_chain *c, const ms_compressor_ops **ops, void **state)
{
    if (c->is_auto)
        return ms_error(MS_ERR_INVAL, "the auto codec must pick a concrete compressor before use");
    *ops = ms_compressor_by_id(c->comp);
    if (!*ops)
        return ms_error(MS_ERR_INVAL, "unknown compressor id %u", c->comp);
    if (!(*ops)->ctx_new) {
        *state = NULL;
        return MS_OK;
    }
    if (!ctx->comp[c->comp]) {
        ctx->comp[c->comp] = (*ops)->ctx_new();
        if (!ctx->comp[c->comp])
            return ms_error(MS_ERR_NOMEM, "cannot create a %s context", (*ops)->name);
    }
    *state = ctx->comp[c->comp];
    return MS_OK;
}

size_t ms_compress_bound(const ms_chain *c, size_t src_len)
{
    const ms_compressor_ops *ops = ms_compressor_by_id(c->comp);
    /* auto may pick any compressor: size for the worst of them. */
    if (c->is_auto || !ops) {
        size_t worst = src_len;
        for (unsigned i = 0; i < MS_COMP_COUNT; i++) {
            size_t b = registry[i]->bound(src_len);
            if (b > worst)
                worst = b;
        }
        return worst;
    }
    return ops->bound(src_len);
}

int ms_compress(ms_codec_ctx *ctx, const ms_chain *c, const void *src, size_t src_len, void *dst,
                size_t dst_cap, size_t *out_len)
{
    const ms_compressor_ops *ops = NULL;
    void *state = NULL;
    int rc = resolve(ctx, c, &ops, &state);
    if (rc)
        return rc;
    return ops->compress(state, c->level, src, src_len, dst, dst_cap, out_len);
}

int ms_decompress(ms_codec_ctx *ctx, const ms_chain *c, const void *src, size_t src_len, void *dst,
                  size_t dst_len)
{
    const ms_compressor_ops *ops = NULL;
    void *state = NULL;
    int rc = resolve(ctx, c, &ops, &state);
    if (rc)
        return rc;
    return ops->decompress(state, src, src_len, dst, dst_len);
}
