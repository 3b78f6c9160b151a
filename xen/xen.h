/* migstream Xen integration: the libxc migration stream (v2/v3) as the
 * stream layer sees it.
 *
 *  - a streaming reader that validates a libxc stream as bytes arrive in
 *    any chunking and splits it into *opaque bytes* and *page batches*;
 *  - a writer (also an ms_sink_ops) that rebuilds the byte-identical stream
 *    from those opaque bytes and page batches on the receiving side;
 *  - a generator of spec-valid PV and HVM streams for tests and benches.
 *
 * The split (see docs/xen.md): the opaque bytes are the libxc stream
 * without the page contents of its PAGE_DATA records - every header,
 * every other record, and each PAGE_DATA record's head and pfn list stay.
 * Page batches are (pfn, one 4096-byte page) for every entry that carries
 * data, in stream order; the reader hands out the entries as written (type
 * in bits 63-60), the writer compares only the pfn bits, and the sender
 * adapter sends plain pfns. The writer, having seen a PAGE_DATA head and
 * list, knows exactly which pages come next and writes them out as they
 * arrive.
 *
 * Nothing here needs a Xen library: facts are from Xen's
 * docs/specs/libxc-migration-stream.pandoc and xg_sr_stream_format.h. */
#ifndef MS_XEN_H
#define MS_XEN_H

#include "common/common.h"
#include "stream/stream.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ======================= format constants ============================== */

#define MS_XC_IHDR_SIZE 24u          /* image header, big-endian */
#define MS_XC_DHDR_SIZE 16u          /* domain header */
#define MS_XC_HDRS_SIZE (MS_XC_IHDR_SIZE + MS_XC_DHDR_SIZE)
#define MS_XC_RHDR_SIZE 8u           /* record header: type u32, length u32 */
#define MS_XC_PD_HEAD_SIZE 16u       /* record header + PAGE_DATA count/reserved */
#define MS_XC_MARKER 0xFFFFFFFFFFFFFFFFull
#define MS_XC_ID 0x58454E46u         /* "XENF" */
#define MS_XC_REC_ALIGN 8u
#define MS_XC_REC_LENGTH_MAX (128u << 20)
#define MS_XC_PAGE_SIZE 4096u
#define MS_XC_PAGE_SHIFT 12u

enum ms_xc_dom_type { MS_XC_DOM_X86_PV = 1, MS_XC_DOM_X86_HVM = 2, MS_XC_DOM_X86_PVH = 3, MS_XC_DOM_ARM = 4 };

enum ms_xc_rec_type {
    MS_XC_REC_END = 0x00,
    MS_XC_REC_PAGE_DATA = 0x01,
    MS_XC_REC_X86_PV_INFO = 0x02,
    MS_XC_REC_X86_PV_P2M_FRAMES = 0x03,
    MS_XC_REC_X86_PV_VCPU_BASIC = 0x04,
    MS_XC_REC_X86_PV_VCPU_EXTENDED = 0x05,
    MS_XC_REC_X86_PV_VCPU_XSAVE = 0x06,
    MS_XC_REC_SHARED_INFO = 0x07,
    MS_XC_REC_X86_TSC_INFO = 0x08,
    MS_XC_REC_HVM_CONTEXT = 0x09,
    MS_XC_REC_HVM_PARAMS = 0x0a,
    MS_XC_REC_TOOLSTACK = 0x0b,
    MS_XC_REC_X86_PV_VCPU_MSRS = 0x0c,
    MS_XC_REC_VERIFY = 0x0d,
    MS_XC_REC_CHECKPOINT = 0x0e,
    MS_XC_REC_CHECKPOINT_DIRTY_PFN_LIST = 0x0f,
    MS_XC_REC_STATIC_DATA_END = 0x10,
    MS_XC_REC_X86_CPUID_POLICY = 0x11,
    MS_XC_REC_X86_MSR_POLICY = 0x12,
    MS_XC_REC_TYPE_COUNT = 0x13,
};
#define MS_XC_REC_OPTIONAL 0x80000000u

/* PAGE_DATA pfn entries: type (XEN_DOMCTL_PFINFO_* >> 28) in bits 63-60,
 * reserved bits 59-52, pfn in bits 51-0. */
#define MS_XC_PFN_MASK 0x000FFFFFFFFFFFFFull
#define MS_XC_PFN_RESERVED_MASK 0x0FF0000000000000ull
#define MS_XC_PFN_TYPE_SHIFT 60
enum ms_xc_page_type {
    MS_XC_PT_NOTAB = 0x0,
    MS_XC_PT_L1TAB = 0x1, MS_XC_PT_L2TAB = 0x2, MS_XC_PT_L3TAB = 0x3, MS_XC_PT_L4TAB = 0x4,
    MS_XC_PT_L1TAB_PIN = 0x9, MS_XC_PT_L2TAB_PIN = 0xa, MS_XC_PT_L3TAB_PIN = 0xb, MS_XC_PT_L4TAB_PIN = 0xc,
    MS_XC_PT_BROKEN = 0xd, MS_XC_PT_XALLOC = 0xe, MS_XC_PT_XTAB = 0xf,
};

static inline unsigned ms_xc_entry_type(uint64_t e) { return (unsigned)(e >> MS_XC_PFN_TYPE_SHIFT); }
static inline uint64_t ms_xc_entry_pfn(uint64_t e) { return e & MS_XC_PFN_MASK; }
static inline uint64_t ms_xc_entry(unsigned type, uint64_t pfn)
{
    return ((uint64_t)type << MS_XC_PFN_TYPE_SHIFT) | (pfn & MS_XC_PFN_MASK);
}
/* Types 0x5-0x8 are reserved: a stream using them is refused. */
bool ms_xc_page_type_valid(unsigned type);
/* NOTAB, L1-L4 and their pinned forms carry a page; BROKEN/XALLOC/XTAB none. */
bool ms_xc_page_type_has_data(unsigned type);
const char *ms_xc_page_type_name(unsigned type); /* "NOTAB", "L2TAB_PIN", "reserved" */

/* "PAGE_DATA", "X86_PV_INFO", ... ; "optional 0x80000005" / "unknown 0x77"
 * in a thread-local buffer for anything else. */
const char *ms_xc_rec_name(uint32_t type);
/* Mandatory types this code knows, or any optional one. */
bool ms_xc_rec_type_known(uint32_t type);

static inline uint32_t ms_xc_padded(uint32_t len) { return (len + 7u) & ~7u; }

/* ======================= reader (reader.c) ============================= */

typedef struct ms_xc_header {
    uint32_t version;     /* 2 or 3 */
    uint16_t options;
    uint32_t dom_type;    /* enum ms_xc_dom_type */
    uint16_t page_shift;
    uint32_t xen_major, xen_minor;
} ms_xc_header;

typedef struct ms_xc_record {
    uint64_t index;       /* records numbered from 0 after the headers */
    uint64_t offset;      /* stream offset of the record header */
    uint32_t type, length;
    uint32_t count;       /* PAGE_DATA: pfn entries */
    uint32_t data_pages;  /* PAGE_DATA: entries carrying a page */
    const uint64_t *entries; /* PAGE_DATA: all `count` entries (host order),
                              * valid until the record is done; else NULL */
} ms_xc_record;

typedef struct ms_xc_reader_cb {
    /* Validated headers (before their bytes go to opaque()). Optional. */
    int (*header)(void *ctx, const ms_xc_header *h);
    /* A record whose header (and for PAGE_DATA, pfn list) has been checked,
     * before its bytes are delivered. Optional. END is the last call. */
    int (*record)(void *ctx, const ms_xc_record *rec);
    /* Stream bytes that are not page contents, in order, in any chunking. */
    int (*opaque)(void *ctx, const uint8_t *data, size_t len);
    /* Entries carrying a page, in stream order: entries[i] as in the
     * stream (type bits included), page i at data + i * 4096. At most
     * batch_pages per call; never crosses a record. */
    int (*pages)(void *ctx, const ms_xc_record *rec, const uint64_t *entries,
                 const uint8_t *data, size_t count);
} ms_xc_reader_cb;
/* A non-zero return from a callback stops the reader with that status. */

typedef struct ms_xc_reader ms_xc_reader;

/* batch_pages: most pages handed to one pages() call (0: 1024). Pages are
 * handed out in place from the pushed bytes; a page split across pushes is
 * gathered in a one-page buffer. Memory held: that page plus the current
 * record's pfn list (bounded by the 128 MiB record limit; 8 KiB for
 * libxc's own 1024-entry batches). */
int ms_xc_reader_new(const ms_xc_reader_cb *cb, void *ctx, size_t batch_pages, ms_xc_reader **out);
void ms_xc_reader_free(ms_xc_reader *r);

/* Feed bytes. Consumes up to and including libxc END and no further:
 * *used (may be NULL) says how many were taken. Errors are MS_ERR_CORRUPT
 * (or a callback's status) with a message naming the record index, record
 * type and byte offset; the reader then refuses further input. */
int ms_xc_reader_push(ms_xc_reader *r, const uint8_t *data, size_t len, size_t *used);
/* How many bytes the reader can take now without reading past END: a
 * pump reading a pipe asks for at most this many (never 0 before END). */
size_t ms_xc_reader_want(const ms_xc_reader *r);
bool ms_xc_reader_done(const ms_xc_reader *r);
/* Call at end of input: MS_OK after END, else MS_ERR_TRUNCATED naming the
 * structure that is incomplete and how many of its bytes arrived. */
int ms_xc_reader_finish(ms_xc_reader *r);
uint64_t ms_xc_reader_offset(const ms_xc_reader *r); /* bytes consumed */

/* Read the stream from fd (a pipe, socket or file) until END, never
 * reading a byte past it. MS_ERR_TRUNCATED if fd ends first. */
int ms_xc_reader_pump_fd(ms_xc_reader *r, int fd);

/* Statistics of a whole stream (what `migstream inspect` prints). */
typedef struct ms_xc_stats {
    ms_xc_header hdr;
    uint64_t bytes;
    uint64_t records;
    uint64_t rec_count[MS_XC_REC_TYPE_COUNT], rec_bytes[MS_XC_REC_TYPE_COUNT];
    uint64_t optional_records, optional_bytes;
    uint64_t page_type_count[16];  /* pfn entries per type */
    uint64_t data_pages, zero_pages, pfn_entries;
    uint64_t max_pfn;
    uint64_t distinct_pfns;        /* pfns sent at least once */
    uint64_t resent_pages;         /* data pages of a pfn sent before */
} ms_xc_stats;
/* Validate a whole stream in memory and count; stops at END (*used says
 * where). Uses ms_page_is_zero-like scanning for zero_pages. */
int ms_xc_scan(const uint8_t *data, size_t len, ms_xc_stats *st, size_t *used);
void ms_xc_stats_print(const ms_xc_stats *st, FILE *f);

/* ======================= writer (writer.c) ============================= */

/* Where rebuilt stream bytes go. Must write all or fail. */
typedef int (*ms_xc_out_fn)(void *ctx, const void *data, size_t len);
int ms_xc_out_fd(void *fdp, const void *data, size_t len);   /* ctx: int * */
int ms_xc_out_buf(void *bufp, const void *data, size_t len); /* ctx: ms_buf * */

typedef struct ms_xc_writer ms_xc_writer;
int ms_xc_writer_new(ms_xc_out_fn out, void *out_ctx, ms_xc_writer **w);
void ms_xc_writer_free(ms_xc_writer *w);
/* The two halves produced by the reader. Each checks that what arrives
 * fits the stream built so far (MS_ERR_CORRUPT naming record and offset):
 * pages must come for exactly the data-carrying pfns of the pfn list just
 * written, in order (type bits in `entries` are ignored). */
int ms_xc_writer_opaque(ms_xc_writer *w, const uint8_t *data, size_t len);
/* Like ms_xc_writer_opaque, but stops after libxc END instead of refusing
 * what follows: *used says how many bytes were taken (for containers such
 * as an `xl save` file, where libxl's records follow the libxc stream). */
int ms_xc_writer_opaque_part(ms_xc_writer *w, const uint8_t *data, size_t len, size_t *used);
int ms_xc_writer_pages(ms_xc_writer *w, const uint64_t *entries, const uint8_t *pages, size_t count);
/* MS_OK once END has been written, MS_ERR_TRUNCATED otherwise. */
int ms_xc_writer_finish(ms_xc_writer *w);
bool ms_xc_writer_done(const ms_xc_writer *w);
uint64_t ms_xc_writer_offset(const ms_xc_writer *w); /* bytes written */

/* ms_sink_ops over an ms_xc_writer (ctx = the writer): the receiver side
 * of a libxc stream carried by migstream. Pages must come with page_size
 * 4096; round_end is ignored; end requires libxc END to have been seen. */
extern const ms_sink_ops ms_xc_writer_sink_ops;

/* Reader callbacks that feed a writer directly (ctx = ms_xc_writer *):
 * the round trip without a transport, for tests and benches. */
extern const ms_xc_reader_cb ms_xc_reader_to_writer_cb;

/* Reader callbacks that feed an ms_sender (ctx = ms_xc_to_sender). */
typedef struct ms_xc_to_sender {
    ms_sender *sender;
    uint32_t round;     /* caller moves it on at round boundaries */
    uint32_t fragment;
} ms_xc_to_sender;
extern const ms_xc_reader_cb ms_xc_reader_to_sender_cb;

/* ======================= generator (gen.c) ============================= */

typedef struct ms_xc_gen_config {
    uint32_t dom_type;     /* MS_XC_DOM_X86_PV or MS_XC_DOM_X86_HVM */
    uint32_t version;      /* 3 (what 4.17 writes) or 2; 0 = 3 */
    uint64_t pages;        /* guest p2m size in pages; 0 = 4096 */
    unsigned rounds;       /* live rounds incl. the first full pass; 0 = 3.
                            * A final (paused) round always follows. */
    double dirty;          /* fraction of pages redirtied per round; 0 = 0.05 */
    unsigned vcpus;        /* 0 = 2 */
    unsigned batch;        /* pfn entries per PAGE_DATA (1..1024); 0 = 1024 */
    uint64_t seed;
    /* Page contents: a memory image (pages cycled when the guest is
     * larger) or, when NULL, a synthetic mix of zero, text, pointer-rich
     * and random pages. Redirtied pages change a few bytes per round. */
    const uint8_t *image;
    size_t image_len;
    bool all_types;        /* PV: every type incl. BROKEN/XALLOC; both: XTAB holes */
} ms_xc_gen_config;

/* Write a whole stream (headers ... END) to out. */
int ms_xc_gen(const ms_xc_gen_config *cfg, ms_xc_out_fn out, void *out_ctx);
/* What a restore of that stream holds: for every pfn of the guest, its
 * last contents (mem: pages * 4096 bytes, zero for entries without data)
 * and its type (types: pages bytes; may be NULL). */
int ms_xc_gen_final_image(const ms_xc_gen_config *cfg, uint8_t *mem, uint8_t *types);
uint64_t ms_xc_gen_pages(const ms_xc_gen_config *cfg); /* the guest size used */

/* ================ xl save files and libxl streams (savefile.c) ========== */

/* An `xl save` file is xl's header (magic, byte order, flags, optional
 * data = u32 config length + the domain config) followed by libxl's stream:
 * a big-endian header ("LibxlFmt", version 2, options) and records
 * {type u32, length u32, body, zero padding to 8} up to libxl END. The
 * LIBXC_CONTEXT record (length 0) is followed by a whole libxc stream.
 * Facts: Xen's tools/xl/xl.h, xl_saverestore.c, xl_vmcontrol.c and
 * docs/specs/libxl-migration-stream.pandoc. All u32s of xl's header are in
 * the saving host's order: little-endian here (a byte-swapped header is
 * refused, like xl does). */
#define MS_XL_MAGIC "Xen saved domain, xl format\n \0 \r" /* 32 bytes, no NUL */
#define MS_XL_MAGIC_SIZE 32u
#define MS_XL_HDR_SIZE 48u             /* magic + 4 x u32 */
#define MS_XL_BYTEORDER 0x01020304u
#define MS_XL_FLAG_JSON 0x1u           /* config data is JSON */
#define MS_XL_FLAG_STREAMV2 0x2u       /* a libxl (migration v2) stream follows */
#define MS_XL_FLAGS_KNOWN (MS_XL_FLAG_JSON | MS_XL_FLAG_STREAMV2)
#define MS_XL_OPTDATA_MAX (16u << 20)  /* xl reads it whole; a config is KiBs */
#define MS_LIBXL_HDR_SIZE 16u
#define MS_LIBXL_IDENT 0x4c6962786c466d74ull /* "LibxlFmt" */
#define MS_LIBXL_VERSION 2u
#define MS_LIBXL_OPT_BIG_ENDIAN 0x1u
#define MS_LIBXL_OPT_LEGACY 0x2u       /* made by convert-legacy-stream */
#define MS_LIBXL_REC_LENGTH_MAX (128u << 20)
#define MS_LIBXL_EMU_HDR_SIZE 8u       /* emulator_id u32, index u32 */

enum ms_libxl_rec_type {
    MS_LIBXL_REC_END = 0,
    MS_LIBXL_REC_LIBXC_CONTEXT = 1,
    MS_LIBXL_REC_EMULATOR_XENSTORE_DATA = 2,
    MS_LIBXL_REC_EMULATOR_CONTEXT = 3,
    MS_LIBXL_REC_CHECKPOINT_END = 4,
    MS_LIBXL_REC_CHECKPOINT_STATE = 5,
    MS_LIBXL_REC_TYPE_COUNT = 6,
};
/* "LIBXC_CONTEXT", ...; "optional 0x80000002" / "unknown 0x00000009". */
const char *ms_libxl_rec_name(uint32_t type);

/* What a file is, from its first bytes (12 are enough for libxc - marker
 * and "XENF" id - and libxl, 32 for xl; fewer give MS_SAVE_UNKNOWN). */
enum ms_save_kind { MS_SAVE_UNKNOWN = 0, MS_SAVE_LIBXC, MS_SAVE_LIBXL, MS_SAVE_XL };
enum ms_save_kind ms_save_detect(const uint8_t *p, size_t n);
const char *ms_save_kind_name(enum ms_save_kind k); /* "libxc", "libxl", "xl", "unknown" */

typedef struct ms_xl_header {
    uint32_t mandatory_flags, optional_flags, optional_data_len;
    uint32_t config_len;   /* 0 when there is no optional data */
} ms_xl_header;

typedef struct ms_libxl_header {
    uint32_t version, options;
} ms_libxl_header;

typedef struct ms_libxl_record {
    uint64_t index;        /* libxl records numbered from 0 */
    uint64_t offset;       /* file offset of the record header */
    uint32_t type, length;
    uint32_t emulator_id, emulator_index; /* EMULATOR_* records */
} ms_libxl_record;

/* Callbacks of the container reader. xc are the libxc reader's callbacks
 * for the embedded libxc stream; xc.opaque (required) also receives every
 * byte of the container (xl header, config, libxl header and records), in
 * file order, so opaque + pages are the whole file split as for a libxc
 * stream. The others are optional and come before their bytes. */
typedef struct ms_save_reader_cb {
    int (*xl_header)(void *ctx, const ms_xl_header *h);
    int (*libxl_header)(void *ctx, const ms_libxl_header *h);
    int (*libxl_record)(void *ctx, const ms_libxl_record *rec);
    ms_xc_reader_cb xc;
} ms_save_reader_cb;

typedef struct ms_save_reader ms_save_reader;

/* A streaming reader of an `xl save` file, a bare libxl stream or a bare
 * libxc stream (told apart by the first bytes). Same contract as the libxc
 * reader: any chunking, bounded memory (the libxc reader's plus 48 bytes),
 * never past the final END (libxl END; libxc END for a bare libxc stream).
 * Refusals are MS_ERR_CORRUPT naming the structure, libxl record index and
 * type, and file offset; errors inside the libxc stream keep the libxc
 * reader's message (offsets relative to the libxc stream) prefixed with
 * the file offset where that stream starts. */
int ms_save_reader_new(const ms_save_reader_cb *cb, void *ctx, size_t batch_pages, ms_save_reader **out);
void ms_save_reader_free(ms_save_reader *r);
int ms_save_reader_push(ms_save_reader *r, const uint8_t *data, size_t len, size_t *used);
size_t ms_save_reader_want(const ms_save_reader *r);
bool ms_save_reader_done(const ms_save_reader *r);
int ms_save_reader_finish(ms_save_reader *r);           /* MS_ERR_TRUNCATED if not done */
uint64_t ms_save_reader_offset(const ms_save_reader *r); /* bytes consumed */
enum ms_save_kind ms_save_reader_kind(const ms_save_reader *r);
/* Read fd to the final END, never past it (as ms_xc_reader_pump_fd). */
int ms_save_reader_pump_fd(ms_save_reader *r, int fd);

/* The receiving side: rebuilds the byte-identical file from the reader's
 * opaque bytes and page batches, checking the container as the reader
 * does and handing the libxc part to an ms_xc_writer. */
typedef struct ms_save_writer ms_save_writer;
int ms_save_writer_new(ms_xc_out_fn out, void *out_ctx, ms_save_writer **w);
void ms_save_writer_free(ms_save_writer *w);
int ms_save_writer_opaque(ms_save_writer *w, const uint8_t *data, size_t len);
int ms_save_writer_pages(ms_save_writer *w, const uint64_t *entries, const uint8_t *pages, size_t count);
int ms_save_writer_finish(ms_save_writer *w);            /* MS_ERR_TRUNCATED if not done */
bool ms_save_writer_done(const ms_save_writer *w);
uint64_t ms_save_writer_offset(const ms_save_writer *w); /* bytes written */
/* ms_sink_ops over an ms_save_writer (ctx = the writer), as
 * ms_xc_writer_sink_ops. */
extern const ms_sink_ops ms_save_writer_sink_ops;

/* Statistics of a whole save file / stream, read from fd in bounded memory. */
typedef struct ms_save_stats {
    enum ms_save_kind kind;
    uint64_t bytes;                 /* consumed up to the final END */
    bool has_xl;
    ms_xl_header xl;
    bool has_libxl;
    ms_libxl_header libxl;
    uint64_t libxl_records;
    uint64_t libxl_count[MS_LIBXL_REC_TYPE_COUNT], libxl_bytes[MS_LIBXL_REC_TYPE_COUNT];
    uint64_t libxl_optional_records, libxl_optional_bytes;
    uint64_t libxc_offset;          /* file offset of the libxc stream */
    ms_xc_stats xc;                 /* the embedded libxc stream */
} ms_save_stats;
int ms_save_scan_fd(int fd, ms_save_stats *st);
void ms_save_stats_print(const ms_save_stats *st, FILE *f);

/* Carrying a save file / stream through an ms_sender (replay): reader
 * callbacks (ctx = ms_save_to_sender) that send the opaque bytes and page
 * batches, counting what passes. Rounds are found in the stream: libxc
 * sends each pass over memory in ascending pfn order, so a PAGE_DATA record
 * whose first data pfn is not above the previous record's last one starts a
 * new pass, and the round that carried pages is closed with
 * ms_sender_round_end first. The caller ends the last round
 * (ms_save_to_sender_end) before ms_sender_finish. */
typedef struct ms_save_to_sender {
    ms_xc_to_sender ts;
    bool round_has_pages;
    uint64_t last_pfn;
    uint64_t xc_records, libxl_records, data_pages;
} ms_save_to_sender;
extern const ms_save_reader_cb ms_save_reader_to_sender_cb;
int ms_save_to_sender_end(ms_save_to_sender *st);

/* Test data: an `xl save` file around a generated libxc stream: xl header
 * with `config` (NUL included, JSON flag) when config is non-NULL, libxl
 * header, for HVM an EMULATOR_XENSTORE_DATA record, LIBXC_CONTEXT, the
 * stream of ms_xc_gen(cfg), for HVM an EMULATOR_CONTEXT record, END - the
 * order libxl's save path writes them. */
int ms_save_gen_xl(const ms_xc_gen_config *cfg, const char *config, ms_xc_out_fn out, void *out_ctx);

#ifdef __cplusplus
}
#endif
#endif
