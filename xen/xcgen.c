/* migstream-xcgen: write a spec-valid libxc migration stream (PV or HVM,
 * several rounds with resent pages), or check one and print its stats. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "xen/xen.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: migstream-xcgen [options] [-o FILE]   generate a libxc stream\n"
            "       migstream-xcgen --scan FILE            validate a libxc stream or an xl save\n"
            "                                              file, print stats\n"
            "  -t, --type pv|hvm      guest type (default hvm)\n"
            "  -V, --version 2|3      stream version (default 3, what Xen 4.17 writes)\n"
            "  -s, --size SIZE        guest memory, e.g. 64M, 1G (default 16M)\n"
            "  -r, --rounds N         live rounds incl. the first full pass (default 3)\n"
            "  -d, --dirty FRACTION   pages redirtied per round (default 0.05)\n"
            "  -c, --vcpus N          vcpus (default 2)\n"
            "  -b, --batch N          pfns per PAGE_DATA record, 1..1024 (default 1024)\n"
            "  -S, --seed N           seed of the synthetic contents (default 1)\n"
            "  -i, --image FILE       take page contents from a memory image\n"
            "  -a, --all-types        every page type (BROKEN, XALLOC, XTAB, pinned tables)\n"
            "  -X, --xl               wrap the stream as `xl save` writes it: xl header with a\n"
            "                         JSON domain config, libxl header and records\n"
            "  -o, --output FILE      write here (default stdout)\n");
}

static int map_file(const char *path, const uint8_t **data, size_t *len)
{
    int fd = open(path, O_RDONLY);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) < 0) {
        fprintf(stderr, "migstream-xcgen: %s: %s\n", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *len = (size_t)sb.st_size;
    *data = NULL;
    if (*len) {
        void *m = mmap(NULL, *len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            fprintf(stderr, "migstream-xcgen: mmap %s: %s\n", path, strerror(errno));
            close(fd);
            return -1;
        }
        *data = m;
    }
    close(fd);
    return 0;
}

static int scan(const char *path)
{
    ms_save_stats st;
    struct stat sb;
    int fd = open(path, O_RDONLY);
    if (fd < 0 || fstat(fd, &sb) < 0) {
        fprintf(stderr, "migstream-xcgen: %s: %s\n", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return 1;
    }
    int rc = ms_save_scan_fd(fd, &st);
    close(fd);
    if (rc) {
        fprintf(stderr, "migstream-xcgen: %s: %s\n", path, ms_last_error());
        return 1;
    }
    ms_save_stats_print(&st, stdout);
    if (st.bytes < (uint64_t)sb.st_size)
        printf("  %llu bytes follow the final END (not part of the stream)\n",
               (unsigned long long)((uint64_t)sb.st_size - st.bytes));
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"type", required_argument, 0, 't'},   {"version", required_argument, 0, 'V'},
        {"size", required_argument, 0, 's'},   {"rounds", required_argument, 0, 'r'},
        {"dirty", required_argument, 0, 'd'},  {"vcpus", required_argument, 0, 'c'},
        {"batch", required_argument, 0, 'b'},  {"seed", required_argument, 0, 'S'},
        {"image", required_argument, 0, 'i'},  {"all-types", no_argument, 0, 'a'},
        {"output", required_argument, 0, 'o'}, {"scan", required_argument, 0, 'x'},
        {"xl", no_argument, 0, 'X'},           {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    ms_xc_gen_config cfg = {.dom_type = MS_XC_DOM_X86_HVM, .seed = 1};
    uint64_t size = 16u << 20;
    const char *out_path = NULL, *image = NULL;
    char *end;
    bool xl = false;
    int c;
    while ((c = getopt_long(argc, argv, "t:V:s:r:d:c:b:S:i:aXo:h", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            if (!strcmp(optarg, "pv"))
                cfg.dom_type = MS_XC_DOM_X86_PV;
            else if (!strcmp(optarg, "hvm"))
                cfg.dom_type = MS_XC_DOM_X86_HVM;
            else {
                fprintf(stderr, "migstream-xcgen: --type must be pv or hvm, not '%s'\n", optarg);
                return 2;
            }
            break;
        case 'V': cfg.version = (uint32_t)strtoul(optarg, &end, 10); if (*end) goto bad; break;
        case 's': if (ms_parse_size(optarg, &size) || size < MS_XC_PAGE_SIZE) goto bad; break;
        case 'r': cfg.rounds = (unsigned)strtoul(optarg, &end, 10); if (*end) goto bad; break;
        case 'd': cfg.dirty = strtod(optarg, &end); if (*end) goto bad; break;
        case 'c': cfg.vcpus = (unsigned)strtoul(optarg, &end, 10); if (*end) goto bad; break;
        case 'b': cfg.batch = (unsigned)strtoul(optarg, &end, 10); if (*end) goto bad; break;
        case 'S': cfg.seed = strtoull(optarg, &end, 0); if (*end) goto bad; break;
        case 'i': image = optarg; break;
        case 'a': cfg.all_types = true; break;
        case 'X': xl = true; break;
        case 'o': out_path = optarg; break;
        case 'x': return scan(optarg);
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    cfg.pages = size / MS_XC_PAGE_SIZE;
    if (image && map_file(image, &cfg.image, &cfg.image_len))
        return 1;
    int fd = STDOUT_FILENO;
    if (out_path && (fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644)) < 0) {
        fprintf(stderr, "migstream-xcgen: %s: %s\n", out_path, strerror(errno));
        return 1;
    }
    if (fd == STDOUT_FILENO && isatty(fd)) {
        fprintf(stderr, "migstream-xcgen: refusing to write a binary stream to a terminal (use -o FILE)\n");
        return 2;
    }
    static const char config[] = "{\"c_info\":{\"type\":\"pv\",\"name\":\"xcgen\"},\"b_info\":"
                                 "{\"max_memkb\":16384}}";
    int rc = xl ? ms_save_gen_xl(&cfg, config, ms_xc_out_fd, &fd) : ms_xc_gen(&cfg, ms_xc_out_fd, &fd);
    if (rc)
        fprintf(stderr, "migstream-xcgen: %s\n", ms_last_error());
    if (fd != STDOUT_FILENO && close(fd) < 0 && !rc) {
        fprintf(stderr, "migstream-xcgen: %s: %s\n", out_path, strerror(errno));
        rc = MS_ERR_IO;
    }
    return rc ? 1 : 0;
bad:
    fprintf(stderr, "migstream-xcgen: bad value '%s' for -%c\n", optarg, c);
    return 2;
}
