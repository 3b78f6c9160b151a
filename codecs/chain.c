/* Chain names ("zero,delta,lz4:1") and wire ids. */
#include "codecs/codecs.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CHAIN_SYNTAX "zero, dedup, delta, then one of none, lz4[:ACCEL], zstd[:LEVEL], auto"

static const struct {
    const char *name;
    uint32_t bit;
} stage_names[] = {
    /* Listed in the fixed order the page coder applies them. */
    {"zero", MS_STAGE_ZERO},
    {"dedup", MS_STAGE_DEDUP},
    {"delta", MS_STAGE_DELTA},
};
#define NSTAGES (sizeof stage_names / sizeof stage_names[0])

/* Parse the ":LEVEL" suffix of a compressor token against its range. */
static int parse_level(const char *text, const char *tok, const char *arg,
                       const ms_compressor_ops *ops, int8_t *level)
{
    if (!arg) {
        *level = (int8_t)ops->default_level;
        return MS_OK;
    }
    if (!ops->max_level)
        return ms_error(MS_ERR_INVAL, "chain \"%s\": \"%s\" takes no level", text, tok);
    if (!*arg)
        return ms_error(MS_ERR_INVAL, "chain \"%s\": \"%s\" has an empty level after ':'", text, tok);
    char *end;
    errno = 0;
    long v = strtol(arg, &end, 10);
    bool digits = isdigit((unsigned char)arg[0]) != 0;
    if (!digits || *end || errno || v < ops->min_level || v > ops->max_level)
        return ms_error(MS_ERR_INVAL, "chain \"%s\": bad level in \"%s\" (%s takes %d..%d)", text, tok,
                        ops->name, ops->min_level, ops->max_level);
    /* lz4 accepts accelerations up to 65537, but they gain nothing past a
     * few dozen and the level travels in one byte: clip to 127. */
    *level = (int8_t)(v > 127 ? 127 : v);
    return MS_OK;
}

static int parse_token(const char *text, const char *tok, ms_chain *c, bool *have_comp)
{
    for (size_t i = 0; i < NSTAGES; i++) {
        if (strcasecmp(tok, stage_names[i].name))
            continue;
        if (c->stages & stage_names[i].bit)
            return ms_error(MS_ERR_INVAL, "chain \"%s\": stage \"%s\" given twice", text, tok);
        c->stages |= stage_names[i].bit;
        return MS_OK;
    }
    char name[32];
    const char *colon = strchr(tok, ':');
    size_t nlen = colon ? (size_t)(colon - tok) : strlen(tok);
    if (nlen >= sizeof name)
        return ms_error(MS_ERR_INVAL, "chain \"%s\": unknown codec \"%s\" (expected %s)", text, tok,
                        CHAIN_SYNTAX);
    memcpy(name, tok, nlen);
    name[nlen] = 0;
    bool is_auto = !strcasecmp(name, "auto");
    const ms_compressor_ops *ops = is_auto ? NULL : ms_compressor_by_name(name);
    if (!ops && !is_auto)
        return ms_error(MS_ERR_INVAL, "chain \"%s\": unknown codec \"%s\" (expected %s)", text, tok,
                        CHAIN_SYNTAX);
    if (*have_comp)
        return ms_error(MS_ERR_INVAL, "chain \"%s\": second compressor \"%s\" (a chain has at most one)",
                        text, tok);
    *have_comp = true;
    if (is_auto) {
        if (colon)
            return ms_error(MS_ERR_INVAL, "chain \"%s\": \"%s\" takes no level", text, tok);
        c->is_auto = true;
        c->comp = MS_COMP_NONE;
        c->level = 0;
        return MS_OK;
    }
    c->comp = ops->id;
    return parse_level(text, tok, colon ? colon + 1 : NULL, ops, &c->level);
}

int ms_chain_parse(const char *text, ms_chain *out)
{
    if (!text)
        return ms_error(MS_ERR_INVAL, "codec chain missing");
    ms_chain c = {0};
    bool have_comp = false;
    bool any = false;
    const char *p = text;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        while (len && isspace((unsigned char)*p)) {
            p++;
            len--;
        }
        while (len && isspace((unsigned char)p[len - 1]))
            len--;
        char tok[64];
        if (!len)
            return ms_error(MS_ERR_INVAL, "chain \"%s\": empty name at offset %zu (expected %s)", text,
                            (size_t)(p - text), CHAIN_SYNTAX);
        if (len >= sizeof tok)
            return ms_error(MS_ERR_INVAL, "chain \"%s\": name at offset %zu is too long", text,
                            (size_t)(p - text));
        memcpy(tok, p, len);
        tok[len] = 0;
        int rc = parse_token(text, tok, &c, &have_comp);
        if (rc)
            return rc;
        any = true;
        if (!comma)
            break;
        p = comma + 1;
    }
    if (!any)
        return ms_error(MS_ERR_INVAL, "empty codec chain (expected %s)", CHAIN_SYNTAX);
    *out = c;
    return MS_OK;
}

int ms_chain_format(const ms_chain *c, char *buf, size_t n)
{
    char tmp[96];
    size_t len = 0;
    for (size_t i = 0; i < NSTAGES; i++)
        if (c->stages & stage_names[i].bit)
            len += (size_t)snprintf(tmp + len, sizeof tmp - len, "%s,", stage_names[i].name);
    const ms_compressor_ops *ops = ms_compressor_by_id(c->comp);
    if (c->is_auto)
        snprintf(tmp + len, sizeof tmp - len, "auto");
    else if (!ops)
        snprintf(tmp + len, sizeof tmp - len, "compressor%u", c->comp);
    else if (ops->max_level)
        snprintf(tmp + len, sizeof tmp - len, "%s:%d", ops->name, c->level);
    else
        snprintf(tmp + len, sizeof tmp - len, "%s", ops->name);
    return snprintf(buf, n, "%s", tmp);
}

uint32_t ms_chain_to_id(const ms_chain *c)
{
    uint32_t comp = c->is_auto ? MS_CHAIN_ID_AUTO : c->comp;
    return comp | (uint32_t)(uint8_t)c->level << 8 | (c->stages & 0xffu) << 16;
}

int ms_chain_from_id(uint32_t id, ms_chain *out)
{
    unsigned comp = id & 0xff, level = (id >> 8) & 0xff, stages = (id >> 16) & 0xff;
    const ms_compressor_ops *ops = ms_compressor_by_id(comp);
    if (id >> 24)
        return ms_error(MS_ERR_CORRUPT, "codec id 0x%08x: reserved byte 3 is not zero", id);
    if (stages & ~(MS_STAGE_ZERO | MS_STAGE_DELTA | MS_STAGE_DEDUP))
        return ms_error(MS_ERR_CORRUPT, "codec id 0x%08x: unknown stage bits 0x%02x", id, stages);
    if (!ops)
        return ms_error(MS_ERR_CORRUPT, "codec id 0x%08x: unknown compressor %u%s", id, comp,
                        comp == MS_CHAIN_ID_AUTO ? " (auto is not a concrete chain)" : "");
    int max_level = ops->max_level > 127 ? 127 : ops->max_level;
    if (ops->max_level ? (int)level < ops->min_level || (int)level > max_level : level != 0)
        return ms_error(MS_ERR_CORRUPT, "codec id 0x%08x: level %u out of range for %s", id, level,
                        ops->name);
    *out = (ms_chain){.stages = stages, .comp = (uint8_t)comp, .level = (int8_t)level};
    return MS_OK;
}
