/* Session statistics: per round and in total, printed for people or as JSON. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "stream/stream.h"

void ms_stats_free(ms_stats *s)
{
    if (!s)
        return;
    free(s->rounds);
    s->rounds = NULL;
    s->nrounds = s->rounds_cap = 0;
}

ms_round_stats *ms_stats_round(ms_stats *s, uint32_t round)
{
    /* Rounds arrive in rising order, so the last one is nearly always it. */
    for (size_t i = s->nrounds; i-- > 0;)
        if (s->rounds[i].round == round)
            return &s->rounds[i];
    if (s->nrounds == s->rounds_cap) {
        size_t cap = s->rounds_cap ? 2 * s->rounds_cap : 8;
        ms_round_stats *r = realloc(s->rounds, cap * sizeof *r);
        if (!r)
            return NULL;
        s->rounds = r;
        s->rounds_cap = cap;
    }
    ms_round_stats *r = &s->rounds[s->nrounds++];
    memset(r, 0, sizeof *r);
    r->round = round;
    return r;
}

void ms_round_stats_add(ms_round_stats *into, const ms_round_stats *r)
{
    into->frames += r->frames;
    into->pages += r->pages;
    into->opaque_bytes += r->opaque_bytes;
    into->raw_bytes += r->raw_bytes;
    into->wire_bytes += r->wire_bytes;
    ms_stage_stats_add(&into->stage, &r->stage);
    into->comp_in += r->comp_in;
    into->comp_out += r->comp_out;
    for (int i = 0; i < MS_COMP_COUNT; i++)
        into->comp_bytes[i] += r->comp_bytes[i];
    if (r->t_start_ns && (!into->t_start_ns || r->t_start_ns < into->t_start_ns))
        into->t_start_ns = r->t_start_ns;
    if (r->t_end_ns > into->t_end_ns)
        into->t_end_ns = r->t_end_ns;
}

static double round_seconds(const ms_round_stats *r)
{
    return r->t_end_ns > r->t_start_ns ? (double)(r->t_end_ns - r->t_start_ns) / 1e9 : 0.0;
}

static double ratio(uint64_t raw, uint64_t wire) { return wire ? (double)raw / (double)wire : 0.0; }

static double mib(uint64_t b) { return (double)b / (1024.0 * 1024.0); }

static double pct(uint64_t part, uint64_t whole) { return whole ? 100.0 * (double)part / (double)whole : 0.0; }

static void print_round(const ms_round_stats *r, double secs, FILE *f)
{
    fprintf(f, "%8" PRIu64 " pages %9.1f MiB raw -> %9.1f MiB wire  ratio %5.2f  %7.3f s  %8.1f MiB/s\n",
            r->pages, mib(r->raw_bytes), mib(r->wire_bytes), ratio(r->raw_bytes, r->wire_bytes), secs,
            secs > 0 ? mib(r->raw_bytes) / secs : 0.0);
}

void ms_stats_print(const ms_stats *s, const char *title, FILE *f)
{
    const ms_round_stats *t = &s->total;
    const ms_stage_stats *st = &t->stage;
    double secs = s->wall_s > 0 ? s->wall_s : round_seconds(t);

    fprintf(f, "%s: %zu round%s, %" PRIu64 " frames, %" PRIu64 " opaque bytes\n", title ? title : "stream",
            s->nrounds, s->nrounds == 1 ? "" : "s", t->frames, t->opaque_bytes);
    fprintf(f, "  total   ");
    print_round(t, secs, f);
    fprintf(f, "  pages: zero %" PRIu64 " (%.1f%%), duplicate %" PRIu64 ", delta %" PRIu64 " (%.1f%%), "
               "raw %" PRIu64 " (%.1f%%; %" PRIu64 " without cache entry, %" PRIu64 " delta not smaller)\n",
            st->zero, pct(st->zero, st->pages), st->dup, st->delta, pct(st->delta, st->pages), st->raw,
            pct(st->raw, st->pages), st->delta_miss, st->delta_nogain);
    if (st->delta_off || st->unkept)
        fprintf(f, "  delta gated off (auto): passed %" PRIu64 " pages, %" PRIu64 " sent without a stored copy\n",
                st->delta_off, st->unkept);
    fprintf(f, "  compressor: %.1f MiB in -> %.1f MiB out (ratio %.2f)\n", mib(t->comp_in), mib(t->comp_out),
            ratio(t->comp_in, t->comp_out));
    fprintf(f, "  wall %.3f s, CPU %.3f s (%.0f%% of one core)\n", s->wall_s, s->cpu_s,
            s->wall_s > 0 ? 100.0 * s->cpu_s / s->wall_s : 0.0);
    if (s->verified || s->content_hash)
        fprintf(f, "  stream digest %016" PRIx64 "%s\n", s->content_hash,
                s->verified ? ", every frame's hash verified" : "");
    if (s->nrounds > 1)
        for (size_t i = 0; i < s->nrounds; i++) {
            fprintf(f, "  round %-3" PRIu32 " ", s->rounds[i].round);
            print_round(&s->rounds[i], round_seconds(&s->rounds[i]), f);
        }
}

static void json_round(const ms_round_stats *r, double secs, FILE *f)
{
    const ms_stage_stats *st = &r->stage;
    fprintf(f,
            "{\"round\":%" PRIu32 ",\"frames\":%" PRIu64 ",\"pages\":%" PRIu64 ",\"opaque_bytes\":%" PRIu64
            ",\"raw_bytes\":%" PRIu64 ",\"wire_bytes\":%" PRIu64 ",\"ratio\":%.4f,\"seconds\":%.6f"
            ",\"raw_MiBps\":%.2f,\"stage\":{\"pages\":%" PRIu64 ",\"zero\":%" PRIu64 ",\"dup\":%" PRIu64
            ",\"delta\":%" PRIu64 ",\"delta_miss\":%" PRIu64 ",\"delta_nogain\":%" PRIu64 ",\"raw\":%" PRIu64
            ",\"delta_off\":%" PRIu64 ",\"unkept\":%" PRIu64 ",\"in_bytes\":%" PRIu64 ",\"out_bytes\":%" PRIu64 "},\"comp_in\":%" PRIu64 ",\"comp_out\":%" PRIu64
            ",\"comp_bytes\":{\"none\":%" PRIu64 ",\"lz4\":%" PRIu64 ",\"zstd\":%" PRIu64 "}}",
            r->round, r->frames, r->pages, r->opaque_bytes, r->raw_bytes, r->wire_bytes,
            ratio(r->raw_bytes, r->wire_bytes), secs, secs > 0 ? mib(r->raw_bytes) / secs : 0.0, st->pages,
            st->zero, st->dup, st->delta, st->delta_miss, st->delta_nogain, st->raw, st->delta_off, st->unkept,
            st->in_bytes,
            st->out_bytes, r->comp_in, r->comp_out, r->comp_bytes[MS_COMP_NONE], r->comp_bytes[MS_COMP_LZ4],
            r->comp_bytes[MS_COMP_ZSTD]);
}

void ms_stats_json(const ms_stats *s, FILE *f)
{
    double secs = s->wall_s > 0 ? s->wall_s : round_seconds(&s->total);
    fprintf(f, "{\"wall_s\":%.6f,\"cpu_s\":%.6f,\"verified\":%s,\"stream_digest\":\"%016" PRIx64 "\",\"total\":",
            s->wall_s, s->cpu_s, s->verified ? "true" : "false", s->content_hash);
    json_round(&s->total, secs, f);
    fputs(",\"rounds\":[", f);
    for (size_t i = 0; i < s->nrounds; i++) {
        if (i)
            fputc(',', f);
        json_round(&s->rounds[i], round_seconds(&s->rounds[i]), f);
    }
    fputs("]}", f);
}
