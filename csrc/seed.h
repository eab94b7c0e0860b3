/* Seed: canonical JSON of a payload, its SHA-256, and seeds derived from it.
 *
 * The canonical JSON of a value is byte for byte what Python writes with
 * json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True):
 * str, int (any size), float (repr, NaN/Infinity/-Infinity), bool, None, dicts
 * (keys sorted as Python sorts them, then written as json writes them) and
 * lists/tuples.  Anything else is handed to `default_fn` when one is given (its
 * result is encoded in place of the object), else it raises TypeError naming the
 * type.  With `str_keys` set, every dict key is first replaced by str(key) (later
 * duplicates win) and the dict is sorted by those strings: the convention of
 * design-research-experiments' stable_json_dumps.
 *
 * All functions need the GIL (they read Python objects); 0 on success, -1 with an
 * exception set on failure, unless noted. */
#ifndef XT_SEED_H
#define XT_SEED_H

#include "module.h"

#include <stdint.h>

#include "hash.h"

/* Seeds derived from digests lie in [0, XT_SEED_MODULUS - 1]. */
#define XT_SEED_MODULUS 2147483647u /* 2**31 - 1 */

/* New reference to the canonical JSON of `obj` as a str, NULL on failure.
 * `default_fn` may be NULL. */
PyObject *xt_canonical_json(PyObject *obj, PyObject *default_fn, int str_keys);

/* SHA-256 of the canonical JSON of `obj` (as ASCII bytes) into `digest`. */
int xt_canonical_sha256(PyObject *obj, PyObject *default_fn, int str_keys,
                        uint8_t digest[XT_SHA256_DIGEST_SIZE]);

/* The first 8 digest bytes as a big-endian integer (the first 16 hex digits),
 * modulo 2**31 - 1.  Pure C; cannot fail. */
uint32_t xt_seed_from_digest(const uint8_t digest[XT_SHA256_DIGEST_SIZE]);

/* xt_seed_from_digest of xt_canonical_sha256 of `payload`. */
int xt_seed_from_payload(PyObject *payload, PyObject *default_fn, int str_keys,
                         uint32_t *seed);

/* The seed design-research-experiments' SeedPolicy.derive_seed returns: that of the
 * payload {base_seed, strategy, per_run_offset, study_id, condition_id, replicate,
 * salt} with str_keys, written without building a dict.  `values` holds those seven
 * in that order (borrowed). */
int xt_policy_seed(PyObject *const values[7], PyObject *default_fn, uint32_t *seed);

#endif
