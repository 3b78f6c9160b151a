/* libmigstream-xen.so inside Debian's real libxl-save-helper, run with
 * LD_PRELOAD and test doubles of libxenctrl / libxenguest 4.17 (no
 * hypervisor). This program plays libxl: it starts the helper with the
 * arguments libxl uses, answers its callback messages (suspend, complete)
 * on the helper's stdin/stdout, and checks what came out. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/ms_test.h"
#include "ms_config.h"
#include "xen/xen.h"

static const char *helper, *preload, *double_dir;
static char tmp[256];

/* libxl <-> helper message numbers (libxl_save_msgs_gen.pl order). */
enum { M_LOG = 1, M_PROGRESS, M_SUSPEND, M_POSTCOPY, M_CHECKPOINT, M_WAIT_CHECKPOINT, M_QEMU_LOGDIRTY,
       M_STATIC_DATA_DONE, M_RESTORE_RESULTS, M_COMPLETE };

typedef struct run {
    bool save, hvm;
    int io_fd;
    const char *const *env; /* extra NAME=VALUE entries */
    bool with_preload;
    pid_t pid;
    int to_helper, from_helper;
    int retval, errnoval;
    bool completed;
    int status;
    char err_path[300];
    pthread_t thread;
} run;

static char *path(const char *name)
{
    static __thread char buf[4][400];
    static __thread int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof(buf[k]), "%s/%s", tmp, name);
    return buf[k];
}

static void spawn(run *r)
{
    int in[2], out[2];
    CU_ASSERT_FATAL(pipe(in) == 0 && pipe(out) == 0);
    snprintf(r->err_path, sizeof(r->err_path), "%s/stderr-%s-%d", tmp, r->save ? "save" : "restore", r->io_fd);
    char *envp[32];
    int n = 0;
    char ldlib[400], ldpre[400];
    snprintf(ldlib, sizeof(ldlib), "LD_LIBRARY_PATH=%s", double_dir);
    snprintf(ldpre, sizeof(ldpre), "LD_PRELOAD=%s", preload);
    envp[n++] = "PATH=/usr/bin:/bin";
    envp[n++] = ldlib;
    if (r->with_preload)
        envp[n++] = ldpre;
    envp[n++] = r->hvm ? "XCDOUBLE_TYPE=hvm" : "XCDOUBLE_TYPE=pv";
    for (const char *const *e = r->env; e && *e && n < 30; e++)
        envp[n++] = (char *)*e;
    envp[n] = NULL;
    char cbflags[16];
    snprintf(cbflags, sizeof(cbflags), "%u", (1u << M_SUSPEND) | (r->hvm ? 1u << M_QEMU_LOGDIRTY : 0));
    char *save_argv[] = {(char *)helper, "--save-domain", "3", "-1", "7", "1", cbflags, "0", NULL};
    char *restore_argv[] = {(char *)helper, "--restore-domain", "3", "-1", "8", "1", "0", "2", "0", "0", "0", NULL};
    r->pid = fork();
    if (r->pid == 0) {
        int err = open(r->err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(in[0], 0);
        dup2(out[1], 1);
        if (err >= 0)
            dup2(err, 2);
        if (r->io_fd != 3)
            dup2(r->io_fd, 3);
        for (int fd = 4; fd < 256; fd++)
            close(fd);
        execve(helper, r->save ? save_argv : restore_argv, envp);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    r->to_helper = in[1];
    r->from_helper = out[0];
}

static bool read_exact(int fd, void *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t k = read(fd, (char *)p + got, n - got);
        if (k <= 0)
            return false;
        got += (size_t)k;
    }
    return true;
}

/* Play libxl until the helper exits. */
static void *play_libxl(void *arg)
{
    run *r = arg;
    uint16_t len;
    uint8_t msg[65536];
    while (read_exact(r->from_helper, &len, 2) && read_exact(r->from_helper, msg, len)) {
        uint16_t type;
        memcpy(&type, msg, 2);
        int reply = 0;
        switch (type) {
        case M_SUSPEND:
            reply = 1;
            break;
        case M_COMPLETE:
            memcpy(&r->retval, msg + 2, 4);
            memcpy(&r->errnoval, msg + 6, 4);
            r->completed = true;
            break;
        case M_POSTCOPY: case M_CHECKPOINT: case M_WAIT_CHECKPOINT: case M_QEMU_LOGDIRTY: case M_STATIC_DATA_DONE:
            break;
        default:
            continue; /* log, progress, restore_results: no reply */
        }
        if (write(r->to_helper, &reply, sizeof(reply)) != sizeof(reply))
            break;
    }
    close(r->to_helper);
    close(r->from_helper);
    waitpid(r->pid, &r->status, 0);
    return NULL;
}

static void start(run *r)
{
    spawn(r);
    pthread_create(&r->thread, NULL, play_libxl, r);
}

static bool finish(run *r)
{
    pthread_join(r->thread, NULL);
    bool ok = r->completed && r->retval == 0 && WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0;
    if (!ok) {
        fprintf(stderr, "\n  %s helper: completed %d retval %d errno %d status 0x%x; its stderr:\n",
                r->save ? "save" : "restore", r->completed, r->retval, r->errnoval, r->status);
        char cmd[400];
        snprintf(cmd, sizeof(cmd), "sed 's/^/    /' %s >&2", r->err_path);
        if (system(cmd) != 0)
            fprintf(stderr, "    (no stderr)\n");
    }
    return ok;
}

static ms_buf slurp(const char *p)
{
    ms_buf b = {0};
    int fd = open(p, O_RDONLY);
    uint8_t chunk[65536];
    ssize_t n;
    while (fd >= 0 && (n = read(fd, chunk, sizeof(chunk))) > 0)
        ms_buf_append(&b, chunk, (size_t)n);
    if (fd >= 0)
        close(fd);
    return b;
}

static bool same_file(const char *a, const char *b)
{
    ms_buf x = slurp(a), y = slurp(b);
    bool same = x.len > 0 && x.len == y.len && memcmp(x.data, y.data, x.len) == 0;
    ms_buf_free(&x);
    ms_buf_free(&y);
    return same;
}

static bool file_contains(const char *p, const char *needle)
{
    ms_buf b = slurp(p);
    ms_buf_append(&b, "", 1);
    bool has = strstr((const char *)b.data, needle) != NULL;
    ms_buf_free(&b);
    return has;
}

static bool have_tools(void)
{
    if (!helper || !preload || !double_dir || access(helper, X_OK) != 0) {
        printf("\n  SKIP: %s not available (Debian package xen-utils-4.17) or test paths unset\n",
               helper ? helper : "libxl-save-helper");
        return false;
    }
    return true;
}

/* Save with the given env to out_path; true if the helper reported success. */
static bool save_to(const char *out_path, bool hvm, bool with_preload, const char *const *env)
{
    int fd = open(out_path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    run r = {.save = true, .hvm = hvm, .io_fd = fd, .env = env, .with_preload = with_preload};
    start(&r);
    bool ok = finish(&r);
    close(fd);
    return ok;
}

static const char trailer[] = "libxl EMULATOR records, libxl END, xl handshake";

static void append(const char *p, const void *data, size_t n)
{
    int fd = open(p, O_WRONLY | O_APPEND);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT(write(fd, data, n) == (ssize_t)n);
    close(fd);
}

/* Restore from in_path; checks that the helper left exactly the trailer. */
static bool restore_from(const char *in_path, bool hvm, const char *const *env, bool *trailer_ok)
{
    int fd = open(in_path, O_RDONLY);
    run r = {.save = false, .hvm = hvm, .io_fd = fd, .env = env, .with_preload = true};
    start(&r);
    bool ok = finish(&r);
    char rest[sizeof(trailer) + 16];
    ssize_t n = read(fd, rest, sizeof(rest)); /* the offset is shared with the helper */
    *trailer_ok = n == (ssize_t)sizeof(trailer) && memcmp(rest, trailer, sizeof(trailer)) == 0;
    close(fd);
    return ok;
}

/* ---- tests ---------------------------------------------------------------- */

static void test_idle_is_transparent(void)
{
    if (!have_tools())
        return;
    static const char *const env[] = {"XCDOUBLE_PAGES=3000", NULL};
    CU_ASSERT(save_to(path("plain.xc"), false, false, env));
    CU_ASSERT(save_to(path("idle.xc"), false, true, env));
    CU_ASSERT(same_file(path("plain.xc"), path("idle.xc")));
    /* and the double's stream is a real multi-round libxc stream */
    ms_buf b = slurp(path("plain.xc"));
    ms_xc_stats st;
    CU_ASSERT_EQUAL(ms_xc_scan(b.data, b.len, &st, NULL), MS_OK);
    CU_ASSERT(st.resent_pages > 0);
    CU_ASSERT(st.rec_count[MS_XC_REC_PAGE_DATA] >= 6);
    ms_buf_free(&b);
}

static void test_inband(void)
{
    if (!have_tools())
        return;
    for (int hvm = 0; hvm < 2; hvm++) {
        char save_img[300], restore_img[300], rec[300];
        snprintf(save_img, sizeof(save_img), "XCDOUBLE_SAVE_IMAGE=%s", path("inband-save.img"));
        snprintf(restore_img, sizeof(restore_img), "XCDOUBLE_RESTORE_IMAGE=%s", path("inband-restore.img"));
        snprintf(rec, sizeof(rec), "MIGSTREAM_RECORD=%s", path("inband.rec"));
        const char *const plain_env[] = {"XCDOUBLE_PAGES=3000", NULL};
        /* HVM also with smaller stores than the default: the receiver must
         * adopt them from the hello, or its caches would fall out of step. */
        const char *const send_env[] = {"XCDOUBLE_PAGES=3000", save_img, rec, "MIGSTREAM_TRANSPORT=inband",
                                        "MIGSTREAM_CODEC=zero,delta,lz4", "MIGSTREAM_LOG=info",
                                        hvm ? "MIGSTREAM_DELTA_CACHE=4M" : NULL, "MIGSTREAM_DEDUP_CACHE=2M", NULL};
        const char *const recv_env[] = {"XCDOUBLE_PAGES=3000", restore_img, "MIGSTREAM_TRANSPORT=inband", NULL};
        CU_ASSERT(save_to(path("ref.xc"), hvm, false, plain_env));
        CU_ASSERT(save_to(path("inband.wire"), hvm, true, send_env));
        append(path("inband.wire"), trailer, sizeof(trailer));
        bool trailer_ok = false;
        CU_ASSERT(restore_from(path("inband.wire"), hvm, recv_env, &trailer_ok));
        CU_ASSERT(trailer_ok); /* the receiver read exactly the migstream bytes */
        CU_ASSERT(same_file(path("inband-save.img"), path("inband-restore.img")));
        CU_ASSERT(same_file(path("ref.xc"), path("inband.rec"))); /* MIGSTREAM_RECORD = the original stream */
        struct stat a, w;
        stat(path("ref.xc"), &a);
        stat(path("inband.wire"), &w);
        printf("\n  %s inband zero,delta,lz4: libxc stream %lld bytes, on libxl's fd %lld (%.2fx)",
               hvm ? "HVM" : "PV", (long long)a.st_size, (long long)w.st_size,
               (double)a.st_size / (double)w.st_size);
        CU_ASSERT(w.st_size * 3 < a.st_size);
    }
}

static unsigned free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(a);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) || getsockname(s, (struct sockaddr *)&a, &l))
        return 0;
    close(s);
    return ntohs(a.sin_port);
}

static void write_key(const char *p, char fill)
{
    char hex[65];
    memset(hex, fill, 64);
    hex[64] = '\n';
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CU_ASSERT(fd >= 0 && write(fd, hex, 65) == 65);
    close(fd);
}

/* Save and restore at once, libxl's fd a pipe between them, the pages on a
 * TCP side connection. Returns whether each side succeeded. */
static char save_err[300], restore_err[300];

static void tcp_pair(const char *recv_key, bool *save_ok, bool *restore_ok)
{
    unsigned port = free_port();
    char peer[64], listen[64], save_img[300], restore_img[300], skey[300], rkey[300];
    snprintf(peer, sizeof(peer), "MIGSTREAM_PEER=127.0.0.1:%u", port);
    snprintf(listen, sizeof(listen), "MIGSTREAM_LISTEN=127.0.0.1:%u", port);
    snprintf(save_img, sizeof(save_img), "XCDOUBLE_SAVE_IMAGE=%s", path("tcp-save.img"));
    snprintf(restore_img, sizeof(restore_img), "XCDOUBLE_RESTORE_IMAGE=%s", path("tcp-restore.img"));
    write_key(path("key-a"), 'a');
    write_key(path("key-b"), 'b');
    snprintf(skey, sizeof(skey), "MIGSTREAM_KEY_FILE=%s", path("key-a"));
    snprintf(rkey, sizeof(rkey), "MIGSTREAM_KEY_FILE=%s", path(recv_key));
    const char *const send_env[] = {"XCDOUBLE_PAGES=4000", save_img, "MIGSTREAM_TRANSPORT=tcp", peer,
                                    "MIGSTREAM_CHANNELS=2", "MIGSTREAM_CODEC=zero,zstd:1", skey,
                                    "MIGSTREAM_TIMEOUT=5s", NULL};
    const char *const recv_env[] = {"XCDOUBLE_PAGES=4000", restore_img, "MIGSTREAM_TRANSPORT=tcp", listen, rkey,
                                    "MIGSTREAM_TIMEOUT=5s", NULL};
    int p[2];
    CU_ASSERT_FATAL(pipe(p) == 0);
    run s = {.save = true, .hvm = true, .io_fd = p[1], .env = send_env, .with_preload = true};
    run r = {.save = false, .hvm = true, .io_fd = p[0], .env = recv_env, .with_preload = true};
    start(&r);
    start(&s);
    close(p[0]);
    close(p[1]);
    *save_ok = finish(&s);
    *restore_ok = finish(&r);
    snprintf(save_err, sizeof(save_err), "%s", s.err_path);
    snprintf(restore_err, sizeof(restore_err), "%s", r.err_path);
}

static void test_tcp_side_connection(void)
{
    if (!have_tools())
        return;
    bool s_ok, r_ok;
    tcp_pair("key-a", &s_ok, &r_ok);
    CU_ASSERT(s_ok);
    CU_ASSERT(r_ok);
    CU_ASSERT(same_file(path("tcp-save.img"), path("tcp-restore.img")));
}

static void test_wrong_key_fails_both(void)
{
    if (!have_tools())
        return;
    printf("\n  (two helper failures are expected below)");
    bool s_ok, r_ok;
    tcp_pair("key-b", &s_ok, &r_ok);
    CU_ASSERT_FALSE(s_ok);
    CU_ASSERT_FALSE(r_ok);
    CU_ASSERT(file_contains(save_err, "migstream-xen: save of domain 7 not started"));
    CU_ASSERT(file_contains(save_err, "pre-shared key"));
    CU_ASSERT(file_contains(restore_err, "migstream-xen: restore of domain 8 failed"));
}

/* MIGSTREAM_SCHED=fragmented: the preload's own precopy policy and
 * bitmap filtering inside libxc's loop. Whatever it defers, the restored
 * memory equals the guest's at suspend time; pages sent are compared with
 * libxc's own policy on the same (deterministic) guest. */
static uint64_t sched_run(const char *sched, const char *tag)
{
    char save_img[300], restore_img[300], rec[300], s_env[64], wire[300];
    snprintf(save_img, sizeof(save_img), "XCDOUBLE_SAVE_IMAGE=%s", path("fr-save.img"));
    snprintf(restore_img, sizeof(restore_img), "XCDOUBLE_RESTORE_IMAGE=%s", path("fr-restore.img"));
    snprintf(rec, sizeof(rec), "MIGSTREAM_RECORD=%s/fr-%s.rec", tmp, tag);
    snprintf(s_env, sizeof(s_env), "MIGSTREAM_SCHED=%s", sched);
    snprintf(wire, sizeof(wire), "%s/fr-%s.wire", tmp, tag);
    const char *const send_env[] = {"XCDOUBLE_PAGES=8192", "XCDOUBLE_DIRTY=0.08", save_img, rec,
                                    "MIGSTREAM_TRANSPORT=inband", s_env, "MIGSTREAM_LOG=info", NULL};
    const char *const recv_env[] = {"XCDOUBLE_PAGES=8192", restore_img, "MIGSTREAM_TRANSPORT=inband", NULL};
    CU_ASSERT(save_to(wire, false, true, send_env));
    append(wire, trailer, sizeof(trailer));
    bool trailer_ok = false;
    CU_ASSERT(restore_from(wire, false, recv_env, &trailer_ok));
    CU_ASSERT(trailer_ok);
    CU_ASSERT(same_file(path("fr-save.img"), path("fr-restore.img"))); /* no dirty page dropped */
    char recp[300];
    snprintf(recp, sizeof(recp), "%s/fr-%s.rec", tmp, tag);
    ms_buf b = slurp(recp);
    ms_xc_stats st;
    CU_ASSERT_EQUAL(ms_xc_scan(b.data, b.len, &st, NULL), MS_OK);
    ms_buf_free(&b);
    printf("\n  %-10s: %llu pages sent, %llu of them resent, %llu PAGE_DATA records", sched,
           (unsigned long long)st.data_pages, (unsigned long long)st.resent_pages,
           (unsigned long long)st.rec_count[MS_XC_REC_PAGE_DATA]);
    return st.data_pages;
}

static void test_fragmented_schedule(void)
{
    if (!have_tools())
        return;
    uint64_t xen = sched_run("xen", "xen");
    uint64_t frag = sched_run("fragmented", "frag");
    CU_ASSERT(xen > 0 && frag > 0);
}

/* A receiver with the preload accepts a sender without it. */
static void test_plain_sender_passthrough(void)
{
    if (!have_tools())
        return;
    char save_img[300], restore_img[300];
    snprintf(save_img, sizeof(save_img), "XCDOUBLE_SAVE_IMAGE=%s", path("pt-save.img"));
    snprintf(restore_img, sizeof(restore_img), "XCDOUBLE_RESTORE_IMAGE=%s", path("pt-restore.img"));
    const char *const send_env[] = {"XCDOUBLE_PAGES=1500", save_img, NULL};
    const char *const recv_env[] = {"XCDOUBLE_PAGES=1500", restore_img, "MIGSTREAM_TRANSPORT=inband", NULL};
    CU_ASSERT(save_to(path("pt.xc"), false, false, send_env));
    append(path("pt.xc"), trailer, sizeof(trailer));
    bool trailer_ok = false;
    CU_ASSERT(restore_from(path("pt.xc"), false, recv_env, &trailer_ok));
    CU_ASSERT(trailer_ok);
    CU_ASSERT(same_file(path("pt-save.img"), path("pt-restore.img")));
}

/* A broken configuration fails the save cleanly, before libxc starts. */
static void test_bad_config_fails_cleanly(void)
{
    if (!have_tools())
        return;
    const char *const env[] = {"XCDOUBLE_PAGES=100", "MIGSTREAM_CODEC=zero,bogus", NULL};
    int fd = open(path("bad.wire"), O_RDWR | O_CREAT | O_TRUNC, 0644);
    run r = {.save = true, .io_fd = fd, .env = env, .with_preload = true};
    start(&r);
    pthread_join(r.thread, NULL);
    CU_ASSERT(r.completed && r.retval != 0);
    CU_ASSERT(file_contains(r.err_path, "migstream-xen: save of domain 7 not started"));
    CU_ASSERT(file_contains(r.err_path, "bogus"));
    struct stat st;
    fstat(fd, &st);
    CU_ASSERT_EQUAL(st.st_size, 0); /* nothing was written on libxl's fd */
    close(fd);
}


/* ---- MIGSTREAM_TRANSPORT=rdma where it cannot run ----------------------------
 * This machine has no RDMA device (or the build no RDMA transport): both
 * helpers must fail at once with a message saying which, never wait on a
 * connection manager; the sender before libxc writes a byte. */
#define NO_DEVICE "no RDMA device"
#define NO_BUILD "this build of the preload has no RDMA transport"

static bool rdma_device_present(void)
{
    DIR *d = opendir("/sys/class/infiniband");
    struct dirent *e;
    bool any = false;
    while (d && (e = readdir(d)))
        any |= e->d_name[0] != '.';
    if (d)
        closedir(d);
    if (any)
        printf("\n  SKIP: this host has an RDMA device (the real test is the VM lane's)\n");
    return any;
}

/* A save with env that must fail before libxc starts; its stderr path. */
static void save_refused(const char *const *env, const char *what, const char *why)
{
    int fd = open(path("rdma.wire"), O_RDWR | O_CREAT | O_TRUNC, 0644);
    run r = {.save = true, .io_fd = fd, .env = env, .with_preload = true};
    uint64_t t0 = ms_now_ns();
    start(&r);
    pthread_join(r.thread, NULL);
    CU_ASSERT(ms_now_ns() - t0 < 5000000000ull); /* at once, not after a timeout */
    CU_ASSERT(r.completed && r.retval != 0);
    CU_ASSERT(file_contains(r.err_path, "migstream-xen: save of domain 7 not started"));
    CU_ASSERT(file_contains(r.err_path, what));
    if (why)
        CU_ASSERT(file_contains(r.err_path, why));
    struct stat st;
    fstat(fd, &st);
    CU_ASSERT_EQUAL(st.st_size, 0);
    close(fd);
}

static void test_rdma_sender_refused(void)
{
    if (!have_tools() || rdma_device_present())
        return;
    const char *const env[] = {"XCDOUBLE_PAGES=100", "MIGSTREAM_TRANSPORT=rdma", "MIGSTREAM_PEER=192.0.2.1:7000",
                               "MIGSTREAM_CHANNELS=2", NULL};
    save_refused(env, MS_HAVE_RDMA ? NO_DEVICE : NO_BUILD, "MIGSTREAM_TRANSPORT=rdma");
    if (!MS_HAVE_RDMA)
        return;
    const char *const no_peer[] = {"XCDOUBLE_PAGES=100", "MIGSTREAM_TRANSPORT=rdma", NULL};
    save_refused(no_peer, "MIGSTREAM_TRANSPORT=rdma needs MIGSTREAM_PEER=HOST:PORT", NULL);
    const char *const bad_opts[] = {"XCDOUBLE_PAGES=100", "MIGSTREAM_TRANSPORT=rdma",
                                    "MIGSTREAM_PEER=192.0.2.1:7000", "MIGSTREAM_RDMA_OPTS=bogus=1", NULL};
    save_refused(bad_opts, "MIGSTREAM_RDMA_OPTS=bogus=1", "bogus");
}

/* The receiver learns rdma from the sender's token on libxl's fd. */
static void test_bad_store_refused(void)
{
    if (!have_tools())
        return;
    const char *const big[] = {"XCDOUBLE_PAGES=100", "MIGSTREAM_DEDUP_CACHE=64G", NULL};
    save_refused(big, "MIGSTREAM_DEDUP_CACHE=64G", "a store size from 1M to 16G");
    const char *const junk[] = {"XCDOUBLE_PAGES=100", "MIGSTREAM_DELTA_CACHE=lots", NULL};
    save_refused(junk, "MIGSTREAM_DELTA_CACHE=lots", "a store size");
}

static void test_rdma_receiver_refused(void)
{
    if (!have_tools() || rdma_device_present())
        return;
    uint8_t token[32] = {'M', 'S', 'X', 'E', 'N', 'T', 'K', '1'};
    memset(token + 8, 0x5a, 16);
    token[24] = 1;  /* one channel */
    token[26] = 1;  /* side transport: rdma */
    int fd = open(path("rdma-token.wire"), O_RDWR | O_CREAT | O_TRUNC, 0644);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT(write(fd, token, sizeof token) == (ssize_t)sizeof token);
    lseek(fd, 0, SEEK_SET);
    char listen[64];
    snprintf(listen, sizeof listen, "MIGSTREAM_LISTEN=127.0.0.1:%u", free_port());
    const char *const env[] = {"XCDOUBLE_PAGES=100", "MIGSTREAM_TRANSPORT=tcp", listen, NULL};
    run r = {.save = false, .io_fd = fd, .env = env, .with_preload = true};
    uint64_t t0 = ms_now_ns();
    start(&r);
    pthread_join(r.thread, NULL);
    CU_ASSERT(ms_now_ns() - t0 < 5000000000ull);
    CU_ASSERT(r.completed && r.retval != 0);
    CU_ASSERT(file_contains(r.err_path, "migstream-xen: restore of domain 8 failed"));
    CU_ASSERT(file_contains(r.err_path, "the sender uses rdma side connections"));
    CU_ASSERT(file_contains(r.err_path, MS_HAVE_RDMA ? NO_DEVICE : "has no RDMA transport"));
    close(fd);
}

static void remove_tmp(void)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
    if (tmp[0] && system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmp);
}

static int setup_suite(void)
{
    helper = getenv("MS_SAVE_HELPER");
    preload = getenv("MS_XEN_PRELOAD");
    double_dir = getenv("MS_XCDOUBLE_DIR");
    snprintf(tmp, sizeof(tmp), "/tmp/ms-preload-XXXXXX");
    if (!mkdtemp(tmp))
        return 1;
    atexit(remove_tmp);
    return 0;
}

MS_TEST_MAIN({
    static const ms_test_case cases[] = {
        {"no MIGSTREAM_* variable: byte-identical output", test_idle_is_transparent},
        {"inband zero,delta,lz4: pages, record, trailer", test_inband},
        {"tcp side connection, 2 channels, key", test_tcp_side_connection},
        {"MIGSTREAM_SCHED=fragmented vs xen", test_fragmented_schedule},
        {"wrong key: save and restore both fail", test_wrong_key_fails_both},
        {"receiver passes a plain libxc stream through", test_plain_sender_passthrough},
        {"bad configuration fails before libxc", test_bad_config_fails_cleanly},
        {"bad page-store sizes fail before libxc", test_bad_store_refused},
        {"rdma without a device or build: sender refused at once", test_rdma_sender_refused},
        {"rdma without a device or build: receiver refused at once", test_rdma_receiver_refused},
        {NULL, NULL},
    };
    if (setup_suite())
        return 1;
    ms_test_add_suite("xen", cases);
})
