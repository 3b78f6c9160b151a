/* model: synthetic dirtying workloads in virtual time (see sources.h). */
#include "sources/sources_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CHUNK_PAGES 512u /* hotspot locality: 2 MiB runs of consecutive ranks */

/* Zipf over ranks 1..n by rejection-inversion (Hörmann and Derflinger,
 * "Rejection-inversion to generate variates from monotone discrete
 * distributions", 1996): O(1) per sample without tables, so a 64 GiB model
 * costs no setup. */
typedef struct zipf {
    double s, h_x1, h_n, cut;
    uint64_t n;
} zipf;

/* expm1(x)/x and log1p(x)/x, continuous at 0. */
static double expm1_x(double x) { return fabs(x) > 1e-8 ? expm1(x) / x : 1.0 + x / 2.0; }
static double log1p_x(double x) { return fabs(x) > 1e-8 ? log1p(x) / x : 1.0 - x / 2.0; }
static double zipf_hfun(const zipf *z, double x) { return exp(-z->s * log(x)); }
/* H(x) = integral of x^-s, normalised so it is continuous in s at 1. */
static double zipf_H(const zipf *z, double x)
{
    double lx = log(x);
    return expm1_x((1.0 - z->s) * lx) * lx;
}
static double zipf_Hinv(const zipf *z, double y)
{
    double t = y * (1.0 - z->s);
    if (t < -1.0)
        t = -1.0; /* rounding guard: the domain of log1p */
    return exp(log1p_x(t) * y);
}

static void zipf_init(zipf *z, uint64_t n, double s)
{
    z->n = n;
    z->s = s;
    z->h_x1 = zipf_H(z, 1.5) - 1.0;
    z->h_n = zipf_H(z, (double)n + 0.5);
    z->cut = 2.0 - zipf_Hinv(z, zipf_H(z, 2.5) - zipf_hfun(z, 2.0));
}

static uint64_t zipf_sample(const zipf *z, uint64_t *rng) /* 1..n */
{
    for (;;) {
        double u = z->h_n + ms_src_unit(rng) * (z->h_x1 - z->h_n);
        double x = zipf_Hinv(z, u);
        double k = floor(x + 0.5);
        if (k < 1)
            k = 1;
        if (k > (double)z->n)
            k = (double)z->n;
        if (k - x <= z->cut || u >= zipf_H(z, k + 0.5) - zipf_hfun(z, k))
            return (uint64_t)k;
    }
}

typedef struct model {
    ms_model_opts o;
    uint64_t *pending;
    ms_src_versions vers;
    uint64_t rng;
    double carry;
    uint64_t sweep_pos;
    zipf z;
    double zipf_norm;     /* sum of k^-s, computed on first bulk use */
    uint32_t *chunk_perm; /* hotspot: rank chunk -> page chunk */
    uint64_t full_chunks;
    uint64_t hot_start, hot_len;
    bool paused;
    uint64_t writes;
} model;

static uint64_t hot_rank_to_page(const model *m, uint64_t rank0)
{
    uint64_t c = rank0 / CHUNK_PAGES;
    if (c >= m->full_chunks)
        return rank0; /* the partial tail chunk stays in place */
    return (uint64_t)m->chunk_perm[c] * CHUNK_PAGES + rank0 % CHUNK_PAGES;
}

static uint64_t pick_page(model *m)
{
    uint64_t n = m->o.npages;
    switch (m->o.kind) {
    case MS_MODEL_HOTSPOT:
        return hot_rank_to_page(m, zipf_sample(&m->z, &m->rng) - 1);
    case MS_MODEL_SWEEP: {
        uint64_t p = m->sweep_pos;
        m->sweep_pos = (p + 1) % n;
        return p;
    }
    case MS_MODEL_WWS:
        if (ms_src_unit(&m->rng) < m->o.hot_share)
            return m->hot_start + ms_src_below(&m->rng, m->hot_len);
        return ms_src_below(&m->rng, n);
    default:
        return ms_src_below(&m->rng, n);
    }
}

static void touch(model *m, uint64_t page)
{
    ms_bit_set(m->pending, page);
    ms_src_versions_bump(&m->vers, page);
}

/* Probability that one write lands on `page` (for the bulk path). */
static double write_prob(model *m, uint64_t page, uint64_t rank1)
{
    double n = (double)m->o.npages;
    switch (m->o.kind) {
    case MS_MODEL_HOTSPOT:
        return exp(-m->o.zipf_s * log((double)rank1)) / m->zipf_norm;
    case MS_MODEL_WWS: {
        double p = (1.0 - m->o.hot_share) / n;
        if (page >= m->hot_start && page < m->hot_start + m->hot_len)
            p += m->o.hot_share / (double)m->hot_len;
        return p;
    }
    default:
        return 1.0 / n;
    }
}

/* With as many writes as a quarter of the pages or more, drawing each
 * write costs more than deciding each page: page i is hit at least once
 * with probability 1 - (1 - q_i)^writes, drawn independently per page (the
 * Poisson approximation of the multinomial, exact in the limit). */
static void bulk_writes(model *m, uint64_t writes)
{
    uint64_t n = m->o.npages;
    if (m->o.kind == MS_MODEL_HOTSPOT && m->zipf_norm == 0) {
        double sum = 0;
        for (uint64_t k = n; k >= 1; k--) /* small terms first for accuracy */
            sum += exp(-m->o.zipf_s * log((double)k));
        m->zipf_norm = sum;
    }
    for (uint64_t r = 0; r < n; r++) {
        uint64_t page = m->o.kind == MS_MODEL_HOTSPOT ? hot_rank_to_page(m, r) : r;
        double q = write_prob(m, page, r + 1);
        double p = -expm1((double)writes * log1p(-q));
        if (ms_src_unit(&m->rng) < p)
            touch(m, page);
    }
}

static int model_advance(ms_page_source *s, double seconds)
{
    model *m = s->priv;
    if (!(seconds >= 0) || !isfinite(seconds))
        return ms_error(MS_ERR_INVAL, "model: advance by %g s", seconds);
    if (m->paused || m->o.rate == 0 || m->o.npages == 0)
        return MS_OK;
    double want = m->carry + m->o.rate * seconds;
    if (want > 1e15)
        return ms_error(MS_ERR_LIMIT, "model: %g page writes in one step", want);
    uint64_t writes = (uint64_t)want;
    m->carry = want - (double)writes;
    m->writes += writes;
    if (m->o.kind == MS_MODEL_SWEEP) {
        uint64_t todo = writes < m->o.npages ? writes : m->o.npages;
        for (uint64_t i = 0; i < todo; i++)
            touch(m, pick_page(m));
        m->sweep_pos = (m->sweep_pos + (writes - todo)) % m->o.npages;
    } else if (writes >= m->o.npages / 4 && writes > 1024) {
        bulk_writes(m, writes);
    } else {
        for (uint64_t i = 0; i < writes; i++)
            touch(m, pick_page(m));
    }
    return MS_OK;
}

static int model_start(ms_page_source *s)
{
    model *m = s->priv;
    memset(m->pending, 0, ms_bitmap_words(m->o.npages) * 8);
    return MS_OK;
}

static int model_dirty(ms_page_source *s, uint64_t *bm)
{
    model *m = s->priv;
    size_t nw = ms_bitmap_words(m->o.npages);
    for (size_t i = 0; i < nw; i++) {
        bm[i] |= m->pending[i];
        m->pending[i] = 0;
    }
    return MS_OK;
}

static int model_read(ms_page_source *s, const uint64_t *idx, size_t n, uint8_t *out)
{
    model *m = s->priv;
    return ms_src_versions_read(&m->vers, m->o.seed, m->o.npages, s->page_size, idx, n, out);
}

static int model_pause(ms_page_source *s)
{
    ((model *)s->priv)->paused = true;
    return MS_OK;
}

static int model_resume(ms_page_source *s)
{
    ((model *)s->priv)->paused = false;
    return MS_OK;
}

static void model_destroy(ms_page_source *s)
{
    model *m = s->priv;
    free(m->pending);
    free(m->vers.v);
    free(m->chunk_perm);
    free(m);
    free(s);
}

static const ms_page_source_ops model_ops = {
    .name = "model",
    .start = model_start,
    .dirty = model_dirty,
    .read = model_read,
    .pause = model_pause,
    .resume = model_resume,
    .advance = model_advance,
    .destroy = model_destroy,
};

static const char *const kind_names[] = {"uniform", "hotspot", "sweep", "wws"};

const char *ms_model_kind_name(int kind)
{
    return kind >= 0 && kind < 4 ? kind_names[kind] : "?";
}

static int check_opts(ms_model_opts *o)
{
    if (o->kind < 0 || o->kind > MS_MODEL_WWS)
        return ms_error(MS_ERR_INVAL, "model: unknown kind %d", o->kind);
    if (o->npages == 0 || o->npages > (1ull << 40))
        return ms_error(MS_ERR_INVAL, "model: %llu pages (need 1 .. 2^40)", (unsigned long long)o->npages);
    if (!(o->rate >= 0) || !isfinite(o->rate))
        return ms_error(MS_ERR_INVAL, "model: dirty rate %g pages/s", o->rate);
    if (o->zipf_s == 0)
        o->zipf_s = 1.0;
    if (o->hot_fraction == 0)
        o->hot_fraction = 0.1;
    if (o->hot_share == 0)
        o->hot_share = 0.9;
    if (!(o->zipf_s > 0 && o->zipf_s <= 10))
        return ms_error(MS_ERR_INVAL, "model: zipf exponent %g (need 0 < s <= 10)", o->zipf_s);
    if (!(o->hot_fraction > 0 && o->hot_fraction <= 1))
        return ms_error(MS_ERR_INVAL, "model: hot fraction %g (need 0 < f <= 1)", o->hot_fraction);
    if (!(o->hot_share >= 0 && o->hot_share <= 1))
        return ms_error(MS_ERR_INVAL, "model: hot share %g (need 0 <= f <= 1)", o->hot_share);
    return MS_OK;
}

static int layout(model *m)
{
    uint64_t rng = ms_src_mix64(m->o.seed ^ 0x6c61796f7574ull);
    m->full_chunks = m->o.npages / CHUNK_PAGES;
    if (m->o.kind == MS_MODEL_HOTSPOT && m->full_chunks > 0) {
        m->chunk_perm = malloc(m->full_chunks * sizeof *m->chunk_perm);
        if (!m->chunk_perm)
            return ms_error(MS_ERR_NOMEM, "model: chunk permutation");
        for (uint64_t i = 0; i < m->full_chunks; i++)
            m->chunk_perm[i] = (uint32_t)i;
        for (uint64_t i = m->full_chunks - 1; i > 0; i--) { /* Fisher-Yates */
            uint64_t j = ms_src_below(&rng, i + 1);
            uint32_t t = m->chunk_perm[i];
            m->chunk_perm[i] = m->chunk_perm[j];
            m->chunk_perm[j] = t;
        }
    }
    m->hot_len = (uint64_t)ceil(m->o.hot_fraction * (double)m->o.npages);
    if (m->hot_len < 1)
        m->hot_len = 1;
    if (m->hot_len > m->o.npages)
        m->hot_len = m->o.npages;
    uint64_t room = m->o.npages - m->hot_len;
    m->hot_start = room ? ms_src_below(&rng, room / CHUNK_PAGES + 1) * CHUNK_PAGES : 0;
    if (m->hot_start > room)
        m->hot_start = room;
    zipf_init(&m->z, m->o.npages, m->o.zipf_s);
    return MS_OK;
}

int ms_model_source_create(const ms_model_opts *opts, ms_page_source **out)
{
    *out = NULL;
    ms_model_opts o = *opts;
    int rc = check_opts(&o);
    if (rc)
        return rc;
    ms_page_source *s = calloc(1, sizeof *s);
    model *m = calloc(1, sizeof *m);
    if (!s || !m) {
        free(s);
        free(m);
        return ms_error(MS_ERR_NOMEM, "model: out of memory");
    }
    m->o = o;
    m->rng = ms_src_mix64(o.seed);
    s->ops = &model_ops;
    s->priv = m;
    s->npages = o.npages;
    s->page_size = MS_PAGE_SIZE;
    m->pending = calloc(ms_bitmap_words(o.npages), 8);
    rc = m->pending ? layout(m) : ms_error(MS_ERR_NOMEM, "model: bitmap of %llu pages",
                                           (unsigned long long)o.npages);
    if (rc) {
        model_destroy(s);
        return rc;
    }
    snprintf(s->desc, sizeof s->desc, "model %s: %llu MiB, %.0f pages/s", ms_model_kind_name(o.kind),
             (unsigned long long)(o.npages * MS_PAGE_SIZE >> 20), o.rate);
    *out = s;
    return MS_OK;
}

static int parse_double(const char *v, double *out)
{
    char *end;
    double d = strtod(v, &end);
    if (end == v)
        return -1;
    /* rate=50k style suffixes */
    if (*end == 'k' || *end == 'K')
        d *= 1e3, end++;
    else if (*end == 'M')
        d *= 1e6, end++;
    if (*end || !isfinite(d))
        return -1;
    *out = d;
    return 0;
}

static int parse_key(ms_model_opts *o, const char *key, const char *val)
{
    double d;
    uint64_t u;
    if (!strcmp(key, "size")) {
        if (ms_parse_size(val, &u) < 0 || u < MS_PAGE_SIZE)
            return -1;
        o->npages = u / MS_PAGE_SIZE;
        return 0;
    }
    if (!strcmp(key, "npages") || !strcmp(key, "seed")) {
        char *end;
        u = strtoull(val, &end, 0);
        if (*end || !*val)
            return -1;
        *(!strcmp(key, "seed") ? &o->seed : &o->npages) = u;
        return 0;
    }
    if (strcmp(key, "rate") && strcmp(key, "zipf") && strcmp(key, "hot") && strcmp(key, "share"))
        return -2;
    if (parse_double(val, &d) < 0)
        return -1;
    if (!strcmp(key, "rate"))
        o->rate = d;
    else if (!strcmp(key, "zipf"))
        o->zipf_s = d;
    else if (!strcmp(key, "hot"))
        o->hot_fraction = d;
    else if (!strcmp(key, "share"))
        o->hot_share = d;
    else
        return -2;
    return 0;
}

int ms_model_parse(const char *spec, ms_model_opts *o)
{
    memset(o, 0, sizeof *o);
    o->npages = (256ull << 20) / MS_PAGE_SIZE;
    char buf[512];
    if (!spec || strlen(spec) >= sizeof buf)
        return ms_error(MS_ERR_INVAL, "model: missing or overlong spec");
    strcpy(buf, spec);
    char *save = NULL;
    char *tok = strtok_r(buf, ",", &save);
    int kind = -1;
    for (int k = 0; tok && k < 4; k++)
        if (!strcasecmp(tok, kind_names[k]))
            kind = k;
    if (kind < 0)
        return ms_error(MS_ERR_INVAL, "model '%s': kind must be uniform, hotspot, sweep or wws", spec);
    o->kind = kind;
    while ((tok = strtok_r(NULL, ",", &save))) {
        char *eq = strchr(tok, '=');
        if (!eq)
            return ms_error(MS_ERR_INVAL, "model '%s': '%s' is not key=value", spec, tok);
        *eq = 0;
        int rc = parse_key(o, tok, eq + 1);
        if (rc == -2)
            return ms_error(MS_ERR_INVAL, "model '%s': unknown key '%s' (size, npages, rate, seed, zipf, hot, share)",
                            spec, tok);
        if (rc < 0)
            return ms_error(MS_ERR_INVAL, "model '%s': bad value '%s' for %s", spec, eq + 1, tok);
    }
    ms_model_opts tmp = *o;
    return check_opts(&tmp);
}
