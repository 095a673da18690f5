/* resolver._udpbatch: many UDP datagrams per system call on Linux, recvmmsg(2) and sendmmsg(2).
 *
 * The worker's UDP path (resolver/worker.py) spends about as much time in the kernel entry and
 * exit of one recvfrom and one sendto per query as in answering it. A Batcher receives up to
 * `capacity` datagrams with one recvmmsg and sends the answers with one sendmmsg. Everything
 * per datagram is allocated once, with the object: a 65535-octet buffer (the largest UDP
 * payload, so no query is ever cut), the client's sockaddr and the mmsghdr entries. The client's
 * address stays here as a raw sockaddr: an answer names the datagram it answers by its position
 * in the last batch, so nothing re-parses an address string on the way out.
 *
 * The GIL is kept: a worker runs one thread (its query log writer is a separate process), and
 * both calls are non-blocking (MSG_DONTWAIT), so releasing it would cost without letting
 * anything else run.
 *
 * recv(fd) -> (datagrams, hosts): two lists of equal length, arrival order.
 * address(i) -> the (host, port) tuple recvfrom would have given (4-tuple for IPv6).
 * send(fd, replies) -> failed: replies[i] (bytes, or None for no answer) goes to the sender of
 *     datagram i of the last recv; one failing destination is counted and skipped.
 */
#define PY_SSIZE_T_CLEAN
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <Python.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>

#define MAX_DATAGRAM 65535
#define MAX_CAPACITY 1024
/* Host strings of recent clients, direct-mapped by address: a busy resolver sees the same
 * clients again and again, and the same str object also keeps its hash for the rate limiter's
 * and the ACL's dictionaries. A power of two. */
#define HOST_SLOTS 4096
/* Bounded retries: an interrupted call (EINTR) and a pending socket error (an ICMP error the
 * kernel reports once on the next call) each get a few more tries, never an endless loop. */
#define RETRIES 4

typedef struct {
    sa_family_t family; /* 0: empty */
    uint32_t scope;
    unsigned char addr[16];
    PyObject *host;
} HostSlot;

typedef struct {
    PyObject_HEAD
    int capacity;
    int count;           /* datagrams handed out by the last recv */
    unsigned char *buffers;
    struct sockaddr_storage *peers;
    socklen_t *peer_lens;
    int *slot_of;        /* position in the last batch -> receive slot (truncated ones skipped) */
    struct iovec *in_iov;
    struct mmsghdr *in;
    struct iovec *out_iov;
    struct mmsghdr *out;
    HostSlot *hosts;
    unsigned long long received, batches, truncated, recv_errors, sent, send_errors;
    int last_errno;
} Batcher;

static void
free_buffers(Batcher *self)
{
    if (self->hosts != NULL) {
        for (int i = 0; i < HOST_SLOTS; i++) {
            Py_CLEAR(self->hosts[i].host);
        }
    }
    if (self->buffers != NULL) {
        munmap(self->buffers, (size_t)self->capacity * MAX_DATAGRAM);
    }
    PyMem_RawFree(self->peers);
    PyMem_RawFree(self->peer_lens);
    PyMem_RawFree(self->slot_of);
    PyMem_RawFree(self->in_iov);
    PyMem_RawFree(self->in);
    PyMem_RawFree(self->out_iov);
    PyMem_RawFree(self->out);
    PyMem_RawFree(self->hosts);
    self->buffers = NULL;
    self->peers = NULL;
    self->peer_lens = NULL;
    self->slot_of = NULL;
    self->in_iov = self->out_iov = NULL;
    self->in = self->out = NULL;
    self->hosts = NULL;
}

static int
Batcher_init(Batcher *self, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"capacity", NULL};
    int capacity = 64;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|i", keywords, &capacity)) {
        return -1;
    }
    if (capacity < 1 || capacity > MAX_CAPACITY) {
        PyErr_Format(PyExc_ValueError, "capacity must be 1..%d", MAX_CAPACITY);
        return -1;
    }
    free_buffers(self);
    size_t n = (size_t)capacity;
    /* One anonymous mapping for the payloads, not malloc (which may hand out dirty heap pages):
     * pages the kernel never writes stay unallocated, so a batch of small queries keeps only the
     * first page of each buffer resident. */
    void *buffers = mmap(NULL, n * MAX_DATAGRAM, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    self->buffers = buffers == MAP_FAILED ? NULL : buffers;
    self->capacity = capacity; /* the mapping's size, for free_buffers */
    self->peers = PyMem_RawCalloc(n, sizeof(struct sockaddr_storage));
    self->peer_lens = PyMem_RawCalloc(n, sizeof(socklen_t));
    self->slot_of = PyMem_RawCalloc(n, sizeof(int));
    self->in_iov = PyMem_RawCalloc(n, sizeof(struct iovec));
    self->in = PyMem_RawCalloc(n, sizeof(struct mmsghdr));
    self->out_iov = PyMem_RawCalloc(n, sizeof(struct iovec));
    self->out = PyMem_RawCalloc(n, sizeof(struct mmsghdr));
    self->hosts = PyMem_RawCalloc(HOST_SLOTS, sizeof(HostSlot));
    if (!self->buffers || !self->peers || !self->peer_lens || !self->slot_of || !self->in_iov ||
        !self->in || !self->out_iov || !self->out || !self->hosts) {
        free_buffers(self);
        PyErr_NoMemory();
        return -1;
    }
    for (int i = 0; i < capacity; i++) {
        self->in_iov[i].iov_base = self->buffers + (size_t)i * MAX_DATAGRAM;
        self->in_iov[i].iov_len = MAX_DATAGRAM;
        self->in[i].msg_hdr.msg_iov = &self->in_iov[i];
        self->in[i].msg_hdr.msg_iovlen = 1;
        self->in[i].msg_hdr.msg_name = &self->peers[i];
        self->out[i].msg_hdr.msg_iov = &self->out_iov[i];
        self->out[i].msg_hdr.msg_iovlen = 1;
    }
    self->capacity = capacity;
    self->count = 0;
    return 0;
}

static void
Batcher_dealloc(Batcher *self)
{
    free_buffers(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The text form of an address, as Python's socket module gives it (an IPv6 scope as %name). */
static PyObject *
format_host(const struct sockaddr_storage *peer)
{
    char text[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
    if (peer->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)peer;
        if (inet_ntop(AF_INET, &v4->sin_addr, text, sizeof text) == NULL) {
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        return PyUnicode_FromString(text);
    }
    if (peer->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)peer;
        if (inet_ntop(AF_INET6, &v6->sin6_addr, text, INET6_ADDRSTRLEN) == NULL) {
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        if (v6->sin6_scope_id != 0) {
            size_t used = strlen(text);
            char name[IF_NAMESIZE];
            if (if_indextoname(v6->sin6_scope_id, name) != NULL) {
                snprintf(text + used, sizeof text - used, "%%%s", name);
            } else {
                snprintf(text + used, sizeof text - used, "%%%u", v6->sin6_scope_id);
            }
        }
        return PyUnicode_FromString(text);
    }
    PyErr_Format(PyExc_OSError, "unexpected address family %d", (int)peer->ss_family);
    return NULL;
}

/* A new reference to the host string of `peer`, from the cache when the same address was seen. */
static PyObject *
host_of(Batcher *self, const struct sockaddr_storage *peer)
{
    const unsigned char *addr;
    size_t size;
    uint32_t scope = 0;
    if (peer->ss_family == AF_INET) {
        addr = (const unsigned char *)&((const struct sockaddr_in *)peer)->sin_addr;
        size = 4;
    } else if (peer->ss_family == AF_INET6) {
        addr = (const unsigned char *)&((const struct sockaddr_in6 *)peer)->sin6_addr;
        size = 16;
        scope = ((const struct sockaddr_in6 *)peer)->sin6_scope_id;
    } else {
        return format_host(peer);
    }
    uint32_t hash = 2166136261u ^ scope; /* FNV-1a over the address octets */
    for (size_t i = 0; i < size; i++) {
        hash = (hash ^ addr[i]) * 16777619u;
    }
    HostSlot *slot = &self->hosts[hash & (HOST_SLOTS - 1)];
    if (slot->host != NULL && slot->family == peer->ss_family && slot->scope == scope &&
        memcmp(slot->addr, addr, size) == 0) {
        Py_INCREF(slot->host);
        return slot->host;
    }
    PyObject *host = format_host(peer);
    if (host == NULL) {
        return NULL;
    }
    Py_XSETREF(slot->host, Py_NewRef(host));
    slot->family = peer->ss_family;
    slot->scope = scope;
    memcpy(slot->addr, addr, size);
    return host;
}

static PyObject *
Batcher_recv(Batcher *self, PyObject *arg)
{
    int fd = PyObject_AsFileDescriptor(arg);
    if (fd < 0) {
        return NULL;
    }
    if (self->in == NULL) {
        PyErr_SetString(PyExc_ValueError, "Batcher not initialised");
        return NULL;
    }
    self->count = 0;
    for (int i = 0; i < self->capacity; i++) {
        self->in[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_storage);
        self->in[i].msg_hdr.msg_flags = 0;
    }
    int got = 0;
    for (int attempt = 0; attempt < RETRIES; attempt++) {
        got = recvmmsg(fd, self->in, (unsigned int)self->capacity, MSG_DONTWAIT, NULL);
        if (got >= 0) {
            break;
        }
        got = 0;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;
        }
        if (errno != EINTR) {
            /* A pending error (an ICMP error, e.g. ECONNREFUSED) is reported once and cleared:
             * count it and read on. EBADF and the like repeat and end the bounded loop. */
            self->recv_errors++;
            self->last_errno = errno;
        }
    }
    PyObject *datagrams = PyList_New(got);
    PyObject *hosts = PyList_New(got);
    if (datagrams == NULL || hosts == NULL) {
        Py_XDECREF(datagrams);
        Py_XDECREF(hosts);
        return NULL;
    }
    int kept = 0;
    for (int i = 0; i < got; i++) {
        struct msghdr *header = &self->in[i].msg_hdr;
        if (header->msg_flags & MSG_TRUNC) {
            /* Cannot happen with 65535-octet buffers (no UDP payload is larger); should it, the
             * query is incomplete and answering its prefix would be wrong: drop and count. */
            self->truncated++;
            continue;
        }
        PyObject *data = PyBytes_FromStringAndSize((const char *)self->in_iov[i].iov_base,
                                                   (Py_ssize_t)self->in[i].msg_len);
        PyObject *host = data ? host_of(self, &self->peers[i]) : NULL;
        if (host == NULL) {
            Py_XDECREF(data);
            goto fail;
        }
        PyList_SET_ITEM(datagrams, kept, data);
        PyList_SET_ITEM(hosts, kept, host);
        self->peer_lens[i] = header->msg_namelen;
        self->slot_of[kept] = i;
        kept++;
    }
    if (kept < got) { /* shrink to the datagrams handed out (the unset tail items are NULL) */
        if (PyList_SetSlice(datagrams, kept, got, NULL) < 0 ||
            PyList_SetSlice(hosts, kept, got, NULL) < 0) {
            goto fail;
        }
    }
    self->count = kept;
    self->received += (unsigned long long)kept;
    self->batches += kept > 0;
    PyObject *result = PyTuple_Pack(2, datagrams, hosts);
    Py_DECREF(datagrams);
    Py_DECREF(hosts);
    return result;
fail:
    Py_DECREF(datagrams);
    Py_DECREF(hosts);
    return NULL;
}

static int
check_index(Batcher *self, Py_ssize_t index)
{
    if (index < 0 || index >= self->count) {
        PyErr_Format(PyExc_IndexError, "datagram %zd not in the last batch of %d", index,
                     self->count);
        return -1;
    }
    return 0;
}

static PyObject *
Batcher_address(Batcher *self, PyObject *arg)
{
    Py_ssize_t index = PyLong_AsSsize_t(arg);
    if (index == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (check_index(self, index) < 0) {
        return NULL;
    }
    const struct sockaddr_storage *peer = &self->peers[self->slot_of[index]];
    PyObject *host = host_of(self, peer);
    if (host == NULL) {
        return NULL;
    }
    if (peer->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)peer;
        return Py_BuildValue("(NiIi)", host, (int)ntohs(v6->sin6_port),
                             (unsigned int)ntohl(v6->sin6_flowinfo), (int)v6->sin6_scope_id);
    }
    return Py_BuildValue("(Ni)", host, (int)ntohs(((const struct sockaddr_in *)peer)->sin_port));
}

static PyObject *
Batcher_send(Batcher *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "send(fd, replies) takes two arguments");
        return NULL;
    }
    int fd = PyObject_AsFileDescriptor(args[0]);
    if (fd < 0) {
        return NULL;
    }
    PyObject *replies = args[1];
    if (!PyList_Check(replies)) {
        PyErr_SetString(PyExc_TypeError, "replies must be a list");
        return NULL;
    }
    Py_ssize_t total = PyList_GET_SIZE(replies);
    if (total > self->count) {
        PyErr_Format(PyExc_IndexError, "%zd replies for a batch of %d", total, self->count);
        return NULL;
    }
    /* The list's items stay referenced by the list, and nothing runs Python code until the
     * sends are done (the GIL is held), so the payload pointers stay valid. */
    unsigned int queued = 0;
    for (Py_ssize_t i = 0; i < total; i++) {
        PyObject *reply = PyList_GET_ITEM(replies, i);
        if (reply == Py_None) {
            continue;
        }
        if (!PyBytes_Check(reply)) {
            PyErr_Format(PyExc_TypeError, "reply %zd is not bytes", i);
            return NULL;
        }
        int slot = self->slot_of[i];
        struct msghdr *header = &self->out[queued].msg_hdr;
        header->msg_name = &self->peers[slot];
        header->msg_namelen = self->peer_lens[slot];
        self->out_iov[queued].iov_base = PyBytes_AS_STRING(reply);
        self->out_iov[queued].iov_len = (size_t)PyBytes_GET_SIZE(reply);
        queued++;
    }
    unsigned int done = 0;
    int interrupted = 0;
    long failed = 0;
    while (done < queued) {
        int sent = sendmmsg(fd, self->out + done, queued - done, MSG_DONTWAIT);
        if (sent > 0) { /* maybe fewer than asked: continue from where it stopped */
            done += (unsigned int)sent;
            self->sent += (unsigned long long)sent;
            continue;
        }
        if (sent < 0 && errno == EINTR && interrupted++ < RETRIES) {
            continue;
        }
        /* The error belongs to the first unsent message (EMSGSIZE, EAGAIN with a full send
         * buffer, a pending ICMP error, ...): count it, skip it, send the rest. At most one call
         * per message: bounded. */
        self->last_errno = sent < 0 ? errno : EIO;
        self->send_errors++;
        failed++;
        done++;
    }
    return PyLong_FromLong(failed);
}

static PyMethodDef Batcher_methods[] = {
    {"recv", (PyCFunction)Batcher_recv, METH_O,
     "recv(fd) -> (datagrams, hosts): up to capacity datagrams waiting on the socket."},
    {"address", (PyCFunction)Batcher_address, METH_O,
     "address(i) -> the sender of datagram i of the last recv, as recvfrom gives it."},
    {"send", (PyCFunction)(void (*)(void))Batcher_send, METH_FASTCALL,
     "send(fd, replies) -> failed: replies[i] (bytes or None) to the sender of datagram i."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Batcher_members[] = {
    {"capacity", T_INT, offsetof(Batcher, capacity), READONLY, "datagrams per recv"},
    {"count", T_INT, offsetof(Batcher, count), READONLY, "datagrams in the last batch"},
    {"received", T_ULONGLONG, offsetof(Batcher, received), READONLY, "datagrams handed out"},
    {"batches", T_ULONGLONG, offsetof(Batcher, batches), READONLY, "recv calls with datagrams"},
    {"truncated", T_ULONGLONG, offsetof(Batcher, truncated), READONLY, "dropped: cut short"},
    {"recv_errors", T_ULONGLONG, offsetof(Batcher, recv_errors), READONLY, "recvmmsg errors"},
    {"sent", T_ULONGLONG, offsetof(Batcher, sent), READONLY, "replies sent"},
    {"send_errors", T_ULONGLONG, offsetof(Batcher, send_errors), READONLY, "replies not sent"},
    {"last_errno", T_INT, offsetof(Batcher, last_errno), READONLY, "errno of the last error"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject BatcherType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "resolver._udpbatch.Batcher",
    .tp_doc = "Batcher(capacity=64): recvmmsg/sendmmsg with preallocated buffers.",
    .tp_basicsize = sizeof(Batcher),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Batcher_init,
    .tp_dealloc = (destructor)Batcher_dealloc,
    .tp_methods = Batcher_methods,
    .tp_members = Batcher_members,
};

static struct PyModuleDef udpbatch_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "resolver._udpbatch",
    .m_doc = "recvmmsg/sendmmsg batches for the worker's UDP path.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__udpbatch(void)
{
    if (PyType_Ready(&BatcherType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&udpbatch_module);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "Batcher", (PyObject *)&BatcherType) < 0 ||
        PyModule_AddIntConstant(module, "MAX_DATAGRAM", MAX_DATAGRAM) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
