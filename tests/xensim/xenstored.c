/*
 * xensim: an embeddable xenstored
 *
 * Semantics follow cxenstored (the C daemon of Xen 4.17+), which is what
 * libxenstore, libxl and QEMU are written against:
 *
 *  - Paths: absolute, or relative to /local/domain/<caller>; characters
 *    [A-Za-z0-9-/_@]; no trailing '/', no "//"; at most 2048 bytes not
 *    counting a leading "/local/domain/<N>/", 3072 in all. '@' names
 *    (@introduceDomain, @releaseDomain) are only for watches and
 *    permissions.
 *  - Permissions: entry 0 names the owner and everyone's default access,
 *    later entries give per-domain access. dom0 and the owner get all.
 *    Reading needs read, writing/mkdir/rm need write, setting permissions
 *    needs to be the owner (dom0 may do anything). A missing node reports
 *    ENOENT only to a caller the nearest existing ancestor grants the
 *    access to, EACCES otherwise (no probing of hidden trees).
 *  - Writing creates missing parents; each inherits its parent's
 *    permissions, and an unprivileged creator owns what it creates.
 *  - Watches fire on the node and anything below it; rm fires the removed
 *    node (for watches on it and above) and each removed descendant (for
 *    watches exactly on it). A connection gets an event only if it may read
 *    the node or its parent (or could before a permission change). Relative
 *    watches get relative paths. Registering fires once at once.
 *  - Transactions: a transaction copies each node on first access and
 *    remembers its generation; commit fails with EAGAIN if any of those
 *    nodes changed (or appeared) since, and otherwise applies the copies and
 *    fires the watches the transaction's writes queued.
 *
 * Threading: one mutex (s->lock) covers everything: the store, domains,
 * connections, counters. The daemon thread sleeps in epoll_wait() unlocked
 * and takes the lock to handle what woke it; the xsd_* calls take it too.
 * Epoll events carry a token (kind + id), never a pointer, and the handler
 * looks the id up under the lock: a connection closed by another thread
 * between epoll_wait() and the lookup is simply not found. Closed
 * connections are freed only at the end of a locked section, so nothing
 * running in it holds a dangling pointer. An eventfd wakes the thread to
 * stop.
 *
 * Hostile clients: a header announcing more than XENSTORE_PAYLOAD_MAX bytes
 * closes the connection; malformed payloads get EINVAL; per-connection
 * state (watches, transactions, nodes a transaction touches, queued output)
 * is bounded as xenstored.h describes: replies by back-pressure (a client
 * that does not read is not read), watch events by merging repeats and then
 * dropping the newest. Sockets are non-blocking, each connection has its
 * own output queue, one connection is served at most INPUT_BUDGET requests
 * per wake-up so others get their turn.
 *
 * Where this differs from cxenstored, on purpose:
 *  - @introduceDomain/@releaseDomain reach watches on that very name only
 *    (cxenstored also tells watches on "/").
 *  - XS_INTRODUCE of an unknown domain does what xsd_add_domain() does (the
 *    domain's socket stands for its ring), XS_RELEASE what
 *    xsd_remove_domain() does; XS_RESUME has nothing to resume.
 *  - Watch and transaction limits count per connection, not per domain;
 *    there is no write rate limit and no time-out of queued events.
 *
 * This work is licensed under the terms of the GNU GPL, version 2 or later.
 * See the COPYING file in the top-level directory.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <glib.h>
#include <xen/io/xs_wire.h>

#include "xenstored.h"

#define DOMID_FIRST_RESERVED  0x7FF0U
#define DOMID_SELF            0x7FF0U
#define DOMID_MAX             0xFFFFU
#define INPUT_BUDGET          64        /* requests per connection per wake */
#define EPOLL_BATCH           64

#define PERM_NONE   0U
#define PERM_READ   1U
#define PERM_WRITE  2U
#define PERM_OWNER  4U
#define PERM_ALL    (PERM_READ | PERM_WRITE | PERM_OWNER)

#define VALID_PATH_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZ" \
                         "abcdefghijklmnopqrstuvwxyz" \
                         "0123456789-/_@"

#define DOMAIN_PATH_PREFIX "/local/domain/"

/* Epoll tokens: kind in the top bits, id (domid, connection id) below */
#define TOKEN_KIND_SHIFT  62
#define TOKEN_WAKE        0ULL
#define TOKEN_LISTEN      1ULL
#define TOKEN_CONN        2ULL
#define TOKEN_ID_MASK     ((1ULL << TOKEN_KIND_SHIFT) - 1)

G_STATIC_ASSERT(XS_TYPE_COUNT <= XSD_STATS_TYPES);

/* ---- types ---- */

typedef struct XsdPerm {
    unsigned int domid;
    unsigned int access;            /* PERM_READ | PERM_WRITE */
} XsdPerm;

typedef struct XsdPerms {
    unsigned int n;                 /* >= 1 for a node; 0: none recorded */
    XsdPerm *p;
} XsdPerms;

typedef struct XsdNode {
    char *value;
    unsigned int len;
    XsdPerms perms;
    GPtrArray *children;            /* names (char *), in creation order */
    uint64_t gen;                   /* store generation of the last change */
} XsdNode;

/* What a transaction knows of one path */
typedef struct TxEntry {
    char *path;
    uint64_t seen_gen;              /* generation at first access; 0: absent */
    XsdNode *node;                  /* the transaction's view; NULL: absent */
    XsdPerms old_perms;             /* at first access (n == 0: absent) */
    bool modified;
    bool fire;                      /* fire watches on commit */
    bool fire_exact;
} TxEntry;

typedef struct XsdTx {
    uint32_t id;
    GHashTable *entries;            /* path -> TxEntry * */
    GPtrArray *order;               /* TxEntry *, first access order; owner */
    int own_nodes_delta;            /* nodes the caller gains on commit */
    bool failed;                    /* went over XSD_MAX_TRANSACTION_NODES */
} XsdTx;

typedef struct XsdWatch {
    char *path;                     /* canonical, or @special */
    char *token;
    size_t prefix_len;              /* stripped from events: relative watch */
} XsdWatch;

typedef struct OutMsg {
    bool is_event;
    size_t len;                     /* header + payload */
    uint8_t data[];
} OutMsg;

typedef struct XsdDomain {
    unsigned int domid;
    int listen_fd;
    char *sock_path;
    unsigned int nconns;
    int target;                     /* XS_SET_TARGET, -1: none */
} XsdDomain;

typedef struct XsdConn {
    uint64_t id;
    int fd;
    XsdDomain *dom;
    bool dead;                      /* closed, on s->dead until freed */
    bool dirty;                     /* on s->dirty: output to flush */
    uint32_t epoll_mask;

    struct xsd_sockmsg hdr;         /* request being read */
    size_t hdr_got;
    size_t body_got;
    char body[XENSTORE_PAYLOAD_MAX + 1];

    GQueue out;                     /* OutMsg * */
    GHashTable *pending;            /* OutMsg * events queued, by payload */
    size_t out_head_done;           /* bytes of the head already written */
    size_t reply_bytes;
    size_t event_bytes;
    unsigned int pending_events;

    GPtrArray *watches;             /* XsdWatch * */
    GHashTable *txs;                /* id -> XsdTx * */
    uint32_t next_tx_id;
} XsdConn;

struct XsdServer {
    pthread_mutex_t lock;
    pthread_t thread;
    bool thread_started;
    bool stopping;
    bool trace;                     /* XSD_TRACE set: log requests */
    int epfd;
    int wakefd;
    char *dir;

    GHashTable *nodes;              /* path -> XsdNode * */
    unsigned int *owned;            /* [domid]: nodes it owns */
    uint64_t gen;

    GHashTable *domains;            /* domid -> XsdDomain * */
    GHashTable *conns;              /* &id -> XsdConn * */
    uint64_t next_conn_id;
    GPtrArray *dirty;               /* XsdConn * with output to flush */
    GPtrArray *dead;                /* XsdConn * closed, to free */

    XsdStats stats;
};

/* One request being served (or an internal change made as dom0) */
typedef struct XsdReq {
    XsdServer *s;
    XsdConn *conn;                  /* NULL: xsd_* API, acting as dom0 */
    XsdTx *tx;
    const struct xsd_sockmsg *hdr;
    const char *body;
    unsigned int len;
    GByteArray *reply;
    XsdWatch *new_watch;            /* its first event follows the reply */
} XsdReq;

/* ---- small helpers ---- */

static bool conn_privileged(const XsdConn *c)
{
    return !c || c->dom->domid == 0;
}

static unsigned int req_domid(const XsdReq *req)
{
    return req->conn ? req->conn->dom->domid : 0;
}

static bool req_privileged(const XsdReq *req)
{
    return conn_privileged(req->conn);
}

static uint64_t make_token(uint64_t kind, uint64_t id)
{
    return (kind << TOKEN_KIND_SHIFT) | (id & TOKEN_ID_MASK);
}

/* Strict decimal: digits only, no sign, no overflow, at most max */
static bool parse_uint(const char *str, unsigned long max, unsigned long *out)
{
    unsigned long val = 0;

    if (!*str) {
        return false;
    }
    for (; *str; str++) {
        if (*str < '0' || *str > '9') {
            return false;
        }
        if (val > (max - (unsigned long)(*str - '0')) / 10) {
            return false;
        }
        val = val * 10 + (unsigned long)(*str - '0');
    }
    *out = val;
    return true;
}

static bool parse_domid(const char *str, unsigned int *domid)
{
    unsigned long val;

    if (!str || !parse_uint(str, DOMID_MAX, &val)) {
        return false;
    }
    *domid = val;
    return true;
}

static const char *errno_name(int err)
{
    size_t i;

    for (i = 0; i < G_N_ELEMENTS(xsd_errors); i++) {
        if (xsd_errors[i].errnum == err) {
            return xsd_errors[i].errstring;
        }
    }
    return "EINVAL";    /* what xenstored says for untranslatable errors */
}

/* ---- paths ---- */

/* Length of a leading "/local/domain/<N>/" (N up to 5 digits), else 0 */
static size_t domain_prefix_len(const char *path)
{
    size_t i = strlen(DOMAIN_PATH_PREFIX), digits = 0;

    if (strncmp(path, DOMAIN_PATH_PREFIX, i) != 0) {
        return 0;
    }
    while (path[i] >= '0' && path[i] <= '9' && digits < 5) {
        i++;
        digits++;
    }
    return digits && path[i] == '/' ? i + 1 : 0;
}

static bool path_well_formed(const char *path)
{
    size_t len = strlen(path);

    if (len > 1 && path[len - 1] == '/') {
        return false;
    }
    if (strstr(path, "//") || len > XENSTORE_ABS_PATH_MAX) {
        return false;
    }
    return len - domain_prefix_len(path) <= XENSTORE_REL_PATH_MAX;
}

/*
 * The absolute path a client means by raw, in *out (g_free). Relative paths
 * are under the caller's /local/domain/<N>.
 */
static int canonicalize(const XsdReq *req, const char *raw,
                        bool allow_special, char **out)
{
    char *path;

    *out = NULL;
    if (!raw || raw[strspn(raw, VALID_PATH_CHARS)] != '\0') {
        return EINVAL;
    }
    if (raw[0] == '@' && !allow_special) {
        return EINVAL;
    }
    if (raw[0] != '/' && raw[0] != '@') {
        path = g_strdup_printf(DOMAIN_PATH_PREFIX "%u/%s", req_domid(req),
                               raw);
    } else {
        path = g_strdup(raw);
    }
    if (!path_well_formed(path)) {
        g_free(path);
        return EINVAL;
    }
    *out = path;
    return 0;
}

/* "/a/b" -> "/a", "/a" -> "/", and "@x" -> "/" as xenstored reckons */
static char *path_parent(const char *path)
{
    const char *slash = strrchr(path + 1, '/');

    return slash ? g_strndup(path, slash - path) : g_strdup("/");
}

static const char *path_base(const char *path)
{
    return strrchr(path, '/') + 1;
}

static char *path_child(const char *parent, const char *name)
{
    return strcmp(parent, "/") ? g_strdup_printf("%s/%s", parent, name)
                               : g_strdup_printf("/%s", name);
}

/* Is path top itself or below it? */
static bool path_within(const char *path, const char *top)
{
    size_t len = strlen(top);

    if (!strcmp(top, "/")) {
        return path[0] == '/';
    }
    return !strncmp(path, top, len) && (path[len] == '/' || !path[len]);
}

/* ---- permissions ---- */

static void perms_copy(XsdPerms *dst, const XsdPerms *src)
{
    dst->n = src->n;
    dst->p = src->n ? g_memdup2(src->p, src->n * sizeof(*src->p)) : NULL;
}

static void perms_clear(XsdPerms *perms)
{
    g_free(perms->p);
    perms->p = NULL;
    perms->n = 0;
}

static unsigned int perms_owner(const XsdPerms *perms)
{
    return perms->p[0].domid;
}

static bool conn_acts_for(const XsdConn *c, unsigned int domid)
{
    return c->dom->domid == domid ||
           (c->dom->target >= 0 && (unsigned int)c->dom->target == domid);
}

static unsigned int perm_for(const XsdConn *c, const XsdPerms *perms)
{
    unsigned int i;

    if (conn_privileged(c) || conn_acts_for(c, perms_owner(perms))) {
        return PERM_ALL;
    }
    for (i = 1; i < perms->n; i++) {
        if (conn_acts_for(c, perms->p[i].domid)) {
            return perms->p[i].access;
        }
    }
    return perms->p[0].access;
}

static char perm_letter(unsigned int access)
{
    static const char letters[] = { 'n', 'r', 'w', 'b' };

    return letters[access & (PERM_READ | PERM_WRITE)];
}

/* "r5" and friends; false on anything else */
static bool perm_parse(const char *str, XsdPerm *perm)
{
    switch (str[0]) {
    case 'n':
        perm->access = PERM_NONE;
        break;
    case 'r':
        perm->access = PERM_READ;
        break;
    case 'w':
        perm->access = PERM_WRITE;
        break;
    case 'b':
        perm->access = PERM_READ | PERM_WRITE;
        break;
    default:
        return false;
    }
    return parse_domid(str + 1, &perm->domid);
}

/* ---- nodes ---- */

static XsdNode *node_new(const XsdPerms *perms)
{
    XsdNode *node = g_new0(XsdNode, 1);

    perms_copy(&node->perms, perms);
    node->children = g_ptr_array_new_with_free_func(g_free);
    return node;
}

static void node_free(gpointer opaque)
{
    XsdNode *node = opaque;

    if (node) {
        g_free(node->value);
        perms_clear(&node->perms);
        g_ptr_array_free(node->children, true);
        g_free(node);
    }
}

static XsdNode *node_copy(const XsdNode *src)
{
    XsdNode *node = node_new(&src->perms);
    guint i;

    node->value = g_memdup2(src->value, src->len);
    node->len = src->len;
    node->gen = src->gen;
    for (i = 0; i < src->children->len; i++) {
        g_ptr_array_add(node->children,
                        g_strdup(g_ptr_array_index(src->children, i)));
    }
    return node;
}

static void node_set_value(XsdNode *node, const char *value, unsigned int len)
{
    g_free(node->value);
    node->value = len ? g_memdup2(value, len) : NULL;
    node->len = len;
}

static void node_add_child(XsdNode *node, const char *name)
{
    g_ptr_array_add(node->children, g_strdup(name));
}

static void node_remove_child(XsdNode *node, const char *name)
{
    guint i;

    for (i = 0; i < node->children->len; i++) {
        if (!strcmp(g_ptr_array_index(node->children, i), name)) {
            g_ptr_array_remove_index(node->children, i);
            return;
        }
    }
}

/* ---- the global store ---- */

static XsdNode *store_get(XsdServer *s, const char *path)
{
    return g_hash_table_lookup(s->nodes, path);
}

static void owned_add(XsdServer *s, unsigned int domid, int delta)
{
    s->owned[domid] += delta;
}

/* Insert or replace (taking node); accounts ownership, bumps generation */
static void store_put(XsdServer *s, const char *path, XsdNode *node)
{
    XsdNode *old = store_get(s, path);

    if (old) {
        owned_add(s, perms_owner(&old->perms), -1);
    }
    owned_add(s, perms_owner(&node->perms), 1);
    node->gen = ++s->gen;
    g_hash_table_replace(s->nodes, g_strdup(path), node);
}

static void store_del(XsdServer *s, const char *path)
{
    XsdNode *old = store_get(s, path);

    if (old) {
        owned_add(s, perms_owner(&old->perms), -1);
        g_hash_table_remove(s->nodes, path);
    }
}

/* ---- transactions ---- */

static void tx_entry_free(gpointer opaque)
{
    TxEntry *e = opaque;

    g_free(e->path);
    node_free(e->node);
    perms_clear(&e->old_perms);
    g_free(e);
}

static XsdTx *tx_new(uint32_t id)
{
    XsdTx *tx = g_new0(XsdTx, 1);

    tx->id = id;
    tx->entries = g_hash_table_new(g_str_hash, g_str_equal);
    tx->order = g_ptr_array_new_with_free_func(tx_entry_free);
    return tx;
}

static void tx_free(gpointer opaque)
{
    XsdTx *tx = opaque;

    g_hash_table_destroy(tx->entries);
    g_ptr_array_free(tx->order, true);
    g_free(tx);
}

/*
 * The transaction's record of path, made on first access from a copy of
 * the global node: later reads in the transaction see that copy however
 * the store moves on, and commit checks the store did not.
 */
static TxEntry *tx_entry(XsdReq *req, const char *path)
{
    XsdTx *tx = req->tx;
    TxEntry *e = g_hash_table_lookup(tx->entries, path);
    XsdNode *global;

    if (e) {
        return e;
    }
    if (!req_privileged(req) &&
        tx->order->len >= XSD_MAX_TRANSACTION_NODES) {
        /*
         * Finish this operation so the view stays consistent, but refuse
         * everything after it: memory stays bounded by one operation.
         */
        tx->failed = true;
    }
    global = store_get(req->s, path);
    e = g_new0(TxEntry, 1);
    e->path = g_strdup(path);
    if (global) {
        e->seen_gen = global->gen;
        e->node = node_copy(global);
        perms_copy(&e->old_perms, &global->perms);
    }
    g_hash_table_insert(tx->entries, e->path, e);
    g_ptr_array_add(tx->order, e);
    return e;
}

static void tx_queue_watch(XsdReq *req, const char *path, bool exact)
{
    TxEntry *e = tx_entry(req, path);

    /* A subtree event covers an exact one, not the other way round */
    if (!e->fire) {
        e->fire = true;
        e->fire_exact = exact;
    } else if (!exact) {
        e->fire_exact = false;
    }
}

/* ---- the store as a request sees it (transaction or global) ---- */

static XsdNode *view_get(XsdReq *req, const char *path)
{
    return req->tx ? tx_entry(req, path)->node : store_get(req->s, path);
}

/* As view_get, for a change to report with view_changed() */
static XsdNode *view_get_mut(XsdReq *req, const char *path)
{
    TxEntry *e;

    if (!req->tx) {
        return store_get(req->s, path);
    }
    e = tx_entry(req, path);
    e->modified = true;
    return e->node;
}

static void view_changed(XsdReq *req, XsdNode *node)
{
    if (!req->tx) {
        node->gen = ++req->s->gen;
    }
}

static void view_insert(XsdReq *req, const char *path, XsdNode *node)
{
    TxEntry *e;

    if (!req->tx) {
        store_put(req->s, path, node);
        return;
    }
    e = tx_entry(req, path);
    node_free(e->node);
    e->node = node;
    e->modified = true;
    if (perms_owner(&node->perms) == req_domid(req)) {
        req->tx->own_nodes_delta++;
    }
}

static void view_delete(XsdReq *req, const char *path)
{
    TxEntry *e;

    if (!req->tx) {
        store_del(req->s, path);
        return;
    }
    e = tx_entry(req, path);
    if (e->node) {
        if (perms_owner(&e->node->perms) == req_domid(req)) {
            req->tx->own_nodes_delta--;
        }
        node_free(e->node);
        e->node = NULL;
    }
    e->modified = true;
}

static unsigned int domain_nodes(XsdReq *req)
{
    int n = req->s->owned[req_domid(req)];

    return n + (req->tx ? req->tx->own_nodes_delta : 0);
}

/* ---- output ---- */

static void conn_mark_dirty(XsdServer *s, XsdConn *c)
{
    if (!c->dirty) {
        c->dirty = true;
        g_ptr_array_add(s->dirty, c);
    }
}

static size_t conn_out_bytes(const XsdConn *c)
{
    return c->reply_bytes + c->event_bytes;
}

static OutMsg *out_msg_new(uint32_t type, uint32_t req_id, uint32_t tx_id,
                           bool is_event, const void *payload1, size_t len1,
                           const void *payload2, size_t len2)
{
    struct xsd_sockmsg hdr = {
        .type = type, .req_id = req_id, .tx_id = tx_id, .len = len1 + len2,
    };
    OutMsg *m = g_malloc(sizeof(*m) + sizeof(hdr) + len1 + len2);

    m->is_event = is_event;
    m->len = sizeof(hdr) + len1 + len2;
    memcpy(m->data, &hdr, sizeof(hdr));
    if (len1) {
        memcpy(m->data + sizeof(hdr), payload1, len1);
    }
    if (len2) {
        memcpy(m->data + sizeof(hdr) + len1, payload2, len2);
    }
    return m;
}

/* Events are told apart by payload (path and token) */
static guint out_msg_payload_hash(gconstpointer key)
{
    const OutMsg *m = key;
    guint hash = 5381;
    size_t i;

    for (i = sizeof(struct xsd_sockmsg); i < m->len; i++) {
        hash = hash * 33 + m->data[i];
    }
    return hash;
}

static gboolean out_msg_payload_equal(gconstpointer a, gconstpointer b)
{
    const OutMsg *ma = a, *mb = b;

    return ma->len == mb->len && !memcmp(ma->data, mb->data, ma->len);
}

static void conn_push(XsdServer *s, XsdConn *c, OutMsg *m)
{
    g_queue_push_tail(&c->out, m);
    if (m->is_event) {
        c->pending_events++;
        c->event_bytes += m->len;
        s->stats.pending_events_peak = MAX(s->stats.pending_events_peak,
                                           c->pending_events);
    } else {
        c->reply_bytes += m->len;
    }
    s->stats.out_bytes_peak = MAX(s->stats.out_bytes_peak,
                                  conn_out_bytes(c));
    conn_mark_dirty(s, c);
}

static bool conn_events_full(const XsdConn *c, size_t more_bytes)
{
    bool dom0 = conn_privileged(c);
    unsigned int max_events = dom0 ? XSD_MAX_PENDING_EVENTS_DOM0
                                   : XSD_MAX_PENDING_EVENTS;
    size_t max_bytes = dom0 ? XSD_MAX_PENDING_EVENT_BYTES_DOM0
                            : XSD_MAX_PENDING_EVENT_BYTES;

    return c->pending_events >= max_events ||
           c->event_bytes + more_bytes > max_bytes;
}

/*
 * Queue one watch event. One equal to an event still waiting is merged
 * into it (the client reads the node after that one anyway). If the
 * connection has its fill of events, this (newest) one is dropped, so what
 * was queued keeps its order and the cost stays O(1).
 */
static void queue_event(XsdServer *s, XsdConn *c, const char *path,
                        const char *token)
{
    size_t plen = strlen(path) + 1, tlen = strlen(token) + 1;
    bool special = path[0] == '@';
    OutMsg *m;

    if (c->dead) {
        return;
    }
    if (plen + tlen > XENSTORE_PAYLOAD_MAX) {
        s->stats.watch_events_dropped++;
        return;
    }
    m = out_msg_new(XS_WATCH_EVENT, 0, 0, true, path, plen, token, tlen);
    if (!special && g_hash_table_contains(c->pending, m)) {
        s->stats.watch_events_merged++;
        g_free(m);
        return;
    }
    if (conn_events_full(c, m->len)) {
        s->stats.watch_events_dropped++;
        g_free(m);
        return;
    }
    if (!special) {
        g_hash_table_add(c->pending, m);
    }
    conn_push(s, c, m);
    s->stats.watch_events_queued++;
}

static void send_reply(XsdReq *req, uint32_t type, const void *data,
                       size_t len)
{
    if (req->conn) {
        conn_push(req->s, req->conn,
                  out_msg_new(type, req->hdr->req_id, req->hdr->tx_id, false,
                              data, len, NULL, 0));
    }
}

static void send_error(XsdReq *req, int err)
{
    const char *name = errno_name(err);

    req->s->stats.errors++;
    send_reply(req, XS_ERROR, name, strlen(name) + 1);
}

static void reply_str(XsdReq *req, const char *str)
{
    g_byte_array_append(req->reply, (const guint8 *)str, strlen(str) + 1);
}

static void reply_ack(XsdReq *req)
{
    reply_str(req, "OK");
}

/* ---- watches ---- */

static void watch_free(gpointer opaque)
{
    XsdWatch *w = opaque;

    g_free(w->path);
    g_free(w->token);
    g_free(w);
}

static bool watch_matches(const XsdWatch *w, const char *path, bool exact)
{
    /* Special events go to watches on that very name only */
    if (exact || path[0] == '@' || w->path[0] == '@') {
        return !strcmp(w->path, path);
    }
    return path_within(path, w->path);
}

/*
 * May c hear about path? If it may read the node or its parent, or could
 * read it before a permission change (old_perms). node_perms: the node's
 * permissions when it is being removed, else NULL to look them up.
 */
static bool watch_permitted(XsdServer *s, XsdConn *c, const char *path,
                            const XsdPerms *node_perms,
                            const XsdPerms *old_perms)
{
    XsdNode *node;
    char *parent_path;
    bool ok;

    if (conn_privileged(c)) {
        return true;
    }
    if (old_perms && old_perms->n && (perm_for(c, old_perms) & PERM_READ)) {
        return true;
    }
    if (!node_perms) {
        node = store_get(s, path);
        if (!node) {
            return false;
        }
        node_perms = &node->perms;
    }
    if (perm_for(c, node_perms) & PERM_READ) {
        return true;
    }
    if (path[0] == '@' || !strcmp(path, "/")) {
        return false;
    }
    parent_path = path_parent(path);
    node = store_get(s, parent_path);
    ok = node && (perm_for(c, &node->perms) & PERM_READ);
    g_free(parent_path);
    return ok;
}

static void deliver_event(XsdServer *s, const char *path, bool exact,
                          const XsdPerms *node_perms,
                          const XsdPerms *old_perms)
{
    GHashTableIter iter;
    gpointer value;
    guint i;

    g_hash_table_iter_init(&iter, s->conns);
    while (g_hash_table_iter_next(&iter, NULL, &value)) {
        XsdConn *c = value;
        int permitted = -1;     /* not asked yet: only if a watch matches */

        for (i = 0; i < c->watches->len; i++) {
            XsdWatch *w = g_ptr_array_index(c->watches, i);

            if (!watch_matches(w, path, exact)) {
                continue;
            }
            if (permitted < 0) {
                permitted = watch_permitted(s, c, path, node_perms,
                                            old_perms);
            }
            if (!permitted) {
                break;
            }
            queue_event(s, c, path + w->prefix_len, w->token);
        }
    }
}

/* A change at path: fire now, or on commit when in a transaction */
static void fire_watches(XsdReq *req, const char *path, bool exact,
                         const XsdPerms *node_perms,
                         const XsdPerms *old_perms)
{
    if (req->tx) {
        tx_queue_watch(req, path, exact);
    } else {
        deliver_event(req->s, path, exact, node_perms, old_perms);
    }
}

/* ---- store operations shared by requests and the xsd_* API ---- */

/* Permissions of the nearest existing ancestor of path */
static unsigned int ancestor_perm(XsdReq *req, const char *path)
{
    char *p = path_parent(path);
    unsigned int perm = PERM_NONE;

    for (;;) {
        XsdNode *node = view_get(req, p);
        char *up;

        if (node) {
            perm = perm_for(req->conn, &node->perms);
            break;
        }
        if (!strcmp(p, "/")) {
            break;
        }
        up = path_parent(p);
        g_free(p);
        p = up;
    }
    g_free(p);
    return perm;
}

/*
 * Canonicalize raw and find the node, checking the caller has all of perm.
 * On ENOENT, *pathp is still set (for creation). A caller is told ENOENT
 * only if the nearest ancestor would grant perm: otherwise EACCES, so that
 * nothing is learnt about trees one may not see.
 */
static int lookup_node(XsdReq *req, const char *raw, unsigned int perm,
                       bool allow_special, XsdNode **nodep, char **pathp)
{
    XsdNode *node = NULL;
    char *path;
    int err = canonicalize(req, raw, allow_special, &path);

    if (!err) {
        node = view_get(req, path);
        if (!node) {
            err = ENOENT;
            if (!(ancestor_perm(req, path) & perm)) {
                err = EACCES;
            }
        } else if ((perm_for(req->conn, &node->perms) & perm) != perm) {
            err = EACCES;
        }
    }
    *nodep = err ? NULL : node;
    if (pathp) {
        *pathp = path;
    } else {
        g_free(path);
    }
    return err;
}

/*
 * Create path and whatever parents it lacks. Each new node inherits its
 * parent's permissions; an unprivileged creator becomes the owner.
 */
static int create_node(XsdReq *req, const char *path)
{
    GPtrArray *missing = g_ptr_array_new_with_free_func(g_free);
    char *p = g_strdup(path);
    int err = 0;
    guint i;

    for (;;) {
        char *up = path_parent(p);

        g_ptr_array_add(missing, p);
        if (view_get(req, up)) {
            g_free(up);
            break;
        }
        p = up;         /* "/" always exists: the walk ends */
    }
    if (!req_privileged(req) &&
        domain_nodes(req) + missing->len > XSD_MAX_NODES_PER_DOMAIN) {
        err = ENOSPC;
    }
    for (i = missing->len; !err && i-- > 0;) {
        const char *name = g_ptr_array_index(missing, i);
        char *parent_path = path_parent(name);
        XsdNode *parent = view_get_mut(req, parent_path);
        XsdNode *node = node_new(&parent->perms);

        if (!req_privileged(req)) {
            node->perms.p[0].domid = req_domid(req);
        }
        node_add_child(parent, path_base(name));
        view_changed(req, parent);
        view_insert(req, name, node);
        g_free(parent_path);
    }
    g_ptr_array_free(missing, true);
    return err;
}

/*
 * Remove path and everything below, children first. Descendants fire the
 * watches exactly on them; path fires its own watches and those above.
 */
static void remove_subtree(XsdReq *req, const char *path, bool top)
{
    XsdNode *node = view_get(req, path);
    guint i;

    if (!node) {
        return;
    }
    /* Removing a child never edits node->children: the loop is safe */
    for (i = 0; i < node->children->len; i++) {
        char *child = path_child(path, g_ptr_array_index(node->children, i));

        remove_subtree(req, child, false);
        g_free(child);
    }
    fire_watches(req, path, !top, &node->perms, NULL);
    view_delete(req, path);
}

static void remove_node(XsdReq *req, const char *path)
{
    char *parent_path = path_parent(path);
    XsdNode *parent;

    remove_subtree(req, path, true);
    parent = view_get_mut(req, parent_path);
    if (parent) {
        node_remove_child(parent, path_base(path));
        view_changed(req, parent);
    }
    g_free(parent_path);
}

/* Set node's permissions (node from view_get_mut), keeping accounts */
static void set_node_perms(XsdReq *req, XsdNode *node, XsdPerms *perms)
{
    if (!req->tx) {
        owned_add(req->s, perms_owner(&node->perms), -1);
        owned_add(req->s, perms_owner(perms), 1);
    }
    perms_clear(&node->perms);
    node->perms = *perms;
    view_changed(req, node);
}

/* ---- request handlers: return 0 with req->reply filled, or an errno ---- */

static unsigned int count_strings(const char *buf, unsigned int len)
{
    unsigned int i, n = 0;

    for (i = 0; i < len; i++) {
        n += buf[i] == '\0';
    }
    return n;
}

/* The payload is exactly one NUL-terminated string */
static const char *arg_only(const XsdReq *req)
{
    if (!req->len || memchr(req->body, '\0', req->len) !=
                     req->body + req->len - 1) {
        return NULL;
    }
    return req->body;
}

/* The payload is exactly n NUL-terminated strings */
static bool args_exact(const XsdReq *req, const char **vec, unsigned int n)
{
    unsigned int i;
    const char *p = req->body;

    if (!req->len || req->body[req->len - 1] != '\0' ||
        count_strings(req->body, req->len) != n) {
        return false;
    }
    for (i = 0; i < n; i++) {
        vec[i] = p;
        p += strlen(p) + 1;
    }
    return true;
}

static int do_read(XsdReq *req)
{
    XsdNode *node;
    int err = lookup_node(req, arg_only(req), PERM_READ, false, &node, NULL);

    if (!err) {
        g_byte_array_append(req->reply, (const guint8 *)node->value,
                            node->len);
    }
    return err;
}

static int do_write(XsdReq *req)
{
    const char *nul = memchr(req->body, '\0', req->len);
    const char *value;
    unsigned int vlen;
    XsdNode *node;
    char *path;
    int err;

    if (!nul) {
        return EINVAL;
    }
    value = nul + 1;
    vlen = req->len - (value - req->body);
    if (!req_privileged(req) && vlen > XSD_MAX_VALUE_LEN) {
        return ENOSPC;
    }
    err = lookup_node(req, req->body, PERM_WRITE, false, &node, &path);
    if (err == ENOENT) {
        err = create_node(req, path);
    }
    if (!err) {
        node = view_get_mut(req, path);
        node_set_value(node, value, vlen);
        view_changed(req, node);
        fire_watches(req, path, false, NULL, NULL);
        reply_ack(req);
    }
    g_free(path);
    return err;
}

static int do_mkdir(XsdReq *req)
{
    XsdNode *node;
    char *path;
    int err = lookup_node(req, arg_only(req), PERM_WRITE, false, &node,
                          &path);

    if (err == ENOENT) {
        err = create_node(req, path);
        if (!err) {
            fire_watches(req, path, false, NULL, NULL);
        }
    }
    if (!err) {
        reply_ack(req);         /* an existing node is fine */
    }
    g_free(path);
    return err;
}

static int do_rm(XsdReq *req)
{
    XsdNode *node;
    char *path, *parent_path;
    int err = lookup_node(req, arg_only(req), PERM_WRITE, false, &node,
                          &path);

    if (err == ENOENT) {
        /* Already gone is fine, if the parent is there */
        parent_path = path_parent(path);
        if (view_get(req, parent_path)) {
            err = 0;
        }
        g_free(parent_path);
    } else if (!err) {
        if (!strcmp(path, "/")) {
            err = EINVAL;
        } else {
            remove_node(req, path);
        }
    }
    if (!err) {
        reply_ack(req);
    }
    g_free(path);
    return err;
}

static void reply_children(XsdReq *req, XsdNode *node)
{
    guint i;

    for (i = 0; i < node->children->len; i++) {
        reply_str(req, g_ptr_array_index(node->children, i));
    }
}

static int do_directory(XsdReq *req)
{
    XsdNode *node;
    int err = lookup_node(req, arg_only(req), PERM_READ, false, &node, NULL);

    if (!err) {
        reply_children(req, node);  /* over 4096 bytes: E2BIG, as wanted */
    }
    return err;
}

/*
 * Directory listings too long for one reply, in chunks: "<gen>\0" then
 * whole child names from byte offset off of the full listing; the last
 * chunk ends with an extra NUL. The client restarts if gen changes.
 */
static int do_directory_part(XsdReq *req)
{
    const char *vec[2];
    unsigned long off;
    XsdNode *node;
    GByteArray *all;
    char gen[24];
    size_t genlen, maxlen, len = 0;
    int err;

    if (!args_exact(req, vec, 2) || !parse_uint(vec[1], UINT_MAX, &off)) {
        return EINVAL;
    }
    err = lookup_node(req, vec[0], PERM_READ, false, &node, NULL);
    if (err) {
        return err;
    }
    genlen = snprintf(gen, sizeof(gen), "%" PRIu64, node->gen) + 1;
    g_byte_array_append(req->reply, (const guint8 *)gen, genlen);

    all = req->reply;   /* borrow: build the full listing after gen */
    reply_children(req, node);
    if (off >= all->len - genlen) {
        g_byte_array_set_size(all, genlen);
        g_byte_array_append(all, (const guint8 *)"", 1);
        return 0;
    }
    maxlen = XENSTORE_PAYLOAD_MAX - genlen - 1;
    while (genlen + off + len < all->len) {
        size_t next = strlen((char *)all->data + genlen + off + len);

        if (len + next >= maxlen) {
            break;
        }
        len += next + 1;
    }
    if (!len) {
        return E2BIG;
    }
    memmove(all->data + genlen, all->data + genlen + off, len);
    if (genlen + off + len == all->len) {
        g_byte_array_set_size(all, genlen + len);
        g_byte_array_append(all, (const guint8 *)"", 1);   /* the end */
    } else {
        g_byte_array_set_size(all, genlen + len);
    }
    return 0;
}

static int do_get_perms(XsdReq *req)
{
    XsdNode *node;
    int err = lookup_node(req, arg_only(req), PERM_READ, true, &node, NULL);
    unsigned int i;

    for (i = 0; !err && i < node->perms.n; i++) {
        char buf[16];

        snprintf(buf, sizeof(buf), "%c%u",
                 perm_letter(node->perms.p[i].access),
                 node->perms.p[i].domid);
        reply_str(req, buf);
    }
    return err;
}

static int parse_perm_list(const XsdReq *req, XsdPerms *perms)
{
    const char *p = req->body + strlen(req->body) + 1;
    unsigned int i, n = count_strings(req->body, req->len) - 1;

    if (!req_privileged(req) && n > XSD_MAX_PERMS) {
        return ENOSPC;
    }
    perms->n = n;
    perms->p = g_new0(XsdPerm, n);
    for (i = 0; i < n; i++, p += strlen(p) + 1) {
        if (!perm_parse(p, &perms->p[i])) {
            perms_clear(perms);
            return EINVAL;
        }
    }
    return 0;
}

static int do_set_perms(XsdReq *req)
{
    XsdPerms perms = { 0 }, old;
    XsdNode *node;
    char *path = NULL;
    int err;

    if (!req->len || req->body[req->len - 1] != '\0' ||
        count_strings(req->body, req->len) < 2) {
        return EINVAL;
    }
    err = parse_perm_list(req, &perms);
    if (!err) {
        err = lookup_node(req, req->body, PERM_WRITE | PERM_OWNER, true,
                          &node, &path);
    }
    if (!err && !req_privileged(req) &&
        perms_owner(&perms) != perms_owner(&node->perms)) {
        err = EPERM;    /* unprivileged domains may not give nodes away */
    }
    if (err) {
        perms_clear(&perms);
        g_free(path);
        return err;
    }
    node = view_get_mut(req, path);
    perms_copy(&old, &node->perms);
    set_node_perms(req, node, &perms);
    fire_watches(req, path, false, NULL, &old);
    perms_clear(&old);
    reply_ack(req);
    g_free(path);
    return 0;
}

static XsdWatch *conn_find_watch(XsdConn *c, const char *path,
                                 const char *token, guint *index)
{
    guint i;

    for (i = 0; i < c->watches->len; i++) {
        XsdWatch *w = g_ptr_array_index(c->watches, i);

        if (!strcmp(w->path, path) && !strcmp(w->token, token)) {
            if (index) {
                *index = i;
            }
            return w;
        }
    }
    return NULL;
}

static int do_watch(XsdReq *req)
{
    const char *vec[2];
    XsdWatch *w;
    char *path;
    bool relative;
    int err;

    if (!req->conn || !args_exact(req, vec, 2)) {
        return EINVAL;
    }
    err = canonicalize(req, vec[0], true, &path);
    if (err) {
        return err;
    }
    if (conn_find_watch(req->conn, path, vec[1], NULL)) {
        err = EEXIST;
    } else if (req->conn->watches->len >= XSD_MAX_WATCHES_PER_CONN) {
        err = E2BIG;
    }
    if (err) {
        g_free(path);
        return err;
    }
    relative = vec[0][0] != '/' && vec[0][0] != '@';
    w = g_new0(XsdWatch, 1);
    w->path = path;
    w->token = g_strdup(vec[1]);
    w->prefix_len = relative ? domain_prefix_len(path) : 0;
    g_ptr_array_add(req->conn->watches, w);
    req->new_watch = w;
    reply_ack(req);
    return 0;
}

static int do_unwatch(XsdReq *req)
{
    const char *vec[2];
    char *path;
    guint index;
    int err;

    if (!req->conn || !args_exact(req, vec, 2)) {
        return EINVAL;
    }
    err = canonicalize(req, vec[0], true, &path);
    if (err) {
        return err;
    }
    if (conn_find_watch(req->conn, path, vec[1], &index)) {
        g_ptr_array_remove_index(req->conn->watches, index);
        reply_ack(req);
    } else {
        err = ENOENT;
    }
    g_free(path);
    return err;
}

static int do_transaction_start(XsdReq *req)
{
    XsdConn *c = req->conn;
    XsdTx *tx;
    char buf[16];

    if (!c) {
        return EINVAL;
    }
    if (req->tx) {
        return EBUSY;   /* no nesting */
    }
    if (g_hash_table_size(c->txs) >= XSD_MAX_TRANSACTIONS_PER_CONN) {
        return ENOSPC;
    }
    do {
        c->next_tx_id++;
    } while (!c->next_tx_id ||
             g_hash_table_contains(c->txs, GUINT_TO_POINTER(c->next_tx_id)));
    tx = tx_new(c->next_tx_id);
    g_hash_table_insert(c->txs, GUINT_TO_POINTER(tx->id), tx);
    snprintf(buf, sizeof(buf), "%u", tx->id);
    reply_str(req, buf);
    return 0;
}

static int tx_check(XsdReq *req, XsdTx *tx)
{
    guint i;

    if (tx->failed) {
        return ENOSPC;
    }
    for (i = 0; i < tx->order->len; i++) {
        TxEntry *e = g_ptr_array_index(tx->order, i);
        XsdNode *now = store_get(req->s, e->path);

        if ((now ? now->gen : 0) != e->seen_gen) {
            return EAGAIN;
        }
    }
    if (!req_privileged(req) && tx->own_nodes_delta > 0 &&
        req->s->owned[req_domid(req)] + tx->own_nodes_delta >
        XSD_MAX_NODES_PER_DOMAIN) {
        return ENOSPC;
    }
    return 0;
}

static void tx_apply(XsdServer *s, XsdTx *tx)
{
    guint i;

    for (i = 0; i < tx->order->len; i++) {
        TxEntry *e = g_ptr_array_index(tx->order, i);

        if (!e->modified) {
            continue;
        }
        if (e->node) {
            store_put(s, e->path, e->node);
            e->node = NULL;             /* the store owns it now */
        } else {
            store_del(s, e->path);
        }
    }
    /* Fire once everything is in place, as watchers may read at once */
    for (i = 0; i < tx->order->len; i++) {
        TxEntry *e = g_ptr_array_index(tx->order, i);

        if (e->fire) {
            deliver_event(s, e->path, e->fire_exact, NULL,
                          e->old_perms.n ? &e->old_perms : NULL);
        }
    }
}

static int do_transaction_end(XsdReq *req)
{
    const char *arg = arg_only(req);
    XsdTx *tx = req->tx;
    int err = 0;

    if (!arg || (strcmp(arg, "T") && strcmp(arg, "F"))) {
        return EINVAL;
    }
    if (!tx) {
        return ENOENT;
    }
    /* Ended either way, as in xenstored: after EAGAIN the client restarts */
    g_hash_table_steal(req->conn->txs, GUINT_TO_POINTER(tx->id));
    req->tx = NULL;
    if (!strcmp(arg, "T")) {
        err = tx_check(req, tx);
        if (!err) {
            tx_apply(req->s, tx);
            req->s->stats.transactions_committed++;
        } else if (err == EAGAIN) {
            req->s->stats.transaction_conflicts++;
        }
    } else {
        req->s->stats.transactions_aborted++;
    }
    tx_free(tx);
    if (!err) {
        reply_ack(req);
    }
    return err;
}

static int do_get_domain_path(XsdReq *req)
{
    unsigned int domid;
    char buf[32];

    if (!parse_domid(arg_only(req), &domid)) {
        return EINVAL;
    }
    snprintf(buf, sizeof(buf), DOMAIN_PATH_PREFIX "%u", domid);
    reply_str(req, buf);
    return 0;
}

static XsdDomain *find_domain(XsdServer *s, unsigned int domid)
{
    return g_hash_table_lookup(s->domains, GUINT_TO_POINTER(domid));
}

static int do_is_domain_introduced(XsdReq *req)
{
    unsigned int domid;

    if (!parse_domid(arg_only(req), &domid)) {
        return EINVAL;
    }
    reply_str(req, domid == DOMID_SELF || find_domain(req->s, domid)
                   ? "T" : "F");
    return 0;
}

static int domain_add(XsdServer *s, unsigned int domid);
static int domain_remove(XsdServer *s, unsigned int domid);

/* domid, ring mfn, event channel: here the domain's socket is its ring */
static int do_introduce(XsdReq *req)
{
    const char *p = req->body;
    unsigned long mfn, port;
    unsigned int domid;
    int err;

    if (!req->len || req->body[req->len - 1] != '\0' ||
        count_strings(req->body, req->len) < 3) {
        return EINVAL;
    }
    if (!parse_domid(p, &domid)) {
        return EINVAL;
    }
    p += strlen(p) + 1;
    if (!parse_uint(p, ULONG_MAX, &mfn)) {
        return EINVAL;
    }
    p += strlen(p) + 1;
    if (!parse_uint(p, UINT32_MAX, &port) || !port) {
        return EINVAL;
    }
    if (!find_domain(req->s, domid)) {
        err = domain_add(req->s, domid);
        if (err) {
            return -err;
        }
    }
    reply_ack(req);
    return 0;
}

static int do_release(XsdReq *req)
{
    unsigned int domid;

    if (!parse_domid(arg_only(req), &domid) || domid == 0) {
        return EINVAL;
    }
    if (domain_remove(req->s, domid)) {
        return ENOENT;
    }
    reply_ack(req);
    return 0;
}

static int do_resume(XsdReq *req)
{
    unsigned int domid;

    if (!parse_domid(arg_only(req), &domid)) {
        return EINVAL;
    }
    if (!find_domain(req->s, domid)) {
        return ENOENT;
    }
    reply_ack(req);     /* nothing is ever shut down here */
    return 0;
}

static int do_set_target(XsdReq *req)
{
    const char *vec[2];
    unsigned int domid, target;
    XsdDomain *dom;

    if (!args_exact(req, vec, 2) || !parse_domid(vec[0], &domid) ||
        !parse_domid(vec[1], &target)) {
        return EINVAL;
    }
    dom = find_domain(req->s, domid);
    if (!dom || !find_domain(req->s, target)) {
        return ENOENT;
    }
    dom->target = target;
    reply_ack(req);
    return 0;
}

static void conn_drop_state(XsdConn *c)
{
    g_ptr_array_set_size(c->watches, 0);
    g_hash_table_remove_all(c->txs);
}

static int do_reset_watches(XsdReq *req)
{
    if (req->conn) {
        conn_drop_state(req->conn);
    }
    req->tx = NULL;
    reply_ack(req);
    return 0;
}

static int do_control(XsdReq *req)
{
    const char *cmd = req->body;

    if (!req->len || !memchr(req->body, '\0', req->len)) {
        return EINVAL;
    }
    if (!strcmp(cmd, "help")) {
        reply_str(req, "Supported commands:\ncheck\nhelp\nprint <string>\n"
                       "quota\n");
    } else if (!strcmp(cmd, "check") || !strcmp(cmd, "print")) {
        reply_ack(req);
    } else if (!strcmp(cmd, "quota")) {
        char *text = g_strdup_printf(
            "watches per connection: %d\ntransactions per connection: %d\n"
            "nodes per transaction: %d\nnodes per domain: %d\n"
            "value size: %d\npermissions per node: %d\n",
            XSD_MAX_WATCHES_PER_CONN, XSD_MAX_TRANSACTIONS_PER_CONN,
            XSD_MAX_TRANSACTION_NODES, XSD_MAX_NODES_PER_DOMAIN,
            XSD_MAX_VALUE_LEN, XSD_MAX_PERMS);

        reply_str(req, text);
        g_free(text);
    } else {
        return EINVAL;
    }
    return 0;
}

typedef struct XsdHandler {
    const char *name;
    int (*fn)(XsdReq *req);
    bool priv;                  /* dom0 only: EACCES for others */
    bool no_tx;                 /* tx_id ignored */
} XsdHandler;

static const XsdHandler handlers[XS_TYPE_COUNT] = {
    [XS_CONTROL] = { "CONTROL", do_control, true, false },
    [XS_DIRECTORY] = { "DIRECTORY", do_directory, false, false },
    [XS_READ] = { "READ", do_read, false, false },
    [XS_GET_PERMS] = { "GET_PERMS", do_get_perms, false, false },
    [XS_WATCH] = { "WATCH", do_watch, false, true },
    [XS_UNWATCH] = { "UNWATCH", do_unwatch, false, true },
    [XS_TRANSACTION_START] = { "TRANSACTION_START", do_transaction_start,
                               false, false },
    [XS_TRANSACTION_END] = { "TRANSACTION_END", do_transaction_end,
                             false, false },
    [XS_INTRODUCE] = { "INTRODUCE", do_introduce, true, false },
    [XS_RELEASE] = { "RELEASE", do_release, true, false },
    [XS_GET_DOMAIN_PATH] = { "GET_DOMAIN_PATH", do_get_domain_path,
                             false, false },
    [XS_WRITE] = { "WRITE", do_write, false, false },
    [XS_MKDIR] = { "MKDIR", do_mkdir, false, false },
    [XS_RM] = { "RM", do_rm, false, false },
    [XS_SET_PERMS] = { "SET_PERMS", do_set_perms, false, false },
    [XS_IS_DOMAIN_INTRODUCED] = { "IS_DOMAIN_INTRODUCED",
                                  do_is_domain_introduced, true, false },
    [XS_RESUME] = { "RESUME", do_resume, true, false },
    [XS_SET_TARGET] = { "SET_TARGET", do_set_target, true, false },
    [XS_RESET_WATCHES] = { "RESET_WATCHES", do_reset_watches, false, false },
    [XS_DIRECTORY_PART] = { "DIRECTORY_PART", do_directory_part,
                            false, false },
};

/* Look up the request's transaction: 0 is none, an unknown id ENOENT */
static int req_find_tx(XsdReq *req)
{
    uint32_t id = req->hdr->tx_id;

    req->tx = NULL;
    if (!id) {
        return 0;
    }
    req->tx = g_hash_table_lookup(req->conn->txs, GUINT_TO_POINTER(id));
    return req->tx ? 0 : ENOENT;
}

static int dispatch(XsdReq *req, const XsdHandler *h)
{
    int err;

    if (!h || !h->fn) {
        return ENOSYS;
    }
    if (h->priv && !req_privileged(req)) {
        return EACCES;
    }
    if (!h->no_tx) {
        err = req_find_tx(req);
        if (err) {
            return err;
        }
    }
    if (req->tx && req->tx->failed && h->fn != do_transaction_end) {
        return ENOSPC;
    }
    err = h->fn(req);
    if (!err && req->reply->len > XENSTORE_PAYLOAD_MAX) {
        err = E2BIG;
    }
    return err;
}

static void trace_request(XsdReq *req, const XsdHandler *h, int err)
{
    unsigned int i, n = MIN(req->len, 80U);
    char text[81];

    for (i = 0; i < n; i++) {
        text[i] = g_ascii_isprint(req->body[i]) ? req->body[i] : ' ';
    }
    text[n] = '\0';
    fprintf(stderr, "xsd: d%u %s tx=%u \"%s\" -> %s\n", req_domid(req),
            h && h->name ? h->name : "?", req->hdr->tx_id, text,
            err ? errno_name(err) : "ok");
}

static void handle_request(XsdServer *s, XsdConn *c)
{
    uint32_t type = c->hdr.type;
    const XsdHandler *h = type < XS_TYPE_COUNT ? &handlers[type] : NULL;
    XsdReq req = {
        .s = s, .conn = c, .hdr = &c->hdr, .body = c->body,
        .len = c->hdr.len, .reply = g_byte_array_new(),
    };
    int err;

    c->body[c->hdr.len] = '\0';     /* a guard only: handlers go by len */
    s->stats.requests++;
    if (type < XSD_STATS_TYPES) {
        s->stats.requests_by_type[type]++;
    }
    err = dispatch(&req, h);
    if (s->trace) {
        trace_request(&req, h, err);
    }
    if (err) {
        send_error(&req, err);
    } else {
        send_reply(&req, type, req.reply->data, req.reply->len);
        if (req.new_watch) {
            /* Once up front, after the reply, unfiltered: as xenstored */
            queue_event(s, c, req.new_watch->path + req.new_watch->prefix_len,
                        req.new_watch->token);
        }
    }
    g_byte_array_free(req.reply, true);
}

/* ---- connections ---- */

static void out_msg_free(gpointer opaque)
{
    g_free(opaque);
}

static void conn_update_epoll(XsdServer *s, XsdConn *c)
{
    uint32_t mask = 0;
    struct epoll_event ev;

    if (c->dead) {
        return;
    }
    if (c->reply_bytes < XSD_MAX_REPLY_BACKLOG) {
        mask |= EPOLLIN;
    }
    if (!g_queue_is_empty(&c->out)) {
        mask |= EPOLLOUT;
    }
    if (mask != c->epoll_mask) {
        if (!(mask & EPOLLIN) && (c->epoll_mask & EPOLLIN)) {
            s->stats.input_stalls++;
        }
        ev.events = mask;
        ev.data.u64 = make_token(TOKEN_CONN, c->id);
        epoll_ctl(s->epfd, EPOLL_CTL_MOD, c->fd, &ev);
        c->epoll_mask = mask;
    }
}

static void conn_free_output(XsdConn *c)
{
    g_hash_table_remove_all(c->pending);
    g_queue_clear_full(&c->out, out_msg_free);
    c->out_head_done = 0;
    c->reply_bytes = 0;
    c->event_bytes = 0;
    c->pending_events = 0;
}

static void conn_close(XsdServer *s, XsdConn *c)
{
    if (c->dead) {
        return;
    }
    c->dead = true;
    epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    g_hash_table_remove(s->conns, &c->id);
    c->dom->nconns--;
    conn_drop_state(c);
    conn_free_output(c);
    g_ptr_array_add(s->dead, c);
    s->stats.connections_closed++;
}

static void conn_free(gpointer opaque)
{
    XsdConn *c = opaque;

    g_ptr_array_free(c->watches, true);
    g_hash_table_destroy(c->txs);
    conn_free_output(c);
    g_hash_table_destroy(c->pending);
    g_free(c);
}

/* Write what the socket takes; closes the connection on a write error */
static void conn_flush(XsdServer *s, XsdConn *c)
{
    OutMsg *m;

    while (!c->dead && (m = g_queue_peek_head(&c->out))) {
        ssize_t r = send(c->fd, m->data + c->out_head_done,
                         m->len - c->out_head_done,
                         MSG_NOSIGNAL | MSG_DONTWAIT);

        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                conn_close(s, c);
            }
            break;
        }
        c->out_head_done += r;
        if (c->out_head_done < m->len) {
            continue;
        }
        g_queue_pop_head(&c->out);
        c->out_head_done = 0;
        if (m->is_event) {
            g_hash_table_remove(c->pending, m);
            c->pending_events--;
            c->event_bytes -= m->len;
            s->stats.watch_events_sent++;
        } else {
            c->reply_bytes -= m->len;
        }
        g_free(m);
    }
    conn_update_epoll(s, c);
}

/* End of a locked section: write out what was queued, free the closed */
static void settle(XsdServer *s)
{
    guint i;

    for (i = 0; i < s->dirty->len; i++) {
        XsdConn *c = g_ptr_array_index(s->dirty, i);

        c->dirty = false;
        conn_flush(s, c);
    }
    g_ptr_array_set_size(s->dirty, 0);
    g_ptr_array_set_size(s->dead, 0);       /* frees them */
}

/* Read what is there of the next message; false: nothing more for now */
static bool conn_read_some(XsdServer *s, XsdConn *c)
{
    char *buf;
    size_t want;
    ssize_t r;

    if (c->hdr_got < sizeof(c->hdr)) {
        buf = (char *)&c->hdr + c->hdr_got;
        want = sizeof(c->hdr) - c->hdr_got;
    } else {
        buf = c->body + c->body_got;
        want = c->hdr.len - c->body_got;
    }
    if (!want) {
        return true;
    }
    r = recv(c->fd, buf, want, MSG_DONTWAIT);
    if (r < 0 && errno == EINTR) {
        return true;
    }
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        return false;
    }
    if (r <= 0) {
        conn_close(s, c);       /* EOF or error */
        return false;
    }
    if (c->hdr_got < sizeof(c->hdr)) {
        c->hdr_got += r;
        if (c->hdr_got == sizeof(c->hdr) &&
            c->hdr.len > XENSTORE_PAYLOAD_MAX) {
            /* Protocol violation: no way to resynchronise, hang up */
            s->stats.protocol_violations++;
            conn_close(s, c);
            return false;
        }
    } else {
        c->body_got += r;
    }
    return true;
}

static bool conn_message_complete(const XsdConn *c)
{
    return c->hdr_got == sizeof(c->hdr) && c->body_got == c->hdr.len;
}

static void conn_read(XsdServer *s, XsdConn *c)
{
    int budget = INPUT_BUDGET;

    while (budget > 0 && !c->dead && c->reply_bytes < XSD_MAX_REPLY_BACKLOG) {
        if (!conn_read_some(s, c)) {
            break;
        }
        if (conn_message_complete(c)) {
            handle_request(s, c);
            c->hdr_got = 0;
            c->body_got = 0;
            budget--;
        }
    }
    conn_update_epoll(s, c);
}

static void conn_new(XsdServer *s, XsdDomain *dom, int fd)
{
    XsdConn *c = g_new0(XsdConn, 1);
    struct epoll_event ev;

    c->id = ++s->next_conn_id;
    c->fd = fd;
    c->dom = dom;
    g_queue_init(&c->out);
    c->pending = g_hash_table_new(out_msg_payload_hash, out_msg_payload_equal);
    c->watches = g_ptr_array_new_with_free_func(watch_free);
    c->txs = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL,
                                   tx_free);
    c->epoll_mask = EPOLLIN;
    ev.events = c->epoll_mask;
    ev.data.u64 = make_token(TOKEN_CONN, c->id);
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        close(fd);
        conn_free(c);
        return;
    }
    g_hash_table_insert(s->conns, &c->id, c);
    dom->nconns++;
    s->stats.connections_accepted++;
}

static void accept_connections(XsdServer *s, XsdDomain *dom)
{
    unsigned int limit = dom->domid ? XSD_MAX_CONNS_PER_DOMAIN
                                    : XSD_MAX_CONNS_DOM0;

    for (;;) {
        int fd = accept4(dom->listen_fd, NULL, NULL,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd < 0) {
            if (errno == EINTR) {
                continue;
            }
            return;             /* EAGAIN, or out of fds: try next time */
        }
        if (dom->nconns >= limit) {
            close(fd);
            s->stats.connections_rejected++;
            continue;
        }
        conn_new(s, dom, fd);
    }
}

/* ---- domains ---- */

static int listen_on(XsdServer *s, const char *path, unsigned int domid)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    struct epoll_event ev;
    int fd, err;

    if (strlen(path) >= sizeof(addr.sun_path)) {
        return -ENAMETOOLONG;
    }
    strcpy(addr.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    unlink(path);       /* a socket left by an earlier run */
    ev.events = EPOLLIN;
    ev.data.u64 = make_token(TOKEN_LISTEN, domid);
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        listen(fd, 64) < 0 ||
        epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        err = -errno;
        close(fd);
        unlink(path);
        return err;
    }
    return fd;
}

static char *socket_path(XsdServer *s, unsigned int domid)
{
    if (!domid) {
        return g_strdup_printf("%s/xenstored.sock", s->dir);
    }
    return g_strdup_printf("%s/xenstored-%u.sock", s->dir, domid);
}

static void domain_free(gpointer opaque)
{
    XsdDomain *dom = opaque;

    g_free(dom->sock_path);
    g_free(dom);
}

static XsdDomain *domain_new(XsdServer *s, unsigned int domid, int *err)
{
    XsdDomain *dom;
    char *path = socket_path(s, domid);
    int fd = listen_on(s, path, domid);

    if (fd < 0) {
        *err = fd;
        g_free(path);
        return NULL;
    }
    dom = g_new0(XsdDomain, 1);
    dom->domid = domid;
    dom->listen_fd = fd;
    dom->sock_path = path;
    dom->target = -1;
    g_hash_table_insert(s->domains, GUINT_TO_POINTER(domid), dom);
    return dom;
}

static void domain_close_socket(XsdServer *s, XsdDomain *dom)
{
    epoll_ctl(s->epfd, EPOLL_CTL_DEL, dom->listen_fd, NULL);
    close(dom->listen_fd);
    unlink(dom->sock_path);
}

/* /local/domain/<domid>, created as dom0 would, owned by the domain */
static void make_domain_node(XsdServer *s, unsigned int domid)
{
    XsdReq req = { .s = s };
    XsdPerms perms = { .n = 1, .p = g_new0(XsdPerm, 1) };
    char *path = g_strdup_printf(DOMAIN_PATH_PREFIX "%u", domid);

    if (!store_get(s, path)) {
        create_node(&req, path);        /* as dom0: cannot fail */
    }
    perms.p[0].domid = domid;
    perms.p[0].access = PERM_NONE;
    set_node_perms(&req, store_get(s, path), &perms);
    fire_watches(&req, path, false, NULL, NULL);
    g_free(path);
}

static int domain_add(XsdServer *s, unsigned int domid)
{
    int err = 0;

    if (domid == 0 || domid >= DOMID_FIRST_RESERVED) {
        return -EINVAL;
    }
    if (find_domain(s, domid)) {
        return -EEXIST;
    }
    if (!domain_new(s, domid, &err)) {
        return err;
    }
    make_domain_node(s, domid);
    deliver_event(s, "@introduceDomain", true, NULL, NULL);
    return 0;
}

/*
 * Nothing a domain owned or was granted survives it: a later domain given
 * the same domid must not inherit access (xenstored does the same).
 */
static void disown_domain(XsdServer *s, unsigned int domid)
{
    GHashTableIter iter;
    gpointer value;

    g_hash_table_iter_init(&iter, s->nodes);
    while (g_hash_table_iter_next(&iter, NULL, &value)) {
        XsdNode *node = value;
        bool changed = false;
        unsigned int i = 1;

        if (perms_owner(&node->perms) == domid) {
            node->perms.p[0].domid = 0;
            owned_add(s, domid, -1);
            owned_add(s, 0, 1);
            changed = true;
        }
        while (i < node->perms.n) {
            if (node->perms.p[i].domid == domid) {
                memmove(&node->perms.p[i], &node->perms.p[i + 1],
                        (node->perms.n - i - 1) * sizeof(XsdPerm));
                node->perms.n--;
                changed = true;
            } else {
                i++;
            }
        }
        if (changed) {
            node->gen = ++s->gen;
        }
    }
}

static void domain_close_conns(XsdServer *s, XsdDomain *dom)
{
    GHashTableIter iter;
    gpointer value;
    GPtrArray *victims = g_ptr_array_new();
    guint i;

    g_hash_table_iter_init(&iter, s->conns);
    while (g_hash_table_iter_next(&iter, NULL, &value)) {
        if (((XsdConn *)value)->dom == dom) {
            g_ptr_array_add(victims, value);
        }
    }
    for (i = 0; i < victims->len; i++) {
        conn_close(s, g_ptr_array_index(victims, i));
    }
    g_ptr_array_free(victims, true);
}

static int domain_remove(XsdServer *s, unsigned int domid)
{
    XsdDomain *dom = find_domain(s, domid);
    XsdReq req = { .s = s };
    GHashTableIter iter;
    gpointer value;
    char *path;

    if (!domid) {
        return -EINVAL;
    }
    if (!dom) {
        return -ENOENT;
    }
    domain_close_conns(s, dom);
    domain_close_socket(s, dom);
    path = g_strdup_printf(DOMAIN_PATH_PREFIX "%u", domid);
    if (store_get(s, path)) {
        remove_node(&req, path);
    }
    g_free(path);
    disown_domain(s, domid);
    g_hash_table_iter_init(&iter, s->domains);
    while (g_hash_table_iter_next(&iter, NULL, &value)) {
        XsdDomain *other = value;

        if (other->target == (int)domid) {
            other->target = -1;
        }
    }
    g_hash_table_remove(s->domains, GUINT_TO_POINTER(domid));
    deliver_event(s, "@releaseDomain", true, NULL, NULL);
    return 0;
}

/* ---- the daemon thread ---- */

static void handle_epoll_event(XsdServer *s, const struct epoll_event *ev)
{
    uint64_t kind = ev->data.u64 >> TOKEN_KIND_SHIFT;
    uint64_t id = ev->data.u64 & TOKEN_ID_MASK;
    XsdDomain *dom;
    XsdConn *c;

    switch (kind) {
    case TOKEN_LISTEN:
        dom = find_domain(s, id);
        if (dom) {
            accept_connections(s, dom);
        }
        break;
    case TOKEN_CONN:
        c = g_hash_table_lookup(s->conns, &id);
        if (!c) {
            break;      /* closed since epoll_wait() returned */
        }
        if (ev->events & EPOLLOUT) {
            conn_flush(s, c);
        }
        if (!c->dead && (ev->events & EPOLLIN)) {
            conn_read(s, c);
        }
        /*
         * Hang-up: if it was readable, conn_read() went on to the EOF and
         * closed it (or will, next round); if we are not reading it now,
         * nobody is left to take what it asked for.
         */
        if (!c->dead && (ev->events & (EPOLLHUP | EPOLLERR)) &&
            !(ev->events & EPOLLIN)) {
            conn_close(s, c);
        }
        break;
    default:
        break;          /* the wake-up eventfd: the loop checks stopping */
    }
}

static void *server_thread(void *opaque)
{
    XsdServer *s = opaque;
    struct epoll_event evs[EPOLL_BATCH];

    for (;;) {
        int i, n = epoll_wait(s->epfd, evs, EPOLL_BATCH, -1);

        if (n < 0 && errno != EINTR) {
            break;
        }
        pthread_mutex_lock(&s->lock);
        if (s->stopping) {
            pthread_mutex_unlock(&s->lock);
            break;
        }
        for (i = 0; i < n; i++) {
            handle_epoll_event(s, &evs[i]);
        }
        settle(s);
        pthread_mutex_unlock(&s->lock);
    }
    return NULL;
}

/* ---- setup and the public API ---- */

static void store_init(XsdServer *s)
{
    static const char *const initial[] = {
        "/tool/xenstored", DOMAIN_PATH_PREFIX "0",
    };
    XsdPerms root_perms = { .n = 1, .p = &(XsdPerm){ 0, PERM_NONE } };
    XsdReq req = { .s = s };
    size_t i;

    s->nodes = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                     node_free);
    s->owned = g_new0(unsigned int, DOMID_MAX + 1);
    store_put(s, "/", node_new(&root_perms));
    store_put(s, "@introduceDomain", node_new(&root_perms));
    store_put(s, "@releaseDomain", node_new(&root_perms));
    for (i = 0; i < G_N_ELEMENTS(initial); i++) {
        create_node(&req, initial[i]);
    }
}

static void server_free(XsdServer *s)
{
    GHashTableIter iter;
    gpointer value;

    if (s->conns) {
        g_hash_table_iter_init(&iter, s->conns);
        while (g_hash_table_iter_next(&iter, NULL, &value)) {
            XsdConn *c = value;

            close(c->fd);
            g_ptr_array_add(s->dead, c);
        }
        g_hash_table_destroy(s->conns);
    }
    if (s->domains) {
        g_hash_table_iter_init(&iter, s->domains);
        while (g_hash_table_iter_next(&iter, NULL, &value)) {
            domain_close_socket(s, value);
        }
        g_hash_table_destroy(s->domains);
    }
    if (s->dead) {
        g_ptr_array_free(s->dead, true);
    }
    if (s->dirty) {
        g_ptr_array_free(s->dirty, true);
    }
    if (s->nodes) {
        g_hash_table_destroy(s->nodes);
    }
    if (s->epfd >= 0) {
        close(s->epfd);
    }
    if (s->wakefd >= 0) {
        close(s->wakefd);
    }
    g_free(s->owned);
    g_free(s->dir);
    pthread_mutex_destroy(&s->lock);
    g_free(s);
}

static bool start_thread(XsdServer *s)
{
    sigset_t all, old;
    bool ok;

    /* Signals are for the embedding program's threads, not ours */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    ok = pthread_create(&s->thread, NULL, server_thread, s) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return ok;
}

XsdServer *xsd_start(const char *dir, char **err)
{
    XsdServer *s = g_new0(XsdServer, 1);
    struct epoll_event ev = { .events = EPOLLIN };
    int ret = 0;

    pthread_mutex_init(&s->lock, NULL);
    s->dir = g_strdup(dir);
    s->trace = getenv("XSD_TRACE") != NULL;
    s->domains = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL,
                                       domain_free);
    s->conns = g_hash_table_new(g_int64_hash, g_int64_equal);
    s->dirty = g_ptr_array_new();
    s->dead = g_ptr_array_new_with_free_func(conn_free);
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    s->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    store_init(s);

    ev.data.u64 = make_token(TOKEN_WAKE, 0);
    if (g_mkdir_with_parents(dir, 0700) < 0 || s->epfd < 0 ||
        s->wakefd < 0 ||
        epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->wakefd, &ev) < 0) {
        ret = -errno;
    } else if (!domain_new(s, 0, &ret)) {
        /* ret set */
    } else if (!start_thread(s)) {
        ret = -EAGAIN;
    }
    if (ret) {
        if (err) {
            *err = g_strdup_printf("xenstored in %s: %s", dir,
                                   g_strerror(-ret));
        }
        server_free(s);
        return NULL;
    }
    s->thread_started = true;
    return s;
}

int xsd_add_domain(XsdServer *s, unsigned int domid)
{
    int ret;

    pthread_mutex_lock(&s->lock);
    ret = domain_add(s, domid);
    settle(s);
    pthread_mutex_unlock(&s->lock);
    return ret;
}

int xsd_remove_domain(XsdServer *s, unsigned int domid)
{
    int ret;

    pthread_mutex_lock(&s->lock);
    ret = domain_remove(s, domid);
    settle(s);
    pthread_mutex_unlock(&s->lock);
    return ret;
}

char *xsd_socket_path(XsdServer *s, unsigned int domid)
{
    return socket_path(s, domid);
}

void xsd_get_stats(XsdServer *s, XsdStats *stats)
{
    GHashTableIter iter;
    gpointer value;

    pthread_mutex_lock(&s->lock);
    *stats = s->stats;
    stats->connections = g_hash_table_size(s->conns);
    stats->domains = g_hash_table_size(s->domains);
    stats->nodes = g_hash_table_size(s->nodes);
    stats->watches = 0;
    stats->transactions = 0;
    stats->out_bytes = 0;
    g_hash_table_iter_init(&iter, s->conns);
    while (g_hash_table_iter_next(&iter, NULL, &value)) {
        XsdConn *c = value;

        stats->watches += c->watches->len;
        stats->transactions += g_hash_table_size(c->txs);
        stats->out_bytes += conn_out_bytes(c);
    }
    pthread_mutex_unlock(&s->lock);
}

void xsd_stop(XsdServer *s)
{
    uint64_t one = 1;

    if (!s) {
        return;
    }
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    pthread_mutex_unlock(&s->lock);
    if (write(s->wakefd, &one, sizeof(one)) != sizeof(one)) {
        /* eventfd at its maximum: it is readable anyway */
    }
    pthread_join(s->thread, NULL);
    server_free(s);
}
