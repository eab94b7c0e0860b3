/* Result cache, key encoding: the canonical binary encoding of a call (qualified function
 * name, args, kwargs, per-call params, tracker params), hashed with SHA-256 into the key of
 * the call, and the warning, once per type, for values that cannot be encoded stably.
 * The encoding is described in docs/cache.md.  The store (cache.c) and the ResultCache
 * type (cache_type.c) reach it through cache_internal.h. */
#include "cache_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"

/* Leads every encoding; a new encoding gets a new tag, so old entries simply miss. */
static const char key_version[] = "xetrack_c.cache.v1";

/* Containers nested deeper than this (or containing themselves) are not cacheable. */
#define MAX_DEPTH 100

/* Arrays at least this large are hashed with the GIL released. */
#define GIL_RELEASE_BYTES (1 << 20)

/* Items of a dict or set digested on the stack before spilling to the heap. */
#define STACK_ITEMS 8

enum { ENC_ERROR = -1, ENC_OK = 0, ENC_SKIP = 1 };

static const char general_advice[] =
    "pass values the cache can encode (None, bool, int, float, complex, str, bytes, tuple, "
    "list, dict, set, frozenset, enum, path, numpy array or scalar, frozen dataclass, "
    "pydantic model, an object whose class defines __hash__ and holds such values), e.g. "
    "the object's name or parameters instead of the object";

typedef struct {
    xt_state *st;
    xt_sha256_ctx *sha; /* where encoded bytes go */
    int depth;
    PyObject *bad_type; /* new reference: the first value type that could not be encoded */
    const char *advice;
} key_encoder;

static int encode_value(key_encoder *e, PyObject *obj);

static void
put(key_encoder *e, const void *data, size_t len)
{
    xt_sha256_update(e->sha, data, len);
}

static void
put_tag(key_encoder *e, char tag)
{
    put(e, &tag, 1);
}

/* Lengths, counts and integers: 8 bytes, little-endian, on every machine. */
static void
put_u64(key_encoder *e, uint64_t value)
{
    uint8_t bytes[8];
    for (int i = 0; i < 8; i++) {
        bytes[i] = (uint8_t)(value >> (8 * i));
    }
    put(e, bytes, sizeof(bytes));
}

static void
put_sized(key_encoder *e, const void *data, size_t len)
{
    put_u64(e, (uint64_t)len);
    put(e, data, len);
}

/* Every NaN is one value; -0.0 keeps its sign bit and differs from 0.0. */
static void
put_double(key_encoder *e, double value)
{
    uint64_t bits;
    if (isnan(value)) {
        bits = UINT64_C(0x7ff8000000000000);
    }
    else {
        memcpy(&bits, &value, sizeof(bits));
    }
    put_u64(e, bits);
}

/* UTF-8 of a str, lone surrogates included (as surrogatepass encodes them). */
static int
put_text(key_encoder *e, PyObject *text)
{
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, &len);
    if (utf8 != NULL) {
        put_sized(e, utf8, (size_t)len);
        return ENC_OK;
    }
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
        return ENC_ERROR;
    }
    PyErr_Clear();
    PyObject *bytes = PyUnicode_AsEncodedString(text, "utf-8", "surrogatepass");
    if (bytes == NULL) {
        return ENC_ERROR;
    }
    put_sized(e, PyBytes_AS_STRING(bytes), (size_t)PyBytes_GET_SIZE(bytes));
    Py_DECREF(bytes);
    return ENC_OK;
}

static int
skip(key_encoder *e, PyObject *obj, const char *advice)
{
    if (e->bad_type == NULL) {
        e->bad_type = Py_NewRef((PyObject *)Py_TYPE(obj));
        e->advice = advice;
    }
    return ENC_SKIP;
}

/* getattr that tells "missing" (0) from failure (-1). */
static int
optional_attr(PyObject *obj, PyObject *name, PyObject **out)
{
    *out = PyObject_GetAttr(obj, name);
    if (*out != NULL) {
        return 1;
    }
    if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        return 0;
    }
    return -1;
}

static int
optional_attr_string(PyObject *obj, const char *name, PyObject **out)
{
    PyObject *key = PyUnicode_FromString(name);
    if (key == NULL) {
        return -1;
    }
    int rc = optional_attr(obj, key, out);
    Py_DECREF(key);
    return rc;
}

/* module.attr, imported on first use and kept in the module state.  Returns a borrowed
 * reference, or NULL with an exception set. */
PyObject *
xt_cache_helper(xt_state *st, const char *module_name, const char *attr)
{
    PyObject *name = NULL, *module = NULL, *value = NULL;

    if (st->cache_helpers == NULL && (st->cache_helpers = PyDict_New()) == NULL) {
        return NULL;
    }
    name = PyUnicode_FromFormat("%s.%s", module_name, attr);
    if (name == NULL) {
        return NULL;
    }
    value = PyDict_GetItemWithError(st->cache_helpers, name);
    if (value != NULL || PyErr_Occurred()) {
        goto done;
    }
    module = PyImport_ImportModule(module_name);
    if (module == NULL) {
        goto done;
    }
    PyObject *found = PyObject_GetAttrString(module, attr);
    if (found == NULL) {
        goto done;
    }
    if (PyDict_SetItem(st->cache_helpers, name, found) == 0) {
        value = found; /* the dict keeps it alive */
    }
    Py_DECREF(found);
done:
    Py_XDECREF(name);
    Py_XDECREF(module);
    return value;
}

/* numpy.ndarray and numpy.generic if numpy is imported (1), 0 if it is not (values of
 * its types cannot exist then), -1 on error.  Never imports numpy. */
static int
numpy_types(xt_state *st, PyObject **ndarray, PyObject **generic)
{
    if (st->cache_helpers != NULL) {
        PyObject *known = PyDict_GetItemString(st->cache_helpers, "numpy.ndarray");
        if (known != NULL) {
            *ndarray = known;
            *generic = PyDict_GetItemString(st->cache_helpers, "numpy.generic");
            return *generic != NULL;
        }
    }
    PyObject *name = PyUnicode_FromString("numpy");
    PyObject *numpy = name ? PyImport_GetModule(name) : NULL;
    Py_XDECREF(name);
    if (numpy == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    Py_DECREF(numpy);
    *ndarray = xt_cache_helper(st, "numpy", "ndarray");
    *generic = *ndarray ? xt_cache_helper(st, "numpy", "generic") : NULL;
    return *generic != NULL ? 1 : -1;
}

static int
encode_int(key_encoder *e, PyObject *obj)
{
    int overflow = 0;
    long long small = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (small == -1 && PyErr_Occurred()) {
        return ENC_ERROR;
    }
    if (!overflow) {
        put_tag(e, 'i');
        put_u64(e, (uint64_t)small);
        return ENC_OK;
    }
    PyObject *magnitude = PyNumber_Absolute(obj);
    PyObject *hex = magnitude ? PyNumber_ToBase(magnitude, 16) : NULL;
    int rc = ENC_ERROR;
    if (hex != NULL) {
        put_tag(e, 'I');
        put_tag(e, overflow < 0 ? '-' : '+');
        rc = put_text(e, hex);
    }
    Py_XDECREF(magnitude);
    Py_XDECREF(hex);
    return rc;
}

static int
encode_sequence(key_encoder *e, char tag, PyObject *seq)
{
    int is_list = PyList_Check(seq);
    Py_ssize_t n = is_list ? PyList_GET_SIZE(seq) : PyTuple_GET_SIZE(seq);
    put_tag(e, tag);
    put_u64(e, (uint64_t)n);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (is_list && PyList_GET_SIZE(seq) != n) {
            PyErr_SetString(PyExc_RuntimeError, "list changed size while its cache key was built");
            return ENC_ERROR;
        }
        PyObject *item = Py_NewRef(is_list ? PyList_GET_ITEM(seq, i) : PyTuple_GET_ITEM(seq, i));
        int rc = encode_value(e, item);
        Py_DECREF(item);
        if (rc != ENC_OK) {
            return rc;
        }
    }
    return ENC_OK;
}

static int
compare_digests(const void *a, const void *b)
{
    return memcmp(a, b, XT_SHA256_DIGEST_SIZE);
}

/* An unordered collection: each member (a dict item is key then value) is digested on
 * its own, the digests are sorted, and the tag, count and sorted digests are written. */
typedef struct {
    uint8_t (*digests)[XT_SHA256_DIGEST_SIZE];
    uint8_t stack[STACK_ITEMS][XT_SHA256_DIGEST_SIZE];
    Py_ssize_t n, used;
} digest_set;

static int
digest_set_init(digest_set *set, Py_ssize_t n)
{
    set->n = n;
    set->used = 0;
    set->digests = set->stack;
    if (n > STACK_ITEMS) {
        set->digests = malloc((size_t)n * XT_SHA256_DIGEST_SIZE);
        if (set->digests == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    return 0;
}

static void
digest_set_free(digest_set *set)
{
    if (set->digests != set->stack) {
        free(set->digests);
    }
}

/* Encode `first` (and `second`, if not NULL) as one member of `set`. */
static int
digest_member(key_encoder *e, digest_set *set, PyObject *first, PyObject *second)
{
    if (set->used >= set->n) {
        PyErr_SetString(PyExc_RuntimeError, "collection changed size while its cache key was built");
        return ENC_ERROR;
    }
    xt_sha256_ctx member, *outer = e->sha;
    xt_sha256_init(&member);
    e->sha = &member;
    int rc = encode_value(e, first);
    if (rc == ENC_OK && second != NULL) {
        rc = encode_value(e, second);
    }
    e->sha = outer;
    if (rc == ENC_OK) {
        xt_sha256_final(&member, set->digests[set->used++]);
    }
    return rc;
}

static int
digest_set_write(key_encoder *e, digest_set *set, char tag)
{
    if (set->used != set->n) {
        PyErr_SetString(PyExc_RuntimeError, "collection changed size while its cache key was built");
        return ENC_ERROR;
    }
    qsort(set->digests, (size_t)set->n, XT_SHA256_DIGEST_SIZE, compare_digests);
    put_tag(e, tag);
    put_u64(e, (uint64_t)set->n);
    put(e, set->digests, (size_t)set->n * XT_SHA256_DIGEST_SIZE);
    return ENC_OK;
}

static int
encode_dict(key_encoder *e, PyObject *dict)
{
    digest_set set;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    int rc = ENC_OK;

    if (digest_set_init(&set, PyDict_GET_SIZE(dict)) < 0) {
        return ENC_ERROR;
    }
    while (rc == ENC_OK && PyDict_Next(dict, &pos, &key, &value)) {
        Py_INCREF(key);
        Py_INCREF(value);
        rc = digest_member(e, &set, key, value);
        Py_DECREF(key);
        Py_DECREF(value);
    }
    if (rc == ENC_OK) {
        if (PyDict_GET_SIZE(dict) != set.n) {
            PyErr_SetString(PyExc_RuntimeError, "dict changed size while its cache key was built");
            rc = ENC_ERROR;
        }
        else {
            rc = digest_set_write(e, &set, '{');
        }
    }
    digest_set_free(&set);
    return rc;
}

static int
encode_set(key_encoder *e, char tag, PyObject *set_obj)
{
    digest_set set;
    PyObject *it = NULL, *item;
    int rc = ENC_ERROR;

    if (digest_set_init(&set, PySet_GET_SIZE(set_obj)) < 0) {
        return ENC_ERROR;
    }
    it = PyObject_GetIter(set_obj);
    if (it == NULL) {
        goto done;
    }
    rc = ENC_OK;
    while (rc == ENC_OK && (item = PyIter_Next(it)) != NULL) {
        rc = digest_member(e, &set, item, NULL);
        Py_DECREF(item);
    }
    if (rc == ENC_OK) {
        rc = PyErr_Occurred() ? ENC_ERROR : digest_set_write(e, &set, tag);
    }
done:
    Py_XDECREF(it);
    digest_set_free(&set);
    return rc;
}

/* module and qualified name of a class, as `module` `qualname` strings. */
static int
put_class(key_encoder *e, PyObject *type)
{
    PyObject *module = NULL, *qualname = NULL;
    int rc = ENC_ERROR;
    if (optional_attr(type, e->st->str_module, &module) < 0
        || optional_attr(type, e->st->str_qualname, &qualname) < 0) {
        goto done;
    }
    if (module != NULL && PyUnicode_Check(module)) {
        if (put_text(e, module) < 0) {
            goto done;
        }
    }
    else {
        put_u64(e, 0);
    }
    if (qualname != NULL && PyUnicode_Check(qualname)) {
        rc = put_text(e, qualname);
    }
    else {
        const char *name = ((PyTypeObject *)type)->tp_name;
        put_sized(e, name, strlen(name));
        rc = ENC_OK;
    }
done:
    Py_XDECREF(module);
    Py_XDECREF(qualname);
    return rc;
}

static int
encode_array(key_encoder *e, PyObject *array)
{
    PyObject *dtype = NULL, *byteorder = NULL, *names = NULL, *descr = NULL, *shape = NULL;
    PyObject *hasobject = NULL, *items = NULL, *copy = NULL, *bytes = NULL;
    Py_buffer view = {0};
    int rc = ENC_ERROR;

    array = Py_NewRef(array);
    dtype = PyObject_GetAttrString(array, "dtype");
    byteorder = dtype ? PyObject_GetAttrString(dtype, "byteorder") : NULL;
    if (byteorder == NULL) {
        goto done;
    }
    /* Big-endian data is hashed in little-endian order, so equal arrays share a key. */
    if (PyUnicode_Check(byteorder) && PyUnicode_CompareWithASCIIString(byteorder, ">") == 0) {
        PyObject *little = PyObject_CallMethod(dtype, "newbyteorder", "s", "<");
        copy = little ? PyObject_CallMethod(array, "astype", "O", little) : NULL;
        Py_XDECREF(little);
        if (copy == NULL) {
            goto done;
        }
        Py_SETREF(array, Py_NewRef(copy));
        Py_SETREF(dtype, PyObject_GetAttrString(array, "dtype"));
        if (dtype == NULL) {
            goto done;
        }
    }
    names = PyObject_GetAttrString(dtype, "names");
    if (names == NULL) {
        goto done;
    }
    /* Structured dtypes: their full description; others: e.g. '<f8', '<M8[ns]'. */
    if (names == Py_None) {
        descr = PyObject_GetAttrString(dtype, "str");
    }
    else {
        PyObject *fields = PyObject_GetAttrString(dtype, "descr");
        descr = fields ? PyObject_Str(fields) : NULL;
        Py_XDECREF(fields);
    }
    shape = descr ? PyObject_GetAttrString(array, "shape") : NULL;
    hasobject = shape ? PyObject_GetAttrString(dtype, "hasobject") : NULL;
    if (hasobject == NULL) {
        goto done;
    }
    if (!PyUnicode_Check(descr) || !PyTuple_Check(shape)) {
        rc = skip(e, array, general_advice);
        goto done;
    }
    put_tag(e, 'A');
    if (put_text(e, descr) < 0) {
        goto done;
    }
    put_u64(e, (uint64_t)PyTuple_GET_SIZE(shape));
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(shape); i++) {
        Py_ssize_t dim = PyLong_AsSsize_t(PyTuple_GET_ITEM(shape, i));
        if (dim == -1 && PyErr_Occurred()) {
            goto done;
        }
        put_u64(e, (uint64_t)dim);
    }
    if (PyObject_IsTrue(hasobject)) {
        /* Object arrays hold pointers: encode the objects themselves. */
        items = PyObject_CallMethod(array, "tolist", NULL);
        rc = items ? encode_value(e, items) : ENC_ERROR;
        goto done;
    }
    if (PyObject_GetBuffer(array, &view, PyBUF_C_CONTIGUOUS) < 0) {
        /* Not contiguous, or a dtype the buffer protocol does not describe. */
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            goto done;
        }
        PyErr_Clear();
        bytes = PyObject_CallMethod(array, "tobytes", NULL);
        if (bytes == NULL || !PyBytes_Check(bytes)) {
            goto done;
        }
        put_sized(e, PyBytes_AS_STRING(bytes), (size_t)PyBytes_GET_SIZE(bytes));
        rc = ENC_OK;
        goto done;
    }
    put_u64(e, (uint64_t)view.len);
    if (view.len >= GIL_RELEASE_BYTES) {
        xt_sha256_ctx *sha = e->sha;
        Py_BEGIN_ALLOW_THREADS
        xt_sha256_update(sha, view.buf, (size_t)view.len);
        Py_END_ALLOW_THREADS
    }
    else {
        put(e, view.buf, (size_t)view.len);
    }
    rc = ENC_OK;
done:
    if (view.obj != NULL) {
        PyBuffer_Release(&view);
    }
    Py_XDECREF(array);
    Py_XDECREF(dtype);
    Py_XDECREF(byteorder);
    Py_XDECREF(names);
    Py_XDECREF(descr);
    Py_XDECREF(shape);
    Py_XDECREF(hasobject);
    Py_XDECREF(items);
    Py_XDECREF(copy);
    Py_XDECREF(bytes);
    return rc;
}

static int
encode_numpy_scalar(key_encoder *e, PyObject *scalar)
{
    PyObject *dtype = PyObject_GetAttrString(scalar, "dtype");
    PyObject *descr = dtype ? PyObject_GetAttrString(dtype, "str") : NULL;
    PyObject *bytes = descr ? PyObject_CallMethod(scalar, "tobytes", NULL) : NULL;
    int rc = ENC_ERROR;
    if (bytes != NULL) {
        if (!PyUnicode_Check(descr) || !PyBytes_Check(bytes)) {
            rc = skip(e, scalar, general_advice);
        }
        else {
            put_tag(e, 'a');
            rc = put_text(e, descr);
            if (rc == ENC_OK) {
                put_sized(e, PyBytes_AS_STRING(bytes), (size_t)PyBytes_GET_SIZE(bytes));
            }
        }
    }
    Py_XDECREF(dtype);
    Py_XDECREF(descr);
    Py_XDECREF(bytes);
    return rc;
}

static int
encode_enum(key_encoder *e, PyObject *member)
{
    PyObject *name = NULL, *value = NULL;
    int rc = ENC_ERROR;
    put_tag(e, 'E');
    if (put_class(e, (PyObject *)Py_TYPE(member)) < 0) {
        return ENC_ERROR;
    }
    name = PyObject_GetAttrString(member, "name");
    if (name == NULL) {
        goto done;
    }
    rc = encode_value(e, name);
    if (rc == ENC_OK && name == Py_None) { /* a combination of flags without a name */
        value = PyObject_GetAttrString(member, "value");
        rc = value ? encode_value(e, value) : ENC_ERROR;
    }
done:
    Py_XDECREF(name);
    Py_XDECREF(value);
    return rc;
}

/* Named fields of a frozen dataclass ('D') or a pydantic model ('M'), in declaration
 * order: the class, then each field's name and value. */
static int
encode_fields(key_encoder *e, char tag, PyObject *obj, PyObject *names)
{
    PyObject *seq = PySequence_Fast(names, "fields must be a sequence");
    int rc = ENC_ERROR;
    if (seq == NULL) {
        return ENC_ERROR;
    }
    put_tag(e, tag);
    if (put_class(e, (PyObject *)Py_TYPE(obj)) < 0) {
        goto done;
    }
    put_u64(e, (uint64_t)PySequence_Fast_GET_SIZE(seq));
    rc = ENC_OK;
    for (Py_ssize_t i = 0; rc == ENC_OK && i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *name = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyUnicode_Check(name)) {
            rc = skip(e, obj, general_advice);
            break;
        }
        PyObject *value = PyObject_GetAttr(obj, name);
        rc = value ? put_text(e, name) : ENC_ERROR;
        if (rc == ENC_OK) {
            rc = encode_value(e, value);
        }
        Py_XDECREF(value);
    }
done:
    Py_DECREF(seq);
    return rc;
}

/* A dataclass instance: 1 if handled (result in *rc), 0 if `obj` is not one. */
static int
try_dataclass(key_encoder *e, PyObject *obj, int *rc)
{
    PyObject *type = (PyObject *)Py_TYPE(obj), *params = NULL, *frozen = NULL;
    PyObject *fields = NULL, *names = NULL;
    int found = optional_attr_string(type, "__dataclass_params__", &params);
    if (found <= 0) {
        *rc = ENC_ERROR;
        return found;
    }
    *rc = ENC_ERROR;
    frozen = PyObject_GetAttrString(params, "frozen");
    if (frozen == NULL) {
        goto done;
    }
    if (!PyObject_IsTrue(frozen)) {
        *rc = skip(e, obj,
                   "declare the dataclass with @dataclass(frozen=True), so its fields cannot "
                   "change after the key is taken");
        goto done;
    }
    PyObject *fields_fn = xt_cache_helper(e->st, "dataclasses", "fields");
    fields = fields_fn ? PyObject_CallOneArg(fields_fn, obj) : NULL;
    names = fields ? PyList_New(0) : NULL;
    if (names == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(fields); i++) {
        PyObject *name = PyObject_GetAttrString(PyTuple_GET_ITEM(fields, i), "name");
        int added = name ? PyList_Append(names, name) : -1;
        Py_XDECREF(name);
        if (added < 0) {
            goto done;
        }
    }
    *rc = encode_fields(e, 'D', obj, names);
done:
    Py_XDECREF(params);
    Py_XDECREF(frozen);
    Py_XDECREF(fields);
    Py_XDECREF(names);
    return 1;
}

/* A pydantic (v2) model: 1 if handled (result in *rc), 0 if `obj` is not one. */
static int
try_pydantic(key_encoder *e, PyObject *obj, int *rc)
{
    PyObject *fields = NULL, *names = NULL, *extra = NULL;
    int found = optional_attr_string((PyObject *)Py_TYPE(obj), "__pydantic_fields__", &fields);
    *rc = ENC_ERROR;
    if (found <= 0) {
        return found;
    }
    if (!PyDict_Check(fields)) {
        Py_DECREF(fields);
        return 0;
    }
    names = PyDict_Keys(fields);
    if (names == NULL) {
        goto done;
    }
    *rc = encode_fields(e, 'M', obj, names);
    if (*rc != ENC_OK) {
        goto done;
    }
    /* Extra fields of models that allow them; None when there are none. */
    if (optional_attr_string(obj, "__pydantic_extra__", &extra) < 0) {
        *rc = ENC_ERROR;
        goto done;
    }
    *rc = encode_value(e, (extra != NULL && PyDict_Check(extra) && PyDict_GET_SIZE(extra)) ? extra : Py_None);
done:
    Py_XDECREF(fields);
    Py_XDECREF(names);
    Py_XDECREF(extra);
    return 1;
}

/* True if the class defines its own __hash__ (not object's identity hash, and not made
 * unhashable by defining __eq__ alone). */
static int
has_own_hash(PyTypeObject *tp)
{
    hashfunc hash = (hashfunc)PyType_GetSlot(tp, Py_tp_hash);
    return hash != NULL && hash != PyObject_HashNotImplemented
           && hash != (hashfunc)PyType_GetSlot(&PyBaseObject_Type, Py_tp_hash);
}

/* An object whose class defines __hash__ ('H'): xetrack keys it by hash(), which is salted
 * per process for str and bytes and equal for different values (hash(-1) == hash(-2)), so
 * it is keyed by its value instead: the class, then what pickle rebuilds it from.  Only
 * objects that pickle as copyreg.__newobj__(class, *args) plus a state (instances of
 * Python classes) qualify: their whole value is in the args and the state, which are
 * encoded by the same rules.  Anything else (a C type, whose value pickle may carry in a
 * form of its own, or list/dict items) skips the cache. */
static int
encode_hashable_object(key_encoder *e, PyObject *obj)
{
    static const char advice[] =
        "give the class plain attributes the cache can encode (its instances are keyed by "
        "their class and pickled state, never by hash(), which differs between processes), "
        "or pass the values it is made from";
    PyObject *newobj = xt_cache_helper(e->st, "copyreg", "__newobj__");
    PyObject *reduced = NULL;
    int rc = ENC_ERROR;

    if (newobj == NULL) {
        return ENC_ERROR;
    }
    reduced = PyObject_CallMethod(obj, "__reduce_ex__", "i", 4);
    if (reduced == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_TypeError)) {
            return ENC_ERROR;
        }
        PyErr_Clear(); /* cannot be pickled: no state to key it by */
        return skip(e, obj, advice);
    }
    if (!PyTuple_Check(reduced) || PyTuple_GET_SIZE(reduced) < 2
        || PyTuple_GET_ITEM(reduced, 0) != newobj || !PyTuple_Check(PyTuple_GET_ITEM(reduced, 1))
        || PyTuple_GET_SIZE(PyTuple_GET_ITEM(reduced, 1)) < 1
        || PyTuple_GET_ITEM(PyTuple_GET_ITEM(reduced, 1), 0) != (PyObject *)Py_TYPE(obj)) {
        rc = skip(e, obj, advice);
        goto done;
    }
    for (Py_ssize_t i = 3; i < PyTuple_GET_SIZE(reduced); i++) {
        if (PyTuple_GET_ITEM(reduced, i) != Py_None) { /* list or dict items, a setter */
            rc = skip(e, obj, advice);
            goto done;
        }
    }
    PyObject *args = PyTuple_GET_ITEM(reduced, 1);
    put_tag(e, 'H');
    if (put_class(e, (PyObject *)Py_TYPE(obj)) < 0) {
        goto done;
    }
    PyObject *rest = PyTuple_GetSlice(args, 1, PyTuple_GET_SIZE(args));
    if (rest == NULL) {
        goto done;
    }
    rc = encode_value(e, rest);
    Py_DECREF(rest);
    if (rc == ENC_OK) {
        rc = encode_value(e, PyTuple_GET_SIZE(reduced) > 2 ? PyTuple_GET_ITEM(reduced, 2) : Py_None);
    }
done:
    Py_XDECREF(reduced);
    return rc;
}

static int
encode_other(key_encoder *e, PyObject *obj)
{
    PyTypeObject *tp = Py_TYPE(obj);
    PyObject *ndarray = NULL, *generic = NULL;
    int rc;

    int have_numpy = numpy_types(e->st, &ndarray, &generic);
    if (have_numpy < 0) {
        return ENC_ERROR;
    }
    if (have_numpy) {
        if ((PyObject *)tp == ndarray) {
            return encode_array(e, obj);
        }
        if (PyObject_TypeCheck(obj, (PyTypeObject *)ndarray)) {
            return skip(e, obj, "pass a plain array, e.g. numpy.asarray(value) (a subclass may hold "
                                "state, such as a mask, that its bytes do not show)");
        }
        if (PyObject_TypeCheck(obj, (PyTypeObject *)generic)) {
            return encode_numpy_scalar(e, obj);
        }
    }
    PyObject *enum_type = xt_cache_helper(e->st, "enum", "Enum");
    if (enum_type == NULL) {
        return ENC_ERROR;
    }
    if (PyObject_TypeCheck(obj, (PyTypeObject *)enum_type)) {
        return encode_enum(e, obj);
    }
    if (PyFrozenSet_CheckExact(obj)) {
        return encode_set(e, '>', obj);
    }
    if (PySet_CheckExact(obj)) {
        return encode_set(e, '<', obj);
    }
    if (PyByteArray_CheckExact(obj)) {
        put_tag(e, 'y');
        put_sized(e, PyByteArray_AS_STRING(obj), (size_t)PyByteArray_GET_SIZE(obj));
        return ENC_OK;
    }
    if (PyComplex_CheckExact(obj)) {
        put_tag(e, 'c');
        put_double(e, PyComplex_RealAsDouble(obj));
        put_double(e, PyComplex_ImagAsDouble(obj));
        return ENC_OK;
    }
    if (!PyType_Check(obj)) {
        if (try_dataclass(e, obj, &rc) != 0 || try_pydantic(e, obj, &rc) != 0) {
            return rc;
        }
        if (PyErr_Occurred()) {
            return ENC_ERROR;
        }
        PyObject *fspath = NULL;
        int is_path = optional_attr_string((PyObject *)tp, "__fspath__", &fspath);
        Py_XDECREF(fspath);
        if (is_path < 0) {
            return ENC_ERROR;
        }
        if (is_path && !PyUnicode_Check(obj) && !PyBytes_Check(obj)) {
            PyObject *path = PyOS_FSPath(obj);
            if (path == NULL) {
                return ENC_ERROR;
            }
            put_tag(e, 'p');
            rc = encode_value(e, path);
            Py_DECREF(path);
            return rc;
        }
    }
    /* Subclasses of the built-in types (namedtuples, str enums of other libraries, ...):
     * the class, then the value as its base type. */
    int base = PyLong_Check(obj) ? 'i' : PyFloat_Check(obj) ? 'f' : PyUnicode_Check(obj) ? 's'
             : PyBytes_Check(obj) ? 'b' : PyTuple_Check(obj) ? '(' : PyList_Check(obj) ? '['
             : PyDict_Check(obj) ? '{' : PyFrozenSet_Check(obj) ? '>' : PyAnySet_Check(obj) ? '<' : 0;
    if (base == 0) {
        return has_own_hash(tp) ? encode_hashable_object(e, obj) : skip(e, obj, general_advice);
    }
    put_tag(e, 'S');
    if (put_class(e, (PyObject *)tp) < 0) {
        return ENC_ERROR;
    }
    switch (base) {
    case 'i':
        return encode_int(e, obj);
    case 'f':
        put_tag(e, 'f');
        put_double(e, PyFloat_AS_DOUBLE(obj));
        return ENC_OK;
    case 's':
        put_tag(e, 's');
        return put_text(e, obj);
    case 'b':
        put_tag(e, 'b');
        put_sized(e, PyBytes_AS_STRING(obj), (size_t)PyBytes_GET_SIZE(obj));
        return ENC_OK;
    case '(':
    case '[':
        return encode_sequence(e, (char)base, obj);
    case '{':
        return encode_dict(e, obj);
    default:
        return encode_set(e, (char)base, obj);
    }
}

static int
encode_value_inner(key_encoder *e, PyObject *obj)
{
    PyTypeObject *tp = Py_TYPE(obj);
    if (obj == Py_None) {
        put_tag(e, 'N');
        return ENC_OK;
    }
    if (obj == Py_True || obj == Py_False) {
        put_tag(e, obj == Py_True ? 'T' : 'F');
        return ENC_OK;
    }
    if (tp == &PyLong_Type) {
        return encode_int(e, obj);
    }
    if (tp == &PyFloat_Type) {
        put_tag(e, 'f');
        put_double(e, PyFloat_AS_DOUBLE(obj));
        return ENC_OK;
    }
    if (tp == &PyUnicode_Type) {
        put_tag(e, 's');
        return put_text(e, obj);
    }
    if (tp == &PyBytes_Type) {
        put_tag(e, 'b');
        put_sized(e, PyBytes_AS_STRING(obj), (size_t)PyBytes_GET_SIZE(obj));
        return ENC_OK;
    }
    if (tp == &PyTuple_Type) {
        return encode_sequence(e, '(', obj);
    }
    if (tp == &PyList_Type) {
        return encode_sequence(e, '[', obj);
    }
    if (tp == &PyDict_Type) {
        return encode_dict(e, obj);
    }
    return encode_other(e, obj);
}

static int
encode_value(key_encoder *e, PyObject *obj)
{
    if (e->depth >= MAX_DEPTH) {
        return skip(e, obj, "pass a flatter value (this one is nested more than 100 levels deep, "
                            "or contains itself)");
    }
    e->depth++;
    int rc = encode_value_inner(e, obj);
    e->depth--;
    return rc;
}

/* Module and qualified name of a callable, as the key and the store record them.
 * Callable objects without a __qualname__ are named by their class. */
int
xt_cache_callable_names(xt_state *st, PyObject *func, PyObject **module, PyObject **qualname)
{
    *module = *qualname = NULL;
    if (optional_attr(func, st->str_qualname, qualname) < 0) {
        return -1;
    }
    PyObject *owner = func;
    if (*qualname == NULL || !PyUnicode_Check(*qualname)) {
        owner = (PyObject *)Py_TYPE(func);
        Py_XSETREF(*qualname, PyObject_GetAttr(owner, st->str_qualname));
        if (*qualname == NULL) {
            return -1;
        }
    }
    if (optional_attr(owner, st->str_module, module) < 0) {
        return -1;
    }
    if (*module != NULL && !PyUnicode_Check(*module)) {
        Py_CLEAR(*module);
    }
    return 0;
}

/* True for "<lambda>" names: several lambdas of a module share them, so the line of
 * the lambda joins the key. */
static int
is_lambda(PyObject *qualname)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(qualname);
    if (n < 8) {
        return 0;
    }
    PyObject *tail = PyUnicode_Substring(qualname, n - 8, n);
    int rc = tail != NULL && PyUnicode_CompareWithASCIIString(tail, "<lambda>") == 0;
    Py_XDECREF(tail);
    PyErr_Clear();
    return rc;
}

static int
encode_callable(key_encoder *e, PyObject *func)
{
    PyObject *module = NULL, *qualname = NULL, *code = NULL, *line = NULL;
    int rc = ENC_ERROR;

    if (!PyFunction_Check(func) && !PyCFunction_Check(func) && !PyMethod_Check(func)) {
        PyObject *partial = xt_cache_helper(e->st, "functools", "partial");
        if (partial == NULL) {
            return ENC_ERROR;
        }
        if (PyObject_TypeCheck(func, (PyTypeObject *)partial)) {
            PyObject *inner = PyObject_GetAttrString(func, "func");
            PyObject *args = inner ? PyObject_GetAttrString(func, "args") : NULL;
            PyObject *keywords = args ? PyObject_GetAttrString(func, "keywords") : NULL;
            if (keywords != NULL) {
                put_tag(e, 'Q');
                rc = encode_callable(e, inner);
                if (rc == ENC_OK) {
                    rc = encode_value(e, args);
                }
                if (rc == ENC_OK) {
                    rc = encode_value(e, keywords);
                }
            }
            Py_XDECREF(inner);
            Py_XDECREF(args);
            Py_XDECREF(keywords);
            return rc;
        }
    }
    if (xt_cache_callable_names(e->st, func, &module, &qualname) < 0) {
        goto done;
    }
    put_tag(e, 'C');
    if (module != NULL) {
        if (put_text(e, module) < 0) {
            goto done;
        }
    }
    else {
        put_u64(e, 0);
    }
    if (put_text(e, qualname) < 0) {
        goto done;
    }
    if (is_lambda(qualname) && optional_attr_string(func, "__code__", &code) > 0) {
        line = PyObject_GetAttrString(code, "co_firstlineno");
        long n = line ? PyLong_AsLong(line) : -1;
        if (n == -1 && PyErr_Occurred()) {
            goto done;
        }
        put_tag(e, 'l');
        put_u64(e, (uint64_t)n);
    }
    rc = PyErr_Occurred() ? ENC_ERROR : ENC_OK;
done:
    Py_XDECREF(module);
    Py_XDECREF(qualname);
    Py_XDECREF(code);
    Py_XDECREF(line);
    return rc;
}

/* Where the value that could not be encoded sits, for the warning. */
static PyObject *
locate_in_dict(xt_state *st, const char *label, PyObject *dict)
{
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(dict, &pos, &key, &value)) {
        xt_sha256_ctx scratch;
        key_encoder probe = {.st = st, .sha = &scratch};
        xt_sha256_init(&scratch);
        int rc = encode_value(&probe, value);
        Py_XDECREF(probe.bad_type);
        if (rc == ENC_ERROR) {
            PyErr_Clear();
        }
        if (rc != ENC_OK) {
            return PyUnicode_FromFormat("%s[%R]", label, key);
        }
    }
    return PyUnicode_FromString(label);
}

/* Build the key of a call.  ENC_OK with `key` filled, ENC_SKIP with e->bad_type set and
 * *where describing the place, or ENC_ERROR. */
static int
build_key(key_encoder *e, PyObject *func, PyObject *args, PyObject *kwargs, PyObject *params,
          PyObject *tracker_params, xt_cache_key *key, PyObject **where)
{
    PyObject *seq = NULL;
    xt_sha256_ctx sha;
    uint8_t digest[XT_SHA256_DIGEST_SIZE];
    int rc = ENC_ERROR;
    PyObject *dicts[3] = {kwargs, params, tracker_params};
    static const char *const labels[3] = {"kwargs", "params", "tracker params"};

    *where = NULL;
    for (int i = 0; i < 3; i++) {
        if (dicts[i] != NULL && dicts[i] != Py_None && !PyDict_Check(dicts[i])) {
            PyErr_Format(PyExc_TypeError, "cache key: %s must be a dict or None, not %.100s", labels[i],
                         Py_TYPE(dicts[i])->tp_name);
            return ENC_ERROR;
        }
    }
    if (args != NULL && args != Py_None) {
        seq = PySequence_Fast(args, "cache key: args must be a list or tuple");
        if (seq == NULL) {
            return ENC_ERROR;
        }
    }
    xt_sha256_init(&sha);
    e->sha = &sha;
    put_sized(e, key_version, sizeof(key_version) - 1);
    rc = encode_callable(e, func);
    if (rc != ENC_OK) {
        if (rc == ENC_SKIP) {
            *where = PyUnicode_FromString("the function (functools.partial arguments)");
        }
        goto done;
    }
    Py_ssize_t n = seq ? PySequence_Fast_GET_SIZE(seq) : 0;
    put_tag(e, 'L');
    put_u64(e, (uint64_t)n);
    for (Py_ssize_t i = 0; i < n; i++) {
        rc = encode_value(e, PySequence_Fast_GET_ITEM(seq, i));
        if (rc != ENC_OK) {
            if (rc == ENC_SKIP) {
                *where = PyUnicode_FromFormat("args[%zd]", i);
            }
            goto done;
        }
    }
    for (int i = 0; i < 3; i++) {
        PyObject *dict = dicts[i];
        if (dict == NULL || dict == Py_None) {
            put_tag(e, '{');
            put_u64(e, 0);
            continue;
        }
        rc = encode_dict(e, dict);
        if (rc != ENC_OK) {
            if (rc == ENC_SKIP) {
                *where = locate_in_dict(e->st, labels[i], dict);
            }
            goto done;
        }
    }
    xt_sha256_final(&sha, digest);
    memcpy(key->bytes, digest, XT_CACHE_KEY_SIZE);
    xt_hex_encode(key->bytes, XT_CACHE_KEY_SIZE, key->hex);
    rc = ENC_OK;
done:
    if (rc == ENC_SKIP && *where == NULL) {
        rc = ENC_ERROR; /* the description failed: out of memory */
    }
    Py_XDECREF(seq);
    return rc;
}

/* Warn about `type` once per `warned` set. */
static int
warn_uncacheable(xt_state *st, PyObject *warned, PyObject *type, const char *advice, PyObject *where)
{
    int seen = PySet_Contains(warned, type);
    if (seen != 0) {
        return seen < 0 ? -1 : 0;
    }
    if (PySet_Add(warned, type) < 0) {
        return -1;
    }
    PyObject *module = NULL, *qualname = NULL;
    int rc = -1;
    if (optional_attr(type, st->str_module, &module) < 0
        || optional_attr(type, st->str_qualname, &qualname) < 0) {
        goto done;
    }
    rc = PyErr_WarnFormat(PyExc_UserWarning, 1,
                          "xetrack_c cache: %U of type %s%s%S cannot be turned into a stable cache "
                          "key, so this call runs without the cache (warned once per type); to make "
                          "it cacheable, %s",
                          where, module && PyUnicode_Check(module) ? PyUnicode_AsUTF8(module) : "",
                          module && PyUnicode_Check(module) ? "." : "",
                          qualname ? qualname : (PyObject *)type, advice);
done:
    Py_XDECREF(module);
    Py_XDECREF(qualname);
    return rc;
}

/* Key of a call, warning through `warned` (a set) when it cannot be built. */
int
xt_cache_call_key(xt_state *st, PyObject *warned, PyObject *func, PyObject *args, PyObject *kwargs,
         PyObject *params, PyObject *tracker_params, int warn, xt_cache_key *key)
{
    key_encoder e = {.st = st};
    PyObject *where = NULL;
    int rc = build_key(&e, func, args, kwargs, params, tracker_params, key, &where);
    if (rc == ENC_SKIP) {
        rc = (warn && warn_uncacheable(st, warned, e.bad_type, e.advice, where) < 0) ? ENC_ERROR : ENC_SKIP;
    }
    Py_XDECREF(e.bad_type);
    Py_XDECREF(where);
    return rc == ENC_OK ? 1 : rc == ENC_SKIP ? 0 : -1;
}
