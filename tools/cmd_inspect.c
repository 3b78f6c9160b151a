/* `migstream inspect FILE`: the frames and totals of a recorded stream
 * (`migstream replay --record`), checked end to end by decoding it; and, for
 * a libxc migration stream, a libxl stream or an `xl save` file, its headers,
 * records and page statistics. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ms_config.h"
#include "tools/toolutil.h"
#include "xen/xen.h"

#define CMD "inspect"
#define ABORT_TEXT_MAX 400u /* the longest ABORT reason a sender writes */

typedef struct inspect_opts {
    const char *path, *key_file;
    bool frames, json, verify;
    uint8_t key[MS_KEY_SIZE];
    bool have_key;
} inspect_opts;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: migstream inspect [--frames] [--json] [--key FILE] [--no-verify] FILE\n"
            "\n"
            "Print the frames and totals of a stream recorded with `migstream replay --record`:\n"
            "the hello (session, chain, page size, sealing), frames per type and round,\n"
            "bytes per codec, and whether the stream is complete. Unless --no-verify, the\n"
            "stream is also decoded: every frame's hash is checked, pages are counted per\n"
            "stage (zero, delta, raw) and the digest of the image it rebuilds is printed.\n"
            "A libxc migration stream, a libxl stream or an `xl save` file is recognised by\n"
            "its header: its xl header, libxl records and the embedded libxc stream's\n"
            "records, page types, zero and resent pages are shown (read in bounded memory).\n"
            "\n"
            "  -f, --frames      list every frame\n"
            "  -k, --key FILE    key of a sealed stream (needed to decode it)\n"
            "      --no-verify   read the headers only\n"
            "  -j, --json        one JSON object on stdout\n"
            "  -h, --help        this help\n"
            "\n"
            "Exit status: 0 complete and verified, 1 failure (a truncated or malformed stream),\n"
            "2 usage, 3 content differs from its hashes, 5 authentication or integrity failure.\n");
}

static const char *type_name(unsigned t)
{
    static const char *const names[] = {"?", "PAGES", "OPAQUE", "ROUND_END", "END", "PING", "ABORT", "ACK"};
    return t <= MS_FRAME_TYPE_MAX ? names[t] : "?";
}

/* ---- libxc streams and xl save files: the Xen module's scanner ------------- */

static void libxc_json(const ms_save_stats *ss, uint64_t size, int rc)
{
    const ms_xc_stats *xs = &ss->xc;
    fprintf(stdout, ",\"format\":\"%s\",\"version\":%u,\"records\":%" PRIu64 ",\"bytes\":%" PRIu64
                    ",\"data_pages\":%" PRIu64 ",\"zero_pages\":%" PRIu64 ",\"pfn_entries\":%" PRIu64
                    ",\"distinct_pfns\":%" PRIu64 ",\"resent_pages\":%" PRIu64 ",\"max_pfn\":%" PRIu64,
            ms_save_kind_name(ss->kind), xs->hdr.version, xs->records, ss->kind == MS_SAVE_LIBXC ? ss->bytes : xs->bytes,
            xs->data_pages, xs->zero_pages, xs->pfn_entries, xs->distinct_pfns, xs->resent_pages, xs->max_pfn);
    if (ss->has_xl)
        fprintf(stdout, ",\"xl\":{\"mandatory_flags\":%u,\"optional_flags\":%u,\"optional_data_len\":%u,"
                        "\"config_len\":%u}",
                ss->xl.mandatory_flags, ss->xl.optional_flags, ss->xl.optional_data_len, ss->xl.config_len);
    if (ss->has_libxl) {
        fprintf(stdout, ",\"libxl\":{\"version\":%u,\"options\":%u,\"records\":%" PRIu64 ",\"by_type\":{",
                ss->libxl.version, ss->libxl.options, ss->libxl_records);
        for (uint32_t t = 0, n = 0; t < MS_LIBXL_REC_TYPE_COUNT; t++)
            if (ss->libxl_count[t])
                fprintf(stdout, "%s\"%s\":{\"records\":%" PRIu64 ",\"bytes\":%" PRIu64 "}", n++ ? "," : "",
                        ms_libxl_rec_name(t), ss->libxl_count[t], ss->libxl_bytes[t]);
        fprintf(stdout, "},\"optional_records\":%" PRIu64 "},\"libxc_offset\":%" PRIu64 ",\"file_bytes\":%" PRIu64,
                ss->libxl_optional_records, ss->libxc_offset, ss->bytes);
    }
    fprintf(stdout, ",\"trailing_bytes\":%" PRIu64 ",\"valid\":%s", rc == MS_OK ? size - ss->bytes : 0,
            rc == MS_OK ? "true" : "false");
    if (rc < 0) {
        fputs(",\"error\":", stdout);
        ms_json_error(stdout, rc, ms_last_error());
    }
    fputs("}\n", stdout);
}

/* Read in bounded memory from the fd, whatever the file's size. */
static int inspect_libxc(const inspect_opts *o, int fd)
{
    struct stat st;
    ms_save_stats ss;
    if (fstat(fd, &st) < 0)
        return ms_tool_fail(CMD, ms_error(MS_ERR_IO, "%s: cannot size the file", o->path));
    int rc = ms_save_scan_fd(fd, &ss);
    if (o->json) {
        fputs("{\"file\":", stdout);
        ms_json_str(stdout, o->path);
        libxc_json(&ss, (uint64_t)st.st_size, rc);
    } else {
        printf("%s: %s\n", o->path,
               ss.kind == MS_SAVE_XL ? "`xl save` file" : ss.kind == MS_SAVE_LIBXL ? "libxl migration stream"
                                                                                  : "libxc migration stream");
        ms_save_stats_print(&ss, stdout);
        if (rc == MS_OK && ss.bytes < (uint64_t)st.st_size)
            printf("%llu bytes follow the final END record (the toolstack's own data)\n",
                   (unsigned long long)((uint64_t)st.st_size - ss.bytes));
    }
    return rc < 0 ? ms_tool_fail(CMD, rc) : MS_EXIT_OK;
}

/* ---- migstream records: a walk over the headers ------------------------------ */

typedef struct round_row {
    uint32_t round;
    uint64_t frames, pages, raw, wire;
} round_row;

typedef struct codec_row {
    uint32_t id;
    uint64_t frames, raw, wire;
} codec_row;

typedef struct walk {
    ms_hello hello;
    uint64_t offset, frames, wire;
    uint64_t by_type[MS_FRAME_TYPE_MAX + 1];
    round_row *rounds;
    size_t nrounds;
    codec_row codecs[32];
    size_t ncodecs;
    bool complete, aborted, seq_gap;
    char abort_reason[ABORT_TEXT_MAX + 1];
    uint64_t trailing;
    int rc;
    char msg[512];
} walk;

static int read_full(int fd, void *buf, size_t n, size_t *got)
{
    *got = 0;
    while (*got < n) {
        ssize_t r = read(fd, (uint8_t *)buf + *got, n - *got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return ms_error(MS_ERR_IO, "read: %s", strerror(errno));
        if (r == 0)
            return MS_ERR_TRUNCATED;
        *got += (size_t)r;
    }
    return MS_OK;
}

static void count_frame(walk *w, const ms_frame_hdr *h)
{
    uint64_t wire = MS_FRAME_HDR_SIZE + (uint64_t)h->enc_len;
    w->frames++;
    w->wire += wire;
    w->by_type[h->type]++;
    if (h->type == MS_FRAME_PAGES || h->type == MS_FRAME_OPAQUE) {
        size_t i;
        for (i = 0; i < w->ncodecs && w->codecs[i].id != h->codec; i++)
            ;
        if (i == w->ncodecs && i < sizeof w->codecs / sizeof *w->codecs)
            w->codecs[w->ncodecs++] = (codec_row){.id = h->codec};
        if (i < w->ncodecs) {
            w->codecs[i].frames++;
            w->codecs[i].raw += h->raw_len;
            w->codecs[i].wire += wire;
        }
    }
    if (!w->nrounds || w->rounds[w->nrounds - 1].round != h->round) {
        size_t i;
        for (i = 0; i < w->nrounds && w->rounds[i].round != h->round; i++)
            ;
        if (i == w->nrounds) {
            round_row *r = realloc(w->rounds, (w->nrounds + 1) * sizeof *r);
            if (!r)
                return;
            w->rounds = r;
            w->rounds[w->nrounds++] = (round_row){.round = h->round};
        }
        if (i != w->nrounds - 1) {
            round_row t = w->rounds[i];
            memmove(&w->rounds[i], &w->rounds[i + 1], (w->nrounds - 1 - i) * sizeof t);
            w->rounds[w->nrounds - 1] = t;
        }
    }
    round_row *r = &w->rounds[w->nrounds - 1];
    r->frames++;
    r->pages += h->page_count;
    if (h->type == MS_FRAME_PAGES || h->type == MS_FRAME_OPAQUE)
        r->raw += h->raw_len;
    r->wire += wire;
}

static void print_frame(const inspect_opts *o, const ms_frame_hdr *h, uint64_t off, bool first)
{
    char chain[MS_CHAIN_TEXT_MAX] = "-";
    ms_chain c;
    if (h->codec && ms_chain_from_id(h->codec, &c) == MS_OK)
        ms_chain_format(&c, chain, sizeof chain);
    if (o->json) {
        fprintf(stdout, "%s{\"offset\":%" PRIu64 ",\"seq\":%" PRIu64 ",\"type\":\"%s\",\"round\":%u,\"fragment\":%u,"
                        "\"pages\":%u,\"raw\":%u,\"stage\":%u,\"enc\":%u,\"codec\":\"%s\",\"hash\":\"%016" PRIx64 "\"}",
                first ? "" : ",", off, h->seq, type_name(h->type), h->round, h->fragment, h->page_count, h->raw_len,
                h->stage_len, h->enc_len, chain, h->hash);
        return;
    }
    if (first)
        printf("%12s %8s %-9s %6s %8s %5s %8s %8s %8s  %-16s %s\n", "offset", "seq", "type", "round", "fragment",
               "pages", "raw", "stage", "enc", "codec", "hash");
    printf("%12" PRIu64 " %8" PRIu64 " %-9s %6u %8u %5u %8u %8u %8u  %-16s %016" PRIx64 "\n", off, h->seq,
           type_name(h->type), h->round, h->fragment, h->page_count, h->raw_len, h->stage_len, h->enc_len, chain,
           h->hash);
}

static int walk_frames(const inspect_opts *o, int fd, walk *w)
{
    uint8_t hdr[MS_FRAME_HDR_SIZE], *body = malloc(MS_MAX_FRAME_BODY);
    uint64_t expect_seq = 0;
    size_t got;
    int rc = MS_OK;
    bool first = true;
    if (!body)
        return ms_error(MS_ERR_NOMEM, "out of memory");
    for (;;) {
        rc = read_full(fd, hdr, sizeof hdr, &got);
        if (rc == MS_ERR_TRUNCATED && got == 0) {
            rc = w->complete ? MS_OK : ms_error(MS_ERR_TRUNCATED, "the stream ends after %" PRIu64
                                                " frames without END (cut short)", w->frames);
            break;
        }
        if (rc == MS_ERR_TRUNCATED)
            rc = ms_error(MS_ERR_TRUNCATED, "offset %" PRIu64 ": stream ends inside a frame header", w->offset);
        if (rc < 0)
            break;
        if (w->complete) {
            /* Bytes after END belong to someone else (e.g. a toolstack). */
            struct stat st;
            w->trailing = fstat(fd, &st) == 0 ? (uint64_t)st.st_size - w->offset : 0;
            break;
        }
        ms_frame_hdr h;
        if ((rc = ms_frame_hdr_unpack(hdr, &h)) < 0) {
            ms_error_wrap(rc, "offset %" PRIu64, w->offset);
            break;
        }
        if (h.type != MS_FRAME_ABORT) {
            if (h.seq != expect_seq)
                w->seq_gap = true;
            expect_seq = h.seq + 1;
        }
        if ((rc = read_full(fd, body, h.enc_len, &got)) < 0) {
            rc = ms_error(MS_ERR_TRUNCATED, "offset %" PRIu64 ": stream ends inside frame %" PRIu64
                          " (%zu of %u body bytes)", w->offset, h.seq, got, h.enc_len);
            break;
        }
        if (o->frames)
            print_frame(o, &h, w->offset, first);
        first = false;
        count_frame(w, &h);
        w->offset += MS_FRAME_HDR_SIZE + h.enc_len;
        if (h.type == MS_FRAME_END)
            w->complete = true;
        if (h.type == MS_FRAME_ABORT) {
            w->aborted = true;
            if (!(h.flags & MS_FRAME_F_SEALED)) {
                size_t n = h.enc_len < ABORT_TEXT_MAX ? h.enc_len : ABORT_TEXT_MAX;
                memcpy(w->abort_reason, body, n);
                w->abort_reason[n] = 0;
            } else {
                snprintf(w->abort_reason, sizeof w->abort_reason, "(sealed: decode with --key to read it)");
            }
        }
    }
    free(body);
    return rc;
}

static int walk_file(const inspect_opts *o, int fd, walk *w)
{
    uint8_t b[MS_HELLO_SIZE];
    size_t got;
    int rc;
    memset(w, 0, sizeof *w);
    if ((rc = read_full(fd, b, sizeof b, &got)) < 0)
        return ms_error(MS_ERR_TRUNCATED, "%s: %zu bytes, too short for a hello", o->path, got);
    if ((rc = ms_hello_unpack(b, &w->hello)) < 0)
        return ms_error_wrap(rc, "%s is not a migstream record", o->path);
    w->offset = MS_HELLO_SIZE;
    if (w->hello.flags & MS_HELLO_F_SEALED) {
        uint8_t proof[MS_PROOF_SIZE];
        if ((rc = read_full(fd, proof, sizeof proof, &got)) < 0)
            return ms_error(MS_ERR_TRUNCATED, "stream ends inside the key proof");
        w->offset += MS_PROOF_SIZE;
    }
    if (o->json && o->frames)
        fputs(",\"frame_list\":[", stdout);
    rc = walk_frames(o, fd, w);
    if (o->json && o->frames)
        fputs("]", stdout);
    return rc;
}

/* ---- decoding ------------------------------------------------------------------ */

static int decode(const inspect_opts *o, ms_digest_sink *d, ms_stats *st)
{
    int fd = open(o->path, O_RDONLY | O_CLOEXEC), rc;
    ms_conn *c;
    if (fd < 0)
        return ms_error(MS_ERR_IO, "cannot open %s: %s", o->path, strerror(errno));
    if ((rc = ms_fd_conn_new(fd, -1, true, &c)) < 0) {
        close(fd);
        return rc;
    }
    ms_session_config cfg = {.key = o->have_key ? o->key : NULL};
    d->inner = &ms_discard_sink_ops;
    rc = ms_receive_stream(c, &cfg, &ms_digest_sink_ops, d, st, NULL);
    ms_conn_close(c);
    return rc;
}

/* ---- output ------------------------------------------------------------------------ */

static void hello_text(const ms_hello *h, FILE *f)
{
    fprintf(f, "session ");
    for (unsigned i = 0; i < MS_SESSION_ID_SIZE; i++)
        fprintf(f, "%02x", h->session_id[i]);
    fprintf(f, ", wire version %u, chain %s, page size %u, %u channel%s, %s, %s\n", h->version, h->chain,
            h->page_size, h->channels, h->channels == 1 ? "" : "s",
            (h->flags & MS_HELLO_F_SEALED) ? "sealed" : "not sealed",
            (h->flags & MS_HELLO_F_ONEWAY) ? "one-way (a record)" : "two-way");
}

static void print_text(const inspect_opts *o, const walk *w, int walk_rc, const char *walk_msg, bool decoded,
                       int dec_rc, const char *dec_msg, const ms_digest_sink *d, const ms_stats *st)
{
    printf("%s: migstream stream, %" PRIu64 " bytes read\n", o->path, w->offset);
    hello_text(&w->hello, stdout);
    printf("frames: %" PRIu64 " (", w->frames);
    for (unsigned t = 1, first = 1; t <= MS_FRAME_TYPE_MAX; t++)
        if (w->by_type[t]) {
            printf("%s%s %" PRIu64, first ? "" : ", ", type_name(t), w->by_type[t]);
            first = 0;
        }
    printf("), %" PRIu64 " bytes of frames\n", w->wire);
    for (size_t i = 0; i < w->nrounds; i++) {
        const round_row *r = &w->rounds[i];
        printf("  round %-4u %7" PRIu64 " frames %9" PRIu64 " pages %12" PRIu64 " raw %12" PRIu64 " wire  ratio %.2f\n",
               r->round, r->frames, r->pages, r->raw, r->wire, r->wire ? (double)r->raw / (double)r->wire : 0.0);
    }
    for (size_t i = 0; i < w->ncodecs; i++) {
        char chain[MS_CHAIN_TEXT_MAX] = "?";
        ms_chain c;
        if (ms_chain_from_id(w->codecs[i].id, &c) == MS_OK)
            ms_chain_format(&c, chain, sizeof chain);
        printf("  codec %-20s %7" PRIu64 " frames %12" PRIu64 " raw -> %12" PRIu64 " wire\n", chain,
               w->codecs[i].frames, w->codecs[i].raw, w->codecs[i].wire);
    }
    if (w->seq_gap)
        printf("note: sequence numbers are not consecutive (not a one-channel record)\n");
    if (w->aborted)
        printf("the sender ABORTED the session: %s\n", w->abort_reason);
    if (w->trailing)
        printf("%" PRIu64 " bytes follow END (not part of the stream)\n", w->trailing);
    printf("stream: %s\n", walk_rc == MS_OK ? "complete (ends with END)" : walk_msg);
    if (!decoded) {
        if (o->verify && (w->hello.flags & MS_HELLO_F_SEALED))
            printf("not decoded: the stream is sealed; give --key FILE to verify it\n");
        return;
    }
    ms_stats_print(st, "decoded", stdout);
    printf("image digest %016" PRIx64 " (%" PRIu64 " pages)", ms_digest_sink_value(d), d->npages);
    if (d->opaque_bytes)
        printf(", opaque %" PRIu64 " bytes (digest %016" PRIx64 ")", d->opaque_bytes, ms_digest_sink_opaque(d));
    printf("\nverification: %s\n", dec_rc == MS_OK ? "every frame's hash matches, stream complete" : dec_msg);
}

static void print_json_tail(const inspect_opts *o, const walk *w, int walk_rc, const char *walk_msg, bool decoded,
                            int dec_rc, const char *dec_msg, const ms_digest_sink *d, const ms_stats *st)
{
    FILE *f = stdout;
    (void)o;
    fprintf(f, ",\"hello\":{\"version\":%u,\"chain\":", w->hello.version);
    ms_json_str(f, w->hello.chain);
    fprintf(f, ",\"page_size\":%u,\"channels\":%u,\"sealed\":%s,\"oneway\":%s}", w->hello.page_size,
            w->hello.channels, (w->hello.flags & MS_HELLO_F_SEALED) ? "true" : "false",
            (w->hello.flags & MS_HELLO_F_ONEWAY) ? "true" : "false");
    fprintf(f, ",\"bytes\":%" PRIu64 ",\"frames\":%" PRIu64 ",\"frame_bytes\":%" PRIu64 ",\"by_type\":{", w->offset,
            w->frames, w->wire);
    for (unsigned t = 1, first = 1; t <= MS_FRAME_TYPE_MAX; t++) {
        fprintf(f, "%s\"%s\":%" PRIu64, first ? "" : ",", type_name(t), w->by_type[t]);
        first = 0;
    }
    fputs("},\"rounds\":[", f);
    for (size_t i = 0; i < w->nrounds; i++)
        fprintf(f, "%s{\"round\":%u,\"frames\":%" PRIu64 ",\"pages\":%" PRIu64 ",\"raw_bytes\":%" PRIu64
                   ",\"wire_bytes\":%" PRIu64 "}",
                i ? "," : "", w->rounds[i].round, w->rounds[i].frames, w->rounds[i].pages, w->rounds[i].raw,
                w->rounds[i].wire);
    fputs("],\"codecs\":[", f);
    for (size_t i = 0; i < w->ncodecs; i++) {
        char chain[MS_CHAIN_TEXT_MAX] = "?";
        ms_chain c;
        if (ms_chain_from_id(w->codecs[i].id, &c) == MS_OK)
            ms_chain_format(&c, chain, sizeof chain);
        fprintf(f, "%s{\"chain\":", i ? "," : "");
        ms_json_str(f, chain);
        fprintf(f, ",\"frames\":%" PRIu64 ",\"raw_bytes\":%" PRIu64 ",\"wire_bytes\":%" PRIu64 "}", w->codecs[i].frames,
                w->codecs[i].raw, w->codecs[i].wire);
    }
    fprintf(f, "],\"complete\":%s,\"trailing_bytes\":%" PRIu64 ",\"aborted\":", walk_rc == MS_OK ? "true" : "false",
            w->trailing);
    if (w->aborted)
        ms_json_str(f, w->abort_reason);
    else
        fputs("null", f);
    if (walk_rc < 0) {
        fputs(",\"error\":", f);
        ms_json_error(f, walk_rc, walk_msg);
    }
    fprintf(f, ",\"decoded\":%s", decoded ? "true" : "false");
    if (decoded) {
        fprintf(f, ",\"verified\":%s,\"image_pages\":%" PRIu64 ",\"image_digest\":\"%016" PRIx64 "\""
                   ",\"opaque_bytes\":%" PRIu64 ",\"decode\":",
                dec_rc == MS_OK ? "true" : "false", d->npages, ms_digest_sink_value(d), d->opaque_bytes);
        ms_stats_json(st, f);
        if (dec_rc < 0) {
            fputs(",\"decode_error\":", f);
            ms_json_error(f, dec_rc, dec_msg);
        }
    }
    fputs("}\n", f);
}

static int parse(int argc, char **argv, inspect_opts *o)
{
    static const struct option opts[] = {
        {"frames", no_argument, NULL, 'f'}, {"json", no_argument, NULL, 'j'}, {"key", required_argument, NULL, 'k'},
        {"no-verify", no_argument, NULL, 'N'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0},
    };
    int c;
    memset(o, 0, sizeof *o);
    o->verify = true;
    optind = 1;
    while ((c = getopt_long(argc, argv, "fjk:h", opts, NULL)) != -1) {
        switch (c) {
        case 'f': o->frames = true; break;
        case 'j': o->json = true; break;
        case 'k': o->key_file = optarg; break;
        case 'N': o->verify = false; break;
        case 'h': usage(stdout); return 1;
        default: usage(stderr); return -1;
        }
    }
    if (optind != argc - 1)
        return ms_tool_usage_error(CMD, "expected exactly one FILE"), -1;
    o->path = argv[optind];
    return 0;
}

int cmd_inspect(int argc, char **argv)
{
    inspect_opts o;
    walk w;
    ms_digest_sink d = {0};
    ms_stats st = {0};
    uint8_t magic[32] = {0};
    char walk_msg[512] = "", dec_msg[512] = "";
    int rc, dec_rc = MS_OK, p = parse(argc, argv, &o);

    if (p)
        return p > 0 ? MS_EXIT_OK : MS_EXIT_USAGE;
    if (o.key_file) {
        if ((rc = ms_key_load(o.key_file, o.key)) < 0)
            return ms_tool_fail(CMD, rc);
        o.have_key = true;
    }
    int fd = open(o.path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ms_tool_fail(CMD, ms_error(MS_ERR_IO, "cannot open %s: %s", o.path, strerror(errno)));
    ssize_t n = pread(fd, magic, sizeof magic, 0);
    if (n > 0 && ms_save_detect(magic, (size_t)n) != MS_SAVE_UNKNOWN) {
        rc = inspect_libxc(&o, fd);
        close(fd);
        return rc;
    }
    if (o.json) {
        fputs("{\"file\":", stdout);
        ms_json_str(stdout, o.path);
        fputs(",\"format\":\"migstream\"", stdout);
    }
    rc = walk_file(&o, fd, &w);
    close(fd);
    if (rc < 0)
        snprintf(walk_msg, sizeof walk_msg, "%s", ms_last_error());
    if (rc < 0 && w.offset == 0) {
        /* Not a stream at all: nothing more to show. */
        if (o.json) {
            fputs(",\"error\":", stdout);
            ms_json_error(stdout, rc, walk_msg);
            fputs("}\n", stdout);
            return ms_exit_code(rc);
        }
        return ms_tool_fail(CMD, rc);
    }
    bool decoded = o.verify && (!(w.hello.flags & MS_HELLO_F_SEALED) || o.have_key);
    if (decoded && (dec_rc = decode(&o, &d, &st)) < 0)
        snprintf(dec_msg, sizeof dec_msg, "%s", ms_last_error());
    if (o.json)
        print_json_tail(&o, &w, rc, walk_msg, decoded, dec_rc, dec_msg, &d, &st);
    else
        print_text(&o, &w, rc, walk_msg, decoded, dec_rc, dec_msg, &d, &st);
    free(w.rounds);
    ms_digest_sink_free(&d);
    ms_stats_free(&st);
    int first = rc < 0 ? rc : dec_rc;
    if (first < 0 && !o.json)
        fprintf(stderr, "migstream inspect: %s\n", rc < 0 ? walk_msg : dec_msg);
    return ms_exit_code(first);
}
