/* resolver.querylog._dnstap: the query log's dnstap encoding in the worker, in C.
 *
 * Why here and in C: handing each logged query to the writer process as a Python tuple and
 * encoding it there cost about 5 us of CPU per record on the cores that also answer (the worker
 * 1.4 us, the writer 3.7 us: docs/querylog.md), a quarter of the resolver's queries per second
 * with every block logged. Encoded here, a record costs a few hundred nanoseconds in the worker
 * and the writer only forwards whole frames to the sink.
 *
 * The bytes are those of resolver/querylog/encoder.py's Encoder (the pure-Python fallback),
 * which tests compare with the protobuf library's encoding of dnstap.proto; tests compare this
 * type with that one record by record. The constant pieces (the Dnstap envelope's head and
 * tail, the two message types, each policy's fields) are built in Python and handed in, so
 * there is one definition of the schema's numbers.
 *
 * Encoder(head, tail, query_type, response_type, bits4, bits6, blocked_bits4, blocked_bits6,
 *         limit)
 * add(when, client, udp, query, answer, policy_id, match, value) -> records waiting, or 0 when
 *     `limit` records already wait and this one was dropped (counted in `dropped`).
 * set_policies(fields, unknown): fields[i] is the Policy message's type, rule and action fields
 *     for policy id i + 1; `unknown` serves an id outside the table.
 * take() -> bytes: the frames of the waiting records (each a 32-bit big-endian length and a
 *     Dnstap message, as Frame Streams writes them); the encoder is empty afterwards.
 * clear() -> int: drops what waits (the writer is gone), counted in `dropped`; returns how many.
 *
 * Privacy (docs/querylog.md): the client address is cut to bits4/bits6 bits (blocked_bits4/6
 * for a blocked query) before it is written; 0 bits: no address at all. The GIL is held
 * throughout: the worker is single-threaded.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>

/* Field tags (dnstap.proto): field number << 3 | wire type. */
#define TAG_SOCKET_FAMILY 0x10     /* 2, varint */
#define TAG_SOCKET_PROTOCOL 0x18   /* 3, varint */
#define TAG_QUERY_ADDRESS 0x22     /* 4, bytes */
#define TAG_QUERY_TIME_SEC 0x40    /* 8, varint */
#define TAG_QUERY_TIME_NSEC 0x4d   /* 9, fixed32 */
#define TAG_QUERY_MESSAGE 0x52     /* 10, bytes */
#define TAG_RESPONSE_TIME_SEC 0x60 /* 12, varint */
#define TAG_RESPONSE_TIME_NSEC 0x6d /* 13, fixed32 */
#define TAG_RESPONSE_MESSAGE 0x72  /* 14, bytes */
#define TAG_POLICY 0x7a            /* 15, message */
#define TAG_POLICY_MATCH 0x20      /* Policy.match: 4, varint */
#define TAG_POLICY_VALUE 0x2a      /* Policy.value: 5, bytes */
#define MAX_VARINT 10
#define MAX_PIECE 64               /* head, tail and types are short; checked in __init__ */

typedef struct {
    PyObject_HEAD
    unsigned char head[MAX_PIECE], tail[MAX_PIECE], qtype[MAX_PIECE], rtype[MAX_PIECE];
    Py_ssize_t head_len, tail_len, qtype_len, rtype_len;
    int bits4, bits6, blocked_bits4, blocked_bits6;
    Py_ssize_t limit;
    PyObject *policies; /* list of bytes, or NULL */
    PyObject *unknown;  /* bytes */
    unsigned char *buf;
    Py_ssize_t len, cap;
    Py_ssize_t count;
    unsigned long long dropped;
} Encoder;

static inline Py_ssize_t put_varint(unsigned char *out, uint64_t value) {
    Py_ssize_t n = 0;
    while (value > 0x7f) {
        out[n++] = (unsigned char)(value & 0x7f) | 0x80;
        value >>= 7;
    }
    out[n++] = (unsigned char)value;
    return n;
}

static inline Py_ssize_t varint_len(uint64_t value) {
    Py_ssize_t n = 1;
    while (value > 0x7f) {
        value >>= 7;
        n++;
    }
    return n;
}

static inline void put_be32(unsigned char *out, uint32_t value) {
    out[0] = (unsigned char)(value >> 24);
    out[1] = (unsigned char)(value >> 16);
    out[2] = (unsigned char)(value >> 8);
    out[3] = (unsigned char)value;
}

static inline void put_le32(unsigned char *out, uint32_t value) {
    out[0] = (unsigned char)value;
    out[1] = (unsigned char)(value >> 8);
    out[2] = (unsigned char)(value >> 16);
    out[3] = (unsigned char)(value >> 24);
}

/* The message fields after the type: socket_family, socket_protocol, query_address (cut). */
static Py_ssize_t client_fields(Encoder *self, PyObject *client, int udp, int blocked,
                                unsigned char *out) {
    Py_ssize_t n = 0, size = 0;
    unsigned char packed[16];
    int family = 0, width = 0;
    const char *text = PyUnicode_AsUTF8AndSize(client, &size);
    if (text == NULL) {
        PyErr_Clear();
        size = 0;
    }
    /* inet_pton would stop at a NUL and take "192.0.2.1\0junk" for an address. */
    if (size > 0 && size < 64 && memchr(text, '\0', (size_t)size) == NULL) {
        char copy[64];
        memcpy(copy, text, (size_t)size);
        copy[size] = '\0';
        if (memchr(copy, ':', (size_t)size) != NULL) {
            if (inet_pton(AF_INET6, copy, packed) == 1) {
                family = 2;
                width = 128;
            }
        } else if (inet_pton(AF_INET, copy, packed) == 1) {
            family = 1;
            width = 32;
        }
    }
    int bits = 0;
    if (family) {
        bits = family == 1 ? (blocked ? self->blocked_bits4 : self->bits4)
                           : (blocked ? self->blocked_bits6 : self->bits6);
        if (bits > width) bits = width;
    }
    if (bits > 0) {
        /* Keep the first `bits` bits, zero the rest (as resolver/querylog/client.py's
         * cut_address). */
        int octets = width / 8;
        for (int i = 0; i < octets; i++) {
            int keep = bits - i * 8;
            if (keep >= 8) continue;
            packed[i] = keep <= 0 ? 0 : (unsigned char)(packed[i] & (0xff << (8 - keep)));
        }
        out[n++] = TAG_SOCKET_FAMILY;
        out[n++] = (unsigned char)family;
        out[n++] = TAG_SOCKET_PROTOCOL;
        out[n++] = udp ? 1 : 2;
        out[n++] = TAG_QUERY_ADDRESS;
        out[n++] = (unsigned char)octets;
        memcpy(out + n, packed, (size_t)octets);
        n += octets;
    } else {
        out[n++] = TAG_SOCKET_PROTOCOL;
        out[n++] = udp ? 1 : 2;
    }
    return n;
}

static int reserve(Encoder *self, Py_ssize_t more) {
    if (self->len + more <= self->cap) return 0;
    Py_ssize_t cap = self->cap ? self->cap : 65536;
    while (cap < self->len + more) cap *= 2;
    unsigned char *grown = PyMem_Realloc(self->buf, (size_t)cap);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->buf = grown;
    self->cap = cap;
    return 0;
}

static int read_piece(PyObject *value, unsigned char *out, Py_ssize_t *len, const char *what) {
    char *data;
    Py_ssize_t size;
    if (PyBytes_AsStringAndSize(value, &data, &size) < 0) return -1;
    if (size > MAX_PIECE) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes, at most %d", what, size, MAX_PIECE);
        return -1;
    }
    memcpy(out, data, (size_t)size);
    *len = size;
    return 0;
}

static int Encoder_init(Encoder *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"head", "tail", "query_type", "response_type", "bits4", "bits6",
                            "blocked_bits4", "blocked_bits6", "limit", NULL};
    PyObject *head, *tail, *qtype, *rtype;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "SSSSiiiin", names, &head, &tail, &qtype,
                                     &rtype, &self->bits4, &self->bits6, &self->blocked_bits4,
                                     &self->blocked_bits6, &self->limit))
        return -1;
    if (read_piece(head, self->head, &self->head_len, "head") < 0 ||
        read_piece(tail, self->tail, &self->tail_len, "tail") < 0 ||
        read_piece(qtype, self->qtype, &self->qtype_len, "query_type") < 0 ||
        read_piece(rtype, self->rtype, &self->rtype_len, "response_type") < 0)
        return -1;
    Py_CLEAR(self->policies);
    Py_XSETREF(self->unknown, PyBytes_FromStringAndSize(NULL, 0));
    return self->unknown == NULL ? -1 : 0;
}

static void Encoder_dealloc(Encoder *self) {
    Py_CLEAR(self->policies);
    Py_CLEAR(self->unknown);
    PyMem_Free(self->buf);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Encoder_set_policies(Encoder *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyList_CheckExact(args[0]) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "set_policies(fields: list[bytes], unknown: bytes)");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(args[0]);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyBytes_Check(PyList_GET_ITEM(args[0], i))) {
            PyErr_SetString(PyExc_TypeError, "set_policies: every entry must be bytes");
            return NULL;
        }
    }
    /* A copy: the caller's list may change; the table in force is this one. */
    PyObject *copy = PyList_GetSlice(args[0], 0, n);
    if (copy == NULL) return NULL;
    Py_XSETREF(self->policies, copy);
    Py_INCREF(args[1]);
    Py_XSETREF(self->unknown, args[1]);
    Py_RETURN_NONE;
}

/* A frame's start, common to both messages: the frame length, the Dnstap envelope's head, the
 * message's length, then its type, client fields and query time (fields 1-4, 8, 9). */
static inline unsigned char *frame_start(Encoder *self, unsigned char *out, Py_ssize_t frame,
                                         Py_ssize_t message, const unsigned char *type,
                                         Py_ssize_t type_len, const unsigned char *client,
                                         Py_ssize_t client_len, uint64_t seconds, uint32_t nsec) {
    put_be32(out, (uint32_t)frame);
    out += 4;
    memcpy(out, self->head, (size_t)self->head_len);
    out += self->head_len;
    out += put_varint(out, (uint64_t)message);
    memcpy(out, type, (size_t)type_len);
    out += type_len;
    memcpy(out, client, (size_t)client_len);
    out += client_len;
    *out++ = TAG_QUERY_TIME_SEC;
    out += put_varint(out, seconds);
    *out++ = TAG_QUERY_TIME_NSEC;
    put_le32(out, nsec);
    return out + 4;
}

static PyObject *Encoder_add(Encoder *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError,
                        "add(when, client, udp, query, answer, policy_id, match, value)");
        return NULL;
    }
    if (self->count >= self->limit) {
        self->dropped++;
        return PyLong_FromLong(0);
    }
    double when = PyFloat_AsDouble(args[0]);
    if (when == -1.0 && PyErr_Occurred()) return NULL;
    PyObject *client = args[1];
    if (!PyUnicode_Check(client)) {
        PyErr_SetString(PyExc_TypeError, "add: client must be str");
        return NULL;
    }
    int udp = PyObject_IsTrue(args[2]);
    if (udp < 0) return NULL;
    if (!PyBytes_Check(args[3]) || (args[4] != Py_None && !PyBytes_Check(args[4])) ||
        !PyBytes_Check(args[7])) {
        PyErr_SetString(PyExc_TypeError, "add: query and value must be bytes, answer bytes or None");
        return NULL;
    }
    long pid = PyLong_AsLong(args[5]);
    if (pid == -1 && PyErr_Occurred()) return NULL;
    long match = PyLong_AsLong(args[6]);
    if (match == -1 && PyErr_Occurred()) return NULL;
    if (when < 0 || when > 1e12 || match < 0) {
        PyErr_SetString(PyExc_ValueError, "add: time or match out of range");
        return NULL;
    }
    const unsigned char *query = (const unsigned char *)PyBytes_AS_STRING(args[3]);
    Py_ssize_t query_len = PyBytes_GET_SIZE(args[3]);
    const unsigned char *answer = NULL;
    Py_ssize_t answer_len = 0;
    if (args[4] != Py_None) {
        answer = (const unsigned char *)PyBytes_AS_STRING(args[4]);
        answer_len = PyBytes_GET_SIZE(args[4]);
    }
    PyObject *policy = NULL;
    Py_ssize_t value_len = PyBytes_GET_SIZE(args[7]);
    Py_ssize_t policy_fields = 0; /* the Policy message's length */
    if (pid) {
        if (self->policies != NULL && pid > 0 && pid <= PyList_GET_SIZE(self->policies))
            policy = PyList_GET_ITEM(self->policies, pid - 1);
        else
            policy = self->unknown;
        policy_fields = PyBytes_GET_SIZE(policy) + 1 + varint_len((uint64_t)match) + 1 +
                        varint_len((uint64_t)value_len) + value_len;
    }

    unsigned char address[2 + 2 + 2 + 16];
    Py_ssize_t client_len = client_fields(self, client, udp, pid != 0, address);
    uint64_t seconds = (uint64_t)when;
    uint32_t nsec = (uint32_t)((when - (double)seconds) * 1e9);
    Py_ssize_t sec_len = varint_len(seconds);

    Py_ssize_t first = self->qtype_len + client_len + (1 + sec_len + 1) + 4 + 1 +
                       varint_len((uint64_t)query_len) + query_len;
    Py_ssize_t second = self->rtype_len + client_len + 2 * (1 + sec_len + 1 + 4);
    if (answer != NULL) second += 1 + varint_len((uint64_t)answer_len) + answer_len;
    if (pid) second += 1 + varint_len((uint64_t)policy_fields) + policy_fields;
    Py_ssize_t envelope = self->head_len + self->tail_len;
    Py_ssize_t frame1 = envelope + varint_len((uint64_t)first) + first;
    Py_ssize_t frame2 = envelope + varint_len((uint64_t)second) + second;
    if (frame1 > 0xffffffffLL || frame2 > 0xffffffffLL) {
        PyErr_SetString(PyExc_ValueError, "add: record too large");
        return NULL;
    }
    if (reserve(self, 8 + frame1 + frame2) < 0) return NULL;
    unsigned char *out = self->buf + self->len;
    unsigned char *start = out;

    /* Frame 1: CLIENT_QUERY. */
    out = frame_start(self, out, frame1, first, self->qtype, self->qtype_len, address,
                      client_len, seconds, nsec);
    *out++ = TAG_QUERY_MESSAGE;
    out += put_varint(out, (uint64_t)query_len);
    memcpy(out, query, (size_t)query_len);
    out += query_len;
    memcpy(out, self->tail, (size_t)self->tail_len);
    out += self->tail_len;

    /* Frame 2: CLIENT_RESPONSE, the query time also as the response time (the record has one
     * time: when the answer was sent), the answer and the policy. */
    out = frame_start(self, out, frame2, second, self->rtype, self->rtype_len, address,
                      client_len, seconds, nsec);
    *out++ = TAG_RESPONSE_TIME_SEC;
    out += put_varint(out, seconds);
    *out++ = TAG_RESPONSE_TIME_NSEC;
    put_le32(out, nsec);
    out += 4;
    if (answer != NULL) {
        *out++ = TAG_RESPONSE_MESSAGE;
        out += put_varint(out, (uint64_t)answer_len);
        memcpy(out, answer, (size_t)answer_len);
        out += answer_len;
    }
    if (pid) {
        *out++ = TAG_POLICY;
        out += put_varint(out, (uint64_t)policy_fields);
        memcpy(out, PyBytes_AS_STRING(policy), (size_t)PyBytes_GET_SIZE(policy));
        out += PyBytes_GET_SIZE(policy);
        *out++ = TAG_POLICY_MATCH;
        out += put_varint(out, (uint64_t)match);
        *out++ = TAG_POLICY_VALUE;
        out += put_varint(out, (uint64_t)value_len);
        memcpy(out, PyBytes_AS_STRING(args[7]), (size_t)value_len);
        out += value_len;
    }
    memcpy(out, self->tail, (size_t)self->tail_len);
    out += self->tail_len;

    self->len += out - start;
    self->count++;
    return PyLong_FromSsize_t(self->count);
}

static PyObject *Encoder_take(Encoder *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *blob = PyBytes_FromStringAndSize((const char *)self->buf, self->len);
    if (blob == NULL) return NULL;
    self->len = 0;
    self->count = 0;
    return blob;
}

static PyObject *Encoder_clear(Encoder *self, PyObject *Py_UNUSED(ignored)) {
    Py_ssize_t gone = self->count;
    self->dropped += (unsigned long long)gone;
    self->len = 0;
    self->count = 0;
    return PyLong_FromSsize_t(gone);
}

static PyMethodDef Encoder_methods[] = {
    {"add", (PyCFunction)(void (*)(void))Encoder_add, METH_FASTCALL,
     "Encode one logged query; the number of records waiting (0: dropped at the limit)."},
    {"set_policies", (PyCFunction)(void (*)(void))Encoder_set_policies, METH_FASTCALL,
     "The Policy fields per policy id from now on."},
    {"take", (PyCFunction)Encoder_take, METH_NOARGS, "The waiting frames; empties the encoder."},
    {"clear", (PyCFunction)Encoder_clear, METH_NOARGS,
     "Drop the waiting records (counted in `dropped`); how many."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Encoder_members[] = {
    {"count", T_PYSSIZET, offsetof(Encoder, count), READONLY, "records waiting"},
    {"size", T_PYSSIZET, offsetof(Encoder, len), READONLY, "bytes waiting"},
    {"limit", T_PYSSIZET, offsetof(Encoder, limit), 0, "records that may wait"},
    {"dropped", T_ULONGLONG, offsetof(Encoder, dropped), READONLY,
     "records dropped: at the limit, or by clear()"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject EncoderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "resolver.querylog._dnstap.Encoder",
    .tp_basicsize = sizeof(Encoder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Logged queries -> framed dnstap messages (resolver/querylog/_dnstap.c).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Encoder_init,
    .tp_dealloc = (destructor)Encoder_dealloc,
    .tp_methods = Encoder_methods,
    .tp_members = Encoder_members,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "resolver.querylog._dnstap",
    "The query log's dnstap encoder in C (resolver/querylog/_dnstap.c).", -1, NULL, NULL, NULL,
    NULL, NULL,
};

PyMODINIT_FUNC PyInit__dnstap(void) {
    if (PyType_Ready(&EncoderType) < 0) return NULL;
    PyObject *mod = PyModule_Create(&module);
    if (mod == NULL) return NULL;
    Py_INCREF(&EncoderType);
    if (PyModule_AddObject(mod, "Encoder", (PyObject *)&EncoderType) < 0) {
        Py_DECREF(&EncoderType);
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
