/* Whole-stream statistics: what a migration engineer wants to know about a
 * libxc stream (records, page types, zero pages, resent pages). */
#include <stdlib.h>
#include <string.h>

#include "xen/xen.h"

/* Pfns tracked for "sent before" up to this bound (a 1 TiB guest): beyond
 * it, resent/distinct counts are not kept rather than growing without end. */
#define SEEN_MAX_PFNS (1ull << 28)

typedef struct scan_ctx {
    ms_xc_stats *st;
    ms_save_stats *ss; /* the container's figures (ms_save_scan_fd) */
    uint8_t *seen; /* bitmap */
    uint64_t seen_bits;
    bool seen_overflow;
} scan_ctx;

/* One record (libxc and libxl records share the 8-byte header and the
 * padding rule) into per-type counts, or the optional ones past the table. */
static void tally(uint32_t type, uint32_t length, uint32_t ntypes, uint64_t *count, uint64_t *bytes,
                  uint64_t *opt_count, uint64_t *opt_bytes)
{
    uint64_t size = MS_XC_RHDR_SIZE + (uint64_t)ms_xc_padded(length);
    if (type < ntypes) {
        count[type]++;
        bytes[type] += size;
    } else {
        ++*opt_count;
        *opt_bytes += size;
    }
}

static int on_header(void *ctx, const ms_xc_header *h)
{
    ((scan_ctx *)ctx)->st->hdr = *h;
    return MS_OK;
}

static int on_record(void *ctx, const ms_xc_record *rec)
{
    ms_xc_stats *st = ((scan_ctx *)ctx)->st;
    st->records++;
    tally(rec->type, rec->length, MS_XC_REC_TYPE_COUNT, st->rec_count, st->rec_bytes, &st->optional_records,
          &st->optional_bytes);
    if (rec->type == MS_XC_REC_END)
        st->bytes = rec->offset + MS_XC_RHDR_SIZE;
    if (rec->type != MS_XC_REC_PAGE_DATA)
        return MS_OK;
    st->pfn_entries += rec->count;
    for (uint32_t i = 0; i < rec->count; i++) {
        st->page_type_count[ms_xc_entry_type(rec->entries[i])]++;
        if (ms_xc_entry_pfn(rec->entries[i]) > st->max_pfn)
            st->max_pfn = ms_xc_entry_pfn(rec->entries[i]);
    }
    return MS_OK;
}

static int on_opaque(void *ctx, const uint8_t *data, size_t len)
{
    (void)ctx;
    (void)data;
    (void)len;
    return MS_OK;
}

static bool page_zero(const uint8_t *p)
{
    static const uint8_t zero[MS_XC_PAGE_SIZE];
    return memcmp(p, zero, MS_XC_PAGE_SIZE) == 0;
}

static bool seen_test_set(scan_ctx *sc, uint64_t pfn)
{
    if (pfn >= SEEN_MAX_PFNS) {
        sc->seen_overflow = true;
        return false;
    }
    if (pfn >= sc->seen_bits) {
        uint64_t bits = sc->seen_bits ? sc->seen_bits : 1 << 16;
        while (bits <= pfn)
            bits *= 2;
        uint8_t *nb = realloc(sc->seen, bits / 8);
        if (!nb) {
            sc->seen_overflow = true;
            return false;
        }
        memset(nb + sc->seen_bits / 8, 0, (bits - sc->seen_bits) / 8);
        sc->seen = nb;
        sc->seen_bits = bits;
    }
    bool was = sc->seen[pfn / 8] & (1u << (pfn % 8));
    sc->seen[pfn / 8] |= (uint8_t)(1u << (pfn % 8));
    return was;
}

static int on_pages(void *ctx, const ms_xc_record *rec, const uint64_t *entries, const uint8_t *data,
                    size_t count)
{
    (void)rec;
    scan_ctx *sc = ctx;
    ms_xc_stats *st = sc->st;
    for (size_t i = 0; i < count; i++) {
        uint64_t pfn = ms_xc_entry_pfn(entries[i]);
        st->data_pages++;
        if (page_zero(data + i * MS_XC_PAGE_SIZE))
            st->zero_pages++;
        if (seen_test_set(sc, pfn))
            st->resent_pages++;
        else
            st->distinct_pfns++;
    }
    return MS_OK;
}

static const ms_xc_reader_cb scan_cb = {
    .header = on_header, .record = on_record, .opaque = on_opaque, .pages = on_pages,
};

int ms_xc_scan(const uint8_t *data, size_t len, ms_xc_stats *st, size_t *used)
{
    const ms_xc_reader_cb cb = scan_cb;
    scan_ctx sc = {.st = st};
    ms_xc_reader *r = NULL;
    size_t u = 0;
    memset(st, 0, sizeof(*st));
    int rc = ms_xc_reader_new(&cb, &sc, 0, &r);
    if (!rc)
        rc = ms_xc_reader_push(r, data, len, &u);
    if (!rc)
        rc = ms_xc_reader_finish(r);
    st->bytes = u;
    if (used)
        *used = u;
    if (sc.seen_overflow)
        st->distinct_pfns = st->resent_pages = 0;
    ms_xc_reader_free(r);
    free(sc.seen);
    return rc;
}

void ms_xc_stats_print(const ms_xc_stats *st, FILE *f)
{
    static const char *const dom[] = {"?", "x86 PV", "x86 HVM", "x86 PVH", "ARM"};
    fprintf(f, "libxc stream v%u, %s, page_shift %u, from Xen %u.%u: %llu bytes, %llu records\n",
            st->hdr.version, st->hdr.dom_type <= 4 ? dom[st->hdr.dom_type] : "?", st->hdr.page_shift,
            st->hdr.xen_major, st->hdr.xen_minor, (unsigned long long)st->bytes, (unsigned long long)st->records);
    for (uint32_t t = 0; t < MS_XC_REC_TYPE_COUNT; t++)
        if (st->rec_count[t])
            fprintf(f, "  %-26s %8llu records %14llu bytes\n", ms_xc_rec_name(t),
                    (unsigned long long)st->rec_count[t], (unsigned long long)st->rec_bytes[t]);
    if (st->optional_records)
        fprintf(f, "  %-26s %8llu records %14llu bytes\n", "optional (other)",
                (unsigned long long)st->optional_records, (unsigned long long)st->optional_bytes);
    fprintf(f, "  pfn entries %llu, max pfn 0x%llx; by type:", (unsigned long long)st->pfn_entries,
            (unsigned long long)st->max_pfn);
    for (unsigned t = 0; t < 16; t++)
        if (st->page_type_count[t])
            fprintf(f, " %s %llu", ms_xc_page_type_name(t), (unsigned long long)st->page_type_count[t]);
    fprintf(f, "\n  data pages %llu (zero %llu), distinct pfns %llu, resent %llu\n",
            (unsigned long long)st->data_pages, (unsigned long long)st->zero_pages,
            (unsigned long long)st->distinct_pfns, (unsigned long long)st->resent_pages);
}

/* ---- xl save files and libxl streams ------------------------------------- */

static int on_xl_header(void *ctx, const ms_xl_header *h)
{
    ms_save_stats *ss = ((scan_ctx *)ctx)->ss;
    ss->has_xl = true;
    ss->xl = *h;
    return MS_OK;
}

static int on_libxl_header(void *ctx, const ms_libxl_header *h)
{
    ms_save_stats *ss = ((scan_ctx *)ctx)->ss;
    ss->has_libxl = true;
    ss->libxl = *h;
    return MS_OK;
}

static int on_libxl_record(void *ctx, const ms_libxl_record *rec)
{
    ms_save_stats *ss = ((scan_ctx *)ctx)->ss;
    ss->libxl_records++;
    tally(rec->type, rec->length, MS_LIBXL_REC_TYPE_COUNT, ss->libxl_count, ss->libxl_bytes,
          &ss->libxl_optional_records, &ss->libxl_optional_bytes);
    if (rec->type == MS_LIBXL_REC_LIBXC_CONTEXT)
        ss->libxc_offset = rec->offset + MS_XC_RHDR_SIZE;
    return MS_OK;
}

int ms_save_scan_fd(int fd, ms_save_stats *ss)
{
    ms_save_reader_cb cb = {
        .xl_header = on_xl_header, .libxl_header = on_libxl_header, .libxl_record = on_libxl_record,
        .xc = scan_cb,
    };
    scan_ctx sc = {.st = &ss->xc, .ss = ss};
    ms_save_reader *r = NULL;
    memset(ss, 0, sizeof(*ss));
    int rc = ms_save_reader_new(&cb, &sc, 0, &r);
    if (!rc)
        rc = ms_save_reader_pump_fd(r, fd);
    if (r) {
        ss->kind = ms_save_reader_kind(r);
        ss->bytes = ms_save_reader_offset(r);
    }
    if (sc.seen_overflow)
        ss->xc.distinct_pfns = ss->xc.resent_pages = 0;
    ms_save_reader_free(r);
    free(sc.seen);
    return rc;
}

void ms_save_stats_print(const ms_save_stats *ss, FILE *f)
{
    if (ss->has_xl)
        fprintf(f, "xl header: mandatory flags 0x%x (%s%s), optional flags 0x%x, optional data %u bytes, "
                   "domain config %u bytes\n",
                ss->xl.mandatory_flags, (ss->xl.mandatory_flags & MS_XL_FLAG_STREAMV2) ? "stream v2" : "legacy",
                (ss->xl.mandatory_flags & MS_XL_FLAG_JSON) ? ", JSON config" : "", ss->xl.optional_flags,
                ss->xl.optional_data_len, ss->xl.config_len);
    if (ss->has_libxl) {
        fprintf(f, "libxl stream v%u, options 0x%x%s: %llu records\n", ss->libxl.version, ss->libxl.options,
                (ss->libxl.options & MS_LIBXL_OPT_LEGACY) ? " (converted legacy stream)" : "",
                (unsigned long long)ss->libxl_records);
        for (uint32_t t = 0; t < MS_LIBXL_REC_TYPE_COUNT; t++)
            if (ss->libxl_count[t])
                fprintf(f, "  %-26s %8llu records %14llu bytes\n", ms_libxl_rec_name(t),
                        (unsigned long long)ss->libxl_count[t], (unsigned long long)ss->libxl_bytes[t]);
        if (ss->libxl_optional_records)
            fprintf(f, "  %-26s %8llu records %14llu bytes\n", "optional (other)",
                    (unsigned long long)ss->libxl_optional_records, (unsigned long long)ss->libxl_optional_bytes);
        fprintf(f, "embedded at offset %llu: ", (unsigned long long)ss->libxc_offset);
    }
    ms_xc_stats_print(&ss->xc, f);
}
