/* Generator of spec-valid libxc streams, in the record orders Xen 4.17's
 * xg_sr_save.c writes:
 *
 *  PV:  headers, X86_PV_INFO, X86_CPUID_POLICY, X86_MSR_POLICY,
 *       STATIC_DATA_END, X86_PV_P2M_FRAMES, PAGE_DATA..., X86_TSC_INFO,
 *       SHARED_INFO, per vcpu {BASIC, EXTENDED, XSAVE, MSRS}, END
 *  HVM: headers, X86_CPUID_POLICY, X86_MSR_POLICY, STATIC_DATA_END,
 *       PAGE_DATA..., X86_TSC_INFO, HVM_CONTEXT, HVM_PARAMS, END
 *
 * (v2 streams have no STATIC_DATA_END and no policy records.) Memory goes
 * as in send_memory_live: a full pass over every pfn, then rounds of the
 * pages dirtied meanwhile, then the final paused round of the last dirty
 * set plus every page deferred earlier. A PV page table caught mid-update
 * is sent as XTAB and deferred to the final round, as libxc does when
 * normalising it fails with EAGAIN. */
#include <stdlib.h>
#include <string.h>

#include "xen/xen.h"

typedef struct gen {
    ms_xc_gen_config c;
    uint64_t pages;
    unsigned rounds, vcpus, batch;
    uint16_t *version;     /* times each pfn has been dirtied */
    uint8_t *mark;         /* 1: in the current round's send set */
    uint8_t *deferred;     /* 1: sent as XTAB, owed in the final round */
    uint64_t *entries;     /* one PAGE_DATA record being built */
    uint8_t *data;
    ms_xc_out_fn out;
    void *out_ctx;
} gen;

static uint64_t mix(uint64_t a, uint64_t b, uint64_t c)
{
    uint64_t z = a * 0x9E3779B97F4A7C15ull ^ (b + 0x632BE59BD9B4E019ull) * 0xBF58476D1CE4E5B9ull ^
                 (c + 0x8CB92BA72F3D8DD7ull) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    z *= 0xD6E8FEB86659FD93ull;
    z ^= z >> 32;
    z *= 0xD6E8FEB86659FD93ull;
    return z ^ (z >> 29);
}

/* ---- page types ------------------------------------------------------- */

static unsigned type_of(const gen *g, uint64_t pfn)
{
    uint64_t n = g->pages;
    if (g->c.dom_type == MS_XC_DOM_X86_HVM) {
        if (n > 0xc0 && pfn >= 0xa0 && pfn < 0xc0)
            return MS_XC_PT_XTAB; /* the VGA hole is not RAM */
        if (g->c.all_types && n >= 16 && pfn == n - 2)
            return MS_XC_PT_BROKEN;
        return MS_XC_PT_NOTAB;
    }
    if (n >= 16 && pfn >= 1 && pfn <= 8) {
        static const unsigned fixed[8] = {MS_XC_PT_L4TAB_PIN, MS_XC_PT_L4TAB, MS_XC_PT_L3TAB_PIN, MS_XC_PT_L3TAB,
                                          MS_XC_PT_L2TAB_PIN, MS_XC_PT_L2TAB, MS_XC_PT_L1TAB_PIN, MS_XC_PT_L1TAB};
        return fixed[pfn - 1];
    }
    if (g->c.all_types && n >= 16) {
        if (pfn == n - 2)
            return MS_XC_PT_BROKEN;
        if (pfn == n - 3)
            return MS_XC_PT_XALLOC;
        if (pfn >= n / 2 && pfn < n / 2 + 3)
            return MS_XC_PT_XTAB;
    }
    uint64_t h = mix(g->c.seed, pfn, 0x7e) % 1000;
    bool pin = mix(g->c.seed, pfn, 0x91) & 1;
    if (h < 15)
        return pin ? MS_XC_PT_L1TAB_PIN : MS_XC_PT_L1TAB;
    if (h < 19)
        return pin ? MS_XC_PT_L2TAB_PIN : MS_XC_PT_L2TAB;
    if (h < 20)
        return MS_XC_PT_L3TAB;
    return MS_XC_PT_NOTAB;
}

static bool is_pagetable(unsigned t) { return (t >= 1 && t <= 4) || (t >= 9 && t <= 12); }

/* ---- page contents ---------------------------------------------------- */

static void synthetic_page(const gen *g, uint64_t pfn, unsigned type, uint8_t *page)
{
    uint64_t kind = mix(g->c.seed, pfn, 1) % 100;
    memset(page, 0, MS_XC_PAGE_SIZE);
    if (is_pagetable(type) || (kind >= 55 && kind < 80)) {
        /* Page tables and pointer-rich structures: sparse 64-bit entries
         * with flags in the low bits and nearby frame numbers. */
        uint64_t base = mix(g->c.seed, pfn, 2) % (g->pages + 1);
        for (unsigned i = 0; i < 512; i++)
            if (mix(g->c.seed, pfn * 512 + i, 3) % 4 != 0)
                ms_put_le64(page + i * 8, ((base + i) << 12) | 0x67);
    } else if (kind < 35) {
        /* zero page */
    } else if (kind < 55) {
        static const char words[] = "the quick migration stream of a guest sends pages "
                                    "while the guest keeps dirtying memory; rounds converge ";
        size_t off = mix(g->c.seed, pfn, 4) % (sizeof(words) - 1);
        for (unsigned i = 0; i < MS_XC_PAGE_SIZE; i++)
            page[i] = (uint8_t)words[(off + i) % (sizeof(words) - 1)];
    } else if (kind < 90) {
        for (unsigned i = 0; i < MS_XC_PAGE_SIZE; i += 8)
            ms_put_le64(page + i, mix(g->c.seed, pfn, 5 + i));
    } else {
        for (unsigned i = 0; i < 64; i += 8)
            ms_put_le64(page + i, mix(g->c.seed, pfn, 6 + i) & 0xffff);
    }
}

static void fill_page(const gen *g, uint64_t pfn, unsigned type, uint8_t *page)
{
    if (g->c.image && g->c.image_len) {
        size_t npages = (g->c.image_len + MS_XC_PAGE_SIZE - 1) / MS_XC_PAGE_SIZE;
        size_t off = (size_t)(pfn % npages) * MS_XC_PAGE_SIZE;
        size_t n = g->c.image_len - off < MS_XC_PAGE_SIZE ? g->c.image_len - off : MS_XC_PAGE_SIZE;
        memcpy(page, g->c.image + off, n);
        memset(page + n, 0, MS_XC_PAGE_SIZE - n);
    } else {
        synthetic_page(g, pfn, type, page);
    }
    /* Each dirtying rewrites a small run: what real guests mostly do, and
     * what makes delta encoding worth having. */
    for (unsigned v = 1; v <= g->version[pfn]; v++) {
        uint64_t h = mix(g->c.seed, pfn, 0x1000 + v);
        size_t at = (size_t)(h % (MS_XC_PAGE_SIZE / 8 - 2)) * 8;
        ms_put_le64(page + at, h);
        ms_put_le64(page + at + 8, mix(h, v, 7));
    }
}

/* ---- output ------------------------------------------------------------ */

static int put(gen *g, const void *p, size_t n) { return n ? g->out(g->out_ctx, p, n) : MS_OK; }

static int put_record(gen *g, uint32_t type, const void *body, uint32_t len)
{
    static const uint8_t zeros[8];
    uint8_t rh[8];
    ms_put_le32(rh, type);
    ms_put_le32(rh + 4, len);
    int rc = put(g, rh, 8);
    if (!rc)
        rc = put(g, body, len);
    if (!rc)
        rc = put(g, zeros, ms_xc_padded(len) - len);
    return rc;
}

/* A record whose body is `len` bytes of seeded filler after a small head. */
static int put_blob(gen *g, uint32_t type, const void *head, uint32_t head_len, uint32_t len, uint64_t salt)
{
    uint8_t *b = calloc(1, len ? len : 1);
    if (!b)
        return ms_error(MS_ERR_NOMEM, "xcgen: out of memory");
    memcpy(b, head, head_len);
    for (uint32_t i = head_len; i + 8 <= len; i += 16)
        ms_put_le64(b + i, mix(g->c.seed, salt, i) & 0x0000ffff00ff00ffull);
    int rc = put_record(g, type, b, len);
    free(b);
    return rc;
}

static int put_headers(gen *g)
{
    uint8_t h[MS_XC_HDRS_SIZE] = {0};
    memset(h, 0xff, 8);
    memcpy(h + 8, "XENF", 4);
    h[15] = (uint8_t)g->c.version; /* big-endian u32 */
    ms_put_le32(h + 24, g->c.dom_type);
    ms_put_le16(h + 28, MS_XC_PAGE_SHIFT);
    ms_put_le32(h + 32, 4);
    ms_put_le32(h + 36, 17);
    return put(g, h, sizeof(h));
}

static int put_policies(gen *g)
{
    enum { LEAVES = 40, MSRS = 3 };
    uint8_t cpuid[LEAVES * 24], msr[MSRS * 16];
    for (unsigned i = 0; i < LEAVES; i++) {
        uint8_t *l = cpuid + i * 24;
        ms_put_le32(l, i < 32 ? i : 0x80000000u + (i - 32));
        ms_put_le32(l + 4, i == 7 || i == 13 ? 0 : 0xffffffffu); /* subleaf: none */
        for (unsigned r = 0; r < 4; r++)
            ms_put_le32(l + 8 + r * 4, (uint32_t)mix(g->c.seed, i, 0x200 + r));
    }
    static const uint32_t msr_idx[MSRS] = {0xce, 0x10a, 0x140};
    for (unsigned i = 0; i < MSRS; i++) {
        ms_put_le32(msr + i * 16, msr_idx[i]);
        ms_put_le32(msr + i * 16 + 4, 0);
        ms_put_le64(msr + i * 16 + 8, mix(g->c.seed, i, 0x300) & 0xffff);
    }
    int rc = put_record(g, MS_XC_REC_X86_CPUID_POLICY, cpuid, sizeof(cpuid));
    return rc ? rc : put_record(g, MS_XC_REC_X86_MSR_POLICY, msr, sizeof(msr));
}

static int put_static_data(gen *g)
{
    int rc = MS_OK;
    if (g->c.dom_type == MS_XC_DOM_X86_PV) {
        uint8_t info[8] = {8, 4, 0, 0, 0, 0, 0, 0}; /* 64-bit guest, 4 levels */
        rc = put_record(g, MS_XC_REC_X86_PV_INFO, info, sizeof(info));
    }
    if (!rc && g->c.version >= 3)
        rc = put_policies(g);
    if (!rc && g->c.version >= 3)
        rc = put_record(g, MS_XC_REC_STATIC_DATA_END, NULL, 0);
    return rc;
}

static int put_p2m_frames(gen *g)
{
    uint64_t frames = (g->pages + 511) / 512;
    uint32_t len = (uint32_t)(8 + frames * 8);
    uint8_t *b = malloc(len);
    if (!b)
        return ms_error(MS_ERR_NOMEM, "xcgen: out of memory");
    ms_put_le32(b, 0);
    ms_put_le32(b + 4, (uint32_t)(g->pages - 1));
    for (uint64_t i = 0; i < frames; i++)
        ms_put_le64(b + 8 + i * 8, (g->pages - 1 - i) % g->pages);
    int rc = put_record(g, MS_XC_REC_X86_PV_P2M_FRAMES, b, len);
    free(b);
    return rc;
}

static int put_tail(gen *g)
{
    uint8_t tsc[24] = {0};
    ms_put_le32(tsc, 0);
    ms_put_le32(tsc + 4, 2400000);
    ms_put_le64(tsc + 8, 123456789000ull + mix(g->c.seed, 0, 8) % 1000000);
    ms_put_le32(tsc + 16, 1);
    int rc = put_record(g, MS_XC_REC_X86_TSC_INFO, tsc, sizeof(tsc));
    if (rc)
        return rc;
    if (g->c.dom_type == MS_XC_DOM_X86_HVM) {
        rc = put_blob(g, MS_XC_REC_HVM_CONTEXT, "HVMCTX", 6, 1283, 0x900); /* odd: padded */
        if (rc)
            return rc;
        static const uint64_t idx[] = {1, 5, 6, 12, 17, 19};
        uint8_t params[8 + 6 * 16] = {0};
        ms_put_le32(params, 6);
        for (unsigned i = 0; i < 6; i++) {
            ms_put_le64(params + 8 + i * 16, idx[i]);
            ms_put_le64(params + 16 + i * 16, g->pages - 1 - i);
        }
        return put_record(g, MS_XC_REC_HVM_PARAMS, params, sizeof(params));
    }
    rc = put_blob(g, MS_XC_REC_SHARED_INFO, "", 0, MS_XC_PAGE_SIZE, 0xa00);
    for (unsigned v = 0; v < g->vcpus && !rc; v++) {
        uint8_t vh[8] = {0};
        ms_put_le32(vh, v);
        rc = put_blob(g, MS_XC_REC_X86_PV_VCPU_BASIC, vh, 8, 8 + 5168, 0xb00 + v);
        if (!rc)
            rc = put_blob(g, MS_XC_REC_X86_PV_VCPU_EXTENDED, vh, 8, 8 + 132, 0xc00 + v);
        if (!rc)
            rc = put_blob(g, MS_XC_REC_X86_PV_VCPU_XSAVE, vh, 8, 8 + 16 + 832, 0xd00 + v);
        if (!rc)
            rc = put_blob(g, MS_XC_REC_X86_PV_VCPU_MSRS, vh, 8, 8 + 2 * 16, 0xe00 + v);
    }
    return rc;
}

/* ---- memory rounds ------------------------------------------------------ */

static int flush_batch(gen *g, uint32_t n)
{
    if (n == 0)
        return MS_OK;
    uint32_t with_data = 0;
    for (uint32_t i = 0; i < n; i++)
        with_data += ms_xc_page_type_has_data(ms_xc_entry_type(g->entries[i]));
    uint8_t head[16];
    ms_put_le32(head, MS_XC_REC_PAGE_DATA);
    ms_put_le32(head + 4, 8 + n * 8 + with_data * MS_XC_PAGE_SIZE);
    ms_put_le32(head + 8, n);
    ms_put_le32(head + 12, 0);
    int rc = put(g, head, sizeof(head));
    for (uint32_t i = 0; i < n && !rc; i++) {
        uint8_t e[8];
        ms_put_le64(e, g->entries[i]);
        rc = put(g, e, 8);
    }
    if (!rc)
        rc = put(g, g->data, (size_t)with_data * MS_XC_PAGE_SIZE);
    return rc;
}

/* Send every marked pfn in ascending order, in batches. */
static int send_marked(gen *g, unsigned round, bool final)
{
    uint32_t n = 0, with_data = 0;
    int rc = MS_OK;
    for (uint64_t pfn = 0; pfn < g->pages && !rc; pfn++) {
        if (!g->mark[pfn] && !(final && g->deferred[pfn]))
            continue;
        unsigned t = type_of(g, pfn);
        if (!final && is_pagetable(t) && mix(g->c.seed, pfn, 0x400 + round) % 4 == 0) {
            t = MS_XC_PT_XTAB; /* mid-update page table: deferred */
            g->deferred[pfn] = 1;
        } else if (final) {
            g->deferred[pfn] = 0;
        }
        g->entries[n++] = ms_xc_entry(t, pfn);
        if (ms_xc_page_type_has_data(t))
            fill_page(g, pfn, t, g->data + (size_t)with_data++ * MS_XC_PAGE_SIZE);
        if (n == g->batch) {
            rc = flush_batch(g, n);
            n = with_data = 0;
        }
    }
    return rc ? rc : flush_batch(g, n);
}

/* Choose the pages dirtied during a round: mostly a hot tenth of memory. */
static void dirty_round(gen *g, unsigned round, double fraction)
{
    memset(g->mark, 0, g->pages);
    uint64_t count = (uint64_t)(fraction * (double)g->pages);
    if (count == 0)
        count = 1;
    uint64_t hot_len = g->pages / 10 ? g->pages / 10 : 1, hot_start = g->pages / 3;
    for (uint64_t i = 0; i < count; i++) {
        uint64_t h = mix(g->c.seed, round, 0x10000 + i);
        uint64_t pfn = (h % 100 < 80) ? (hot_start + (h >> 8) % hot_len) % g->pages : (h >> 8) % g->pages;
        if (!g->mark[pfn]) {
            g->mark[pfn] = 1;
            if (g->version[pfn] < UINT16_MAX)
                g->version[pfn]++;
        }
    }
}

static int setup(gen *g, const ms_xc_gen_config *cfg)
{
    memset(g, 0, sizeof(*g));
    g->c = *cfg;
    if (!g->c.dom_type)
        g->c.dom_type = MS_XC_DOM_X86_HVM;
    if (!g->c.version)
        g->c.version = 3;
    if (g->c.dom_type != MS_XC_DOM_X86_PV && g->c.dom_type != MS_XC_DOM_X86_HVM)
        return ms_error(MS_ERR_INVAL, "xcgen: domain type %u (only 1 PV and 2 HVM)", g->c.dom_type);
    if (g->c.version < 2 || g->c.version > 3)
        return ms_error(MS_ERR_INVAL, "xcgen: version %u (only 2 and 3)", g->c.version);
    if (g->c.dirty < 0 || g->c.dirty > 1)
        return ms_error(MS_ERR_INVAL, "xcgen: dirty fraction %g is not in [0, 1]", g->c.dirty);
    g->pages = cfg->pages ? cfg->pages : 4096;
    if (g->pages > MS_XC_PFN_MASK)
        return ms_error(MS_ERR_INVAL, "xcgen: %llu pages exceed the 52-bit pfn space", (unsigned long long)g->pages);
    if (g->c.dom_type == MS_XC_DOM_X86_PV && g->pages > 0xffffffffull)
        return ms_error(MS_ERR_INVAL, "xcgen: a PV p2m end pfn is 32 bits");
    g->rounds = cfg->rounds ? cfg->rounds : 3;
    g->vcpus = cfg->vcpus ? cfg->vcpus : 2;
    g->batch = cfg->batch ? cfg->batch : 1024;
    if (g->batch > 1024)
        return ms_error(MS_ERR_INVAL, "xcgen: batch %u exceeds libxc's 1024", g->batch);
    if (g->c.dirty == 0)
        g->c.dirty = 0.05;
    g->version = calloc(g->pages, sizeof(*g->version));
    g->mark = calloc(g->pages, 1);
    g->deferred = calloc(g->pages, 1);
    g->entries = malloc(g->batch * sizeof(*g->entries));
    g->data = malloc((size_t)g->batch * MS_XC_PAGE_SIZE);
    if (!g->version || !g->mark || !g->deferred || !g->entries || !g->data)
        return ms_error(MS_ERR_NOMEM, "xcgen: no memory for %llu pages of state", (unsigned long long)g->pages);
    return MS_OK;
}

static void teardown(gen *g)
{
    free(g->version);
    free(g->mark);
    free(g->deferred);
    free(g->entries);
    free(g->data);
}

/* The memory part; with out == NULL only the versions evolve (every
 * dirtied page is resent after its last dirtying, so versions decide the
 * final contents). */
static int run_rounds(gen *g)
{
    int rc = MS_OK;
    memset(g->mark, 1, g->pages);
    for (unsigned r = 0; r < g->rounds && !rc; r++) {
        if (r > 0)
            dirty_round(g, r, g->c.dirty);
        if (g->out)
            rc = send_marked(g, r, false);
    }
    if (rc)
        return rc;
    dirty_round(g, g->rounds, g->c.dirty / 2);
    return g->out ? send_marked(g, g->rounds, true) : MS_OK;
}

int ms_xc_gen(const ms_xc_gen_config *cfg, ms_xc_out_fn out, void *out_ctx)
{
    gen g;
    int rc = setup(&g, cfg);
    g.out = out;
    g.out_ctx = out_ctx;
    if (!rc)
        rc = put_headers(&g);
    if (!rc)
        rc = put_static_data(&g);
    if (!rc && g.c.dom_type == MS_XC_DOM_X86_PV)
        rc = put_p2m_frames(&g);
    if (!rc)
        rc = run_rounds(&g);
    if (!rc)
        rc = put_tail(&g);
    if (!rc)
        rc = put_record(&g, MS_XC_REC_END, NULL, 0);
    teardown(&g);
    return rc;
}

int ms_xc_gen_final_image(const ms_xc_gen_config *cfg, uint8_t *mem, uint8_t *types)
{
    gen g;
    int rc = setup(&g, cfg);
    if (!rc)
        rc = run_rounds(&g);
    for (uint64_t pfn = 0; pfn < g.pages && !rc; pfn++) {
        unsigned t = type_of(&g, pfn);
        if (types)
            types[pfn] = (uint8_t)t;
        if (ms_xc_page_type_has_data(t))
            fill_page(&g, pfn, t, mem + pfn * MS_XC_PAGE_SIZE);
        else
            memset(mem + pfn * MS_XC_PAGE_SIZE, 0, MS_XC_PAGE_SIZE);
    }
    teardown(&g);
    return rc;
}

uint64_t ms_xc_gen_pages(const ms_xc_gen_config *cfg) { return cfg->pages ? cfg->pages : 4096; }
