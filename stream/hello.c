/* Connection hello and handshake: parameters agreed in the clear, then (with
 * a pre-shared key) per-channel keys and mutual key proofs over a transcript
 * of both hellos. Protocol: docs/wire-format.md, "Hello" and "Handshake". */
#include "stream/stream.h"

#include <sodium.h>
#include <string.h>
#include <xxhash.h>

/* Byte offsets inside the 160-byte hello. Magic and version keep their
 * offsets in every version so any two builds can tell each other apart. */
enum {
    H_MAGIC = 0,       /* 8 bytes "MIGSTRM\0" */
    H_VERSION = 8,     /* u32 */
    H_ROLE = 12,       /* u8 */
    H_RESERVED0 = 13,  /* u8, zero */
    H_CHANNEL = 14,    /* u16 */
    H_CHANNELS = 16,   /* u16 */
    H_RESERVED1 = 18,  /* u16, zero */
    H_PAGE_SIZE = 20,  /* u32 */
    H_FLAGS = 24,      /* u32 */
    H_SESSION = 28,    /* 16 bytes */
    H_NONCE = 44,      /* 32 bytes */
    H_CHAIN = 76,      /* 64 bytes, NUL-terminated, zero-padded */
    H_DELTA_CACHE = 140, /* u64 sender's delta cache bound in bytes (0 = default) */
    H_DEDUP_CACHE = 148, /* u64 sender's dedup store bound in bytes (0 = default) */
    H_CHECK = 156,     /* u32 XXH32(bytes 0..155, seed 0) */
};

#define KDF_CONTEXT "migstrm1"
#define TRANSCRIPT_LABEL "migstream wire v1 handshake"
enum { KDF_SENDER_TO_RECEIVER = 1, KDF_RECEIVER_TO_SENDER = 2, KDF_PROOF_SENDER = 3, KDF_PROOF_RECEIVER = 4 };

void ms_hello_pack(const ms_hello *h, uint8_t out[MS_HELLO_SIZE])
{
    memset(out, 0, MS_HELLO_SIZE);
    memcpy(out + H_MAGIC, MS_HELLO_MAGIC, 8);
    ms_put_le32(out + H_VERSION, h->version);
    out[H_ROLE] = h->role;
    ms_put_le16(out + H_CHANNEL, h->channel);
    ms_put_le16(out + H_CHANNELS, h->channels);
    ms_put_le32(out + H_PAGE_SIZE, h->page_size);
    ms_put_le32(out + H_FLAGS, h->flags);
    memcpy(out + H_SESSION, h->session_id, MS_SESSION_ID_SIZE);
    memcpy(out + H_NONCE, h->nonce, MS_NONCE_SIZE);
    memcpy(out + H_CHAIN, h->chain, strnlen(h->chain, MS_CHAIN_TEXT_MAX - 1));
    ms_put_le64(out + H_DELTA_CACHE, h->delta_cache_bytes);
    ms_put_le64(out + H_DEDUP_CACHE, h->dedup_bytes);
    ms_put_le32(out + H_CHECK, XXH32(out, H_CHECK, 0));
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

static int check_chain_text(const char *chain)
{
    const char *nul = memchr(chain, 0, MS_CHAIN_TEXT_MAX);
    if (!nul)
        return ms_error(MS_ERR_CORRUPT, "hello: chain text is not NUL-terminated within %u bytes",
                        MS_CHAIN_TEXT_MAX);
    for (const char *p = chain; p < nul; p++)
        if (*p < 0x21 || *p > 0x7e)
            return ms_error(MS_ERR_CORRUPT, "hello: chain text has a non-printable byte 0x%02x at %zu",
                            (unsigned char)*p, (size_t)(p - chain));
    if (!all_zero((const uint8_t *)nul, (size_t)(chain + MS_CHAIN_TEXT_MAX - nul)))
        return ms_error(MS_ERR_CORRUPT, "hello: chain text padding is not zero");
    return MS_OK;
}

/* Field rules shared by unpack (peer's hello) and the handshake (own hello). */
static int check_hello(const ms_hello *h)
{
    bool sender = h->role == MS_ROLE_SENDER;
    bool pow2 = h->page_size && !(h->page_size & (h->page_size - 1));

    if (h->role != MS_ROLE_SENDER && h->role != MS_ROLE_RECEIVER)
        return ms_error(MS_ERR_CORRUPT, "hello: unknown role %u", h->role);
    if (h->flags & ~(MS_HELLO_F_SEALED | MS_HELLO_F_ONEWAY))
        return ms_error(MS_ERR_CORRUPT, "hello: unknown flag bits 0x%x",
                        h->flags & ~(MS_HELLO_F_SEALED | MS_HELLO_F_ONEWAY));
    if (h->channels > MS_HELLO_MAX_CHANNELS || (sender && h->channels == 0))
        return ms_error(MS_ERR_CORRUPT, "hello: channel count %u outside 1..%u", h->channels,
                        MS_HELLO_MAX_CHANNELS);
    /* A receiver's channel index is an echo of the sender's; whether its
     * channel count agrees is a mismatch, reported as such. */
    if (sender && h->channel >= h->channels)
        return ms_error(MS_ERR_CORRUPT, "hello: channel index %u not below channel count %u",
                        h->channel, h->channels);
    if ((sender || h->page_size) &&
        (!pow2 || h->page_size < MS_HELLO_MIN_PAGE_SIZE || h->page_size > MS_HELLO_MAX_PAGE_SIZE))
        return ms_error(MS_ERR_CORRUPT, "hello: page size %u is not a power of two in %u..%u",
                        h->page_size, MS_HELLO_MIN_PAGE_SIZE, MS_HELLO_MAX_PAGE_SIZE);
    int rc = check_chain_text(h->chain);
    if (rc < 0)
        return rc;
    if (sender && !h->chain[0])
        return ms_error(MS_ERR_CORRUPT, "hello: a sender's hello must name its codec chain");
    return MS_OK;
}

int ms_hello_unpack(const uint8_t in[MS_HELLO_SIZE], ms_hello *h)
{
    uint32_t version = ms_get_le32(in + H_VERSION);
    uint32_t want = ms_get_le32(in + H_CHECK), got;

    if (memcmp(in + H_MAGIC, MS_HELLO_MAGIC, 8))
        return ms_error(MS_ERR_CORRUPT, "hello: bad magic (not a migstream peer?)");
    if (version != MS_WIRE_VERSION)
        return ms_error(MS_ERR_VERSION, "hello: peer speaks wire version %u, this build speaks version %u",
                        version, MS_WIRE_VERSION);
    got = XXH32(in, H_CHECK, 0);
    if (got != want)
        return ms_error(MS_ERR_CORRUPT, "hello: check 0x%08x does not match its content (0x%08x)", want, got);
    if (in[H_RESERVED0] || ms_get_le16(in + H_RESERVED1))
        return ms_error(MS_ERR_CORRUPT, "hello: reserved bytes are not zero");
    memset(h, 0, sizeof *h);
    h->version = version;
    h->role = in[H_ROLE];
    h->channel = ms_get_le16(in + H_CHANNEL);
    h->channels = ms_get_le16(in + H_CHANNELS);
    h->page_size = ms_get_le32(in + H_PAGE_SIZE);
    h->flags = ms_get_le32(in + H_FLAGS);
    memcpy(h->session_id, in + H_SESSION, MS_SESSION_ID_SIZE);
    memcpy(h->nonce, in + H_NONCE, MS_NONCE_SIZE);
    memcpy(h->chain, in + H_CHAIN, MS_CHAIN_TEXT_MAX);
    h->delta_cache_bytes = ms_get_le64(in + H_DELTA_CACHE);
    h->dedup_bytes = ms_get_le64(in + H_DEDUP_CACHE);
    return check_hello(h);
}

/* ---- handshake ---------------------------------------------------------- */

static int send_bytes(ms_conn *c, const void *p, size_t n, const char *what)
{
    int rc = ms_conn_send(c, p, n);
    if (rc < 0)
        return ms_error_wrap(rc, "%s: handshake: sending %s", c->peer, what);
    return MS_OK;
}

static int recv_bytes(ms_conn *c, void *p, size_t n, const char *what)
{
    int rc = ms_conn_recv(c, p, n, NULL);
    if (rc < 0)
        return ms_error_wrap(rc, "%s: handshake: reading %s", c->peer, what);
    return MS_OK;
}

static const char *role_name(uint8_t role) { return role == MS_ROLE_SENDER ? "sender" : "receiver"; }

/* A value of 0 / "" in a receiver's hello means "as the sender says". */
static int check_agree(ms_conn *c, const ms_hello *me, const ms_hello *peer)
{
    bool my_seal = me->flags & MS_HELLO_F_SEALED, peer_seal = peer->flags & MS_HELLO_F_SEALED;

    if (me->role == peer->role)
        return ms_error(MS_ERR_MISMATCH, "%s: both ends are %ss", c->peer, role_name(me->role));
    if (my_seal != peer_seal)
        return ms_error(MS_ERR_MISMATCH,
                        my_seal ? "%s: this side has a key and seals frames, the peer has no key "
                                  "(give both ends the same key file, or neither)"
                                : "%s: the peer has a key and seals frames, this side has no key "
                                  "(give both ends the same key file, or neither)",
                        c->peer);
    if (memcmp(me->session_id, peer->session_id, MS_SESSION_ID_SIZE))
        return ms_error(MS_ERR_MISMATCH, "%s: the peer answered for another session id", c->peer);
    if (me->channel != peer->channel)
        return ms_error(MS_ERR_MISMATCH, "%s: channel index: this side %u, peer %u", c->peer,
                        me->channel, peer->channel);
    if (me->channels && peer->channels && me->channels != peer->channels)
        return ms_error(MS_ERR_MISMATCH, "%s: channel count: this side %u, peer %u", c->peer,
                        me->channels, peer->channels);
    if (me->page_size && peer->page_size && me->page_size != peer->page_size)
        return ms_error(MS_ERR_MISMATCH, "%s: page size: this side %u, peer %u", c->peer,
                        me->page_size, peer->page_size);
    if (me->chain[0] && peer->chain[0] && strcmp(me->chain, peer->chain))
        return ms_error(MS_ERR_MISMATCH, "%s: codec chain: this side '%s', peer '%s'", c->peer,
                        me->chain, peer->chain);
    return MS_OK;
}

/* Our own hello, ready to send: flags and nonce are the handshake's business. */
static int prepare_mine(ms_hello *me, const uint8_t *psk)
{
    int rc;
    if (sodium_init() < 0)
        return ms_error(MS_ERR_UNSUPPORTED, "libsodium failed to initialise");
    me->version = MS_WIRE_VERSION;
    me->flags = (me->flags & ~MS_HELLO_F_SEALED) | (psk ? MS_HELLO_F_SEALED : 0);
    randombytes_buf(me->nonce, MS_NONCE_SIZE);
    rc = check_hello(me);
    if (rc < 0)
        return ms_error_wrap(MS_ERR_INVAL, "own hello is invalid");
    return MS_OK;
}

typedef struct handshake_keys {
    uint8_t s2r[MS_KEY_SIZE], r2s[MS_KEY_SIZE];
    uint8_t proof_sender[MS_PROOF_SIZE], proof_receiver[MS_PROOF_SIZE];
} handshake_keys;

/* prk = BLAKE2b-256 keyed by the PSK over label || transcript; every key
 * comes from prk through crypto_kdf with its own id. The transcript holds
 * both hellos (session id, channel, both nonces), so keys are per session,
 * per channel, per direction, and a hello changed in transit yields other
 * keys on each side and failing proofs. */
static int derive(const uint8_t *psk, const uint8_t *transcript, size_t tlen, handshake_keys *hk)
{
    uint8_t prk[crypto_kdf_KEYBYTES], pk_s[crypto_auth_KEYBYTES], pk_r[crypto_auth_KEYBYTES];
    crypto_generichash_state st;
    int rc = MS_OK;

    if (sodium_init() < 0)
        return ms_error(MS_ERR_UNSUPPORTED, "libsodium failed to initialise");
    if (crypto_generichash_init(&st, psk, MS_KEY_SIZE, sizeof prk) ||
        crypto_generichash_update(&st, (const uint8_t *)TRANSCRIPT_LABEL, sizeof TRANSCRIPT_LABEL - 1) ||
        crypto_generichash_update(&st, transcript, tlen) || crypto_generichash_final(&st, prk, sizeof prk) ||
        crypto_kdf_derive_from_key(hk->s2r, MS_KEY_SIZE, KDF_SENDER_TO_RECEIVER, KDF_CONTEXT, prk) ||
        crypto_kdf_derive_from_key(hk->r2s, MS_KEY_SIZE, KDF_RECEIVER_TO_SENDER, KDF_CONTEXT, prk) ||
        crypto_kdf_derive_from_key(pk_s, sizeof pk_s, KDF_PROOF_SENDER, KDF_CONTEXT, prk) ||
        crypto_kdf_derive_from_key(pk_r, sizeof pk_r, KDF_PROOF_RECEIVER, KDF_CONTEXT, prk) ||
        crypto_auth(hk->proof_sender, transcript, tlen, pk_s) ||
        crypto_auth(hk->proof_receiver, transcript, tlen, pk_r))
        rc = ms_error(MS_ERR_INVAL, "key derivation failed");
    sodium_memzero(prk, sizeof prk);
    sodium_memzero(pk_s, sizeof pk_s);
    sodium_memzero(pk_r, sizeof pk_r);
    sodium_memzero(&st, sizeof st);
    return rc;
}

static void set_keys(ms_session_keys *keys, uint8_t role, const handshake_keys *hk)
{
    keys->sealed = hk != NULL;
    keys->role = role;
    memset(keys->tx, 0, MS_KEY_SIZE);
    memset(keys->rx, 0, MS_KEY_SIZE);
    if (!hk)
        return;
    memcpy(keys->tx, role == MS_ROLE_SENDER ? hk->s2r : hk->r2s, MS_KEY_SIZE);
    memcpy(keys->rx, role == MS_ROLE_SENDER ? hk->r2s : hk->s2r, MS_KEY_SIZE);
}

/* Both sides send their proof before checking the peer's, so a wrong key is
 * reported as MS_ERR_AUTH on both ends rather than as a closed connection. */
static int exchange_proofs(ms_conn *c, uint8_t role, const handshake_keys *hk)
{
    const uint8_t *mine = role == MS_ROLE_SENDER ? hk->proof_sender : hk->proof_receiver;
    const uint8_t *expect = role == MS_ROLE_SENDER ? hk->proof_receiver : hk->proof_sender;
    uint8_t got[MS_PROOF_SIZE];
    int rc;

    if ((rc = send_bytes(c, mine, MS_PROOF_SIZE, "key proof")) < 0 ||
        (rc = recv_bytes(c, got, MS_PROOF_SIZE, "the peer's key proof")) < 0)
        return rc;
    if (sodium_memcmp(got, expect, MS_PROOF_SIZE))
        return ms_error(MS_ERR_AUTH, "%s: peer does not hold the pre-shared key", c->peer);
    return MS_OK;
}

/* Both hellos are in the transcript: derive this session's keys from it and
 * prove to the peer that we hold the pre-shared key (no keys unsealed). */
static int two_way_keys(ms_conn *c, uint8_t role, const uint8_t *psk, const uint8_t transcript[2 * MS_HELLO_SIZE],
                        ms_session_keys *keys)
{
    handshake_keys hk;
    int rc;

    if (!psk) {
        set_keys(keys, role, NULL);
        return MS_OK;
    }
    if ((rc = derive(psk, transcript, 2 * MS_HELLO_SIZE, &hk)) == MS_OK &&
        (rc = exchange_proofs(c, role, &hk)) == MS_OK)
        set_keys(keys, role, &hk);
    sodium_memzero(&hk, sizeof hk);
    return rc;
}

static int client_oneway(ms_conn *c, const ms_hello *me, const uint8_t hc[MS_HELLO_SIZE],
                         const uint8_t *psk, ms_session_keys *keys)
{
    handshake_keys hk;
    int rc = MS_OK;

    if (!psk) {
        set_keys(keys, me->role, NULL);
        return MS_OK;
    }
    /* Only the writer's proof: it lets a reader with another key fail with
     * MS_ERR_AUTH at once instead of MS_ERR_TAMPERED at the first frame. */
    if ((rc = derive(psk, hc, MS_HELLO_SIZE, &hk)) == MS_OK &&
        (rc = send_bytes(c, me->role == MS_ROLE_SENDER ? hk.proof_sender : hk.proof_receiver,
                         MS_PROOF_SIZE, "key proof")) == MS_OK)
        set_keys(keys, me->role, &hk);
    sodium_memzero(&hk, sizeof hk);
    return rc;
}

int ms_handshake_client(ms_conn *c, const ms_hello *mine, const uint8_t *psk,
                        ms_hello *peer, ms_session_keys *keys)
{
    uint8_t transcript[2 * MS_HELLO_SIZE];
    ms_hello me;
    int rc;

    memset(peer, 0, sizeof *peer);
    memset(keys, 0, sizeof *keys);
    me = *mine;
    if ((rc = prepare_mine(&me, psk)) < 0)
        return rc;
    ms_hello_pack(&me, transcript);
    if ((rc = send_bytes(c, transcript, MS_HELLO_SIZE, "hello")) < 0)
        return rc;
    if (me.flags & MS_HELLO_F_ONEWAY)
        return client_oneway(c, &me, transcript, psk, keys);
    if ((rc = recv_bytes(c, transcript + MS_HELLO_SIZE, MS_HELLO_SIZE, "the peer's hello")) < 0)
        return rc;
    if ((rc = ms_hello_unpack(transcript + MS_HELLO_SIZE, peer)) < 0)
        return ms_error_wrap(rc, "%s: peer's hello", c->peer);
    if ((rc = check_agree(c, &me, peer)) < 0)
        return rc;
    return two_way_keys(c, me.role, psk, transcript, keys);
}

/* Tell a peer of another version which one we speak, so it can report the
 * mismatch instead of a closed connection. Best effort: the connection may
 * be read-only, and our own error must survive. */
static void answer_version(ms_conn *c)
{
    ms_errbuf saved = {0};
    ms_hello h = {.version = MS_WIRE_VERSION, .role = MS_ROLE_RECEIVER};
    uint8_t out[MS_HELLO_SIZE];

    ms_errbuf_capture(&saved);
    ms_hello_pack(&h, out);
    (void)ms_conn_send(c, out, sizeof out);
    ms_errbuf_raise(&saved);
}

int ms_handshake_server_read(ms_conn *c, ms_hello *peer)
{
    uint8_t in[MS_HELLO_SIZE];
    int rc;

    memset(peer, 0, sizeof *peer);
    if ((rc = recv_bytes(c, in, sizeof in, "the peer's hello")) < 0)
        return rc;
    rc = ms_hello_unpack(in, peer);
    if (rc == MS_ERR_VERSION)
        answer_version(c);
    if (rc < 0)
        return ms_error_wrap(rc, "%s: peer's hello", c->peer);
    return MS_OK;
}

static int server_oneway(ms_conn *c, const ms_hello *peer, const ms_hello *mine,
                         const uint8_t *psk, ms_session_keys *keys)
{
    bool sealed = peer->flags & MS_HELLO_F_SEALED;
    uint8_t hc[MS_HELLO_SIZE], proof[MS_PROOF_SIZE];
    handshake_keys hk;
    ms_hello me = *mine;
    int rc;

    /* Agreement is checked against our own view; nothing is sent back. */
    memcpy(me.session_id, peer->session_id, MS_SESSION_ID_SIZE);
    me.channel = peer->channel;
    me.flags = psk ? MS_HELLO_F_SEALED : 0;
    if ((rc = check_agree(c, &me, peer)) < 0)
        return rc;
    if (!sealed) {
        set_keys(keys, me.role, NULL);
        return MS_OK;
    }
    ms_hello_pack(peer, hc);
    if ((rc = recv_bytes(c, proof, sizeof proof, "the writer's key proof")) < 0 ||
        (rc = derive(psk, hc, sizeof hc, &hk)) < 0)
        goto out;
    if (sodium_memcmp(proof, peer->role == MS_ROLE_SENDER ? hk.proof_sender : hk.proof_receiver,
                      MS_PROOF_SIZE))
        rc = ms_error(MS_ERR_AUTH, "%s: peer does not hold the pre-shared key "
                                   "(the stream was sealed with another key)", c->peer);
    else
        set_keys(keys, me.role, &hk);
out:
    sodium_memzero(&hk, sizeof hk);
    return rc;
}

int ms_handshake_server_finish(ms_conn *c, const ms_hello *peer, const ms_hello *mine,
                               const uint8_t *psk, ms_session_keys *keys)
{
    uint8_t transcript[2 * MS_HELLO_SIZE];
    ms_hello me;
    int rc;

    memset(keys, 0, sizeof *keys);
    if (peer->flags & MS_HELLO_F_ONEWAY)
        return server_oneway(c, peer, mine, psk, keys);
    me = *mine;
    memcpy(me.session_id, peer->session_id, MS_SESSION_ID_SIZE);
    me.channel = peer->channel;
    me.flags &= ~MS_HELLO_F_ONEWAY;
    if ((rc = prepare_mine(&me, psk)) < 0)
        return rc;
    /* Unpack accepted only canonical bytes, so packing the parsed hello
     * gives back exactly what the client sent and hashed. */
    ms_hello_pack(peer, transcript);
    ms_hello_pack(&me, transcript + MS_HELLO_SIZE);
    /* Answer before judging, so the client learns the same reason; a
     * disagreement explains more than a failed send, so it wins. */
    int sent = send_bytes(c, transcript + MS_HELLO_SIZE, MS_HELLO_SIZE, "hello");
    if ((rc = check_agree(c, &me, peer)) < 0)
        return rc;
    if (sent < 0)
        return sent;
    return two_way_keys(c, me.role, psk, transcript, keys);
}

bool ms_page_store_ok(uint64_t bytes) { return bytes >= MS_MIN_PAGE_STORE && bytes <= MS_MAX_PAGE_STORE; }

int ms_page_store_parse(const char *text, uint64_t *out)
{
    uint64_t v;
    if (!text || ms_parse_size(text, &v) || !ms_page_store_ok(v))
        return ms_error(MS_ERR_INVAL, "expected a store size from 1M to 16G");
    *out = v;
    return MS_OK;
}
