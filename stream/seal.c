/* Pre-shared key files, frame sealing (XChaCha20-Poly1305 with the header as
 * associated data) and the per-channel sequence check that turns the seal's
 * integrity into replay and reorder protection. */
#include "stream/stream.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- key files ---------------------------------------------------------- */

#define KEY_HEX_LEN (2 * MS_KEY_SIZE)
#define KEY_READ_MAX (KEY_HEX_LEN + 3) /* enough to tell "too long" apart */

static int read_small_file(int fd, const char *path, uint8_t *buf, size_t cap, size_t *len)
{
    *len = 0;
    while (*len < cap) {
        ssize_t n = read(fd, buf + *len, cap - *len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return ms_error(MS_ERR_IO, "key file %s: read: %s", path, strerror(errno));
        if (n == 0)
            break;
        *len += (size_t)n;
    }
    return MS_OK;
}

static size_t strip_newline(const uint8_t *buf, size_t len)
{
    if (len && buf[len - 1] == '\n')
        len--;
    if (len && buf[len - 1] == '\r')
        len--;
    return len;
}

static int parse_key(const char *path, const uint8_t *buf, size_t len, uint8_t key[MS_KEY_SIZE])
{
    size_t text_len = strip_newline(buf, len), bin_len = 0;

    if (len == MS_KEY_SIZE) {
        memcpy(key, buf, MS_KEY_SIZE);
    } else if (text_len == KEY_HEX_LEN) {
        for (size_t i = 0; i < KEY_HEX_LEN; i++)
            if (!((buf[i] >= '0' && buf[i] <= '9') || ((buf[i] | 0x20) >= 'a' && (buf[i] | 0x20) <= 'f')))
                return ms_error(MS_ERR_INVAL, "key file %s: character %zu is not a hex digit", path, i + 1);
        if (sodium_hex2bin(key, MS_KEY_SIZE, (const char *)buf, KEY_HEX_LEN, NULL, &bin_len, NULL) ||
            bin_len != MS_KEY_SIZE)
            return ms_error(MS_ERR_INVAL, "key file %s: bad hex text", path);
    } else {
        return ms_error(MS_ERR_INVAL,
                        "key file %s is %s%zu bytes: expected 32 raw bytes or 64 hex digits "
                        "(optionally followed by a newline); make one with `migstream keygen FILE`",
                        path, len >= KEY_READ_MAX ? "at least " : "", len);
    }
    if (sodium_is_zero(key, MS_KEY_SIZE))
        return ms_error(MS_ERR_INVAL, "key file %s holds an all-zero key", path);
    return MS_OK;
}

int ms_key_load(const char *path, uint8_t key[MS_KEY_SIZE])
{
    uint8_t buf[KEY_READ_MAX];
    struct stat st;
    size_t len = 0;
    int rc, fd;

    if (sodium_init() < 0)
        return ms_error(MS_ERR_UNSUPPORTED, "libsodium failed to initialise");
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ms_error(MS_ERR_IO, "cannot open key file %s: %s", path, strerror(errno));
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & (S_IRWXG | S_IRWXO)))
        ms_log(MS_LOG_ERROR, "warning: key file %s is accessible by group or others (mode %04o); "
                             "chmod 600 it", path, (unsigned)(st.st_mode & 07777));
    rc = read_small_file(fd, path, buf, sizeof buf, &len);
    if (rc == MS_OK)
        rc = parse_key(path, buf, len, key);
    if (rc < 0)
        sodium_memzero(key, MS_KEY_SIZE);
    sodium_memzero(buf, sizeof buf);
    close(fd);
    return rc;
}

int ms_key_generate(const char *path)
{
    uint8_t key[MS_KEY_SIZE];
    char hex[KEY_HEX_LEN + 2];
    int rc = MS_OK, fd;

    if (sodium_init() < 0)
        return ms_error(MS_ERR_UNSUPPORTED, "libsodium failed to initialise");
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST)
        return ms_error(MS_ERR_IO, "key file %s already exists: refusing to overwrite it", path);
    if (fd < 0)
        return ms_error(MS_ERR_IO, "cannot create key file %s: %s", path, strerror(errno));
    randombytes_buf(key, sizeof key);
    sodium_bin2hex(hex, sizeof hex, key, sizeof key);
    hex[KEY_HEX_LEN] = '\n';
    /* open's mode passes through the umask; the owner must still be able to
     * read the key, and nobody else. */
    if (fchmod(fd, 0600) < 0 || write(fd, hex, KEY_HEX_LEN + 1) != KEY_HEX_LEN + 1 || fsync(fd) < 0)
        rc = ms_error(MS_ERR_IO, "cannot write key file %s: %s", path, strerror(errno));
    if (close(fd) < 0 && rc == MS_OK)
        rc = ms_error(MS_ERR_IO, "cannot write key file %s: %s", path, strerror(errno));
    if (rc < 0)
        unlink(path);
    sodium_memzero(key, sizeof key);
    sodium_memzero(hex, sizeof hex);
    return rc;
}

/* ---- sealing ------------------------------------------------------------ */

/* Header fields ms_seal/ms_open need, read straight from the packed bytes:
 * the associated data is those bytes, so they are what must agree. */
typedef struct seal_view {
    uint8_t flags;
    uint16_t channel;
    uint64_t seq;
    uint32_t enc_len;
} seal_view;

static seal_view view_of(const uint8_t hdr[MS_FRAME_HDR_SIZE])
{
    return (seal_view){
        .flags = hdr[5],
        .channel = ms_get_le16(hdr + 6),
        .seq = ms_get_le64(hdr + 8),
        .enc_len = ms_get_le32(hdr + 36),
    };
}

/* 24-byte XChaCha20 nonce: seq (LE u64) at 0, channel (LE u16) at 8, the
 * direction (the sealing side's ms_role) at 10, zeros after. Each channel
 * and direction already has its own key; repeating both in the nonce keeps
 * a frame bound to its place even if keys were ever shared. */
static void make_nonce(uint8_t nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES], uint16_t channel,
                       uint64_t seq, uint8_t direction)
{
    memset(nonce, 0, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
    ms_put_le64(nonce, seq);
    ms_put_le16(nonce + 8, channel);
    nonce[10] = direction;
}

static int check_keys(const ms_session_keys *k)
{
    if (!k->sealed)
        return ms_error(MS_ERR_INVAL, "sealing called on an unsealed session");
    if (k->role != MS_ROLE_SENDER && k->role != MS_ROLE_RECEIVER)
        return ms_error(MS_ERR_INVAL, "session keys carry no role (not made by the handshake?)");
    return MS_OK;
}

int ms_seal(const ms_session_keys *k, const uint8_t hdr[MS_FRAME_HDR_SIZE], uint16_t channel,
            uint64_t seq, uint8_t *body, size_t len, size_t *out_len)
{
    uint8_t nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES];
    seal_view v = view_of(hdr);
    unsigned long long clen = 0;
    int rc = check_keys(k);

    if (rc < 0)
        return rc;
    if (!(v.flags & MS_FRAME_F_SEALED) || v.channel != channel || v.seq != seq ||
        (uint64_t)v.enc_len != (uint64_t)len + MS_SEAL_TAG_SIZE)
        return ms_error(MS_ERR_INVAL,
                        "ms_seal: header (flags 0x%02x, channel %u, seq %llu, enc_len %u) does not describe "
                        "a sealed %zu-byte body on channel %u seq %llu",
                        v.flags, v.channel, (unsigned long long)v.seq, v.enc_len, len, channel,
                        (unsigned long long)seq);
    make_nonce(nonce, channel, seq, k->role);
    crypto_aead_xchacha20poly1305_ietf_encrypt(body, &clen, body, len, hdr, MS_FRAME_HDR_SIZE, NULL,
                                               nonce, k->tx);
    *out_len = (size_t)clen;
    return MS_OK;
}

int ms_open(const ms_session_keys *k, const uint8_t hdr[MS_FRAME_HDR_SIZE], uint16_t channel,
            uint64_t seq, uint8_t *body, size_t len, size_t *out_len)
{
    uint8_t nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES];
    seal_view v = view_of(hdr);
    unsigned long long mlen = 0;
    unsigned long long s = (unsigned long long)v.seq;
    int rc = check_keys(k);

    if (rc < 0)
        return rc;
    if (v.seq != seq)
        return ms_error(MS_ERR_INVAL, "ms_open: seq %llu given for a header with seq %llu",
                        (unsigned long long)seq, s);
    /* A frame stripped of its seal would otherwise bypass authentication. */
    if (!(v.flags & MS_FRAME_F_SEALED))
        return ms_error(MS_ERR_TAMPERED, "frame %llu: not sealed, in a sealed session", s);
    if (v.channel != channel)
        return ms_error(MS_ERR_TAMPERED, "frame %llu: sealed for channel %u, arrived on channel %u",
                        s, v.channel, channel);
    if (len < v.enc_len)
        return ms_error(MS_ERR_TRUNCATED, "frame %llu: sealed body is %zu bytes, header says %u",
                        s, len, v.enc_len);
    if (len > v.enc_len)
        return ms_error(MS_ERR_CORRUPT, "frame %llu: sealed body is %zu bytes, header says %u",
                        s, len, v.enc_len);
    if (len < MS_SEAL_TAG_SIZE)
        return ms_error(MS_ERR_TRUNCATED, "frame %llu: sealed body of %zu bytes is shorter than its tag",
                        s, len);
    make_nonce(nonce, channel, seq, k->role == MS_ROLE_SENDER ? MS_ROLE_RECEIVER : MS_ROLE_SENDER);
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(body, &mlen, NULL, body, len, hdr, MS_FRAME_HDR_SIZE,
                                                   nonce, k->rx) != 0)
        return ms_error(MS_ERR_TAMPERED,
                        "frame %llu on channel %u: seal does not verify (header or body altered, "
                        "or sealed with another key)", s, channel);
    *out_len = (size_t)mlen;
    return MS_OK;
}

/* ---- sequence order ----------------------------------------------------- */

int ms_seq_check_accept(ms_seq_check *sc, uint64_t seq)
{
    unsigned long long s = (unsigned long long)seq;

    if (!sc->any || seq > sc->last) {
        sc->recent[sc->head] = seq;
        sc->head = (sc->head + 1) % MS_SEQ_WINDOW;
        if (sc->nrecent < MS_SEQ_WINDOW)
            sc->nrecent++;
        sc->last = seq;
        sc->any = true;
        return MS_OK;
    }
    for (unsigned i = 0; i < sc->nrecent; i++)
        if (sc->recent[i] == seq)
            return ms_error(MS_ERR_REPLAY, "frame %llu: already received on this channel (replayed)", s);
    /* Accepted seqs rise, so the oldest remembered one is where the head
     * will write next once the ring is full. */
    if (sc->nrecent == MS_SEQ_WINDOW && seq < sc->recent[sc->head])
        return ms_error(MS_ERR_REORDER,
                        "frame %llu: older than the last %u frames of this channel (last %llu): "
                        "reordered or replayed", s, MS_SEQ_WINDOW, (unsigned long long)sc->last);
    return ms_error(MS_ERR_REORDER, "frame %llu: arrived after frame %llu on this channel (reordered)",
                    s, (unsigned long long)sc->last);
}
