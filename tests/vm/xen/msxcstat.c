/* msxcstat: the Xen lane's own summary of a captured migration stream: a
 * libxc stream (MIGSTREAM_RECORD output) or a whole xl stream (what crossed
 * xl's fd in a plain migration; the libxc part is found by its image
 * header). Independent of migstream's reader on purpose: the lane checks
 * migstream's stats against it.
 *
 * Prints one line:
 *   stream_bytes=N libxc_bytes=N records=N page_records=N pfns=N
 *   data_pages=N zero_pages=N distinct_pfns=N resent_pages=N rounds=N
 *   round_pages=a,b,...
 * Rounds are counted from pfn order: libxc sends each iteration's dirty
 * pfns in ascending order, so a PAGE_DATA batch starting at or below the
 * previous batch's last pfn opens a new round (the last one is the
 * stop-and-copy round, sent while the guest is suspended).
 *
 * usage: msxcstat FILE */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGE 4096
#define MAX_ROUNDS 64
#define MAX_TRACKED_PFN (1ull << 26)

static const uint8_t zero_page[PAGE];

typedef struct summary {
    uint64_t stream_bytes, libxc_bytes, records, page_records, pfns;
    uint64_t data_pages, zero_pages, distinct, resent;
    uint64_t round_pages[MAX_ROUNDS];
    unsigned rounds;
    uint64_t last_pfn;
    uint8_t *seen;
} summary;

static int fail(const char *what, uint64_t off)
{
    fprintf(stderr, "msxcstat: %s at offset %llu\n", what, (unsigned long long)off);
    return 1;
}

static int read_exact(FILE *f, void *p, size_t n)
{
    return fread(p, 1, n, f) == n ? 0 : -1;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* Positions f just after the 24-byte image header (marker, "XENF", ...). */
static int find_image_header(FILE *f, summary *s)
{
    static const uint8_t magic[12] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 'X', 'E', 'N', 'F'};
    uint8_t win[12];
    size_t have = 0;
    int c;
    while ((c = getc(f)) != EOF) {
        s->stream_bytes++;
        if (have < 12) {
            win[have++] = (uint8_t)c;
        } else {
            memmove(win, win + 1, 11);
            win[11] = (uint8_t)c;
        }
        if (have == 12 && memcmp(win, magic, 12) == 0) {
            uint8_t rest[12];
            if (read_exact(f, rest, sizeof(rest)) < 0)
                return -1;
            s->stream_bytes += sizeof(rest);
            s->libxc_bytes = 24;
            return 0;
        }
    }
    return -1;
}

static void note_pfn(summary *s, uint64_t pfn)
{
    if (pfn >= MAX_TRACKED_PFN)
        return;
    uint8_t bit = (uint8_t)(1u << (pfn & 7));
    if (s->seen[pfn >> 3] & bit) {
        s->resent++;
    } else {
        s->seen[pfn >> 3] |= bit;
        s->distinct++;
    }
}

static int page_data(FILE *f, summary *s, uint32_t len, uint64_t off)
{
    uint8_t hdr[8];
    if (len < 8 || read_exact(f, hdr, 8) < 0)
        return fail("short PAGE_DATA record", off);
    uint32_t count = le32(hdr);
    if (count == 0 || (uint64_t)count * 8 + 8 > len)
        return fail("PAGE_DATA count does not fit its length", off);
    uint8_t *raw = malloc((size_t)count * 8);
    uint8_t page[PAGE];
    uint64_t body = 8 + (uint64_t)count * 8;
    int rc = 1;
    if (!raw || read_exact(f, raw, (size_t)count * 8) < 0)
        goto out;
    s->page_records++;
    for (uint32_t i = 0; i < count; i++) {
        uint64_t e = le64(raw + 8 * i), pfn = e & ((1ull << 52) - 1);
        unsigned type = (unsigned)(e >> 60);
        if (i == 0 && (s->rounds == 0 || pfn <= s->last_pfn) && s->rounds < MAX_ROUNDS)
            s->rounds++;
        s->last_pfn = pfn;
        s->pfns++;
        if (type == 0xd || type == 0xe || type == 0xf)
            continue;
        if (read_exact(f, page, PAGE) < 0)
            goto out;
        body += PAGE;
        s->data_pages++;
        s->round_pages[s->rounds - 1]++;
        if (memcmp(page, zero_page, PAGE) == 0)
            s->zero_pages++;
        note_pfn(s, pfn);
    }
    if (body != len) {
        fail("PAGE_DATA length does not match its pages", off);
        goto out;
    }
    rc = 0;
out:
    free(raw);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: msxcstat FILE\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) {
        perror(argv[1]);
        return 1;
    }
    summary s = {0};
    s.seen = calloc(MAX_TRACKED_PFN / 8, 1);
    if (!s.seen || find_image_header(f, &s) < 0)
        return fail("no libxc image header", s.stream_bytes);
    uint8_t dom[16], rh[8];
    if (read_exact(f, dom, sizeof(dom)) < 0)
        return fail("truncated domain header", s.stream_bytes);
    s.libxc_bytes += sizeof(dom);
    for (;;) {
        uint64_t off = s.stream_bytes + s.libxc_bytes - 24;
        if (read_exact(f, rh, 8) < 0)
            return fail("truncated stream (no END record)", off);
        uint32_t type = le32(rh), len = le32(rh + 4);
        uint32_t padded = (len + 7) & ~7u;
        s.records++;
        s.libxc_bytes += 8 + (uint64_t)padded;
        if (type == 0)
            break;
        if (type == 1) {
            if (page_data(f, &s, len, off))
                return 1;
            if (fseek(f, padded - len, SEEK_CUR) != 0)
                return fail("truncated padding", off);
        } else if (fseek(f, padded, SEEK_CUR) != 0) {
            return fail("truncated record", off);
        }
    }
    fseek(f, 0, SEEK_END);
    s.stream_bytes = (uint64_t)ftell(f);
    printf("stream_bytes=%llu libxc_bytes=%llu records=%llu page_records=%llu pfns=%llu data_pages=%llu "
           "zero_pages=%llu distinct_pfns=%llu resent_pages=%llu rounds=%u round_pages=",
           (unsigned long long)s.stream_bytes, (unsigned long long)s.libxc_bytes, (unsigned long long)s.records,
           (unsigned long long)s.page_records, (unsigned long long)s.pfns, (unsigned long long)s.data_pages,
           (unsigned long long)s.zero_pages, (unsigned long long)s.distinct, (unsigned long long)s.resent, s.rounds);
    for (unsigned r = 0; r < s.rounds; r++)
        printf("%s%llu", r ? "," : "", (unsigned long long)s.round_pages[r]);
    printf("\n");
    fclose(f);
    free(s.seen);
    return 0;
}
