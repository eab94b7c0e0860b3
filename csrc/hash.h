/* Hashing: SHA-256 (FIPS 180-4), incremental and one-shot.
 *
 * The xt_sha256* functions are pure C, touch no Python object and keep no global
 * state: safe to call with the GIL released and from worker threads.  Used by seed
 * derivation and by the result cache's key digests.  xt_hash_exec adds the Python
 * binding `sha256(data, /)` to the module. */
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

/* Writes the 2*n lowercase hex digits of `bytes` and a terminating NUL to `out`. */
void xt_hex_encode(const uint8_t *bytes, size_t n, char *out);

/* Writes the 64 lowercase hex digits of `digest` and a terminating NUL to `out`. */
void xt_hex_digest(const uint8_t digest[XT_SHA256_DIGEST_SIZE],
                   char out[2 * XT_SHA256_DIGEST_SIZE + 1]);

/* Adds `sha256` to the module; 0 on success, -1 with an exception set. */
int xt_hash_exec(PyObject *module, xt_state *st);

#endif
