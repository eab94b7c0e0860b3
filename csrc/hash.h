/* Hashing: SHA-256 (FIPS 180-4), incremental and one-shot, and HMAC-SHA256 (RFC 2104)
 * on top of it.
 *
 * The xt_sha256* and xt_hmac* functions are pure C, touch no Python object and keep no
 * global state: safe to call with the GIL released and from worker threads.  Used by
 * seed derivation, by the result cache's key digests and by the MACs of its entries.
 * xt_hash_exec adds the Python bindings `sha256(data, /)` and `hmac_sha256(key, data, /)`
 * to the module. */
#ifndef XT_HASH_H
#define XT_HASH_H

#include "module.h"

#include <stddef.h>
#include <stdint.h>

#define XT_SHA256_DIGEST_SIZE 32
#define XT_SHA256_BLOCK_SIZE 64

typedef struct {
    uint32_t state[8];
    uint64_t total_len;                    /* bytes fed so far */
    uint8_t block[XT_SHA256_BLOCK_SIZE];   /* pending partial block */
    size_t block_len;                      /* bytes used in `block` */
} xt_sha256_ctx;

void xt_sha256_init(xt_sha256_ctx *ctx);
void xt_sha256_update(xt_sha256_ctx *ctx, const void *data, size_t len);
/* Writes the digest and wipes the context; call xt_sha256_init to reuse it. */
void xt_sha256_final(xt_sha256_ctx *ctx, uint8_t out[XT_SHA256_DIGEST_SIZE]);
void xt_sha256(const void *data, size_t len, uint8_t out[XT_SHA256_DIGEST_SIZE]);

/* HMAC-SHA256 with a key prepared once: the hash states after the padded key blocks
 * (key ^ ipad, key ^ opad), so each MAC costs the message's blocks plus two.  Holds
 * secret material: wipe it with xt_hmac_key_wipe when done. */
typedef struct {
    xt_sha256_ctx inner; /* after absorbing key ^ ipad */
    xt_sha256_ctx outer; /* after absorbing key ^ opad */
} xt_hmac_key;

void xt_hmac_key_init(xt_hmac_key *hk, const void *key, size_t key_len);
void xt_hmac_key_wipe(xt_hmac_key *hk);
/* Start a MAC: `ctx` becomes the inner hash; feed the message with xt_sha256_update. */
void xt_hmac_begin(const xt_hmac_key *hk, xt_sha256_ctx *ctx);
/* Finish the MAC begun on `ctx` (which is wiped). */
void xt_hmac_end(const xt_hmac_key *hk, xt_sha256_ctx *ctx, uint8_t out[XT_SHA256_DIGEST_SIZE]);
/* One-shot HMAC-SHA256. */
void xt_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
                    uint8_t out[XT_SHA256_DIGEST_SIZE]);
/* 1 if the n bytes at a and b are equal, else 0, in time independent of where they
 * differ (for comparing MACs). */
int xt_digest_equal(const uint8_t *a, const uint8_t *b, size_t n);
/* Overwrite n bytes with zeros in a way the compiler cannot drop (secrets). */
void xt_wipe(void *p, size_t n);

/* Writes the 2*n lowercase hex digits of `bytes` and a terminating NUL to `out`. */
void xt_hex_encode(const uint8_t *bytes, size_t n, char *out);

/* Writes the 64 lowercase hex digits of `digest` and a terminating NUL to `out`. */
void xt_hex_digest(const uint8_t digest[XT_SHA256_DIGEST_SIZE],
                   char out[2 * XT_SHA256_DIGEST_SIZE + 1]);

/* Adds `sha256` to the module; 0 on success, -1 with an exception set. */
int xt_hash_exec(PyObject *module, xt_state *st);

#endif
