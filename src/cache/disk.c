/*
 * disk.c - the cache's disk tier (store.h): one file per object under a
 * directory, written by a thread of its own, found again after a restart.
 *
 * A file is DIR/XX/HEX, HEX the SHA-256 of the key (XX its first byte).
 * It is written as DIR/XX/.tmp-HEX-N and renamed into place, so a reader
 * sees a whole file or none; a crash mid-write leaves only a temporary,
 * removed at the next start. Its bytes (little-endian):
 *
 *   "WCD1" | key_len u32 | vary_len u32 | targeted_len u32 | head_len u32 |
 *   body_len u64 | lifetime i64 | key | vary | targeted | head | body | crc32
 *
 * the head being entry.c's encoding (with its own CRC) and the last CRC
 * over everything before it. A file that does not check (torn by a power
 * loss, changed on disk, of another key) is a miss and is removed.
 *
 * The index (digest, key, size, a reference bit) lives in memory: rebuilt
 * by the writer thread at start from the files' first bytes, so purges by
 * prefix and the size bound work across restarts. Eviction is CLOCK over
 * the order of writing: the oldest file goes unless it was read since its
 * last pass. Reads happen on the caller's thread (a worker), from the page
 * cache in the common case, as nginx's proxy_cache reads without aio.
 *
 * Locks: one mutex for the index and the queue, never held for I/O.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <zlib.h>

#include "cache/store.h"
#include "core/log.h"

#define MAGIC "WCD1"
#define FIXED_LEN (4 + 4 * 4 + 8 + 8)
#define MAX_QUEUE 1024
#define MAX_FILE (1ull << 32)

typedef struct dentry {
    uint8_t digest[32];
    char *key;
    size_t key_len;
    uint64_t size;
    bool ref;
    struct dentry *hnext;
    struct dentry *older, *newer; /* the CLOCK order */
} dentry;

typedef struct qitem {
    weir_cobj *o;
    struct qitem *next;
} qitem;

struct weir_cdisk {
    char *dir;
    uint64_t max_bytes;
    pthread_mutex_t mu;
    pthread_cond_t work, idle;
    pthread_t thread;
    bool stop, busy, started;
    dentry **buckets;
    size_t n_buckets, n;
    dentry *oldest, *newest;
    uint64_t bytes, evictions, errors, dropped;
    qitem *q_head, *q_tail;
    size_t q_len;
    /* the write in progress: removed meanwhile, it is undone */
    uint8_t writing[32];
    const char *writing_key; /* its key, NULL when no write is in progress */
    bool writing_cancelled;
    bool scanned; /* the index holds every file */
    unsigned seq;
};

/* ---- names ---- */

static bool digest(const char *key, size_t len, uint8_t out[32])
{
    unsigned n = 0;
    return EVP_Digest(key, len, out, &n, EVP_sha256(), NULL) == 1 && n == 32;
}

static void hex(const uint8_t d[32], char out[65])
{
    static const char x[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = x[d[i] >> 4];
        out[2 * i + 1] = x[d[i] & 15];
    }
    out[64] = '\0';
}

static void path_of(const weir_cdisk *d, const uint8_t dg[32], char *out, size_t cap)
{
    char h[65];
    hex(dg, h);
    snprintf(out, cap, "%s/%.2s/%s", d->dir, h, h);
}

/* ---- the encoding ---- */

static void put32(char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (char)(v >> (8 * i));
}

static void put64(char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (char)(v >> (8 * i));
}

static uint32_t get32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
}

static uint64_t get64(const char *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* Everything before the body; *len its bytes. */
static char *encode_front(const weir_cobj *o, size_t *len)
{
    const weir_chead *h = weir__chead(o);
    size_t kl = strlen(o->key), tl = h->targeted ? strlen(h->targeted) : 0;
    size_t n = FIXED_LEN + kl + h->vary_len + tl + h->e.len;
    char *b = malloc(n);
    if (!b)
        return NULL;
    memcpy(b, MAGIC, 4);
    put32(b + 4, (uint32_t)kl);
    put32(b + 8, (uint32_t)h->vary_len);
    put32(b + 12, (uint32_t)tl);
    put32(b + 16, (uint32_t)h->e.len);
    put64(b + 20, o->body_len);
    put64(b + 28, (uint64_t)h->lifetime);
    char *p = b + FIXED_LEN;
    memcpy(p, o->key, kl);
    p += kl;
    memcpy(p, h->vary, h->vary_len);
    p += h->vary_len;
    if (tl)
        memcpy(p, h->targeted, tl);
    p += tl;
    memcpy(p, h->e.buf, h->e.len);
    *len = n;
    return b;
}

char *weir__cdisk_encode(const weir_cobj *o, size_t *len)
{
    size_t fl = 0;
    char *front = encode_front(o, &fl);
    char *b = front ? malloc(fl + o->body_len + 4) : NULL;
    if (!b) {
        free(front);
        return NULL;
    }
    memcpy(b, front, fl);
    memcpy(b + fl, o->body, o->body_len);
    put32(b + fl + o->body_len, (uint32_t)crc32(0L, (const Bytef *)b, (uInt)(fl + o->body_len)));
    free(front);
    *len = fl + o->body_len + 4;
    return b;
}

weir_cobj *weir__cdisk_decode(const char *b, size_t len, const char *want, size_t want_len)
{
    if (len < FIXED_LEN + 4 || len > MAX_FILE || memcmp(b, MAGIC, 4) != 0)
        return NULL;
    uint64_t kl = get32(b + 4), vl = get32(b + 8), tl = get32(b + 12), hl = get32(b + 16);
    uint64_t bl = get64(b + 20);
    int64_t lifetime = (int64_t)get64(b + 28);
    uint64_t need = FIXED_LEN + kl + vl + tl + hl;
    if (bl > MAX_FILE || need > MAX_FILE || need + bl + 4 != len)
        return NULL;
    if (get32(b + len - 4) != (uint32_t)crc32(0L, (const Bytef *)b, (uInt)(len - 4)))
        return NULL;
    const char *key = b + FIXED_LEN, *vary = key + kl, *targ = vary + vl, *head = targ + tl;
    if (want && (kl != want_len || memcmp(key, want, want_len) != 0))
        return NULL;
    char tbuf[256];
    if (tl >= sizeof(tbuf) || memchr(vary, '\0', vl) || memchr(targ, '\0', tl))
        return NULL;
    memcpy(tbuf, targ, tl);
    tbuf[tl] = '\0';
    weir_centry e;
    if (weir__centry_decode(&e, head, hl) < 0)
        return NULL;
    char *body = malloc(bl ? bl : 1);
    if (!body) {
        weir__centry_free(&e);
        return NULL;
    }
    memcpy(body, head + hl, bl);
    return weir__cstore_obj_with(key, kl, &e, tl ? tbuf : NULL, lifetime, vary, vl, body, bl);
}

/* ---- the index (d->mu held) ---- */

static dentry **slot_of(weir_cdisk *d, const uint8_t dg[32])
{
    uint64_t h;
    memcpy(&h, dg, sizeof(h));
    dentry **p = &d->buckets[h & (d->n_buckets - 1)];
    while (*p && memcmp((*p)->digest, dg, 32) != 0)
        p = &(*p)->hnext;
    return p;
}

static void grow(weir_cdisk *d)
{
    size_t nb = d->n_buckets * 2;
    dentry **b = calloc(nb, sizeof(*b));
    if (!b)
        return;
    for (size_t i = 0; i < d->n_buckets; i++) {
        for (dentry *e = d->buckets[i], *n; e; e = n) {
            n = e->hnext;
            uint64_t h;
            memcpy(&h, e->digest, sizeof(h));
            e->hnext = b[h & (nb - 1)];
            b[h & (nb - 1)] = e;
        }
    }
    free(d->buckets);
    d->buckets = b;
    d->n_buckets = nb;
}

static void order_unlink(weir_cdisk *d, dentry *e)
{
    if (e->older)
        e->older->newer = e->newer;
    else
        d->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        d->newest = e->older;
    e->older = e->newer = NULL;
}

static void order_push(weir_cdisk *d, dentry *e)
{
    e->older = d->newest;
    e->newer = NULL;
    if (d->newest)
        d->newest->newer = e;
    else
        d->oldest = e;
    d->newest = e;
}

/* Takes e out of the index (the caller frees it and its file). */
static void index_drop(weir_cdisk *d, dentry *e)
{
    dentry **p = slot_of(d, e->digest);
    if (*p == e)
        *p = e->hnext;
    order_unlink(d, e);
    d->bytes -= e->size;
    d->n--;
}

static void dentry_free(dentry *e)
{
    free(e->key);
    free(e);
}

/* Records a file (replacing what was under its digest); returns the
 * entries eviction took out, linked by hnext, for the caller to unlink. */
static dentry *index_add(weir_cdisk *d, const uint8_t dg[32], const char *key, size_t kl,
                         uint64_t size)
{
    dentry *gone = NULL;
    dentry **p = slot_of(d, dg);
    if (*p) {
        dentry *old = *p;
        index_drop(d, old);
        dentry_free(old); /* its file is the new one now */
    }
    dentry *e = calloc(1, sizeof(*e));
    char *k = e ? malloc(kl + 1) : NULL;
    if (!k) {
        free(e);
        return NULL;
    }
    memcpy(k, key, kl);
    k[kl] = '\0';
    memcpy(e->digest, dg, 32);
    e->key = k;
    e->key_len = kl;
    e->size = size;
    if (d->n >= d->n_buckets)
        grow(d);
    p = slot_of(d, dg);
    e->hnext = *p;
    *p = e;
    order_push(d, e);
    d->bytes += size;
    d->n++;
    while (d->bytes > d->max_bytes && d->oldest && d->oldest != e) {
        dentry *v = d->oldest;
        if (v->ref) { /* read since its last pass: another round */
            v->ref = false;
            order_unlink(d, v);
            order_push(d, v);
            continue;
        }
        index_drop(d, v);
        d->evictions++;
        v->hnext = gone;
        gone = v;
    }
    return gone;
}

static void unlink_all(weir_cdisk *d, dentry *list)
{
    char path[4096];
    for (dentry *e = list, *n; e; e = n) {
        n = e->hnext;
        path_of(d, e->digest, path, sizeof(path));
        unlink(path);
        dentry_free(e);
    }
}

/* ---- the writer thread ---- */

static bool write_file(weir_cdisk *d, weir_cobj *o, uint64_t *size)
{
    size_t fl = 0;
    char *front = encode_front(o, &fl);
    if (!front)
        return false;
    char crc[4];
    uint32_t c = (uint32_t)crc32(0L, (const Bytef *)front, (uInt)fl);
    c = (uint32_t)crc32(c, (const Bytef *)o->body, (uInt)o->body_len);
    put32(crc, c);
    char h[65], tmp[4096], path[4096];
    hex(o->digest, h);
    snprintf(tmp, sizeof(tmp), "%s/%.2s/.tmp-%s-%u", d->dir, h, h, d->seq++);
    path_of(d, o->digest, path, sizeof(path));
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    bool ok = fd >= 0;
    struct iovec iov[3] = {{front, fl}, {o->body, o->body_len}, {crc, 4}};
    size_t total = fl + o->body_len + 4, done = 0;
    int iv = 0;
    while (ok && done < total) {
        ssize_t w = writev(fd, iov + iv, 3 - iv);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            ok = false;
            break;
        }
        done += (size_t)w;
        while (iv < 3 && (size_t)w >= iov[iv].iov_len) {
            w -= (ssize_t)iov[iv].iov_len;
            iv++;
        }
        if (iv < 3) {
            iov[iv].iov_base = (char *)iov[iv].iov_base + w;
            iov[iv].iov_len -= (size_t)w;
        }
    }
    if (fd >= 0 && close(fd) < 0)
        ok = false;
    free(front);
    if (ok && rename(tmp, path) == 0) {
        *size = total;
        return true;
    }
    if (fd >= 0)
        unlink(tmp);
    return false;
}

/* Reads the index back from the files; removes temporaries a crash left. */
static void scan(weir_cdisk *d)
{
    char sub[4096], path[4096 + 512];
    for (int i = 0; i < 256; i++) {
        snprintf(sub, sizeof(sub), "%s/%02x", d->dir, i);
        DIR *dir = opendir(sub);
        if (!dir)
            continue;
        struct dirent *de;
        while ((de = readdir(dir))) {
            if (de->d_name[0] == '.' && strncmp(de->d_name, ".tmp-", 5) == 0) {
                snprintf(path, sizeof(path), "%s/%s", sub, de->d_name);
                unlink(path);
                continue;
            }
            if (strlen(de->d_name) != 64)
                continue;
            snprintf(path, sizeof(path), "%s/%s", sub, de->d_name);
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            struct stat st;
            char fixed[FIXED_LEN];
            if (fd < 0)
                continue;
            bool ok = fstat(fd, &st) == 0 && pread(fd, fixed, FIXED_LEN, 0) == FIXED_LEN &&
                      memcmp(fixed, MAGIC, 4) == 0 && get32(fixed + 4) < 65536;
            char *key = NULL;
            size_t kl = ok ? get32(fixed + 4) : 0;
            if (ok) {
                key = malloc(kl + 1);
                ok = key && pread(fd, key, kl, FIXED_LEN) == (ssize_t)kl;
            }
            close(fd);
            uint8_t dg[32];
            char h[65];
            ok = ok && digest(key, kl, dg);
            if (ok)
                hex(dg, h);
            if (!ok || strcmp(h, de->d_name) != 0) {
                unlink(path); /* not ours, or of another key: a miss anyway */
                free(key);
                continue;
            }
            pthread_mutex_lock(&d->mu);
            dentry *gone = NULL;
            if (!*slot_of(d, dg)) /* a newer write got there first */
                gone = index_add(d, dg, key, kl, (uint64_t)st.st_size);
            pthread_mutex_unlock(&d->mu);
            unlink_all(d, gone);
            free(key);
        }
        closedir(dir);
    }
}

static void *writer(void *arg)
{
    weir_cdisk *d = arg;
    scan(d);
    pthread_mutex_lock(&d->mu);
    d->scanned = true;
    pthread_cond_broadcast(&d->idle);
    for (;;) {
        while (!d->q_head && !d->stop) {
            d->busy = false;
            pthread_cond_broadcast(&d->idle);
            pthread_cond_wait(&d->work, &d->mu);
        }
        if (!d->q_head)
            break;
        qitem *q = d->q_head;
        d->q_head = q->next;
        if (!d->q_head)
            d->q_tail = NULL;
        d->q_len--;
        d->busy = true;
        memcpy(d->writing, q->o->digest, 32);
        d->writing_key = q->o->key;
        d->writing_cancelled = false;
        pthread_mutex_unlock(&d->mu);
        uint64_t size = 0;
        bool ok = write_file(d, q->o, &size);
        pthread_mutex_lock(&d->mu);
        d->writing_key = NULL;
        dentry *gone = NULL;
        if (ok && d->writing_cancelled) {
            char path[4096];
            path_of(d, q->o->digest, path, sizeof(path));
            unlink(path);
        } else if (ok) {
            gone = index_add(d, q->o->digest, q->o->key, strlen(q->o->key), size);
        } else {
            d->errors++;
        }
        pthread_mutex_unlock(&d->mu);
        unlink_all(d, gone);
        weir__cobj_unref(q->o);
        free(q);
        pthread_mutex_lock(&d->mu);
    }
    d->busy = false;
    pthread_cond_broadcast(&d->idle);
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

/* ---- the calls ---- */

weir_cdisk *weir__cdisk_open(const char *dir, uint64_t max_bytes, char *err, size_t err_len)
{
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        snprintf(err, err_len, "cache directory %s: %s", dir, strerror(errno));
        return NULL;
    }
    char sub[4096];
    for (int i = 0; i < 256; i++) {
        snprintf(sub, sizeof(sub), "%s/%02x", dir, i);
        if (mkdir(sub, 0700) < 0 && errno != EEXIST) {
            snprintf(err, err_len, "cache directory %s: %s", sub, strerror(errno));
            return NULL;
        }
    }
    weir_cdisk *d = calloc(1, sizeof(*d));
    if (d) {
        d->dir = strdup(dir);
        d->n_buckets = 1024;
        d->buckets = calloc(d->n_buckets, sizeof(*d->buckets));
    }
    if (!d || !d->dir || !d->buckets) {
        if (d) {
            free(d->dir);
            free(d->buckets);
        }
        free(d);
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    d->max_bytes = max_bytes;
    d->busy = true; /* the scan */
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->work, NULL);
    pthread_cond_init(&d->idle, NULL);
    /* The writer takes no signal: the process's are the main thread's. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&d->thread, NULL, writer, d);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        snprintf(err, err_len, "cannot start the cache writer thread");
        d->started = false;
        weir__cdisk_close(d);
        return NULL;
    }
    d->started = true;
    return d;
}

void weir__cdisk_close(weir_cdisk *d)
{
    if (!d)
        return;
    if (d->started) {
        pthread_mutex_lock(&d->mu);
        d->stop = true;
        pthread_cond_signal(&d->work);
        pthread_mutex_unlock(&d->mu);
        pthread_join(d->thread, NULL);
    }
    for (size_t i = 0; i < d->n_buckets; i++)
        for (dentry *e = d->buckets[i], *n; e; e = n) {
            n = e->hnext;
            dentry_free(e);
        }
    for (qitem *q = d->q_head, *n; q; q = n) {
        n = q->next;
        weir__cobj_unref(q->o);
        free(q);
    }
    pthread_cond_destroy(&d->work);
    pthread_cond_destroy(&d->idle);
    pthread_mutex_destroy(&d->mu);
    free(d->buckets);
    free(d->dir);
    free(d);
}

void weir__cdisk_put(weir_cdisk *d, weir_cobj *o)
{
    qitem *q = malloc(sizeof(*q));
    if (!q)
        return;
    q->o = weir__cobj_ref(o);
    q->next = NULL;
    pthread_mutex_lock(&d->mu);
    if (d->q_len >= MAX_QUEUE) { /* the disk is behind: this one stays in memory only */
        d->dropped++;
        pthread_mutex_unlock(&d->mu);
        weir__cobj_unref(q->o);
        free(q);
        return;
    }
    if (d->q_tail)
        d->q_tail->next = q;
    else
        d->q_head = q;
    d->q_tail = q;
    d->q_len++;
    d->busy = true;
    pthread_cond_signal(&d->work);
    pthread_mutex_unlock(&d->mu);
}

void weir__cdisk_sync(weir_cdisk *d)
{
    pthread_mutex_lock(&d->mu);
    while (d->busy || d->q_head)
        pthread_cond_wait(&d->idle, &d->mu);
    pthread_mutex_unlock(&d->mu);
}

static void forget(weir_cdisk *d, const uint8_t dg[32])
{
    pthread_mutex_lock(&d->mu);
    dentry **p = slot_of(d, dg);
    dentry *e = *p;
    if (e)
        index_drop(d, e);
    pthread_mutex_unlock(&d->mu);
    if (e)
        dentry_free(e);
}

weir_cobj *weir__cdisk_get(weir_cdisk *d, const char *key, size_t key_len)
{
    uint8_t dg[32];
    if (!digest(key, key_len, dg))
        return NULL;
    pthread_mutex_lock(&d->mu);
    dentry *e = *slot_of(d, dg);
    if (e)
        e->ref = true;
    bool look = e || !d->scanned; /* while the scan runs the index is not whole */
    pthread_mutex_unlock(&d->mu);
    if (!look)
        return NULL;
    char path[4096];
    path_of(d, dg, path, sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    char *buf = NULL;
    bool ok = fstat(fd, &st) == 0 && (uint64_t)st.st_size <= MAX_FILE &&
              (buf = malloc((size_t)st.st_size + 1)) != NULL;
    size_t got = 0;
    while (ok && got < (size_t)st.st_size) {
        ssize_t r = pread(fd, buf + got, (size_t)st.st_size - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            ok = false;
        else
            got += (size_t)r;
    }
    close(fd);
    weir_cobj *o = ok ? weir__cdisk_decode(buf, got, key, key_len) : NULL;
    free(buf);
    if (!o && ok) {
        weir_log_warn("cache: %s does not check: removed (a miss)", path);
        pthread_mutex_lock(&d->mu);
        d->errors++;
        pthread_mutex_unlock(&d->mu);
        unlink(path);
        forget(d, dg);
    }
    return o;
}

/* A removal waits for the scan at start, or a file it has not indexed yet
 * would come back after it (d->mu held). */
static void wait_scanned(weir_cdisk *d)
{
    while (!d->scanned)
        pthread_cond_wait(&d->idle, &d->mu);
}

bool weir__cdisk_remove(weir_cdisk *d, const char *key, size_t key_len)
{
    uint8_t dg[32];
    if (!digest(key, key_len, dg))
        return false;
    pthread_mutex_lock(&d->mu);
    wait_scanned(d);
    bool any = false;
    for (qitem **q = &d->q_head; *q;) { /* a queued write of it is void */
        if (memcmp((*q)->o->digest, dg, 32) == 0) {
            qitem *x = *q;
            *q = x->next;
            d->q_len--;
            weir__cobj_unref(x->o);
            free(x);
            any = true;
            continue;
        }
        q = &(*q)->next;
    }
    d->q_tail = NULL;
    for (qitem *q = d->q_head; q; q = q->next)
        d->q_tail = q;
    if (d->writing_key && memcmp(d->writing, dg, 32) == 0)
        d->writing_cancelled = true;
    dentry **p = slot_of(d, dg);
    dentry *e = *p;
    if (e)
        index_drop(d, e);
    pthread_mutex_unlock(&d->mu);
    if (e) {
        e->hnext = NULL;
        unlink_all(d, e);
        return true;
    }
    return any;
}

size_t weir__cdisk_remove_prefix(weir_cdisk *d, const char *prefix, size_t len)
{
    size_t n = 0;
    dentry *gone = NULL;
    pthread_mutex_lock(&d->mu);
    wait_scanned(d);
    for (qitem **q = &d->q_head; *q;) {
        if (strncmp((*q)->o->key, prefix, len) == 0) {
            qitem *x = *q;
            *q = x->next;
            d->q_len--;
            weir__cobj_unref(x->o);
            free(x);
            continue;
        }
        q = &(*q)->next;
    }
    d->q_tail = NULL;
    for (qitem *q = d->q_head; q; q = q->next)
        d->q_tail = q;
    if (d->writing_key && strncmp(d->writing_key, prefix, len) == 0)
        d->writing_cancelled = true;
    for (dentry *e = d->oldest, *next; e; e = next) {
        next = e->newer;
        if (e->key_len >= len && memcmp(e->key, prefix, len) == 0) {
            index_drop(d, e);
            e->hnext = gone;
            gone = e;
            n++;
        }
    }
    pthread_mutex_unlock(&d->mu);
    unlink_all(d, gone);
    return n;
}

void weir__cdisk_stats(weir_cdisk *d, weir_cache_stats *out)
{
    pthread_mutex_lock(&d->mu);
    out->disk_objects = d->n;
    out->disk_bytes = d->bytes;
    out->disk_max_bytes = d->max_bytes;
    out->disk_evictions = d->evictions;
    out->disk_errors = d->errors;
    pthread_mutex_unlock(&d->mu);
}
