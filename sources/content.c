/* Synthetic page content for the model and trace sources: it has to look
 * like real memory so that zero elision, delta and compressors see what
 * they would on a real migration. */
#include "sources/sources_int.h"

#include <string.h>

static const char *const words[] = {
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "with", "was", "on",
    "be", "at", "by", "this", "from", "or", "an", "are", "not", "which", "but", "have",
    "struct", "return", "static", "const", "uint64_t", "buffer", "page", "memory", "error",
    "count", "index", "value", "length", "size_t", "if", "else", "while", "for", "NULL",
    "migration", "round", "dirty", "request", "response", "header", "client", "server",
    "key:", "value:", "user_id", "session", "timestamp", "\"name\":", "\"id\":", "true",
    "false", "0x7f", "GET", "SET",
};
#define NWORDS (sizeof words / sizeof words[0])

static void fill_text(uint64_t *r, uint8_t *out, uint32_t size)
{
    uint32_t pos = 0, col = 0;
    while (pos < size) {
        const char *w = words[ms_src_below(r, NWORDS)];
        size_t len = strlen(w);
        for (size_t i = 0; i < len && pos < size; i++, col++)
            out[pos++] = (uint8_t)w[i];
        if (pos < size) {
            out[pos++] = col > 60 ? '\n' : ' ';
            col = col > 60 ? 0 : col + 1;
        }
    }
}

/* Heap-like records: pointers sharing their high bits, small integers,
 * flags and zero padding, as in linked structures and hash tables. */
static void fill_pointers(uint64_t seed, uint64_t page, uint64_t *r, uint8_t *out, uint32_t size)
{
    uint64_t region = 0x00007f0000000000ull | ((ms_src_mix64(seed ^ (page >> 9)) & 0xffffff) << 16);
    for (uint32_t off = 0; off + 64 <= size; off += 64) {
        uint64_t rec[8];
        rec[0] = region + ((ms_src_next(r) & 0xfffff) << 4);
        rec[1] = region + ((ms_src_next(r) & 0xfffff) << 4);
        rec[2] = ms_src_below(r, 1000);
        rec[3] = 0;
        rec[4] = ms_src_below(r, 4) ? region + ((ms_src_next(r) & 0xfffff) << 4) : 0;
        rec[5] = 1ull << ms_src_below(r, 8);
        rec[6] = 0;
        rec[7] = ms_src_below(r, 2) ? ms_src_next(r) & 0xffffffff : 0;
        for (int i = 0; i < 8; i++)
            ms_put_le64(out + off + 8 * i, rec[i]);
    }
}

static void fill_random(uint64_t *r, uint8_t *out, uint32_t size)
{
    for (uint32_t off = 0; off + 8 <= size; off += 8)
        ms_put_le64(out + off, ms_src_next(r));
}

void ms_src_content(uint64_t seed, uint64_t page, uint64_t version, uint8_t *out, uint32_t page_size)
{
    uint64_t h = ms_src_mix64(seed ^ ms_src_mix64(page));
    uint64_t r = h;
    unsigned kind = (unsigned)(h % 100);
    if (kind < 30)
        memset(out, 0, page_size);
    else if (kind < 55)
        fill_text(&r, out, page_size);
    else if (kind < 85)
        fill_pointers(seed, page, &r, out, page_size);
    else
        fill_random(&r, out, page_size);
    if (version == 0 || page_size < 8)
        return;
    /* A write touches a few words: counters, pointers, a short string. */
    uint64_t w = ms_src_mix64(h ^ ms_src_mix64(version));
    unsigned nwords = 1 + (unsigned)(w % 8);
    for (unsigned i = 0; i < nwords; i++) {
        uint32_t slot = (uint32_t)ms_src_below(&w, page_size / 8);
        ms_put_le64(out + 8 * (size_t)slot, version + (ms_src_next(&w) & 0xffff0000));
    }
}

