/* Migration reports: text, JSON, gnuplot plots, and per-page hashes. */
#include <errno.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <xxhash.h>

#include "fragsched/fragsched.h"

extern char **environ;

void ms_report_free(ms_migration_report *r)
{
    free(r->rounds);
    r->rounds = NULL;
    r->nrounds = r->rounds_cap = 0;
}

void ms_page_hashes(const uint8_t *mem, uint64_t mem_len, uint64_t first, uint64_t count,
                    uint32_t page_size, uint64_t *out)
{
    static const uint8_t zero[65536];
    uint64_t zero_hash = XXH3_64bits(zero, page_size <= sizeof(zero) ? page_size : 0);
    for (uint64_t i = 0; i < count; i++) {
        uint64_t off = (first + i) * page_size;
        if (mem && off + page_size <= mem_len)
            out[i] = XXH3_64bits(mem + off, page_size);
        else
            out[i] = zero_hash; /* never written: the image holds zeros there */
    }
}

static double mib(uint64_t b) { return (double)b / 1048576.0; }

static void print_verify(const ms_migration_report *r, FILE *f)
{
    if (!r->verify_done && r->have_digest)
        fprintf(f, "  verification: remote destination; source image digest at the pause %016llx "
                "(migstream recv prints the destination's)\n", (unsigned long long)r->image_digest);
    else if (!r->verify_done)
        fprintf(f, "  verification: %s\n",
                r->simulated ? "not applicable (simulation)" : "not done (destination not visible here)");
    else if (r->verified)
        fprintf(f, "  verification: OK, all %llu pages equal the source at the pause (%.2f s)\n",
                (unsigned long long)r->npages, r->verify_s);
    else
        fprintf(f, "  verification: FAILED, %llu of %llu pages differ (first: page %lld)\n",
                (unsigned long long)r->verify_mismatches, (unsigned long long)r->npages,
                (long long)r->verify_first_bad);
}

void ms_report_print(const ms_migration_report *r, FILE *f)
{
    fprintf(f, "migration (%s): policy %s, %s\n", r->simulated ? "simulated" : "live", r->policy,
            r->source);
    fprintf(f, "  memory %.1f MiB (%llu pages of %u B), fragments of %u pages, downtime target %.0f ms\n",
            mib(r->npages * r->page_size), (unsigned long long)r->npages, r->page_size,
            r->fragment_pages, r->downtime_target_ms);
    fprintf(f, "  link %s, chain %s\n", r->link, r->chain);
    fprintf(f, "  %5s %10s %10s %10s %10s %9s %16s  %s\n", "round", "dirty", "sent", "wire MiB",
            "time ms", "est ms", "held frags/pages", "decision");
    for (size_t i = 0; i < r->nrounds; i++) {
        const ms_round_record *x = &r->rounds[i];
        char est[16] = "-", held[32];
        if (x->est_stop_s >= 0)
            snprintf(est, sizeof(est), "%.1f", x->est_stop_s * 1000);
        snprintf(held, sizeof(held), "%u/%llu", x->deferred_fragments, (unsigned long long)x->pending_pages);
        fprintf(f, "  %5u%s %10llu %10llu %10.2f %10.1f %9s %16s  %s\n", x->round, x->final ? "F" : " ",
                (unsigned long long)x->dirty_pages, (unsigned long long)x->sent_pages,
                mib(x->wire_bytes), x->time_s * 1000, est, held,
                x->final ? "final (paused)" : ms_decision_name(x->decision));
    }
    fprintf(f, "  total time %.3f s, downtime %.1f ms, live %.3f s, %u live rounds + final\n",
            r->total_s, r->downtime_s * 1000, r->live_s, r->live_rounds);
    fprintf(f, "  pages sent %llu (%.2fx memory), final round %llu pages (%llu held back), "
            "max %u fragments held back\n",
            (unsigned long long)r->pages_sent, r->npages ? (double)r->pages_sent / (double)r->npages : 0,
            (unsigned long long)r->final_pages, (unsigned long long)r->deferred_pages_final,
            r->max_deferred_fragments);
    fprintf(f, "  wire %.2f MiB for %.2f MiB of pages (ratio %.3f)%s", mib(r->wire_bytes), mib(r->raw_bytes),
            r->raw_bytes ? (double)r->wire_bytes / (double)r->raw_bytes : 0, r->simulated ? "\n" : "");
    if (!r->simulated)
        fprintf(f, ", CPU %.2f s\n", r->cpu_s);
    fprintf(f, "  stopped because: %s\n", r->stop_reason[0] ? r->stop_reason : "-");
    print_verify(r, f);
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

void ms_report_json(const ms_migration_report *r, FILE *f)
{
    fprintf(f, "{\"policy\":");
    json_str(f, r->policy);
    fprintf(f, ",\"source\":");
    json_str(f, r->source);
    fprintf(f, ",\"chain\":");
    json_str(f, r->chain);
    fprintf(f, ",\"link\":");
    json_str(f, r->link);
    fprintf(f, ",\"simulated\":%s,\"npages\":%llu,\"page_size\":%u,\"fragment_pages\":%u,"
            "\"downtime_target_ms\":%.3f,\"total_s\":%.6f,\"downtime_s\":%.6f,\"live_s\":%.6f,"
            "\"live_rounds\":%u,\"pages_sent\":%llu,\"raw_bytes\":%llu,\"wire_bytes\":%llu,"
            "\"final_pages\":%llu,\"deferred_pages_final\":%llu,\"max_deferred_fragments\":%u,"
            "\"cpu_s\":%.3f,\"stop_reason\":",
            r->simulated ? "true" : "false", (unsigned long long)r->npages, r->page_size,
            r->fragment_pages, r->downtime_target_ms, r->total_s, r->downtime_s, r->live_s,
            r->live_rounds, (unsigned long long)r->pages_sent, (unsigned long long)r->raw_bytes,
            (unsigned long long)r->wire_bytes, (unsigned long long)r->final_pages,
            (unsigned long long)r->deferred_pages_final, r->max_deferred_fragments, r->cpu_s);
    json_str(f, r->stop_reason);
    fprintf(f, ",\"verification\":{\"done\":%s,\"ok\":%s,\"mismatches\":%llu,\"first_bad\":%lld,"
            "\"seconds\":%.3f",
            r->verify_done ? "true" : "false", r->verified ? "true" : "false",
            (unsigned long long)r->verify_mismatches, (long long)r->verify_first_bad, r->verify_s);
    if (r->have_digest)
        fprintf(f, ",\"image_digest\":\"%016llx\"", (unsigned long long)r->image_digest);
    fprintf(f, "},\"rounds\":[");
    for (size_t i = 0; i < r->nrounds; i++) {
        const ms_round_record *x = &r->rounds[i];
        fprintf(f, "%s{\"round\":%u,\"final\":%s,\"dirty_pages\":%llu,\"sent_pages\":%llu,"
                "\"raw_bytes\":%llu,\"wire_bytes\":%llu,\"pending_pages\":%llu,"
                "\"deferred_fragments\":%u,\"t_start_s\":%.6f,\"time_s\":%.6f,\"est_stop_s\":%.6f,"
                "\"decision\":\"%s\"}",
                i ? "," : "", x->round, x->final ? "true" : "false", (unsigned long long)x->dirty_pages,
                (unsigned long long)x->sent_pages, (unsigned long long)x->raw_bytes,
                (unsigned long long)x->wire_bytes, (unsigned long long)x->pending_pages,
                x->deferred_fragments, x->t_start_s, x->time_s, x->est_stop_s,
                x->final ? "final" : ms_decision_name(x->decision));
    }
    fprintf(f, "]}");
}

static double pct(double now, double base) { return base > 0 ? (now - base) / base * 100 : 0; }

void ms_report_compare(const ms_migration_report *reps, size_t n, FILE *f)
{
    const ms_migration_report *base = NULL;
    for (size_t i = 0; i < n; i++)
        if (!strcmp(reps[i].policy, "precopy"))
            base = &reps[i];
    fprintf(f, "\n%-11s %9s %12s %7s %12s %10s %9s  %s\n", "policy", "total s", "downtime ms",
            "rounds", "pages sent", "wire MiB", "verified",
            base ? "vs precopy: total time, downtime, wire bytes" : "");
    for (size_t i = 0; i < n; i++) {
        const ms_migration_report *r = &reps[i];
        fprintf(f, "%-11s %9.3f %12.1f %7u %12llu %10.1f %9s", r->policy, r->total_s,
                r->downtime_s * 1000, r->live_rounds, (unsigned long long)r->pages_sent,
                mib(r->wire_bytes), r->simulated ? "sim" : !r->verify_done ? "n/a" : r->verified ? "yes" : "NO");
        if (base && r != base)
            fprintf(f, "  %+.1f%%, %+.1f%%, %+.1f%%", pct(r->total_s, base->total_s),
                    pct(r->downtime_s, base->downtime_s),
                    pct((double)r->wire_bytes, (double)base->wire_bytes));
        fputc('\n', f);
    }
}

static int write_plot_files(const ms_migration_report *const *reps, size_t n, const char *prefix,
                            const char *title)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s.dat", prefix);
    FILE *d = fopen(path, "w");
    if (!d)
        return ms_error(MS_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    for (size_t k = 0; k < n; k++) {
        fprintf(d, "# %s: round dirty_pages sent_pages wire_mib time_ms (final round last)\n",
                reps[k]->policy);
        for (size_t i = 0; i < reps[k]->nrounds; i++) {
            const ms_round_record *x = &reps[k]->rounds[i];
            if (!x->final && x->decision == MS_DECIDE_STOP_NOW)
                continue; /* a decision, not a round: its pages are in the final one */
            fprintf(d, "%u %llu %llu %.3f %.3f\n", x->round, (unsigned long long)x->dirty_pages,
                    (unsigned long long)x->sent_pages, mib(x->wire_bytes), x->time_s * 1000);
        }
        fprintf(d, "\n\n");
    }
    fclose(d);
    snprintf(path, sizeof(path), "%s.gp", prefix);
    FILE *g = fopen(path, "w");
    if (!g)
        return ms_error(MS_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    fprintf(g, "# pages sent (solid) and dirty pages found (dashed) per round, per policy\n"
               "# generated by migstream; run: gnuplot %s.gp\n", prefix);
    for (int t = 0; t < 2; t++) {
        fprintf(g, "%s\nset output '%s.%s'\n",
                t ? "set terminal svg size 900,540 dynamic font 'sans,11'"
                  : "set terminal pngcairo size 900,540 font 'sans,10'",
                prefix, t ? "svg" : "png");
        fprintf(g, "set title \"%s\" noenhanced\nset xlabel 'round (last = stop-and-copy)'\n"
                   "set ylabel 'pages'\nset logscale y\nset grid\nset key outside right top noenhanced\n"
                   "set xtics 1\nset yrange [0.8:*]\n",
                title ? title : "pages per round");
        fprintf(g, "plot ");
        for (size_t k = 0; k < n; k++) {
            const char *p = reps[k]->policy;
            fprintf(g, "%s'%s.dat' index %zu using 1:($3+1) with linespoints lw 2 pt 7 lc %zu "
                       "title '%s: sent', \\\n"
                       "     '%s.dat' index %zu using 1:($2+1) with linespoints lw 1 dt 2 pt 6 lc %zu "
                       "title '%s: dirty'",
                    k ? ", \\\n     " : "", prefix, k, k + 1, p, prefix, k, k + 1, p);
        }
        fprintf(g, "\nunset output\n");
    }
    fclose(g);
    return MS_OK;
}

int ms_report_plot(const ms_migration_report *const *reps, size_t n, const char *prefix,
                   const char *title)
{
    int rc = write_plot_files(reps, n, prefix, title);
    if (rc)
        return rc;
    char gp[4096];
    snprintf(gp, sizeof(gp), "%s.gp", prefix);
    return ms_gnuplot_run(gp, prefix);
}

int ms_gnuplot_run(const char *gp, const char *prefix)
{
    char *argv[] = {"gnuplot", (char *)gp, NULL};
    pid_t pid;
    int err = posix_spawnp(&pid, "gnuplot", NULL, NULL, argv, environ);
    if (err)
        return ms_error(MS_ERR_UNSUPPORTED, "cannot run gnuplot (%s): install gnuplot-nox; "
                        "data and script kept in %s.dat and %s", strerror(err), prefix, gp);
    int st;
    if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st))
        return ms_error(MS_ERR_IO, "gnuplot %s failed", gp);
    return MS_OK;
}
