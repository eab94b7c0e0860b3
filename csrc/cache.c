/* Result cache: canonical keys, the ResultCache type and single flight. */
#include "cache.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "store.h"
#include <structmember.h>

/* ================================================================================== */
/* Canonical key encoding                                                             */
/* ================================================================================== */

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
    "pydantic model), e.g. the object's name or parameters instead of the object";

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
static PyObject *
helper(xt_state *st, const char *module_name, const char *attr)
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
    *ndarray = helper(st, "numpy", "ndarray");
    *generic = *ndarray ? helper(st, "numpy", "generic") : NULL;
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
    PyObject *fields_fn = helper(e->st, "dataclasses", "fields");
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
    PyObject *enum_type = helper(e->st, "enum", "Enum");
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
        return skip(e, obj, general_advice);
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
static int
callable_names(xt_state *st, PyObject *func, PyObject **module, PyObject **qualname)
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
        PyObject *partial = helper(e->st, "functools", "partial");
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
    if (callable_names(e->st, func, &module, &qualname) < 0) {
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
static int
make_key(xt_state *st, PyObject *warned, PyObject *func, PyObject *args, PyObject *kwargs,
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

/* ================================================================================== */
/* The store: <directory>/cache.db                                                    */
/* ================================================================================== */

/* PRAGMA application_id of cache files ("XTC1"): tells them from other SQLite files,
 * such as diskcache's, which also names its file cache.db. */
#define CACHE_APPLICATION_ID 0x58544331

/* Failures of our own, carried in xt_error.rc next to SQLite's codes. */
#define ERR_FOREIGN (-1001)
#define ERR_CLOSED (-1002)

enum { MODE_CREATE = 0, MODE_READ = 1, MODE_WRITE = 2 };

static const char schema_sql[] =
    "CREATE TABLE cache (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL, "
    "track_id TEXT NOT NULL, created TEXT NOT NULL, function_name TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX cache_track_id ON cache (track_id);"
    "PRAGMA application_id = 1481917233;" /* CACHE_APPLICATION_ID */
    "PRAGMA user_version = 1;";

static const char get_sql[] =
    "SELECT value, track_id, created, function_name FROM cache WHERE key = ?1";
static const char insert_sql[] =
    "INSERT INTO cache (key, value, track_id, created, function_name) VALUES (?1, ?2, ?3, ?4, ?5) "
    "ON CONFLICT (key) DO NOTHING";
static const char replace_sql[] =
    "INSERT OR REPLACE INTO cache (key, value, track_id, created, function_name) "
    "VALUES (?1, ?2, ?3, ?4, ?5)";

struct xt_flight {
    uint8_t key[XT_CACHE_KEY_SIZE];
    pthread_t owner;
    int done;
    int refs; /* the owner and each waiter */
    struct xt_flight *next;
};

/* A thread waiting for a flight; lives on that thread's stack while it waits. */
typedef struct xt_wait {
    pthread_t thread;
    xt_flight *on;
    struct xt_wait *next;
} xt_wait;

typedef struct {
    PyObject_HEAD
    xt_state *st;        /* of the module that made the type (which this object keeps alive) */
    PyObject *loads;     /* pickle.loads */
    PyObject *directory; /* str */
    PyObject *path;      /* str: directory/cache.db */
    char *path_fs;       /* the path in the file system encoding */
    PyObject *warned;    /* set of types warned about */
    PyObject *weakreflist;
    int mode;
    int busy_timeout_ms;
    int closed;
    int empty; /* opened without creating, and the file has no cache yet */
    /* Guards db and the statements; taken with the GIL released. */
    pthread_mutex_t db_lock;
    sqlite3 *db;
    sqlite3_stmt *get_stmt, *insert_stmt, *replace_stmt;
    /* Single flight: calls being computed, and the threads waiting for them. */
    pthread_mutex_t flight_lock;
    pthread_cond_t flight_done;
    xt_flight *flights;
    xt_wait *waits;
    unsigned long fork_generation;
} ResultCache;

static void
set_err(xt_error *err, int rc, const char *msg, const char *sql)
{
    err->rc = rc;
    snprintf(err->msg, sizeof(err->msg), "%s", msg ? msg : (rc > 0 ? sqlite3_errstr(rc) : ""));
    snprintf(err->sql, sizeof(err->sql), "%s", sql ? sql : "");
}

static void
set_db_err(ResultCache *c, xt_error *err, int rc, const char *sql)
{
    set_err(err, rc, c->db ? sqlite3_errmsg(c->db) : NULL, sql);
}

static int
exec_sql(ResultCache *c, const char *sql, xt_error *err)
{
    int rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        set_db_err(c, err, rc, sql);
        return -1;
    }
    return 0;
}

static int
query_int(ResultCache *c, const char *sql, int64_t *out, xt_error *err)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(c->db, sql, -1, &stmt, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
        if (rc == SQLITE_ROW) {
            *out = sqlite3_column_int64(stmt, 0);
            rc = SQLITE_OK;
        }
    }
    if (rc != SQLITE_OK) {
        set_db_err(c, err, rc, sql);
    }
    sqlite3_finalize(stmt);
    return rc == SQLITE_OK ? 0 : -1;
}

static int
prepare(ResultCache *c, const char *sql, sqlite3_stmt **stmt, xt_error *err)
{
    int rc = sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, stmt, NULL);
    if (rc != SQLITE_OK) {
        set_db_err(c, err, rc, sql);
        return -1;
    }
    return 0;
}

/* Forget the connection without touching it (after fork it is the parent's). */
static void
forget_db(ResultCache *c)
{
    c->db = NULL;
    c->get_stmt = c->insert_stmt = c->replace_stmt = NULL;
}

static void
close_db(ResultCache *c)
{
    sqlite3_finalize(c->get_stmt);
    sqlite3_finalize(c->insert_stmt);
    sqlite3_finalize(c->replace_stmt);
    sqlite3_close_v2(c->db);
    forget_db(c);
}

/* Open and check the file; create the table if it is new.  Pure C, db_lock held. */
static int
open_db(ResultCache *c, xt_error *err)
{
    int flags = SQLITE_OPEN_NOMUTEX
                | (c->mode == MODE_READ    ? SQLITE_OPEN_READONLY
                   : c->mode == MODE_WRITE ? SQLITE_OPEN_READWRITE
                                           : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    int64_t app_id = 0, tables = 0;
    int rc = sqlite3_open_v2(c->path_fs, &c->db, flags, NULL);
    if (rc != SQLITE_OK) {
        set_db_err(c, err, rc, NULL);
        goto fail;
    }
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_timeout(c->db, c->busy_timeout_ms);
    /* Tables first: another process may create the cache between the two reads, and its
     * tables and application id arrive in one commit.  Read in this order, a new cache
     * looks empty (decided again below, in a write transaction) or complete, never like
     * a foreign file with tables but no id. */
    if (query_int(c, "SELECT count(*) FROM sqlite_master", &tables, err) < 0
        || query_int(c, "PRAGMA application_id", &app_id, err) < 0) {
        goto fail;
    }
    if (tables > 0 && app_id != CACHE_APPLICATION_ID) {
        set_err(err, ERR_FOREIGN, "", NULL);
        goto fail;
    }
    c->empty = tables == 0;
    if (c->mode != MODE_READ) {
        rc = xt_enable_wal(c->db, c->busy_timeout_ms);
        if (rc != SQLITE_OK) {
            set_db_err(c, err, rc, "PRAGMA journal_mode=WAL");
            goto fail;
        }
        if (exec_sql(c, "PRAGMA synchronous=NORMAL", err) < 0) {
            goto fail;
        }
    }
    if (c->empty && c->mode == MODE_CREATE) {
        /* Another process may be creating it too: decide inside one write transaction. */
        if (exec_sql(c, "BEGIN IMMEDIATE", err) < 0) {
            goto fail;
        }
        if (query_int(c, "SELECT count(*) FROM sqlite_master", &tables, err) < 0
            || query_int(c, "PRAGMA application_id", &app_id, err) < 0) {
            sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
            goto fail;
        }
        if (tables > 0 && app_id != CACHE_APPLICATION_ID) {
            sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
            set_err(err, ERR_FOREIGN, "", NULL);
            goto fail;
        }
        if ((tables == 0 && exec_sql(c, schema_sql, err) < 0) || exec_sql(c, "COMMIT", err) < 0) {
            sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
            goto fail;
        }
        c->empty = 0;
    }
    if (!c->empty
        && (prepare(c, get_sql, &c->get_stmt, err) < 0
            || (c->mode != MODE_READ
                && (prepare(c, insert_sql, &c->insert_stmt, err) < 0
                    || prepare(c, replace_sql, &c->replace_stmt, err) < 0)))) {
        goto fail;
    }
    return 0;
fail:
    close_db(c);
    return -1;
}

/* Make the connection usable: called with the GIL released and db_lock held. */
static int
ready(ResultCache *c, xt_error *err)
{
    if (c->closed) {
        set_err(err, ERR_CLOSED, "", NULL);
        return -1;
    }
    return c->db != NULL ? 0 : open_db(c, err);
}

static PyObject *
raise_cache_error(ResultCache *c, const xt_error *err)
{
    xt_state *st = c->st;
    if (err->rc == ERR_CLOSED) {
        PyErr_Format(PyExc_ValueError, "the result cache %R is closed", c->path);
        return NULL;
    }
    if (err->rc == ERR_FOREIGN) {
        PyErr_Format(PyExc_ValueError,
                     "%R is a SQLite database but not a xetrack_c result cache (diskcache, which "
                     "xetrack uses, also names its file cache.db); point cache= at another "
                     "directory, or delete the file",
                     c->path);
        return NULL;
    }
    const char *path = PyUnicode_AsUTF8(c->path);
    if (path == NULL) {
        return NULL;
    }
    int rc = err->rc & 0xff;
    if (rc == SQLITE_NOTADB || rc == SQLITE_CORRUPT) {
        /* Same exception and attributes as xt_raise_sqlite, with the cache's own advice. */
        PyObject *exc = PyObject_CallFunction(
            st->CorruptDatabaseError, "N",
            PyUnicode_FromFormat("the result cache file %R is not a SQLite database or is damaged "
                                 "(%s, SQLite code %d): delete it (with any -wal and -shm files "
                                 "beside it) and the cache starts afresh, or point cache= at "
                                 "another directory",
                                 c->path, err->msg, err->rc));
        PyObject *code = exc ? PyLong_FromLong(err->rc) : NULL;
        if (code != NULL && PyObject_SetAttrString(exc, "sqlite_code", code) == 0
            && PyObject_SetAttrString(exc, "filename", c->path) == 0
            && PyObject_SetAttrString(exc, "sql", Py_None) == 0) {
            PyErr_SetObject(st->CorruptDatabaseError, exc);
        }
        Py_XDECREF(code);
        Py_XDECREF(exc);
        return NULL;
    }
    return xt_raise_sqlite(st, err->rc, err->msg, path, err->sql[0] ? err->sql : NULL);
}

/* After fork: fresh locks, no connection (reopened on use), only this thread's flights. */
static void
check_fork(ResultCache *c)
{
    unsigned long now = xt_fork_generation();
    if (c->fork_generation == now) {
        return;
    }
    pthread_t self = pthread_self();
    pthread_mutex_init(&c->db_lock, NULL);
    pthread_mutex_init(&c->flight_lock, NULL);
    pthread_cond_init(&c->flight_done, NULL);
    forget_db(c);
    xt_flight **link = &c->flights;
    while (*link != NULL) {
        if (pthread_equal((*link)->owner, self)) {
            link = &(*link)->next;
        }
        else {
            *link = (*link)->next; /* its thread does not exist here; left allocated */
        }
    }
    c->waits = NULL;
    c->fork_generation = now;
}

static ResultCache *
as_cache(PyObject *obj)
{
    return (ResultCache *)obj;
}

int
xt_cache_check(xt_state *st, PyObject *obj)
{
    return st->ResultCacheType != NULL && PyObject_TypeCheck(obj, st->ResultCacheType);
}

int
xt_cache_make_key(PyObject *cache, PyObject *func, PyObject *args, PyObject *kwargs,
                  PyObject *params, PyObject *tracker_params, int warn, xt_cache_key *key)
{
    ResultCache *c = as_cache(cache);
    return make_key(c->st, c->warned, func, args, kwargs, params, tracker_params, warn, key);
}

/* One stored entry, copied out of SQLite so the lock can be dropped. */
typedef struct entry {
    struct entry *next;
    char *key, *track_id, *created, *function_name;
    void *value;
    size_t value_len;
} entry;

static void
free_entries(entry *e)
{
    while (e != NULL) {
        entry *next = e->next;
        free(e);
        e = next;
    }
}

static char *
column_copy(sqlite3_stmt *stmt, int col, char **cursor)
{
    const void *data = sqlite3_column_blob(stmt, col);
    size_t n = (size_t)sqlite3_column_bytes(stmt, col);
    char *out = *cursor;
    if (n) {
        memcpy(out, data, n);
    }
    out[n] = '\0';
    *cursor += n + 1;
    return out;
}

/* Copy the current row of `stmt` (value, track_id, created, function_name[, key]). */
static entry *
copy_entry(sqlite3_stmt *stmt, int with_key)
{
    size_t total = sizeof(entry);
    int ncols = with_key ? 5 : 4;
    for (int i = 0; i < ncols; i++) {
        total += (size_t)sqlite3_column_bytes(stmt, i) + 1;
    }
    entry *out = malloc(total);
    if (out == NULL) {
        return NULL;
    }
    char *cursor = (char *)(out + 1);
    out->next = NULL;
    out->value_len = (size_t)sqlite3_column_bytes(stmt, 0);
    out->value = column_copy(stmt, 0, &cursor);
    out->track_id = column_copy(stmt, 1, &cursor);
    out->created = column_copy(stmt, 2, &cursor);
    out->function_name = column_copy(stmt, 3, &cursor);
    out->key = with_key ? column_copy(stmt, 4, &cursor) : NULL;
    return out;
}

/* Pure C, db_lock held.  1 found (*out set), 0 missing, -1 error. */
static int
get_locked(ResultCache *c, const char *key, entry **out, xt_error *err)
{
    *out = NULL;
    if (ready(c, err) < 0) {
        return -1;
    }
    if (c->empty) {
        return 0;
    }
    sqlite3_stmt *stmt = c->get_stmt;
    sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(stmt), res = 0;
    if (rc == SQLITE_ROW) {
        *out = copy_entry(stmt, 0);
        if (*out == NULL) {
            set_err(err, SQLITE_NOMEM, NULL, NULL);
            res = -1;
        }
        else {
            res = 1;
        }
    }
    else if (rc != SQLITE_DONE) {
        set_db_err(c, err, rc, get_sql);
        res = -1;
    }
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return res;
}

static int
fetch(ResultCache *c, const char *key, entry **out)
{
    xt_error err = {0};
    int rc;
    check_fork(c);
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&c->db_lock);
    rc = get_locked(c, key, out, &err);
    pthread_mutex_unlock(&c->db_lock);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        raise_cache_error(c, &err);
    }
    return rc;
}

int
xt_cache_get(PyObject *cache, const xt_cache_key *key, int warn, PyObject **result,
             PyObject **lineage, int *stale)
{
    ResultCache *c = as_cache(cache);
    entry *found = NULL;
    PyObject *blob = NULL, *value = NULL;
    int res = -1;

    *result = *lineage = NULL;
    *stale = 0;
    int rc = fetch(c, key->hex, &found);
    if (rc <= 0) {
        return rc;
    }
    blob = PyBytes_FromStringAndSize(found->value, (Py_ssize_t)found->value_len);
    if (blob == NULL) {
        goto done;
    }
    value = PyObject_CallOneArg(c->loads, blob);
    if (value == NULL) {
        /* A class that moved, a library that is gone: recompute and store over it. */
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            goto done;
        }
        PyObject *type, *exc, *tb;
        PyErr_Fetch(&type, &exc, &tb);
        PyErr_NormalizeException(&type, &exc, &tb);
        int warned = warn ? PyErr_WarnFormat(PyExc_UserWarning, 1,
                                             "xetrack_c cache: the stored result for key %s (from "
                                             "run %s) cannot be unpickled (%S); computing it again",
                                             key->hex, found->track_id, exc ? exc : Py_None)
                          : 0;
        Py_XDECREF(type);
        Py_XDECREF(exc);
        Py_XDECREF(tb);
        if (warned < 0) {
            goto done;
        }
        *stale = 1;
        res = 0;
        goto done;
    }
    *lineage = PyUnicode_FromString(found->track_id);
    if (*lineage == NULL) {
        goto done;
    }
    *result = value;
    value = NULL;
    res = 1;
done:
    free_entries(found);
    Py_XDECREF(blob);
    Py_XDECREF(value);
    return res;
}

/* pickle.dumps at the highest protocol, cloudpickle when pickle cannot; NULL with
 * *failure holding pickle's exception when neither can (no exception set), or NULL
 * with an exception set on other errors. */
static PyObject *
pickle_value(xt_state *st, PyObject *value, PyObject **failure)
{
    PyObject *dumps = helper(st, "pickle", "dumps");
    PyObject *protocol = dumps ? helper(st, "pickle", "HIGHEST_PROTOCOL") : NULL;
    PyObject *type, *tb, *blob;

    *failure = NULL;
    if (protocol == NULL) {
        return NULL;
    }
    PyObject *call[2] = {value, protocol};
    blob = PyObject_Vectorcall(dumps, call, 2, NULL);
    if (blob != NULL || !PyErr_ExceptionMatches(PyExc_Exception)) {
        return blob;
    }
    PyErr_Fetch(&type, failure, &tb);
    PyErr_NormalizeException(&type, failure, &tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    PyObject *cloud = helper(st, "cloudpickle", "dumps");
    if (cloud == NULL) {
        if (PyErr_ExceptionMatches(PyExc_ImportError)) {
            PyErr_Clear();
        }
        goto failed;
    }
    blob = PyObject_Vectorcall(cloud, call, 2, NULL);
    if (blob != NULL) {
        Py_CLEAR(*failure);
        return blob;
    }
    if (PyErr_ExceptionMatches(PyExc_Exception)) {
        PyErr_Clear();
    }
failed:
    if (PyErr_Occurred()) {
        Py_CLEAR(*failure);
        return NULL;
    }
    if (*failure == NULL) {
        *failure = Py_NewRef(Py_None);
    }
    return NULL;
}

static PyObject *
qualified_name(xt_state *st, PyObject *func)
{
    PyObject *module = NULL, *qualname = NULL, *res = NULL;
    if (callable_names(st, func, &module, &qualname) == 0) {
        res = module ? PyUnicode_FromFormat("%U.%U", module, qualname) : Py_NewRef(qualname);
    }
    Py_XDECREF(module);
    Py_XDECREF(qualname);
    return res;
}

int
xt_cache_put(PyObject *cache, const xt_cache_key *key, PyObject *func, PyObject *result,
             PyObject *track_id, int replace, int warn)
{
    ResultCache *c = as_cache(cache);
    xt_state *st = c->st;
    PyObject *blob = NULL, *failure = NULL, *name = NULL;
    xt_error err = {0};
    char created[XT_TS_SIZE];
    int res = -1, rc = 0;

    blob = pickle_value(st, result, &failure);
    if (blob == NULL) {
        if (failure != NULL) {
            res = (warn && PyErr_WarnFormat(PyExc_UserWarning, 1,
                                            "xetrack_c cache: the result (%.100s) cannot be "
                                            "pickled (%S), so it is returned but not cached; "
                                            "return picklable values to cache them",
                                            Py_TYPE(result)->tp_name, failure) < 0)
                      ? -1
                      : 0;
        }
        goto done;
    }
    if (!PyBytes_Check(blob)) {
        PyErr_SetString(PyExc_TypeError, "pickle.dumps did not return bytes");
        goto done;
    }
    name = qualified_name(st, func);
    if (name == NULL) {
        PyErr_Clear();
        name = PyUnicode_FromString(Py_TYPE(func)->tp_name);
        if (name == NULL) {
            goto done;
        }
    }
    const char *name_utf8 = PyUnicode_AsUTF8(name);
    const char *track_utf8 = PyUnicode_AsUTF8(track_id);
    if (name_utf8 == NULL || track_utf8 == NULL) {
        goto done;
    }
    xt_format_timestamp(xt_now_us(), created);
    const char *data = PyBytes_AS_STRING(blob);
    int data_len = (int)PyBytes_GET_SIZE(blob);
    if (PyBytes_GET_SIZE(blob) > 1000000000) {
        res = (warn && PyErr_WarnEx(PyExc_UserWarning,
                                    "xetrack_c cache: the pickled result is larger than 1 GB, "
                                    "which SQLite cannot store; it is returned but not cached",
                                    1) < 0)
                  ? -1
                  : 0;
        goto done;
    }
    check_fork(c);
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&c->db_lock);
    rc = ready(c, &err);
    if (rc == 0) {
        sqlite3_stmt *stmt = replace ? c->replace_stmt : c->insert_stmt;
        sqlite3_bind_text(stmt, 1, key->hex, -1, SQLITE_STATIC);
        sqlite3_bind_blob(stmt, 2, data, data_len, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 3, track_utf8, -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 4, created, -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 5, name_utf8, -1, SQLITE_STATIC);
        int step = sqlite3_step(stmt);
        if (step != SQLITE_DONE) {
            set_db_err(c, &err, step, replace ? replace_sql : insert_sql);
            rc = -1;
        }
        sqlite3_reset(stmt);
        sqlite3_clear_bindings(stmt);
    }
    pthread_mutex_unlock(&c->db_lock);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        raise_cache_error(c, &err);
        goto done;
    }
    res = 1;
done:
    Py_XDECREF(blob);
    Py_XDECREF(failure);
    Py_XDECREF(name);
    return res;
}

/* ================================================================================== */
/* Single flight                                                                      */
/* ================================================================================== */

static xt_wait *
wait_of(ResultCache *c, pthread_t thread)
{
    for (xt_wait *w = c->waits; w != NULL; w = w->next) {
        if (pthread_equal(w->thread, thread)) {
            return w;
        }
    }
    return NULL;
}

/* Would waiting for `f` wait, through the chain of owners waiting for other flights,
 * for this very thread?  (Recursion with the same key, or threads waiting in a ring.) */
static int
waits_for_self(ResultCache *c, xt_flight *f, pthread_t self)
{
    for (int hops = 0; f != NULL && hops < 10000; hops++) {
        if (pthread_equal(f->owner, self)) {
            return 1;
        }
        xt_wait *w = wait_of(c, f->owner);
        f = w ? w->on : NULL;
    }
    return 0;
}

/* Pure C, flight_lock held. */
static int
flight_enter_locked(ResultCache *c, const uint8_t *key, pthread_t self, xt_flight **mine)
{
    xt_flight *f = c->flights;
    while (f != NULL && memcmp(f->key, key, XT_CACHE_KEY_SIZE) != 0) {
        f = f->next;
    }
    if (f == NULL) {
        f = calloc(1, sizeof(*f));
        if (f == NULL) {
            return XT_FLIGHT_BYPASS;
        }
        memcpy(f->key, key, XT_CACHE_KEY_SIZE);
        f->owner = self;
        f->refs = 1;
        f->next = c->flights;
        c->flights = f;
        *mine = f;
        return XT_FLIGHT_OWNER;
    }
    if (waits_for_self(c, f, self)) {
        return XT_FLIGHT_BYPASS;
    }
    xt_wait me = {.thread = self, .on = f, .next = c->waits};
    c->waits = &me;
    f->refs++;
    while (!f->done) {
        pthread_cond_wait(&c->flight_done, &c->flight_lock);
    }
    for (xt_wait **link = &c->waits; *link != NULL; link = &(*link)->next) {
        if (*link == &me) {
            *link = me.next;
            break;
        }
    }
    if (--f->refs == 0) {
        free(f);
    }
    return XT_FLIGHT_RETRY;
}

static void
flight_finish_locked(ResultCache *c, xt_flight *f)
{
    for (xt_flight **link = &c->flights; *link != NULL; link = &(*link)->next) {
        if (*link == f) {
            *link = f->next;
            break;
        }
    }
    f->done = 1;
    pthread_cond_broadcast(&c->flight_done);
    if (--f->refs == 0) {
        free(f);
    }
}

int
xt_cache_flight_begin(PyObject *cache, const xt_cache_key *key, xt_flight **flight)
{
    ResultCache *c = as_cache(cache);
    pthread_t self = pthread_self();
    xt_flight *mine = NULL;
    int role;

    check_fork(c);
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&c->flight_lock);
    role = flight_enter_locked(c, key->bytes, self, &mine);
    pthread_mutex_unlock(&c->flight_lock);
    Py_END_ALLOW_THREADS
    *flight = mine;
    return role;
}

void
xt_cache_flight_end(PyObject *cache, xt_flight *flight)
{
    ResultCache *c = as_cache(cache);
    check_fork(c);
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&c->flight_lock);
    flight_finish_locked(c, flight);
    pthread_mutex_unlock(&c->flight_lock);
    Py_END_ALLOW_THREADS
}

int
xt_cache_close(PyObject *cache)
{
    ResultCache *c = as_cache(cache);
    check_fork(c);
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&c->db_lock);
    if (c->db != NULL) {
        close_db(c);
    }
    c->closed = 1;
    pthread_mutex_unlock(&c->db_lock);
    Py_END_ALLOW_THREADS
    return 0;
}

/* ================================================================================== */
/* ResultCache: the Python type                                                       */
/* ================================================================================== */

static int
cache_init(ResultCache *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"directory", "mode", "busy_timeout", NULL};
    PyObject *directory = NULL, *dir_str = NULL, *path_bytes = NULL;
    const char *mode = "create";
    double busy_timeout = 60.0;
    xt_error err = {0};
    int rc;

    if (self->path != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "ResultCache is already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|sd:ResultCache", kwlist, &directory, &mode,
                                     &busy_timeout)) {
        return -1;
    }
    self->st = xt_state_from_type(Py_TYPE(self));
    if (self->st == NULL) {
        return -1;
    }
    PyObject *loads = helper(self->st, "pickle", "loads");
    if (loads == NULL) {
        return -1;
    }
    self->loads = Py_NewRef(loads);
    self->mode = strcmp(mode, "create") == 0 ? MODE_CREATE
                 : strcmp(mode, "read") == 0 ? MODE_READ
                 : strcmp(mode, "write") == 0 ? MODE_WRITE
                                              : -1;
    if (self->mode < 0) {
        PyErr_Format(PyExc_ValueError, "ResultCache mode must be 'create', 'read' or 'write', not '%s'",
                     mode);
        return -1;
    }
    dir_str = PyOS_FSPath(directory);
    if (dir_str == NULL) {
        return -1;
    }
    if (!PyUnicode_Check(dir_str)) {
        PyErr_Format(PyExc_TypeError, "cache directory must be a str path, not %.100s",
                     Py_TYPE(dir_str)->tp_name);
        Py_DECREF(dir_str);
        return -1;
    }
    self->directory = dir_str;
    self->path = PyUnicode_FromFormat("%U/cache.db", dir_str);
    self->warned = PySet_New(NULL);
    if (self->path == NULL || self->warned == NULL || !PyUnicode_FSConverter(self->path, &path_bytes)) {
        return -1;
    }
    self->path_fs = strdup(PyBytes_AS_STRING(path_bytes));
    Py_DECREF(path_bytes);
    if (self->path_fs == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->busy_timeout_ms = busy_timeout <= 0 ? 0 : busy_timeout > 2e6 ? 2000000000 : (int)(busy_timeout * 1000);
    self->fork_generation = xt_fork_generation();
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->db_lock);
    rc = ready(self, &err);
    pthread_mutex_unlock(&self->db_lock);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        raise_cache_error(self, &err);
        return -1;
    }
    return 0;
}

static PyObject *
cache_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    (void)args;
    (void)kwargs;
    ResultCache *self = (ResultCache *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    pthread_mutex_init(&self->db_lock, NULL);
    pthread_mutex_init(&self->flight_lock, NULL);
    pthread_cond_init(&self->flight_done, NULL);
    self->fork_generation = xt_fork_generation();
    return (PyObject *)self;
}

static int
cache_traverse(ResultCache *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->warned);
    Py_VISIT(self->loads);
    return 0;
}

static int
cache_clear(ResultCache *self)
{
    Py_CLEAR(self->warned);
    Py_CLEAR(self->loads);
    return 0;
}

static void
cache_dealloc(ResultCache *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    check_fork(self);
    if (self->db != NULL) {
        close_db(self);
    }
    pthread_mutex_destroy(&self->db_lock);
    pthread_mutex_destroy(&self->flight_lock);
    pthread_cond_destroy(&self->flight_done);
    cache_clear(self);
    Py_CLEAR(self->directory);
    Py_CLEAR(self->path);
    free(self->path_fs);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *
entry_tuple(const entry *e, int with_key)
{
    if (with_key) {
        return Py_BuildValue("(sy#sss)", e->key, (const char *)e->value, (Py_ssize_t)e->value_len,
                             e->track_id, e->created, e->function_name);
    }
    return Py_BuildValue("(y#sss)", (const char *)e->value, (Py_ssize_t)e->value_len, e->track_id,
                         e->created, e->function_name);
}

PyDoc_STRVAR(cache_get_raw__doc__,
    "get_raw($self, key, /)\n--\n\n"
    "The stored entry of `key` as (pickled value, track_id, created, function_name),\n"
    "or None.");

static PyObject *
cache_get_raw(ResultCache *self, PyObject *key)
{
    entry *found = NULL;
    if (!PyUnicode_Check(key)) {
        PyErr_Format(PyExc_TypeError, "cache key must be a str (a hex digest), not %.100s",
                     Py_TYPE(key)->tp_name);
        return NULL;
    }
    const char *text = PyUnicode_AsUTF8(key);
    if (text == NULL) {
        return NULL;
    }
    int rc = fetch(self, text, &found);
    if (rc <= 0) {
        return rc < 0 ? NULL : Py_NewRef(Py_None);
    }
    PyObject *res = entry_tuple(found, 0);
    free_entries(found);
    return res;
}

/* Run `sql` (bound to `text` and `number`) and collect rows or count changes.  Pure C,
 * db_lock held. */
static int
run_locked(ResultCache *c, const char *sql, const char *text, int64_t number, int collect,
           entry **rows, int64_t *changes, xt_error *err)
{
    sqlite3_stmt *stmt = NULL;
    entry **tail = rows;
    int res = -1;
    if (ready(c, err) < 0) {
        return -1;
    }
    if (c->empty) {
        *changes = 0;
        return 0;
    }
    int rc = sqlite3_prepare_v2(c->db, sql, -1, &stmt, NULL);
    if (rc != SQLITE_OK) {
        set_db_err(c, err, rc, sql);
        goto done;
    }
    if (text != NULL) {
        sqlite3_bind_text(stmt, 1, text, -1, SQLITE_STATIC);
    }
    sqlite3_bind_int64(stmt, 2, number);
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (collect) {
            *tail = copy_entry(stmt, 1);
            if (*tail == NULL) {
                set_err(err, SQLITE_NOMEM, NULL, NULL);
                goto done;
            }
            tail = &(*tail)->next;
        }
        else {
            *changes = sqlite3_column_int64(stmt, 0);
        }
    }
    if (rc != SQLITE_DONE) {
        set_db_err(c, err, rc, sql);
        goto done;
    }
    if (sqlite3_stmt_readonly(stmt) == 0) {
        *changes = sqlite3_changes64(c->db);
    }
    res = 0;
done:
    sqlite3_finalize(stmt);
    return res;
}

static int
run(ResultCache *c, const char *sql, const char *text, int64_t number, int collect, entry **rows,
    int64_t *changes)
{
    xt_error err = {0};
    int rc;
    *rows = NULL;
    *changes = 0;
    check_fork(c);
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&c->db_lock);
    rc = run_locked(c, sql, text, number, collect, rows, changes, &err);
    pthread_mutex_unlock(&c->db_lock);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        free_entries(*rows);
        *rows = NULL;
        raise_cache_error(c, &err);
    }
    return rc;
}

PyDoc_STRVAR(cache_scan_raw__doc__,
    "scan_raw($self, after='', limit=256, /)\n--\n\n"
    "Up to `limit` entries with keys after `after`, in key order, as tuples\n"
    "(key, pickled value, track_id, created, function_name).");

static PyObject *
cache_scan_raw(ResultCache *self, PyObject *args)
{
    const char *after = "";
    long long limit = 256;
    entry *rows = NULL;
    int64_t unused;
    if (!PyArg_ParseTuple(args, "|sL:scan_raw", &after, &limit)) {
        return NULL;
    }
    if (run(self,
            "SELECT value, track_id, created, function_name, key FROM cache WHERE key > ?1 "
            "ORDER BY key LIMIT ?2",
            after, limit, 1, &rows, &unused) < 0) {
        return NULL;
    }
    PyObject *list = PyList_New(0);
    for (entry *e = rows; list != NULL && e != NULL; e = e->next) {
        PyObject *item = entry_tuple(e, 1);
        if (item == NULL || PyList_Append(list, item) < 0) {
            Py_CLEAR(list);
        }
        Py_XDECREF(item);
    }
    free_entries(rows);
    return list;
}

PyDoc_STRVAR(cache_delete__doc__,
    "delete($self, key, /)\n--\n\n"
    "Delete the entry of `key`; True if there was one.");

static PyObject *
cache_delete(ResultCache *self, PyObject *key)
{
    entry *rows = NULL;
    int64_t changes = 0;
    const char *text = PyUnicode_Check(key) ? PyUnicode_AsUTF8(key) : NULL;
    if (text == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "cache key must be a str");
        }
        return NULL;
    }
    if (run(self, "DELETE FROM cache WHERE key = ?1", text, 0, 0, &rows, &changes) < 0) {
        return NULL;
    }
    return PyBool_FromLong(changes > 0);
}

PyDoc_STRVAR(cache_delete_by_track_id__doc__,
    "delete_by_track_id($self, track_id, /)\n--\n\n"
    "Delete every entry computed by the run `track_id`; returns how many.");

static PyObject *
cache_delete_by_track_id(ResultCache *self, PyObject *track_id)
{
    entry *rows = NULL;
    int64_t changes = 0;
    const char *text = PyUnicode_Check(track_id) ? PyUnicode_AsUTF8(track_id) : NULL;
    if (text == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "track_id must be a str");
        }
        return NULL;
    }
    if (run(self, "DELETE FROM cache WHERE track_id = ?1", text, 0, 0, &rows, &changes) < 0) {
        return NULL;
    }
    return PyLong_FromLongLong(changes);
}

static Py_ssize_t
cache_len(ResultCache *self)
{
    entry *rows = NULL;
    int64_t count = 0;
    if (run(self, "SELECT count(*) FROM cache", NULL, 0, 0, &rows, &count) < 0) {
        return -1;
    }
    return (Py_ssize_t)count;
}

PyDoc_STRVAR(cache_key__doc__,
    "key($self, func, args=None, kwargs=None, params=None, tracker_params=None, /)\n--\n\n"
    "The hex key of a call, or None (with a warning, once per type on this cache) if an\n"
    "argument cannot be encoded stably.");

static PyObject *
key_function(xt_state *st, PyObject *warned, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *given[5] = {NULL, Py_None, Py_None, Py_None, Py_None};
    xt_cache_key key;
    if (nargs < 1 || nargs > 5) {
        PyErr_Format(PyExc_TypeError,
                     "cache_key() takes 1 to 5 arguments (func, args, kwargs, params, "
                     "tracker_params), %zd given",
                     nargs);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        given[i] = args[i];
    }
    if (!PyCallable_Check(given[0])) {
        PyErr_Format(PyExc_TypeError, "cache_key() needs a callable, not %.100s", Py_TYPE(given[0])->tp_name);
        return NULL;
    }
    int rc = make_key(st, warned, given[0], given[1], given[2], given[3], given[4], 1, &key);
    if (rc <= 0) {
        return rc < 0 ? NULL : Py_NewRef(Py_None);
    }
    return PyUnicode_FromStringAndSize(key.hex, 2 * XT_CACHE_KEY_SIZE);
}

static PyObject *
cache_key_method(ResultCache *self, PyObject *const *args, Py_ssize_t nargs)
{
    return key_function(self->st, self->warned, args, nargs);
}

PyDoc_STRVAR(cache_put__doc__,
    "put($self, func, args, kwargs, params, tracker_params, result, track_id, /)\n--\n\n"
    "Store `result` under the key of the call (func, args, kwargs, params,\n"
    "tracker_params), computed by the run `track_id`, unless an entry is there already.\n"
    "True if stored; False if the call has no stable key or the result cannot be\n"
    "pickled (each with a warning).");

static PyObject *
cache_put(ResultCache *self, PyObject *const *args, Py_ssize_t nargs)
{
    xt_cache_key key;
    if (nargs != 7) {
        PyErr_Format(PyExc_TypeError,
                     "put() takes 7 arguments (func, args, kwargs, params, tracker_params, "
                     "result, track_id), %zd given",
                     nargs);
        return NULL;
    }
    if (!PyCallable_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "put() needs a callable, not %.100s", Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    if (!PyUnicode_Check(args[6])) {
        PyErr_Format(PyExc_TypeError, "track_id must be a str, not %.100s", Py_TYPE(args[6])->tp_name);
        return NULL;
    }
    int rc = xt_cache_make_key((PyObject *)self, args[0], args[1], args[2], args[3], args[4], 1,
                               &key);
    if (rc > 0) {
        rc = xt_cache_put((PyObject *)self, &key, args[0], args[5], args[6], 0, 1);
    }
    if (rc < 0) {
        return NULL;
    }
    return PyBool_FromLong(rc);
}

PyDoc_STRVAR(cache_close__doc__,
    "close($self, /)\n--\n\n"
    "Close the connection to the cache file (idempotent).");

static PyObject *
cache_close_method(ResultCache *self, PyObject *Py_UNUSED(ignored))
{
    if (xt_cache_close((PyObject *)self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
cache_enter(ResultCache *self, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(self);
}

static PyObject *
cache_exit(ResultCache *self, PyObject *args)
{
    (void)args;
    return cache_close_method(self, NULL);
}

static PyObject *
get_closed(ResultCache *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->closed);
}

static PyObject *
cache_repr(ResultCache *self)
{
    return PyUnicode_FromFormat("ResultCache(%R%s)", self->directory ? self->directory : Py_None,
                                self->closed ? ", closed" : "");
}

/* A cache object is true even when it holds no entries (len() counts them). */
static int
cache_bool(ResultCache *self)
{
    (void)self;
    return 1;
}

static PyMethodDef cache_methods[] = {
    {"get_raw", (PyCFunction)cache_get_raw, METH_O, cache_get_raw__doc__},
    {"scan_raw", (PyCFunction)cache_scan_raw, METH_VARARGS, cache_scan_raw__doc__},
    {"delete", (PyCFunction)cache_delete, METH_O, cache_delete__doc__},
    {"delete_by_track_id", (PyCFunction)cache_delete_by_track_id, METH_O, cache_delete_by_track_id__doc__},
    {"key", (PyCFunction)(void (*)(void))cache_key_method, METH_FASTCALL, cache_key__doc__},
    {"put", (PyCFunction)(void (*)(void))cache_put, METH_FASTCALL, cache_put__doc__},
    {"close", (PyCFunction)cache_close_method, METH_NOARGS, cache_close__doc__},
    {"__enter__", (PyCFunction)cache_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)cache_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef cache_members[] = {
    {"directory", T_OBJECT, offsetof(ResultCache, directory), READONLY, "The cache directory."},
    {"path", T_OBJECT, offsetof(ResultCache, path), READONLY, "The cache file, directory/cache.db."},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(ResultCache, weakreflist), READONLY, NULL},
    {NULL},
};

static PyGetSetDef cache_getset[] = {
    {"closed", (getter)get_closed, NULL, "True once close() has run.", NULL},
    {NULL},
};

PyDoc_STRVAR(cache_doc,
    "ResultCache(directory, mode='create', busy_timeout=60.0)\n--\n\n"
    "Pickled results of tracked calls in directory/cache.db (SQLite, WAL).\n\n"
    "mode 'create' makes the file (not the directory) if needed; 'read' opens an existing\n"
    "file read-only; 'write' opens an existing file for deletions.  Safe to share between\n"
    "threads; many processes may use one file at once.");

static PyType_Slot cache_slots[] = {
    {Py_tp_doc, (void *)cache_doc},
    {Py_tp_new, cache_new},
    {Py_tp_init, cache_init},
    {Py_tp_dealloc, cache_dealloc},
    {Py_tp_traverse, cache_traverse},
    {Py_tp_clear, cache_clear},
    {Py_tp_repr, cache_repr},
    {Py_tp_methods, cache_methods},
    {Py_tp_members, cache_members},
    {Py_tp_getset, cache_getset},
    {Py_mp_length, cache_len},
    {Py_nb_bool, cache_bool},
    {0, NULL},
};

static PyType_Spec cache_spec = {
    .name = "xetrack_c._core.ResultCache",
    .basicsize = sizeof(ResultCache),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = cache_slots,
};

PyDoc_STRVAR(cache_key_function__doc__,
    "cache_key($module, func, args=None, kwargs=None, params=None, tracker_params=None, /)\n"
    "--\n\n"
    "The 32-hex-digit key the result cache gives a call: the first 16 bytes of the\n"
    "SHA-256 of a canonical encoding of the function's qualified name, the arguments and\n"
    "the params.  None (with a warning, once per type) if a value cannot be encoded\n"
    "stably.");

static PyObject *
cache_key_function(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    xt_state *st = xt_get_state(module);
    return key_function(st, st->cache_warned, args, nargs);
}

static PyMethodDef cache_functions[] = {
    {"cache_key", (PyCFunction)(void (*)(void))cache_key_function, METH_FASTCALL, cache_key_function__doc__},
    {NULL, NULL, 0, NULL},
};

int
xt_cache_exec(PyObject *module, xt_state *st)
{
    st->cache_warned = PySet_New(NULL);
    if (st->cache_warned == NULL) {
        return -1;
    }
    st->ResultCacheType = (PyTypeObject *)PyType_FromModuleAndSpec(module, &cache_spec, NULL);
    if (st->ResultCacheType == NULL || PyModule_AddType(module, st->ResultCacheType) < 0) {
        return -1;
    }
    return PyModule_AddFunctions(module, cache_functions);
}
