/* The stateful page stages (zero, dedup, delta) and the page section format.
 *
 * Page section (docs/codecs.md has it byte by byte): the payloads of all
 * pages in page order, then one tag byte per page. Putting the tags last
 * means a payload never sits after its page's place in the decoded buffer,
 * so a section can be decoded in place, and an all-raw section costs no copy
 * at all.
 *
 * Both delta and dedup work from one page store: the last version sent of
 * each pfn, mirrored on both sides. The sender and receiver stores evolve
 * identically because both apply the same two steps to the same sequence of
 * sections: decide every page of a section against the store as it was
 * before the section, then commit the section's updates in page order. */
#include "codecs/codecs.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#define NIL UINT32_MAX

/* ---- page store -----------------------------------------------------------
 * Holds the last version sent of up to `cap` pages, keyed by pfn. Slots live
 * in one array sized from the byte bound, so a full store never allocates
 * and the bound covers everything it holds. Eviction: the least recently
 * sent page (LRU list, head = most recent). With dedup, the sender also
 * indexes the slots by a hash of their content. */

typedef struct store_entry {
    uint64_t pfn;
    uint64_t chash;      /* content hash (sender, dedup only) */
    uint32_t prev, next; /* LRU neighbours */
    uint32_t hnext;      /* next in pfn bucket, or next free slot */
    uint32_t cnext;      /* next in content bucket; NIL when not indexed */
} store_entry;

typedef struct page_store {
    size_t ps;
    uint32_t cap, used;
    uint32_t fresh;     /* slots fresh..cap-1 were never used */
    uint32_t free_head; /* slots freed by zero pages */
    uint32_t head, tail;
    uint32_t hmask;
    uint32_t *buckets;  /* by pfn */
    uint32_t *cbuckets; /* by content hash (dedup), same size */
    store_entry *e;
    uint8_t *data;
    size_t data_len;
    uint64_t fixed_bytes;
} page_store;

#define INDEXED_NOT 0xfffffffeu /* cnext of a slot that is in no content bucket */

static inline uint32_t bucket_of(const page_store *s, uint64_t key)
{
    return (uint32_t)((key * 0x9e3779b97f4a7c15ull) >> 32) & s->hmask;
}

static void store_free(page_store *s)
{
    free(s->buckets);
    free(s->cbuckets);
    free(s->e);
    if (s->data)
        munmap(s->data, s->data_len);
    memset(s, 0, sizeof *s);
}

static int store_init(page_store *s, uint64_t bytes, size_t ps, bool content_index)
{
    memset(s, 0, sizeof *s);
    s->ps = ps;
    s->head = s->tail = s->free_head = NIL;
    /* Per slot: its entry and at most two buckets per bucket array (the
     * arrays have the next power of two of cap). The data mapping is
     * rounded up to whole system pages: keep that inside the bound too. */
    size_t sys_page = (size_t)sysconf(_SC_PAGESIZE);
    size_t overhead = sizeof(store_entry) + (content_index ? 4 : 2) * sizeof(uint32_t);
    uint64_t cap = bytes > sys_page ? (bytes - sys_page) / (ps + overhead) : 0;
    if (cap >= INDEXED_NOT)
        cap = INDEXED_NOT - 1;
    s->cap = (uint32_t)cap;
    if (!cap)
        return MS_OK;
    uint32_t nb = 1;
    while (nb < cap)
        nb <<= 1;
    s->hmask = nb - 1;
    s->buckets = malloc(nb * sizeof *s->buckets);
    s->cbuckets = content_index ? malloc(nb * sizeof *s->cbuckets) : NULL;
    s->e = malloc(cap * sizeof *s->e);
    /* Page data is faulted in as slots are first used, so resident memory
     * grows with the pages actually held; huge pages make those faults
     * 512 times fewer where the kernel allows them. */
    s->data_len = (cap * ps + sys_page - 1) / sys_page * sys_page;
    s->data = mmap(NULL, s->data_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (s->data == MAP_FAILED)
        s->data = NULL;
    else
        madvise(s->data, s->data_len, MADV_HUGEPAGE);
    if (!s->buckets || (content_index && !s->cbuckets) || !s->e || !s->data) {
        store_free(s);
        return ms_error(MS_ERR_NOMEM, "cannot allocate a page store of %llu bytes",
                        (unsigned long long)bytes);
    }
    memset(s->buckets, 0xff, nb * sizeof *s->buckets);
    if (content_index)
        memset(s->cbuckets, 0xff, nb * sizeof *s->cbuckets);
    s->fixed_bytes = (content_index ? 2 : 1) * nb * sizeof *s->buckets + cap * sizeof *s->e +
                     (s->data_len - cap * ps);
    return MS_OK;
}

static inline uint8_t *store_data(const page_store *s, uint32_t idx)
{
    return s->data + (size_t)idx * s->ps;
}

static uint32_t store_find(const page_store *s, uint64_t pfn)
{
    if (!s->cap)
        return NIL;
    uint32_t i = s->buckets[bucket_of(s, pfn)];
    while (i != NIL && s->e[i].pfn != pfn)
        i = s->e[i].hnext;
    return i;
}

/* A slot holding exactly `page`, found by its hash and confirmed byte for
 * byte, so a hash collision can only cost a compare, never a wrong page.
 * A long chain of equal hashes (a weak hash) is cut short. */
static uint32_t store_find_content(const page_store *s, uint64_t h, const uint8_t *page)
{
    if (!s->cap || !s->cbuckets)
        return NIL;
    int steps = 0, compares = 0;
    for (uint32_t i = s->cbuckets[bucket_of(s, h)]; i != NIL && ++steps <= 64; i = s->e[i].cnext) {
        if (s->e[i].chash != h)
            continue;
        if (!memcmp(store_data(s, i), page, s->ps))
            return i;
        if (++compares == 8)
            break;
    }
    return NIL;
}

static void lru_unlink(page_store *s, uint32_t i)
{
    store_entry *e = &s->e[i];
    if (e->prev != NIL)
        s->e[e->prev].next = e->next;
    else
        s->head = e->next;
    if (e->next != NIL)
        s->e[e->next].prev = e->prev;
    else
        s->tail = e->prev;
}

static void lru_push_head(page_store *s, uint32_t i)
{
    s->e[i].prev = NIL;
    s->e[i].next = s->head;
    if (s->head != NIL)
        s->e[s->head].prev = i;
    s->head = i;
    if (s->tail == NIL)
        s->tail = i;
}

static void pfn_unlink(page_store *s, uint32_t i)
{
    uint32_t *link = &s->buckets[bucket_of(s, s->e[i].pfn)];
    while (*link != i)
        link = &s->e[*link].hnext;
    *link = s->e[i].hnext;
}

static void content_unlink(page_store *s, uint32_t i)
{
    if (s->e[i].cnext == INDEXED_NOT)
        return;
    uint32_t *link = &s->cbuckets[bucket_of(s, s->e[i].chash)];
    while (*link != i)
        link = &s->e[*link].cnext;
    *link = s->e[i].cnext;
    s->e[i].cnext = INDEXED_NOT;
}

static void content_link(page_store *s, uint32_t i, uint64_t h)
{
    uint32_t b = bucket_of(s, h);
    s->e[i].chash = h;
    s->e[i].cnext = s->cbuckets[b];
    s->cbuckets[b] = i;
}

/* Forget a pfn (its page became zero: the receiver no longer needs it). */
static void store_drop(page_store *s, uint64_t pfn)
{
    uint32_t i = store_find(s, pfn);
    if (i == NIL)
        return;
    pfn_unlink(s, i);
    content_unlink(s, i);
    lru_unlink(s, i);
    s->e[i].hnext = s->free_head;
    s->free_head = i;
    s->used--;
}

/* Copy a page into the store with streaming stores: the copy is read again
 * only when the page is resent or duplicated, usually long after, so it
 * should neither pass through the CPU cache nor evict the frame being coded. */
static void copy_to_store(uint8_t *dst, const uint8_t *src, size_t n)
{
    size_t i = 0;
#ifdef __SSE2__
    if (!((uintptr_t)dst & 15)) {
        for (; i + 64 <= n; i += 64) {
            __m128i a = _mm_loadu_si128((const __m128i *)(const void *)(src + i));
            __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(src + i + 16));
            __m128i c = _mm_loadu_si128((const __m128i *)(const void *)(src + i + 32));
            __m128i d = _mm_loadu_si128((const __m128i *)(const void *)(src + i + 48));
            _mm_stream_si128((__m128i *)(void *)(dst + i), a);
            _mm_stream_si128((__m128i *)(void *)(dst + i + 16), b);
            _mm_stream_si128((__m128i *)(void *)(dst + i + 32), c);
            _mm_stream_si128((__m128i *)(void *)(dst + i + 48), d);
        }
    }
#endif
    memcpy(dst + i, src + i, n - i);
}

/* Streaming stores are weakly ordered: fence them before the store may be
 * read from another thread. */
static void store_fence(void)
{
#ifdef __SSE2__
    _mm_sfence();
#endif
}

/* Record `page` as the last version sent of `pfn`; `h` is its content hash
 * when the caller (the sender with dedup) keeps the content index. */
static void store_put(page_store *s, uint64_t pfn, const uint8_t *page, const uint64_t *h)
{
    uint32_t i = store_find(s, pfn);
    if (i != NIL) {
        lru_unlink(s, i);
        content_unlink(s, i);
    } else if (!s->cap) {
        return;
    } else {
        if (s->free_head != NIL) {
            i = s->free_head;
            s->free_head = s->e[i].hnext;
            s->used++;
        } else if (s->fresh < s->cap) {
            i = s->fresh++;
            s->used++;
        } else {
            i = s->tail;
            pfn_unlink(s, i);
            content_unlink(s, i);
            lru_unlink(s, i);
        }
        uint32_t b = bucket_of(s, pfn);
        s->e[i].pfn = pfn;
        s->e[i].hnext = s->buckets[b];
        s->e[i].cnext = INDEXED_NOT;
        s->buckets[b] = i;
    }
    lru_push_head(s, i);
    copy_to_store(store_data(s, i), page, s->ps);
    if (h && s->cbuckets)
        content_link(s, i, *h);
}

static uint64_t store_bytes(const page_store *s)
{
    return s->cap ? s->fixed_bytes + (uint64_t)s->used * s->ps : 0;
}

/* ---- page coder ---------------------------------------------------------- */

/* DUP payload: ULEB128 r. Odd r: the store version of pfn
 * (this page's pfn + unzigzag(r >> 1)); even r: page r >> 1 of this
 * section, which must come earlier. */
typedef struct page_item {
    size_t off;     /* payload offset in the section */
    size_t len;     /* payload bytes (DELTA: the delta without its length) */
    uint32_t entry; /* DELTA, DUP of the store: slot of the base version */
    uint32_t src;   /* DUP within the section: index of the earlier page */
    uint8_t tag;
} page_item;

/* Sender: whether delta pays (MS_GATE_* in codecs.h). */
typedef struct stage_gate {
    uint64_t pages, saved;       /* since the last verdict: pages examined, bytes saved */
    uint32_t off_left;           /* sections still to pass the stage over */
    uint32_t off_next;           /* length of the next stretch off */
} stage_gate;

/* Slot of the per-section content table (sender, dedup). */
typedef struct seen_page {
    uint64_t h;
    uint32_t index; /* NIL: empty */
} seen_page;

struct ms_page_coder {
    uint32_t stages;
    uint32_t active; /* stages in force for the section being encoded */
    bool gate;
    stage_gate delta_gate;
    size_t ps;
    size_t len_size; /* ULEB128 bytes reserved for a delta length */
    uint64_t hash_mask;
    page_store store;
    page_item *items;
    uint8_t *tags;
    uint64_t *hashes;
    uint64_t *targets; /* DUP of the store: the pfn referenced (else NO_TARGET) */
    size_t items_cap;
    seen_page *seen;
    size_t seen_mask;
    uint8_t *scratch; /* one page */
};

#define DEFAULT_STORE_BYTES (64ull << 20)

void ms_stage_stats_add(ms_stage_stats *into, const ms_stage_stats *s)
{
    into->pages += s->pages;
    into->zero += s->zero;
    into->dup += s->dup;
    into->delta += s->delta;
    into->delta_miss += s->delta_miss;
    into->delta_nogain += s->delta_nogain;
    into->raw += s->raw;
    into->delta_off += s->delta_off;
    into->unkept += s->unkept;
    into->in_bytes += s->in_bytes;
    into->out_bytes += s->out_bytes;
}

void ms_page_coder_free(ms_page_coder *pc)
{
    if (!pc)
        return;
    store_free(&pc->store);
    free(pc->items);
    free(pc->tags);
    free(pc->hashes);
    free(pc->targets);
    free(pc->seen);
    free(pc->scratch);
    free(pc);
}

ms_page_coder *ms_page_coder_new(const ms_page_coder_config *cfg)
{
    size_t ps = cfg->page_size ? cfg->page_size : MS_PAGE_SIZE;
    if (ps < 64 || ps > (1u << 20)) {
        ms_error(MS_ERR_INVAL, "page size %zu out of range 64..1048576", ps);
        return NULL;
    }
    if (cfg->stages & ~(MS_STAGE_ZERO | MS_STAGE_DELTA | MS_STAGE_DEDUP)) {
        ms_error(MS_ERR_INVAL, "unknown page stage bits 0x%x", cfg->stages);
        return NULL;
    }
    if (cfg->dedup_hash_bits > 64) {
        ms_error(MS_ERR_INVAL, "dedup_hash_bits %u above 64", cfg->dedup_hash_bits);
        return NULL;
    }
    ms_page_coder *pc = calloc(1, sizeof *pc);
    if (!pc) {
        ms_error(MS_ERR_NOMEM, "cannot allocate a page coder");
        return NULL;
    }
    pc->stages = pc->active = cfg->stages;
    pc->gate = cfg->gate;
    pc->delta_gate.off_next = MS_GATE_OFF_MIN;
    pc->ps = ps;
    pc->len_size = ms_uleb_size(ps);
    unsigned bits = cfg->dedup_hash_bits ? cfg->dedup_hash_bits : 64;
    pc->hash_mask = bits == 64 ? UINT64_MAX : (1ull << bits) - 1;
    pc->scratch = malloc(ps);
    if (!pc->scratch) {
        ms_error(MS_ERR_NOMEM, "cannot allocate a page coder");
        goto fail;
    }
    /* One store serves both stages; each stage brings its own budget. */
    uint64_t bytes = 0;
    if (pc->stages & MS_STAGE_DELTA)
        bytes += cfg->delta_cache_bytes ? cfg->delta_cache_bytes : DEFAULT_STORE_BYTES;
    if (pc->stages & MS_STAGE_DEDUP)
        bytes += cfg->dedup_bytes ? cfg->dedup_bytes : DEFAULT_STORE_BYTES;
    if (bytes && store_init(&pc->store, bytes, ps, pc->stages & MS_STAGE_DEDUP))
        goto fail;
    return pc;
fail:
    ms_page_coder_free(pc);
    return NULL;
}

uint64_t ms_page_coder_cache_bytes(const ms_page_coder *pc) { return store_bytes(&pc->store); }

uint64_t ms_page_coder_cache_capacity(const ms_page_coder *pc) { return pc->store.cap; }

size_t ms_page_section_bound(uint32_t stages, size_t page_size, size_t count)
{
    if (page_size && count > (SIZE_MAX - count) / page_size)
        return SIZE_MAX;
    return count * page_size + (stages ? count : 0);
}

static int reserve_items(ms_page_coder *pc, size_t count)
{
    if (count <= pc->items_cap)
        return MS_OK;
    page_item *items = realloc(pc->items, count * sizeof *items);
    if (items)
        pc->items = items;
    uint8_t *tags = realloc(pc->tags, count);
    if (tags)
        pc->tags = tags;
    uint64_t *hashes = realloc(pc->hashes, count * sizeof *hashes);
    if (hashes)
        pc->hashes = hashes;
    uint64_t *targets = realloc(pc->targets, count * sizeof *targets);
    if (targets)
        pc->targets = targets;
    /* The section table: a power of two at least twice the page count. */
    size_t slots = 2;
    while (slots < 2 * count)
        slots <<= 1;
    seen_page *seen = realloc(pc->seen, slots * sizeof *seen);
    if (seen) {
        pc->seen = seen;
        pc->seen_mask = slots - 1;
    }
    if (!items || !tags || !hashes || !targets || !seen)
        return ms_error(MS_ERR_NOMEM, "cannot allocate page coder state for %zu pages", count);
    pc->items_cap = count;
    return MS_OK;
}

static int check_count(const ms_page_coder *pc, size_t count)
{
    if (ms_page_section_bound(pc->stages, pc->ps, count) >= SIZE_MAX / 2)
        return ms_error(MS_ERR_LIMIT, "%zu pages of %zu bytes are too many for one section", count,
                        pc->ps);
    return MS_OK;
}

/* ---- encoder ---- */

/* Dedup: a reference to identical content the receiver holds, either in the
 * store (as it was before this section) or earlier in this section. Returns
 * the payload length, 0 if the content is new. */
static size_t encode_dup(ms_page_coder *pc, size_t i, uint64_t pfn, const uint8_t *pages, uint8_t *p)
{
    const uint8_t *page = pages + i * pc->ps;
    uint64_t h = XXH3_64bits(page, pc->ps) & pc->hash_mask;
    pc->hashes[i] = h;
    uint32_t e = store_find_content(&pc->store, h, page);
    if (e != NIL) {
        uint64_t z = ms_zigzag((int64_t)(pc->store.e[e].pfn - pfn));
        if (z < (UINT64_MAX >> 1)) {
            pc->targets[i] = pc->store.e[e].pfn;
            return ms_uleb_put(p, z << 1 | 1);
        }
    }
    size_t slot = (size_t)(h * 0x9e3779b97f4a7c15ull >> 32) & pc->seen_mask;
    for (int probes = 0; pc->seen[slot].index != NIL; slot = (slot + 1) & pc->seen_mask) {
        const seen_page *s = &pc->seen[slot];
        if (s->h == h && !memcmp(pages + (size_t)s->index * pc->ps, page, pc->ps))
            return ms_uleb_put(p, (uint64_t)s->index << 1);
        if (++probes == 8)
            return 0; /* a weak hash crowds the table: give up, send it */
    }
    pc->seen[slot] = (seen_page){h, (uint32_t)i};
    return 0;
}

/* A page the stage examined, and the bytes it saved (0: none). */
static inline void gate_count(stage_gate *g, size_t saved)
{
    g->pages++;
    g->saved += saved;
}

static size_t try_delta(ms_page_coder *pc, uint64_t pfn, const uint8_t *page, uint8_t *p, ms_stage_stats *st)
{
    uint32_t i = store_find(&pc->store, pfn);
    if (i == NIL) {
        st->delta_miss++;
        return 0;
    }
    /* Cap the delta so that length + delta stays below a page. */
    size_t u = pc->len_size;
    size_t n = ms_delta_encode(store_data(&pc->store, i), page, pc->ps, p + u, pc->ps - u);
    if (!n) {
        st->delta_nogain++;
        gate_count(&pc->delta_gate, 0);
        return 0;
    }
    size_t l = ms_uleb_size(n);
    if (l != u)
        memmove(p + l, p + u, n);
    ms_uleb_put(p, n);
    st->delta++;
    gate_count(&pc->delta_gate, pc->ps - (l + n));
    return l + n;
}

/* Payload of one page; returns its tag. Reads the store, never changes it. */
static uint8_t encode_page(ms_page_coder *pc, size_t idx, uint64_t pfn, const uint8_t *pages,
                           uint8_t **pp, ms_stage_stats *st)
{
    const uint8_t *page = pages + idx * pc->ps;
    uint8_t *p = *pp;
    if ((pc->stages & MS_STAGE_ZERO) && ms_page_is_zero(page, pc->ps)) {
        st->zero++;
        return MS_TAG_ZERO;
    }
    if (pc->stages & MS_STAGE_DEDUP) {
        size_t n = encode_dup(pc, idx, pfn, pages, p);
        if (n) {
            *pp = p + n;
            st->dup++;
            return MS_TAG_DUP;
        }
    }
    if (pc->active & MS_STAGE_DELTA) {
        size_t n = try_delta(pc, pfn, page, p, st);
        if (n) {
            *pp = p + n;
            return MS_TAG_DELTA;
        }
    } else if (pc->stages & MS_STAGE_DELTA) {
        st->delta_off++;
    }
    memcpy(p, page, pc->ps);
    *pp = p + pc->ps;
    st->raw++;
    if (pc->store.cap && !(pc->active & (MS_STAGE_DELTA | MS_STAGE_DEDUP))) {
        st->unkept++;
        return MS_TAG_UNKEPT;
    }
    return MS_TAG_RAW;
}

#define NO_TARGET UINT64_MAX

/* A content already held needs no second copy: without delta (which wants
 * each pfn's own last version) a duplicate drops its pfn's entry and makes
 * the content it matched the most recent instead, so a store flooded with
 * copies (page cache and tmpfs holding the same files) keeps reaching back
 * to the originals. Whatever slot the target pfn holds at this point in the
 * section is touched, on both sides alike. */
static void commit_dup(ms_page_coder *pc, uint64_t pfn, uint64_t target)
{
    if (target != pfn) /* a page resent unchanged keeps its copy */
        store_drop(&pc->store, pfn);
    uint32_t e = target == NO_TARGET ? NIL : store_find(&pc->store, target);
    if (e != NIL) {
        lru_unlink(&pc->store, e);
        lru_push_head(&pc->store, e);
    }
}

/* Store updates of a section, identical on both sides; the sender also
 * indexes the content (hashes, from the dedup stage). */
static void commit(ms_page_coder *pc, const uint64_t *pfns, const uint8_t *tags, const uint8_t *pages,
                   size_t count, const uint64_t *hashes)
{
    if (!pc->store.cap)
        return;
    bool share = !(pc->stages & MS_STAGE_DELTA);
    for (size_t i = 0; i < count; i++) {
        if (tags[i] == MS_TAG_ZERO || tags[i] == MS_TAG_UNKEPT)
            store_drop(&pc->store, pfns[i]);
        else if (tags[i] == MS_TAG_DUP && share)
            commit_dup(pc, pfns[i], pc->targets[i]);
        else
            store_put(&pc->store, pfns[i], pages + i * pc->ps, hashes ? &hashes[i] : NULL);
    }
    store_fence();
}

/* Stages in force for the next section: delta in a stretch off is passed
 * over. */
static uint32_t gate_open(ms_page_coder *pc)
{
    if (!pc->gate || !pc->delta_gate.off_left)
        return pc->stages;
    pc->delta_gate.off_left--;
    return pc->stages & ~(uint32_t)MS_STAGE_DELTA;
}

/* A verdict once the stage has examined a window of pages: saving under
 * the gain buys a stretch off, each failed trial doubling the next one, so
 * a stage that never pays costs about 1/MS_GATE_OFF_MAX of its work. */
static void gate_judge(stage_gate *g, size_t ps)
{
    if (g->pages < MS_GATE_WINDOW)
        return;
    if ((double)g->saved < MS_GATE_MIN_GAIN * (double)g->pages * (double)ps) {
        g->off_left = g->off_next;
        g->off_next = g->off_next * 2 > MS_GATE_OFF_MAX ? MS_GATE_OFF_MAX : g->off_next * 2;
    } else {
        g->off_next = MS_GATE_OFF_MIN;
    }
    g->pages = g->saved = 0;
}

int ms_page_coder_encode(ms_page_coder *pc, const uint64_t *pfns, const uint8_t *pages, size_t count,
                         ms_buf *out, ms_stage_stats *st)
{
    ms_stage_stats local = {0};
    int rc = check_count(pc, count);
    if (!rc)
        rc = reserve_items(pc, count);
    if (!rc)
        rc = ms_buf_reserve(out, ms_page_section_bound(pc->stages, pc->ps, count));
    if (rc)
        return rc;
    uint8_t *start = out->data + out->len, *p = start;
    if (!count) {
        /* nothing to write */
    } else if (!pc->stages) {
        memcpy(p, pages, count * pc->ps);
        p += count * pc->ps;
        local.raw = count;
    } else {
        pc->active = gate_open(pc);
        bool dedup = pc->stages & MS_STAGE_DEDUP;
        if (dedup)
            for (size_t i = 0; i <= pc->seen_mask; i++)
                pc->seen[i].index = NIL;
        for (size_t i = 0; i < count; i++) {
            pc->targets[i] = NO_TARGET;
            pc->tags[i] = encode_page(pc, i, pfns[i], pages, &p, &local);
        }
        memcpy(p, pc->tags, count);
        p += count;
        commit(pc, pfns, pc->tags, pages, count, dedup ? pc->hashes : NULL);
        if (pc->gate)
            gate_judge(&pc->delta_gate, pc->ps);
    }
    out->len += (size_t)(p - start);
    local.pages = count;
    local.in_bytes = count * pc->ps;
    local.out_bytes = (size_t)(p - start);
    if (st)
        ms_stage_stats_add(st, &local);
    return MS_OK;
}

/* ---- decoder ---- */

static const char *tag_name(uint8_t tag)
{
    static const char *const names[] = {"RAW", "ZERO", "DELTA", "DUP", "UNKEPT"};
    return tag < 5 ? names[tag] : "unknown";
}

#define PAGE_FMT "page %zu (pfn 0x%llx): "
#define PAGE_ARG(i) (i), (unsigned long long)pfns[i]

static int parse_dup(ms_page_coder *pc, const uint64_t *pfns, size_t i, const uint8_t *in, size_t avail,
                     page_item *it)
{
    uint64_t r;
    size_t l = ms_uleb_get(in, avail, &r);
    if (!l)
        return ms_error(MS_ERR_CORRUPT, PAGE_FMT "bad or truncated DUP reference at section offset %zu",
                        PAGE_ARG(i), it->off);
    it->len = l;
    it->entry = it->src = NIL;
    if (r & 1) {
        uint64_t target = pfns[i] + (uint64_t)ms_unzigzag(r >> 1);
        it->entry = store_find(&pc->store, target);
        pc->targets[i] = target;
        if (it->entry == NIL)
            return ms_error(MS_ERR_CORRUPT, PAGE_FMT "DUP of pfn 0x%llx, which has no stored version",
                            PAGE_ARG(i), (unsigned long long)target);
    } else {
        if ((r >> 1) >= i)
            return ms_error(MS_ERR_CORRUPT, PAGE_FMT "DUP of page %llu of the section, which is not before it",
                            PAGE_ARG(i), (unsigned long long)(r >> 1));
        it->src = (uint32_t)(r >> 1);
    }
    return MS_OK;
}

/* Check the section's structure and locate every payload. Reads the store
 * but does not change it. */
static int parse_section(ms_page_coder *pc, const uint64_t *pfns, size_t count, const uint8_t *in,
                         size_t pay_len, const uint8_t *tags)
{
    size_t off = 0;
    for (size_t i = 0; i < count; i++) {
        page_item *it = &pc->items[i];
        uint8_t tag = tags[i];
        int rc = MS_OK;
        pc->targets[i] = NO_TARGET;
        it->tag = tag;
        it->off = off;
        switch (tag) {
        case MS_TAG_RAW:
            it->len = pc->ps;
            break;
        case MS_TAG_UNKEPT:
            if (!pc->store.cap)
                return ms_error(MS_ERR_CORRUPT, PAGE_FMT "UNKEPT tag but neither delta nor dedup keeps pages",
                                PAGE_ARG(i));
            it->len = pc->ps;
            break;
        case MS_TAG_ZERO:
            if (!(pc->stages & MS_STAGE_ZERO))
                return ms_error(MS_ERR_CORRUPT, PAGE_FMT "ZERO tag but the zero stage is off", PAGE_ARG(i));
            it->len = 0;
            break;
        case MS_TAG_DUP:
            if (!(pc->stages & MS_STAGE_DEDUP))
                return ms_error(MS_ERR_CORRUPT, PAGE_FMT "DUP tag but the dedup stage is off", PAGE_ARG(i));
            rc = parse_dup(pc, pfns, i, in + off, pay_len - off, it);
            break;
        case MS_TAG_DELTA: {
            if (!(pc->stages & MS_STAGE_DELTA))
                return ms_error(MS_ERR_CORRUPT, PAGE_FMT "DELTA tag but the delta stage is off", PAGE_ARG(i));
            uint64_t n;
            size_t l = ms_uleb_get(in + off, pay_len - off, &n);
            if (!l)
                return ms_error(MS_ERR_CORRUPT, PAGE_FMT "bad or truncated delta length at section offset %zu",
                                PAGE_ARG(i), off);
            if (!n || n >= pc->ps - l)
                return ms_error(MS_ERR_CORRUPT, PAGE_FMT "delta length %llu out of range 1..%zu", PAGE_ARG(i),
                                (unsigned long long)n, pc->ps - 1 - l);
            it->entry = store_find(&pc->store, pfns[i]);
            if (it->entry == NIL)
                return ms_error(MS_ERR_CORRUPT, PAGE_FMT "DELTA but no cached version of this page", PAGE_ARG(i));
            it->off = off + l;
            it->len = (size_t)n;
            off += l;
            break;
        }
        default:
            return ms_error(MS_ERR_CORRUPT, PAGE_FMT "%s tag %u not valid here", PAGE_ARG(i), tag_name(tag),
                            tag);
        }
        if (rc)
            return rc;
        if (it->len > pay_len - off)
            return ms_error(MS_ERR_CORRUPT,
                            PAGE_FMT "%s payload of %zu bytes at section offset %zu runs past the payload end (%zu)",
                            PAGE_ARG(i), tag_name(tag), it->len, off, pay_len);
        off += it->len;
    }
    if (off != pay_len)
        return ms_error(MS_ERR_CORRUPT, "page section has %zu bytes after the last payload", pay_len - off);
    return MS_OK;
}

/* Rebuild the pages from the parsed items. Walks backwards so that, when
 * `in` and `pages` are the same buffer, no page overwrites a payload not yet
 * used: payload i always starts at or before page i's place. Duplicates of
 * earlier pages of the section come last, walking forwards, once the pages
 * they copy are final. */
static int apply_section(ms_page_coder *pc, const uint64_t *pfns, size_t count, const uint8_t *in,
                         uint8_t *pages, bool inplace)
{
    bool copies = false;
    for (size_t k = count; k-- > 0;) {
        const page_item *it = &pc->items[k];
        uint8_t *dst = pages + k * pc->ps;
        const uint8_t *src = in + it->off;
        switch (it->tag) {
        case MS_TAG_RAW:
        case MS_TAG_UNKEPT:
            if (src != dst)
                memmove(dst, src, pc->ps);
            break;
        case MS_TAG_ZERO:
            memset(dst, 0, pc->ps);
            break;
        case MS_TAG_DUP:
            if (it->entry != NIL)
                memcpy(dst, store_data(&pc->store, it->entry), pc->ps);
            else
                copies = true;
            break;
        case MS_TAG_DELTA:
            if (inplace) {
                memcpy(pc->scratch, src, it->len);
                src = pc->scratch;
            }
            memcpy(dst, store_data(&pc->store, it->entry), pc->ps);
            if (ms_delta_decode(src, it->len, dst, pc->ps))
                return ms_error_wrap(MS_ERR_CORRUPT, PAGE_FMT "delta", PAGE_ARG(k));
            break;
        }
    }
    for (size_t k = 0; copies && k < count; k++)
        if (pc->items[k].tag == MS_TAG_DUP && pc->items[k].entry == NIL)
            memcpy(pages + k * pc->ps, pages + (size_t)pc->items[k].src * pc->ps, pc->ps);
    return MS_OK;
}

static int decode_section(ms_page_coder *pc, const uint64_t *pfns, size_t count, const uint8_t *in,
                          size_t in_len, uint8_t *pages, bool inplace, ms_stage_stats *st)
{
    int rc = check_count(pc, count);
    if (rc)
        return rc;
    size_t raw_len = count * pc->ps;
    ms_stage_stats local = {.pages = count, .in_bytes = raw_len, .out_bytes = in_len};
    if (!pc->stages) {
        if (in_len != raw_len)
            return ms_error(MS_ERR_CORRUPT, "page section is %zu bytes, expected %zu for %zu raw pages",
                            in_len, raw_len, count);
        if (!inplace && raw_len)
            memcpy(pages, in, raw_len);
        local.raw = count;
        goto done;
    }
    if (!count) {
        if (in_len)
            return ms_error(MS_ERR_CORRUPT, "page section of %zu bytes for no pages", in_len);
        goto done;
    }
    if (in_len < count)
        return ms_error(MS_ERR_CORRUPT, "page section of %zu bytes is shorter than its %zu tags", in_len,
                        count);
    rc = reserve_items(pc, count);
    if (rc)
        return rc;
    size_t pay_len = in_len - count;
    /* In place, the pages will overwrite the tags: keep a copy. */
    memcpy(pc->tags, in + pay_len, count);
    rc = parse_section(pc, pfns, count, in, pay_len, pc->tags);
    if (!rc)
        rc = apply_section(pc, pfns, count, in, pages, inplace);
    if (rc)
        return rc;
    for (size_t i = 0; i < count; i++) {
        local.raw += pc->tags[i] == MS_TAG_RAW || pc->tags[i] == MS_TAG_UNKEPT;
        local.unkept += pc->tags[i] == MS_TAG_UNKEPT;
        local.zero += pc->tags[i] == MS_TAG_ZERO;
        local.delta += pc->tags[i] == MS_TAG_DELTA;
        local.dup += pc->tags[i] == MS_TAG_DUP;
    }
    commit(pc, pfns, pc->tags, pages, count, NULL);
done:
    if (st)
        ms_stage_stats_add(st, &local);
    return MS_OK;
}

int ms_page_coder_decode(ms_page_coder *pc, const uint64_t *pfns, size_t count, const uint8_t *in,
                         size_t in_len, uint8_t *pages, ms_stage_stats *st)
{
    return decode_section(pc, pfns, count, in, in_len, pages, false, st);
}

int ms_page_coder_decode_inplace(ms_page_coder *pc, const uint64_t *pfns, size_t count, uint8_t *buf,
                                 size_t in_len, size_t cap, ms_stage_stats *st)
{
    int rc = check_count(pc, count);
    if (rc)
        return rc;
    if (cap < in_len || cap < count * pc->ps)
        return ms_error(MS_ERR_INVAL, "in-place decode of %zu pages needs a %zu-byte buffer, got %zu",
                        count, in_len > count * pc->ps ? in_len : count * pc->ps, cap);
    return decode_section(pc, pfns, count, buf, in_len, buf, true, st);
}
