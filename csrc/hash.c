/* Hashing: SHA-256 as specified in FIPS 180-4, and HMAC-SHA256 (RFC 2104) over it. */
#include "hash.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* x86-64 CPUs with the SHA extensions run the compression function in hardware,
 * several times faster than the portable code; both give the same digests. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define XT_SHA_NI 1
#include <cpuid.h>
#include <immintrin.h>
#endif

static const uint32_t round_constants[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u,
    0xab1c5ed5u, 0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu,
    0x9bdc06a7u, 0xc19bf174u, 0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu,
    0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau, 0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u,
    0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u, 0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu,
    0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u, 0xa2bfe8a1u, 0xa81a664bu,
    0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u, 0x19a4c116u,
    0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u,
    0xc67178f2u,
};

static inline uint32_t
rotr32(uint32_t x, unsigned n)
{
    return (x >> n) | (x << (32u - n));
}

static inline uint32_t
load_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static inline void
store_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Runs the compression function over `n_blocks` consecutive 64-byte blocks. */
static void
compress_portable(uint32_t state[8], const uint8_t *data, size_t n_blocks)
{
    uint32_t w[64];

    for (size_t blk = 0; blk < n_blocks; blk++, data += XT_SHA256_BLOCK_SIZE) {
        for (int t = 0; t < 16; t++) {
            w[t] = load_be32(data + 4 * t);
        }
        for (int t = 16; t < 64; t++) {
            uint32_t s0 = rotr32(w[t - 15], 7) ^ rotr32(w[t - 15], 18) ^ (w[t - 15] >> 3);
            uint32_t s1 = rotr32(w[t - 2], 17) ^ rotr32(w[t - 2], 19) ^ (w[t - 2] >> 10);
            w[t] = w[t - 16] + s0 + w[t - 7] + s1;
        }
        uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
        uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
        for (int t = 0; t < 64; t++) {
            uint32_t big_s1 = rotr32(e, 6) ^ rotr32(e, 11) ^ rotr32(e, 25);
            uint32_t choose = (e & f) ^ (~e & g);
            uint32_t t1 = h + big_s1 + choose + round_constants[t] + w[t];
            uint32_t big_s0 = rotr32(a, 2) ^ rotr32(a, 13) ^ rotr32(a, 22);
            uint32_t majority = (a & b) ^ (a & c) ^ (b & c);
            uint32_t t2 = big_s0 + majority;
            h = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = b;
            b = a;
            a = t1 + t2;
        }
        state[0] += a;
        state[1] += b;
        state[2] += c;
        state[3] += d;
        state[4] += e;
        state[5] += f;
        state[6] += g;
        state[7] += h;
    }
}

#ifdef XT_SHA_NI
/* The compression function with the SHA-NI instructions.  The state lives in two
 * registers as (A,B,E,F) and (C,D,G,H); each sha256rnds2 does two rounds. */
__attribute__((target("sha,sse4.1,ssse3"))) static void
compress_sha_ni(uint32_t state[8], const uint8_t *data, size_t n_blocks)
{
    const __m128i byte_swap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    __m128i dcba = _mm_loadu_si128((const __m128i *)(const void *)&state[0]);
    __m128i hgfe = _mm_loadu_si128((const __m128i *)(const void *)&state[4]);
    __m128i cdab = _mm_shuffle_epi32(dcba, 0xB1);
    __m128i efgh = _mm_shuffle_epi32(hgfe, 0x1B);
    __m128i abef = _mm_alignr_epi8(cdab, efgh, 8);
    __m128i cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);

    for (size_t blk = 0; blk < n_blocks; blk++, data += XT_SHA256_BLOCK_SIZE) {
        __m128i abef_before = abef, cdgh_before = cdgh;
        __m128i msg[4];
        for (int group = 0; group < 16; group++) {
            __m128i w;
            if (group < 4) {
                w = _mm_shuffle_epi8(
                    _mm_loadu_si128((const __m128i *)(const void *)(data + 16 * group)),
                    byte_swap);
            }
            else {
                /* W[t..t+3] from W[t-16..t-1]: sigma0 terms, plus W[t-7..t-4], then
                 * the sigma1 terms. */
                __m128i partial = _mm_sha256msg1_epu32(msg[group & 3], msg[(group + 1) & 3]);
                partial = _mm_add_epi32(
                    partial, _mm_alignr_epi8(msg[(group + 3) & 3], msg[(group + 2) & 3], 4));
                w = _mm_sha256msg2_epu32(partial, msg[(group + 3) & 3]);
            }
            msg[group & 3] = w;
            __m128i wk = _mm_add_epi32(
                w, _mm_loadu_si128((const __m128i *)(const void *)&round_constants[4 * group]));
            /* Each call returns the new (A,B,E,F); the register it read (A,B,E,F)
             * from then holds the new (C,D,G,H), so two calls end where they began. */
            cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk);
            abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(wk, 0x0E));
        }
        abef = _mm_add_epi32(abef, abef_before);
        cdgh = _mm_add_epi32(cdgh, cdgh_before);
    }

    __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
    __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    dcba = _mm_blend_epi16(feba, dchg, 0xF0);
    hgfe = _mm_alignr_epi8(dchg, feba, 8);
    _mm_storeu_si128((__m128i *)(void *)&state[0], dcba);
    _mm_storeu_si128((__m128i *)(void *)&state[4], hgfe);
}

/* Process-wide, as the CPU is: 0 not yet checked, 1 SHA-NI usable, 2 not usable.
 * Racing first callers all store the same answer, so an atomic suffices. */
static atomic_int sha_ni_usable = 0;

static int
have_sha_ni(void)
{
    int known = atomic_load_explicit(&sha_ni_usable, memory_order_relaxed);
    if (known == 0) {
        unsigned int eax, ebx, ecx, edx;
        int usable = __get_cpuid(1, &eax, &ebx, &ecx, &edx)
                     && (ecx & bit_SSSE3) && (ecx & bit_SSE4_1)
                     && __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) && (ebx & bit_SHA);
        /* XETRACK_SHA256_PORTABLE=1 forces the portable code (tests compare both). */
        const char *force_portable = getenv("XETRACK_SHA256_PORTABLE");
        if (force_portable != NULL && force_portable[0] != '\0' && force_portable[0] != '0') {
            usable = 0;
        }
        known = usable ? 1 : 2;
        atomic_store_explicit(&sha_ni_usable, known, memory_order_relaxed);
    }
    return known == 1;
}
#endif

static void
compress_blocks(uint32_t state[8], const uint8_t *data, size_t n_blocks)
{
#ifdef XT_SHA_NI
    if (have_sha_ni()) {
        compress_sha_ni(state, data, n_blocks);
        return;
    }
#endif
    compress_portable(state, data, n_blocks);
}

void
xt_sha256_init(xt_sha256_ctx *ctx)
{
    static const uint32_t initial_state[8] = {
        0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au,
        0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u,
    };
    memcpy(ctx->state, initial_state, sizeof(initial_state));
    ctx->total_len = 0;
    ctx->block_len = 0;
}

void
xt_sha256_update(xt_sha256_ctx *ctx, const void *data, size_t len)
{
    const uint8_t *bytes = (const uint8_t *)data;

    if (len == 0) {
        return;
    }
    ctx->total_len += (uint64_t)len;
    if (ctx->block_len > 0) {
        size_t take = XT_SHA256_BLOCK_SIZE - ctx->block_len;
        if (take > len) {
            take = len;
        }
        memcpy(ctx->block + ctx->block_len, bytes, take);
        ctx->block_len += take;
        bytes += take;
        len -= take;
        if (ctx->block_len < XT_SHA256_BLOCK_SIZE) {
            return;
        }
        compress_blocks(ctx->state, ctx->block, 1);
        ctx->block_len = 0;
    }
    size_t whole = len / XT_SHA256_BLOCK_SIZE;
    if (whole > 0) {
        compress_blocks(ctx->state, bytes, whole);
        bytes += whole * XT_SHA256_BLOCK_SIZE;
        len -= whole * XT_SHA256_BLOCK_SIZE;
    }
    if (len > 0) {
        memcpy(ctx->block, bytes, len);
        ctx->block_len = len;
    }
}

void
xt_sha256_final(xt_sha256_ctx *ctx, uint8_t out[XT_SHA256_DIGEST_SIZE])
{
    uint64_t bit_len = ctx->total_len * 8u;

    /* Padding: a 1 bit, zeros up to 56 mod 64, then the length in bits, big-endian. */
    ctx->block[ctx->block_len++] = 0x80;
    if (ctx->block_len > XT_SHA256_BLOCK_SIZE - 8) {
        memset(ctx->block + ctx->block_len, 0, XT_SHA256_BLOCK_SIZE - ctx->block_len);
        compress_blocks(ctx->state, ctx->block, 1);
        ctx->block_len = 0;
    }
    memset(ctx->block + ctx->block_len, 0, XT_SHA256_BLOCK_SIZE - 8 - ctx->block_len);
    store_be32(ctx->block + 56, (uint32_t)(bit_len >> 32));
    store_be32(ctx->block + 60, (uint32_t)bit_len);
    compress_blocks(ctx->state, ctx->block, 1);
    for (int i = 0; i < 8; i++) {
        store_be32(out + 4 * i, ctx->state[i]);
    }
    memset(ctx, 0, sizeof(*ctx));
}

void
xt_sha256(const void *data, size_t len, uint8_t out[XT_SHA256_DIGEST_SIZE])
{
    xt_sha256_ctx ctx;
    xt_sha256_init(&ctx);
    xt_sha256_update(&ctx, data, len);
    xt_sha256_final(&ctx, out);
}

void
xt_wipe(void *p, size_t n)
{
    volatile uint8_t *bytes = (volatile uint8_t *)p;
    while (n--) {
        *bytes++ = 0;
    }
}

void
xt_hmac_key_init(xt_hmac_key *hk, const void *key, size_t key_len)
{
    uint8_t block[XT_SHA256_BLOCK_SIZE] = {0};
    uint8_t pad[XT_SHA256_BLOCK_SIZE];

    /* A key longer than a block is replaced by its digest; a shorter one is zero-padded. */
    if (key_len > XT_SHA256_BLOCK_SIZE) {
        xt_sha256(key, key_len, block);
    }
    else if (key_len > 0) {
        memcpy(block, key, key_len);
    }
    for (int i = 0; i < XT_SHA256_BLOCK_SIZE; i++) {
        pad[i] = block[i] ^ 0x36;
    }
    xt_sha256_init(&hk->inner);
    xt_sha256_update(&hk->inner, pad, sizeof(pad));
    for (int i = 0; i < XT_SHA256_BLOCK_SIZE; i++) {
        pad[i] = block[i] ^ 0x5c;
    }
    xt_sha256_init(&hk->outer);
    xt_sha256_update(&hk->outer, pad, sizeof(pad));
    xt_wipe(block, sizeof(block));
    xt_wipe(pad, sizeof(pad));
}

void
xt_hmac_key_wipe(xt_hmac_key *hk)
{
    xt_wipe(hk, sizeof(*hk));
}

void
xt_hmac_begin(const xt_hmac_key *hk, xt_sha256_ctx *ctx)
{
    *ctx = hk->inner;
}

void
xt_hmac_end(const xt_hmac_key *hk, xt_sha256_ctx *ctx, uint8_t out[XT_SHA256_DIGEST_SIZE])
{
    uint8_t inner[XT_SHA256_DIGEST_SIZE];
    xt_sha256_final(ctx, inner);
    *ctx = hk->outer;
    xt_sha256_update(ctx, inner, sizeof(inner));
    xt_sha256_final(ctx, out);
    xt_wipe(inner, sizeof(inner));
}

void
xt_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
               uint8_t out[XT_SHA256_DIGEST_SIZE])
{
    xt_hmac_key hk;
    xt_sha256_ctx ctx;
    xt_hmac_key_init(&hk, key, key_len);
    xt_hmac_begin(&hk, &ctx);
    xt_sha256_update(&ctx, data, len);
    xt_hmac_end(&hk, &ctx, out);
    xt_hmac_key_wipe(&hk);
}

int
xt_digest_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
    volatile uint8_t diff = 0;
    for (size_t i = 0; i < n; i++) {
        diff |= (uint8_t)(a[i] ^ b[i]);
    }
    return diff == 0;
}

void
xt_hex_encode(const uint8_t *bytes, size_t n, char *out)
{
    static const char hex_digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex_digits[bytes[i] >> 4];
        out[2 * i + 1] = hex_digits[bytes[i] & 0x0f];
    }
    out[2 * n] = '\0';
}

void
xt_hex_digest(const uint8_t digest[XT_SHA256_DIGEST_SIZE], char out[2 * XT_SHA256_DIGEST_SIZE + 1])
{
    xt_hex_encode(digest, XT_SHA256_DIGEST_SIZE, out);
}

/* Inputs at least this large are hashed with the GIL released, so other threads run
 * meanwhile; below it, releasing and retaking the GIL costs more than it gains. */
#define GIL_RELEASE_THRESHOLD (64 * 1024)

PyDoc_STRVAR(sha256__doc__,
    "sha256(data, chunk_size=0, /)\n--\n\n"
    "Return the 32-byte SHA-256 digest of a bytes-like object.\n\n"
    "Same result as hashlib.sha256(data).digest(); large inputs are hashed with the\n"
    "GIL released. A positive chunk_size feeds the input to the incremental hasher in\n"
    "pieces of that many bytes (the digest is the same; used to test that path).");

/* Digest of `len` bytes, fed in pieces of `chunk` bytes (0: all at once). */
static void
digest_in_chunks(const uint8_t *data, size_t len, size_t chunk, uint8_t out[XT_SHA256_DIGEST_SIZE])
{
    xt_sha256_ctx ctx;

    if (chunk == 0) {
        chunk = len;
    }
    xt_sha256_init(&ctx);
    for (size_t done = 0; done < len; done += chunk) {
        xt_sha256_update(&ctx, data + done, len - done < chunk ? len - done : chunk);
    }
    xt_sha256_final(&ctx, out);
}

static PyObject *
sha256_py(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view = {0};
    uint8_t digest[XT_SHA256_DIGEST_SIZE];
    Py_ssize_t chunk = 0;
    PyObject *res = NULL;

    (void)module;
    assert(!PyErr_Occurred());
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError,
                     "sha256() takes 1 or 2 positional arguments (data, chunk_size=0) but %zd "
                     "were given",
                     nargs);
        goto done;
    }
    if (nargs == 2) {
        chunk = PyLong_AsSsize_t(args[1]);
        if (chunk == -1 && PyErr_Occurred()) {
            goto done;
        }
        if (chunk < 0) {
            PyErr_SetString(PyExc_ValueError, "sha256(): chunk_size must be >= 0");
            goto done;
        }
    }
    if (PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError,
                        "sha256() takes bytes, not str; encode the text first, e.g. "
                        "text.encode('utf-8')");
        goto done;
    }
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        goto done;
    }
    if (view.len >= GIL_RELEASE_THRESHOLD) {
        Py_BEGIN_ALLOW_THREADS
        digest_in_chunks(view.buf, (size_t)view.len, (size_t)chunk, digest);
        Py_END_ALLOW_THREADS
    }
    else {
        digest_in_chunks(view.buf, (size_t)view.len, (size_t)chunk, digest);
    }
    res = PyBytes_FromStringAndSize((const char *)digest, XT_SHA256_DIGEST_SIZE);
done:
    if (view.obj != NULL) {
        PyBuffer_Release(&view);
    }
    return res;
}

PyDoc_STRVAR(hmac_sha256__doc__,
    "hmac_sha256(key, data, /)\n--\n\n"
    "Return the 32-byte HMAC-SHA256 of a bytes-like object under a bytes-like key.\n\n"
    "Same result as hmac.new(key, data, 'sha256').digest(); the MAC of result-cache\n"
    "entries (docs/cache.md).  Large inputs are hashed with the GIL released.");

static PyObject *
hmac_sha256_py(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer key = {0}, data = {0};
    uint8_t mac[XT_SHA256_DIGEST_SIZE];
    PyObject *res = NULL;

    (void)module;
    assert(!PyErr_Occurred());
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError,
                     "hmac_sha256() takes 2 positional arguments (key, data) but %zd were given",
                     nargs);
        goto done;
    }
    if (PyUnicode_Check(args[0]) || PyUnicode_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError,
                        "hmac_sha256() takes bytes, not str; encode the text first, e.g. "
                        "text.encode('utf-8')");
        goto done;
    }
    if (PyObject_GetBuffer(args[0], &key, PyBUF_SIMPLE) < 0
        || PyObject_GetBuffer(args[1], &data, PyBUF_SIMPLE) < 0) {
        goto done;
    }
    if (data.len >= GIL_RELEASE_THRESHOLD) {
        Py_BEGIN_ALLOW_THREADS
        xt_hmac_sha256(key.buf, (size_t)key.len, data.buf, (size_t)data.len, mac);
        Py_END_ALLOW_THREADS
    }
    else {
        xt_hmac_sha256(key.buf, (size_t)key.len, data.buf, (size_t)data.len, mac);
    }
    res = PyBytes_FromStringAndSize((const char *)mac, XT_SHA256_DIGEST_SIZE);
done:
    if (key.obj != NULL) {
        PyBuffer_Release(&key);
    }
    if (data.obj != NULL) {
        PyBuffer_Release(&data);
    }
    return res;
}

static PyMethodDef hash_methods[] = {
    {"sha256", (PyCFunction)(void (*)(void))sha256_py, METH_FASTCALL, sha256__doc__},
    {"hmac_sha256", (PyCFunction)(void (*)(void))hmac_sha256_py, METH_FASTCALL, hmac_sha256__doc__},
    {NULL, NULL, 0, NULL},
};

int
xt_hash_exec(PyObject *module, xt_state *st)
{
    (void)st;
    return PyModule_AddFunctions(module, hash_methods);
}
