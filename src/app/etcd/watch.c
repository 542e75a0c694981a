/*
 * watch.c - a running config source from etcd (source.h): the first
 * load, the watch thread, and each new set of keys applied on the main
 * thread.
 *
 * The watch thread never stops while weir runs: etcd away is a loop of
 * reconnects (100 ms doubling to 5 s), each resuming the watch from the
 * last revision seen; a revision compacted meanwhile makes it read the
 * whole prefix again. Requests never wait for it: they use the snapshot
 * in place, whatever etcd does.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "app/admin/toml_edit.h"
#include "app/etcd/fleet.h"
#include "app/etcd/source.h"
#include "app/etcd/split.h"
#include "app/strbuf.h"

#include "app/acme/manager.h"
#include "app/toml/toml.h"
#include "weir/log.h"

struct weir_etcd_source {
    char *name;       /* the URL, password masked */
    char *prefix_dir; /* "/PREFIX/": what is read and watched */
    weir_etcd_url url;
    char *local_path, *local_text; /* the --local file, main thread */
    size_t local_len;
    char *cacert, *cert, *key, *cache_path, *instance_id; /* from its [basic] */
    weir_etcd *main_e;                                    /* main thread's client */
    weir_etcd_kvs served; /* the keys the running snapshot is of (main thread) */
    bool from_cache;      /* the first snapshot is the cache's */
    weir_app *app;
    weir_server *srv;
    weir_fleet *fleet;
    /* Between the threads, under mu. */
    pthread_mutex_t mu;
    weir_etcd_kvs *pending; /* newest set not applied yet */
    bool posted;            /* a main-thread call for it is queued */
    bool connected;
    char *etcd_error;           /* why etcd is away, or NULL */
    int64_t seen_revision;      /* newest revision the watch saw */
    int64_t served_revision;    /* of the running snapshot */
    uint64_t applied, rejected; /* sets that loaded / did not */
    int64_t rejected_revision;  /* of the last rejected set */
    json_t *rejected_errors;    /* its errors (array) */
    /* The watch thread. */
    pthread_t thread;
    bool thread_started;
    _Atomic bool stop;
    weir_etcd *watch_e;
    weir_etcd *ack_e;   /* its client for challenge confirmations, made when needed */
    char **chal;        /* the challenge keys it applied, so that a re-read drops */
    size_t n_chal;      /* those gone meanwhile */
    weir_etcd_kvs wkvs; /* its copy of the keys */
    int64_t wrev;
    uint32_t backoff_ms;
};

static void kvs_copy(const weir_etcd_kvs *from, weir_etcd_kvs *to)
{
    memset(to, 0, sizeof(*to));
    to->revision = from->revision;
    to->v = calloc(from->n ? from->n : 1, sizeof(*to->v));
    for (size_t i = 0; to->v && i < from->n; i++) {
        weir_etcd_kv *d = &to->v[i];
        *d = from->v[i];
        d->key = malloc(from->v[i].key_len + 1);
        d->value = malloc(from->v[i].value_len + 1);
        if (!d->key || !d->value) {
            free(d->key);
            free(d->value);
            break;
        }
        memcpy(d->key, from->v[i].key, d->key_len + 1);
        memcpy(d->value, from->v[i].value, d->value_len + 1);
        to->n++;
    }
}

/* Whether key is under prefix_dir and not the fleet's. */
static bool config_key(const weir_etcd_source *s, const char *key, size_t len)
{
    size_t p = strlen(s->prefix_dir);
    if (len <= p || memcmp(key, s->prefix_dir, p) != 0)
        return false;
    return !weir__etcd_fleet_key(key + p, len - p);
}

/* ---- applying a set (main thread) ---- */

typedef struct load_arg {
    const char *text;
    size_t len;
    const weir_etcd_map *map;
    const char *name;
} load_arg;

static weir_config *load_text(void *arg, weir_cfg_errors *errs)
{
    load_arg *a = arg;
    weir_config *c = weir__config_load(a->text, a->len, WEIR_ETCD_TEXT_NAME, errs);
    weir__etcd_map_errors(a->map, errs);
    if (c) {
        char *f = strdup(a->name);
        if (f) {
            free(c->file);
            c->file = f;
        }
    }
    return c;
}

/* Writes text over path: a synced temporary file renamed over it. */
/* The keys as `weir config pull` prints them, over the cache file. */
static void write_cache(weir_etcd_source *s, const weir_etcd_kvs *kvs)
{
    if (!s->cache_path)
        return;
    weir_cfg_errors errs = {0};
    size_t len;
    char *text =
        weir__etcd_assemble(kvs, s->url.prefix, s->name, NULL, NULL, 0, true, &len, NULL, &errs);
    if (!text || weir__admin_write_file(s->cache_path, text, len, 0600) != 0)
        weir_log(WEIR_LEVEL_ERROR, "config_cache %s: not written: %s", s->cache_path,
                 text ? strerror(errno) : "the keys do not assemble");
    free(text);
    weir__cfg_errors_free(&errs);
}

/* A JSON string of text, its bytes that are not UTF-8 (a key's name
 * may hold any) as '?'. */
static json_t *json_text(const char *text)
{
    json_t *j = json_string(text);
    if (j)
        return j;
    char *copy = strdup(text);
    if (!copy)
        return NULL;
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    j = json_string(copy);
    free(copy);
    return j;
}

static void reject(weir_etcd_source *s, int64_t revision, const weir_cfg_errors *errs, bool log)
{
    json_t *a = json_array();
    for (size_t i = 0; i < errs->n; i++) {
        if (log)
            weir_log(WEIR_LEVEL_ERROR, "%s", errs->v[i]);
        json_array_append_new(a, json_text(errs->v[i]));
    }
    pthread_mutex_lock(&s->mu);
    s->rejected++;
    s->rejected_revision = revision;
    json_decref(s->rejected_errors);
    s->rejected_errors = a;
    int64_t served = s->served_revision;
    pthread_mutex_unlock(&s->mu);
    weir_log(WEIR_LEVEL_ERROR,
             "etcd revision %" PRId64 " rejected (%zu error%s): the running configuration "
             "(revision %" PRId64 ") stays",
             revision, errs->n, errs->n == 1 ? "" : "s", served);
}

/* Builds and swaps the snapshot of kvs (taken over on success). An etcd
 * change that fails is a rejection (counted, shown in the admin API); a
 * local reload that fails is only its caller's error. */
static int apply(weir_etcd_source *s, weir_etcd_kvs *kvs, bool from_etcd, weir_cfg_errors *errs_out)
{
    weir_cfg_errors errs = {0};
    weir_etcd_map *map = NULL;
    size_t len = 0;
    char *text = weir__etcd_assemble(kvs, s->url.prefix, s->name, s->local_path, s->local_text,
                                     s->local_len, false, &len, &map, &errs);
    int rc = WEIR_ERR_INVAL;
    if (!text) {
        if (from_etcd) {
            reject(s, kvs->revision, &errs, true);
        } else {
            for (size_t i = 0; i < errs.n; i++)
                weir_log(WEIR_LEVEL_ERROR, "%s", errs.v[i]);
            weir_log(WEIR_LEVEL_ERROR,
                     "reload failed (%zu errors): the running configuration "
                     "stays",
                     errs.n);
        }
    } else {
        load_arg a = {text, len, map, s->name};
        rc = weir__app_reload_from(s->app, load_text, &a, s->name, s->srv, &errs);
        if (rc != WEIR_OK && from_etcd)
            reject(s, kvs->revision, &errs, false);
    }
    free(text);
    weir__etcd_map_free(map);
    if (rc == WEIR_OK) {
        write_cache(s, kvs);
        weir__etcd_kvs_free(&s->served);
        s->served = *kvs;
        memset(kvs, 0, sizeof(*kvs));
        pthread_mutex_lock(&s->mu);
        s->served_revision = s->served.revision;
        s->applied++;
        pthread_mutex_unlock(&s->mu);
        weir__fleet_set_revision(s->fleet, s->served.revision);
        weir_log(WEIR_LEVEL_INFO, "etcd revision %" PRId64 " is served", s->served.revision);
    }
    for (size_t i = 0; errs_out && i < errs.n; i++) {
        char **nv = realloc(errs_out->v, (errs_out->n + 1) * sizeof(char *));
        if (!nv)
            break;
        errs_out->v = nv;
        errs_out->v[errs_out->n++] = errs.v[i];
        errs.v[i] = NULL;
    }
    weir__cfg_errors_free(&errs);
    return rc;
}

static void apply_pending(void *arg)
{
    weir_etcd_source *s = arg;
    pthread_mutex_lock(&s->mu);
    weir_etcd_kvs *k = s->pending;
    s->pending = NULL;
    s->posted = false;
    pthread_mutex_unlock(&s->mu);
    if (!k)
        return;
    apply(s, k, true, NULL);
    weir__etcd_kvs_free(k);
    free(k);
}

int weir__etcd_source_reload(weir_etcd_source *s, weir_cfg_errors *errs)
{
    /* The local file read again; the old text stays unless the new one
     * loads, as a bad file does not replace a good one. */
    char *old_text = s->local_text;
    size_t old_len = s->local_len;
    if (s->local_path) {
        size_t len = 0;
        char err[600];
        char *text = weir__admin_read_file(s->local_path, &len, err, sizeof(err));
        if (!text) {
            weir_log(WEIR_LEVEL_ERROR, "reload: %s; the running configuration stays", err);
            if (errs)
                weir__cfg_errors_add(errs, "%s", err);
            return WEIR_ERR_INVAL;
        }
        s->local_text = text;
        s->local_len = len;
    }
    weir_etcd_kvs k;
    kvs_copy(&s->served, &k);
    int rc = apply(s, &k, false, errs);
    weir__etcd_kvs_free(&k);
    if (s->local_text != old_text) {
        if (rc == WEIR_OK) {
            free(old_text);
        } else {
            free(s->local_text);
            s->local_text = old_text;
            s->local_len = old_len;
        }
    }
    return rc;
}

/* ---- the watch thread ---- */

static void post(weir_etcd_source *s)
{
    weir_etcd_kvs *k = malloc(sizeof(*k));
    if (!k)
        return;
    kvs_copy(&s->wkvs, k);
    pthread_mutex_lock(&s->mu);
    if (s->pending) {
        weir__etcd_kvs_free(s->pending);
        free(s->pending);
    }
    s->pending = k;
    bool call = !s->posted;
    s->posted = true;
    pthread_mutex_unlock(&s->mu);
    if (call && weir_server_call_main(s->srv, apply_pending, s) != WEIR_OK) {
        pthread_mutex_lock(&s->mu);
        s->posted = false;
        pthread_mutex_unlock(&s->mu);
    }
}

static void note_down(weir_etcd_source *s, const char *why)
{
    pthread_mutex_lock(&s->mu);
    bool was = s->connected || !s->etcd_error;
    s->connected = false;
    free(s->etcd_error);
    s->etcd_error = strdup(why);
    int64_t served = s->served_revision;
    pthread_mutex_unlock(&s->mu);
    if (was)
        weir_log(WEIR_LEVEL_WARN, "etcd: %s; serving revision %" PRId64 " meanwhile, reconnecting",
                 why, served);
}

static void note_up(void *arg)
{
    weir_etcd_source *s = arg;
    s->backoff_ms = 100;
    pthread_mutex_lock(&s->mu);
    bool was = !s->connected;
    s->connected = true;
    free(s->etcd_error);
    s->etcd_error = NULL;
    pthread_mutex_unlock(&s->mu);
    if (was)
        weir_log(WEIR_LEVEL_INFO, "etcd: watching %s from revision %" PRId64, s->name, s->wrev + 1);
}

static void pause_ms(weir_etcd_source *s, uint32_t ms)
{
    for (uint32_t t = 0; t < ms && !atomic_load(&s->stop); t += 50)
        usleep(50000);
}

static void kv_drop(weir_etcd_kvs *k, size_t i)
{
    free(k->v[i].key);
    free(k->v[i].value);
    memmove(&k->v[i], &k->v[i + 1], (k->n - i - 1) * sizeof(k->v[0]));
    k->n--;
}

/* Applies one change to the sorted set; false on OOM. */
static bool kvs_change(weir_etcd_kvs *k, const weir_etcd_event *ev)
{
    size_t i = 0;
    int c = 1;
    for (; i < k->n; i++) {
        size_t m = k->v[i].key_len < ev->kv.key_len ? k->v[i].key_len : ev->kv.key_len;
        c = memcmp(k->v[i].key, ev->kv.key, m);
        if (c == 0)
            c = k->v[i].key_len < ev->kv.key_len ? -1 : k->v[i].key_len > ev->kv.key_len;
        if (c >= 0)
            break;
    }
    if (ev->deleted) {
        if (i < k->n && c == 0)
            kv_drop(k, i);
        return true;
    }
    weir_etcd_kv nkv = ev->kv;
    nkv.key = malloc(ev->kv.key_len + 1);
    nkv.value = malloc(ev->kv.value_len + 1);
    if (!nkv.key || !nkv.value) {
        free(nkv.key);
        free(nkv.value);
        return false;
    }
    memcpy(nkv.key, ev->kv.key, ev->kv.key_len + 1);
    memcpy(nkv.value, ev->kv.value, ev->kv.value_len + 1);
    if (i < k->n && c == 0) {
        free(k->v[i].key);
        free(k->v[i].value);
        k->v[i] = nkv;
        return true;
    }
    weir_etcd_kv *nv = realloc(k->v, (k->n + 1) * sizeof(*nv));
    if (!nv) {
        free(nkv.key);
        free(nkv.value);
        return false;
    }
    k->v = nv;
    memmove(&k->v[i + 1], &k->v[i], (k->n - i) * sizeof(k->v[0]));
    k->v[i] = nkv;
    k->n++;
    return true;
}

/*
 * Tells the lock holder that this instance gives a challenge's answer
 * (key_auth, of the challenge key's mod revision rev), or no longer does
 * (NULL): /PREFIX/acme/ack/KIND/NAME/ID = "REV KEY_AUTH", on the
 * instance's lease. The holder asks the CA to validate once every live
 * instance has confirmed (acme/manager.c), since the CA may reach any;
 * the revision keeps a late confirmation of an earlier order of the same
 * token from counting. Watch thread; blocks up to the client's timeout.
 */
static void challenge_ack(weir_etcd_source *s, const char *kind, const char *name,
                          const char *key_auth, int64_t rev)
{
    const char *id = weir__etcd_source_instance(s);
    char err[512] = "", *k = NULL, *v = NULL;
    if (!id || atomic_load(&s->stop) ||
        asprintf(&k, "%sacme/ack/%s/%s/%s", s->prefix_dir, kind, name, id) < 0)
        return;
    if (key_auth && asprintf(&v, "%" PRId64 " %s", rev, key_auth) < 0)
        v = NULL;
    if (!s->ack_e)
        s->ack_e = weir__etcd_source_client(s, err, sizeof(err));
    int rc = -1;
    if (s->ack_e && v) {
        int64_t lease = weir__fleet_lease(s->fleet);
        rc = weir__etcd_put_if(s->ack_e, k, v, strlen(v), -1, lease, NULL, err, sizeof(err));
        if (rc != 0 && lease && strstr(err, "lease not found")) /* it just expired */
            rc = weir__etcd_put_if(s->ack_e, k, v, strlen(v), -1, 0, NULL, err, sizeof(err));
    } else if (s->ack_e && !key_auth) {
        rc = weir__etcd_delete_if(s->ack_e, k, false, -1, err, sizeof(err));
    }
    if (rc != 0)
        weir_log(WEIR_LEVEL_WARN, "acme: %s: %s", k, err[0] ? err : "out of memory");
    free(k);
    free(v);
}

/* The set of challenge keys applied: key added (on) or removed. */
static void chal_track(weir_etcd_source *s, const char *key, bool on)
{
    size_t i = 0;
    while (i < s->n_chal && strcmp(s->chal[i], key) != 0)
        i++;
    if (i < s->n_chal && !on) {
        free(s->chal[i]);
        s->chal[i] = s->chal[--s->n_chal];
    } else if (i == s->n_chal && on) {
        char **nv = realloc(s->chal, (s->n_chal + 1) * sizeof(*nv));
        char *d = nv ? strdup(key) : NULL;
        if (nv)
            s->chal = nv;
        if (d)
            s->chal[s->n_chal++] = d;
    }
}

/* /PREFIX/acme/http-01/TOKEN and /PREFIX/acme/tls-alpn-01/DOMAIN:
 * another instance's challenge answer, which this one gives too. */
static bool challenge_event(weir_etcd_source *s, const weir_etcd_kv *kv, bool deleted)
{
    static const struct {
        const char *dir, *kind;
    } kinds[] = {{"acme/http-01/", "http-01"}, {"acme/tls-alpn-01/", "tls-alpn-01"}};
    size_t p = strlen(s->prefix_dir);
    for (size_t i = 0; i < 2; i++) {
        size_t n = strlen(kinds[i].dir);
        const char *name = kv->key + p + n;
        if (kv->key_len <= p + n || memcmp(kv->key + p, kinds[i].dir, n) != 0)
            continue;
        const char *ka = deleted ? NULL : kv->value;
        bool on = i == 0 ? weir__acme_http01_set(name, ka) : weir__acme_alpn_set(name, ka);
        chal_track(s, kv->key, on);
        if ((on || deleted) && !strchr(name, '/'))
            challenge_ack(s, kinds[i].kind, name, on ? ka : NULL, kv->mod_revision);
        return true;
    }
    return false;
}

/* The challenges in a set read whole: an instance that starts, or reads
 * again, in the middle of an order answers them too; one applied before
 * and gone from the set (deleted while the watch was away) is dropped. */
static void challenges_in(weir_etcd_source *s, const weir_etcd_kvs *k)
{
    for (size_t i = 0; i < s->n_chal;) {
        size_t j = 0;
        while (j < k->n && strcmp(k->v[j].key, s->chal[i]) != 0)
            j++;
        if (j < k->n) {
            i++;
            continue;
        }
        char *key = strdup(s->chal[i]);
        if (!key) { /* out of memory: forgotten, not answered any less */
            free(s->chal[i]);
            s->chal[i] = s->chal[--s->n_chal];
            continue;
        }
        weir_etcd_kv gone = {.key = key, .key_len = strlen(key)};
        challenge_event(s, &gone, true); /* untracks it: s->chal[i] is another now */
        free(key);
    }
    for (size_t i = 0; i < k->n; i++)
        challenge_event(s, &k->v[i], false);
}

static int on_events(void *arg, const weir_etcd_event *ev, size_t n, int64_t revision)
{
    weir_etcd_source *s = arg;
    bool changed = false;
    for (size_t i = 0; i < n; i++) {
        if (challenge_event(s, &ev[i].kv, ev[i].deleted))
            continue;
        if (!config_key(s, ev[i].kv.key, ev[i].kv.key_len))
            continue;
        if (!kvs_change(&s->wkvs, &ev[i]))
            return -1; /* read the whole prefix again */
        changed = true;
    }
    s->wrev = revision;
    s->wkvs.revision = revision;
    pthread_mutex_lock(&s->mu);
    s->seen_revision = revision;
    pthread_mutex_unlock(&s->mu);
    if (changed)
        post(s);
    return 0;
}

/* Whether a and b hold the same config keys at the same mod revisions
 * (keys read from the cache have none: the admin API's compare-and-swap
 * needs etcd's, so they count as a change). */
static bool same_keys(const weir_etcd_source *s, const weir_etcd_kvs *a, const weir_etcd_kvs *b)
{
    size_t i = 0, k = 0;
    for (;;) {
        while (i < a->n && !config_key(s, a->v[i].key, a->v[i].key_len))
            i++;
        while (k < b->n && !config_key(s, b->v[k].key, b->v[k].key_len))
            k++;
        if (i == a->n || k == b->n)
            return i == a->n && k == b->n;
        if (a->v[i].key_len != b->v[k].key_len ||
            memcmp(a->v[i].key, b->v[k].key, a->v[i].key_len) != 0 ||
            a->v[i].mod_revision != b->v[k].mod_revision ||
            a->v[i].value_len != b->v[k].value_len ||
            memcmp(a->v[i].value, b->v[k].value, a->v[i].value_len) != 0)
            return false;
        i++;
        k++;
    }
}

static void *watch_main(void *arg)
{
    weir_etcd_source *s = arg;
    bool need_range = s->from_cache;
    char err[512];
    s->backoff_ms = 100;
    if (!need_range)
        challenges_in(s, &s->wkvs);
    while (!atomic_load(&s->stop)) {
        if (need_range) {
            weir_etcd_kvs k;
            if (weir__etcd_range(s->watch_e, s->prefix_dir, 0, &k, err, sizeof(err)) != 0) {
                note_down(s, err);
                pause_ms(s, s->backoff_ms);
                s->backoff_ms = s->backoff_ms >= 2500 ? 5000 : s->backoff_ms * 2;
                continue;
            }
            s->wrev = k.revision;
            challenges_in(s, &k);
            bool same = same_keys(s, &k, &s->wkvs);
            weir__etcd_kvs_free(&s->wkvs);
            s->wkvs = k;
            pthread_mutex_lock(&s->mu);
            s->seen_revision = k.revision;
            pthread_mutex_unlock(&s->mu);
            if (!same)
                post(s);
            need_range = false;
        }
        int64_t compact = 0;
        int rc = weir__etcd_watch(s->watch_e, s->prefix_dir, s->wrev + 1, on_events, note_up, s,
                                  &s->stop, &compact, err, sizeof(err));
        if (atomic_load(&s->stop))
            break;
        if (rc == WEIR_ETCD_COMPACTED) {
            weir_log(WEIR_LEVEL_INFO,
                     "etcd: revision %" PRId64 " was compacted (oldest %" PRId64
                     "): reading %s again",
                     s->wrev + 1, compact, s->prefix_dir);
            need_range = true;
            continue;
        }
        if (rc == 0) { /* on_events ran out of memory */
            need_range = true;
            continue;
        }
        note_down(s, err);
        pause_ms(s, s->backoff_ms);
        s->backoff_ms = s->backoff_ms >= 2500 ? 5000 : s->backoff_ms * 2;
    }
    return NULL;
}

/* ---- open, start, stop ---- */

static char *local_basic_string(const weir_toml_value *doc, const char *key)
{
    const char *v =
        weir_toml_string(weir_toml_table_get(weir_toml_table_get(doc, "basic"), key), NULL);
    return v ? strdup(v) : NULL;
}

weir_etcd_source *weir__etcd_source_open(const char *url, const char *local_path, weir_config **cfg,
                                         weir_cfg_errors *errs)
{
    char err[600];
    *cfg = NULL;
    weir_etcd_source *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    pthread_mutex_init(&s->mu, NULL);
    s->name = weir__etcd_url_masked(url);
    if (!s->name)
        goto fail;
    if (weir__etcd_url_parse(url, &s->url, err, sizeof(err)) != 0) {
        weir__cfg_errors_add(errs, "%s", err);
        goto fail;
    }
    if (asprintf(&s->prefix_dir, "%s/", s->url.prefix) < 0) {
        s->prefix_dir = NULL;
        goto fail;
    }
    if (local_path) {
        s->local_path = strdup(local_path);
        s->local_text = weir__admin_read_file(local_path, &s->local_len, err, sizeof(err));
        if (!s->local_text) {
            weir__cfg_errors_add(errs, "%s", err);
            goto fail;
        }
        weir_toml_error te;
        weir_toml_value *doc = weir_toml_parse(s->local_text, s->local_len, &te);
        if (!doc) {
            weir_toml_error_format(&te, local_path, err, sizeof(err));
            weir__cfg_errors_add(errs, "%s", err);
            goto fail;
        }
        s->cacert = local_basic_string(doc, "etcd_cacert");
        s->cert = local_basic_string(doc, "etcd_cert");
        s->key = local_basic_string(doc, "etcd_key");
        s->cache_path = local_basic_string(doc, "config_cache");
        s->instance_id = local_basic_string(doc, "instance_id");
        weir_toml_free(doc);
    }
    s->main_e = weir__etcd_connect(&s->url, s->cacert, s->cert, s->key, 2000, err, sizeof(err));
    s->watch_e = weir__etcd_connect(&s->url, s->cacert, s->cert, s->key, 3000, err, sizeof(err));
    if (!s->main_e || !s->watch_e) {
        weir__cfg_errors_add(errs, "%s", err);
        goto fail;
    }
    weir_etcd_kvs k;
    if (weir__etcd_range(s->main_e, s->prefix_dir, 0, &k, err, sizeof(err)) != 0) {
        if (!s->cache_path) {
            char msg[900];
            snprintf(msg, sizeof(msg),
                     "%s: etcd cannot be read: %s (a [basic] config_cache in the --local file "
                     "lets weir start from the last good configuration)",
                     s->name, err);
            weir__cfg_errors_add(errs, "%s", msg);
            goto fail;
        }
        char cerr[600];
        if (weir__etcd_read_cache(s->cache_path, s->url.prefix, &k, cerr, sizeof(cerr)) != 0) {
            char msg[1300];
            snprintf(msg, sizeof(msg), "%s: etcd cannot be read: %s; nor the config_cache: %s",
                     s->name, err, cerr);
            weir__cfg_errors_add(errs, "%s", msg);
            goto fail;
        }
        weir_log(WEIR_LEVEL_WARN,
                 "etcd cannot be read (%s): serving config_cache %s (revision %" PRId64
                 ") until it can",
                 err, s->cache_path, k.revision);
        s->from_cache = true;
        s->etcd_error = strdup(err);
    } else {
        s->connected = true;
    }
    weir_etcd_map *map = NULL;
    size_t len = 0;
    char *text = weir__etcd_assemble(&k, s->url.prefix, s->name, s->local_path, s->local_text,
                                     s->local_len, false, &len, &map, errs);
    if (text) {
        load_arg a = {text, len, map, s->name};
        *cfg = load_text(&a, errs);
    }
    free(text);
    weir__etcd_map_free(map);
    if (!*cfg) {
        weir__etcd_kvs_free(&k);
        goto fail;
    }
    if (!s->from_cache)
        write_cache(s, &k);
    s->served = k;
    s->served_revision = k.revision;
    s->seen_revision = k.revision;
    kvs_copy(&k, &s->wkvs);
    s->wrev = k.revision;
    return s;
fail:
    weir__etcd_source_free(s);
    return NULL;
}

int weir__etcd_source_start(weir_etcd_source *s, weir_app *app, weir_server *srv)
{
    s->app = app;
    s->srv = srv;
    weir_config *cfg = weir__app_config(app);
    char err[512];
    weir_etcd *fe = weir__etcd_connect(&s->url, s->cacert, s->cert, s->key,
                                       cfg->basic.instance_ttl_ms / 3, err, sizeof(err));
    if (fe)
        s->fleet = weir__fleet_start(fe, s->url.prefix, s->instance_id, cfg, s->served_revision);
    weir__config_unref(cfg);
    if (!s->fleet) {
        weir_log(WEIR_LEVEL_ERROR, "etcd: the fleet cannot start: %s", fe ? "see above" : err);
        return WEIR_ERR_INVAL;
    }
    if (pthread_create(&s->thread, NULL, watch_main, s) != 0)
        return WEIR_ERR_NOMEM;
    s->thread_started = true;
    return WEIR_OK;
}

void weir__etcd_source_stop(weir_etcd_source *s)
{
    if (!s)
        return;
    atomic_store(&s->stop, true);
    if (s->thread_started) {
        pthread_join(s->thread, NULL);
        s->thread_started = false;
    }
    weir__fleet_stop(s->fleet);
    s->fleet = NULL;
}

void weir__etcd_source_free(weir_etcd_source *s)
{
    if (!s)
        return;
    weir__etcd_source_stop(s);
    weir__etcd_free(s->main_e);
    weir__etcd_free(s->watch_e);
    weir__etcd_free(s->ack_e);
    for (size_t i = 0; i < s->n_chal; i++)
        free(s->chal[i]);
    free(s->chal);
    weir__etcd_kvs_free(&s->served);
    weir__etcd_kvs_free(&s->wkvs);
    if (s->pending) {
        weir__etcd_kvs_free(s->pending);
        free(s->pending);
    }
    json_decref(s->rejected_errors);
    weir__etcd_url_free(&s->url);
    free(s->name);
    free(s->prefix_dir);
    free(s->local_path);
    free(s->local_text);
    free(s->cacert);
    free(s->cert);
    free(s->key);
    free(s->cache_path);
    free(s->instance_id);
    free(s->etcd_error);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

const char *weir__etcd_source_name(const weir_etcd_source *s)
{
    return s->name;
}

json_t *weir__etcd_source_status(weir_etcd_source *s)
{
    pthread_mutex_lock(&s->mu);
    json_t *j =
        json_pack("{s:s, s:b, s:s?, s:I, s:I, s:I, s:I, s:I, s:O?}", "source", s->name, "connected",
                  s->connected, "error", s->etcd_error, "revision", (json_int_t)s->served_revision,
                  "seen_revision", (json_int_t)s->seen_revision, "applied", (json_int_t)s->applied,
                  "rejected", (json_int_t)s->rejected, "rejected_revision",
                  (json_int_t)s->rejected_revision, "rejected_errors", s->rejected_errors);
    pthread_mutex_unlock(&s->mu);
    return j;
}

/* "/PREFIX/section[/name]", malloc'd. */
static char *key_of(const weir_etcd_source *s, const char *section, const char *name)
{
    char *key = NULL;
    if (asprintf(&key, "%s%s%s%s", s->prefix_dir, section, name ? "/" : "", name ? name : "") < 0)
        return NULL;
    return key;
}

char *weir__etcd_source_value(weir_etcd_source *s, const char *section, const char *name,
                              int64_t *mod_revision, bool *from_local)
{
    char *key = key_of(s, section, name);
    *mod_revision = 0;
    *from_local = false;
    /* The --local file's sections replace etcd's keys. */
    weir_cfg_section *secs = NULL;
    size_t n_secs = 0;
    int el;
    char err[200];
    if (s->local_text && weir__cfg_split(s->local_text, s->local_len, false, &secs, &n_secs, &el,
                                         err, sizeof(err)) == 0) {
        for (size_t i = 0; i < n_secs && !*from_local; i++)
            *from_local = strcmp(secs[i].section, section) == 0 &&
                          (name ? secs[i].name && strcmp(secs[i].name, name) == 0 : !secs[i].name);
        weir__cfg_sections_free(secs, n_secs);
    }
    char *v = NULL;
    for (size_t i = 0; key && !v && i < s->served.n; i++) {
        if (strcmp(s->served.v[i].key, key) == 0) {
            *mod_revision = s->served.v[i].mod_revision;
            v = strdup(s->served.v[i].value);
        }
    }
    free(key);
    return v;
}

int weir__etcd_source_put(weir_etcd_source *s, const char *section, const char *name,
                          const char *value, size_t len, int64_t mod_revision, int64_t *revision,
                          char *err, size_t err_len)
{
    char *key = key_of(s, section, name);
    if (!key) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    int rc = weir__etcd_put_if(s->main_e, key, value, len, mod_revision, 0, revision, err, err_len);
    free(key);
    return rc;
}

int weir__etcd_source_delete(weir_etcd_source *s, const char *section, const char *name,
                             int64_t mod_revision, int64_t *revision, char *err, size_t err_len)
{
    char *key = key_of(s, section, name);
    json_t *cmp = key ? json_pack("[o]", weir__etcd_cmp_mod(key, mod_revision)) : NULL;
    json_t *ops = key ? json_pack("[o]", weir__etcd_op_delete(key, false)) : NULL;
    free(key);
    if (!cmp || !ops) {
        json_decref(cmp);
        json_decref(ops);
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    return weir__etcd_txn(s->main_e, cmp, ops, revision, err, err_len);
}

/* Whether keys k load with the --local file: 0, or -1 with every error. */
static int kvs_load(weir_etcd_source *s, const weir_etcd_kvs *k, weir_cfg_errors *errs)
{
    weir_etcd_map *map = NULL;
    size_t tlen = 0;
    int rc = -1;
    char *text = weir__etcd_assemble(k, s->url.prefix, s->name, s->local_path, s->local_text,
                                     s->local_len, false, &tlen, &map, errs);
    if (text) {
        load_arg a = {text, tlen, map, s->name};
        weir_config *c = load_text(&a, errs);
        rc = c ? 0 : -1;
        weir__config_unref(c);
    }
    free(text);
    weir__etcd_map_free(map);
    return rc;
}

int weir__etcd_source_check(weir_etcd_source *s, const char *section, const char *name,
                            const char *value, size_t len, weir_cfg_errors *errs)
{
    weir_etcd_kvs k;
    kvs_copy(&s->served, &k);
    char *key = key_of(s, section, name);
    weir_etcd_event ev = {.deleted = value == NULL,
                          .kv = {.key = key,
                                 .key_len = key ? strlen(key) : 0,
                                 .value = (char *)value,
                                 .value_len = len}};
    char *v0 = malloc(len + 1); /* kvs_change copies NUL-terminated values */
    int rc = -1;
    if (v0 && key) {
        if (value)
            memcpy(v0, value, len);
        v0[len] = '\0';
        ev.kv.value = v0;
        if (kvs_change(&k, &ev))
            rc = kvs_load(s, &k, errs);
    }
    free(v0);
    free(key);
    weir__etcd_kvs_free(&k);
    return rc;
}

json_t *weir__etcd_fleet_json(weir_etcd_source *s)
{
    json_t *j = json_pack("{s:o, s:o?}", "config", weir__etcd_source_status(s), "lock",
                          weir__fleet_lock_json(s->fleet));
    char err[512];
    json_t *list = weir__fleet_instances(s->main_e, s->url.prefix, err, sizeof(err));
    if (list) {
        json_object_set_new(j, "instances", list);
    } else {
        json_object_set_new(j, "instances", json_null());
        json_object_set_new(j, "error", json_string(err));
    }
    if (s->fleet)
        json_object_set_new(j, "id", json_string(weir__fleet_id(s->fleet)));
    return j;
}

weir_etcd *weir__etcd_source_client(weir_etcd_source *s, char *err, size_t err_len)
{
    return weir__etcd_connect(&s->url, s->cacert, s->cert, s->key, 3000, err, err_len);
}

const char *weir__etcd_source_prefix(const weir_etcd_source *s)
{
    return s->url.prefix;
}

bool weir__etcd_source_lock(weir_etcd_source *s, int64_t *fencing)
{
    return s->fleet && weir__fleet_lock_held(s->fleet, fencing);
}

const char *weir__etcd_source_instance(const weir_etcd_source *s)
{
    return s->fleet ? weir__fleet_id(s->fleet) : NULL;
}

int64_t weir__etcd_source_lease(weir_etcd_source *s)
{
    return s->fleet ? weir__fleet_lease(s->fleet) : 0;
}

/* ---- the whole configuration (the admin API's history) ---- */

weir_etcd *weir__etcd_source_main(weir_etcd_source *s)
{
    return s->main_e;
}

const char *weir__etcd_source_dir(const weir_etcd_source *s)
{
    return s->prefix_dir;
}

static bool bare_name(const char *n)
{
    for (const char *p = n; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-'))
            return false;
    }
    return *n != '\0';
}

char *weir__etcd_source_text(weir_etcd_source *s, const weir_etcd_kvs *kvs, size_t *len,
                             int64_t *last_mod)
{
    weir_strbuf b = {0};
    weir__sb_puts(&b, "");
    size_t p = strlen(s->prefix_dir);
    if (!kvs)
        kvs = &s->served;
    *last_mod = 0;
    for (size_t i = 0; i < kvs->n; i++) {
        const weir_etcd_kv *kv = &kvs->v[i];
        if (!config_key(s, kv->key, kv->key_len))
            continue;
        const char *rest = kv->key + p, *slash = strchr(rest, '/');
        if (slash && !weir__etcd_name_ok(slash + 1, strlen(slash + 1)))
            continue; /* no section of a configuration (the loader refuses it too) */
        if (slash)
            weir__sb_printf(&b, bare_name(slash + 1) ? "[%.*s.%s]\n" : "[%.*s.\"%s\"]\n",
                            (int)(slash - rest), rest, slash + 1);
        else
            weir__sb_printf(&b, "[%s]\n", rest);
        weir__sb_put(&b, kv->value, kv->value_len);
        if (kv->value_len && kv->value[kv->value_len - 1] != '\n')
            weir__sb_put(&b, "\n", 1);
        if (kv->mod_revision > *last_mod)
            *last_mod = kv->mod_revision;
    }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

static const char *const config_kinds[] = {"servers",      "locations", "upstreams", "plugins",
                                           "certificates", "caches",    "basic",     "admin"};

int weir__etcd_source_replace(weir_etcd_source *s, const char *text, size_t len, int64_t *revision,
                              char *err, size_t err_len)
{
    weir_cfg_section *v = NULL;
    size_t n = 0;
    int el;
    if (weir__cfg_split(text, len, false, &v, &n, &el, err, err_len) != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (v[i].name && !weir__etcd_name_ok(v[i].name, strlen(v[i].name))) {
            snprintf(err, err_len, "[%s.%.100s]: not a name etcd's keys can hold", v[i].section,
                     v[i].name);
            weir__cfg_sections_free(v, n);
            return -1;
        }
    }
    /* What etcd holds now (not what this instance runs: a change it
     * refused is what a rollback must undo). */
    weir_etcd_kvs now = {0};
    if (weir__etcd_range(s->main_e, s->prefix_dir, 0, &now, err, err_len) != 0) {
        weir__cfg_sections_free(v, n);
        return -1;
    }
    json_t *cmp = json_array(), *ops = json_array();
    bool oom = !cmp || !ops;
    /* Nothing of the configuration written since that read: one compare
     * per kind, so the fleet's own keys may change meanwhile. */
    for (size_t k = 0; !oom && k < sizeof(config_kinds) / sizeof(config_kinds[0]); k++) {
        bool dir = k < 6;
        char *key = NULL;
        if (asprintf(&key, "%s%s%s", s->prefix_dir, config_kinds[k], dir ? "/" : "") < 0) {
            oom = true;
            break;
        }
        json_t *c = weir__etcd_cmp_unchanged_since(key, dir, now.revision);
        free(key);
        oom = !c || json_array_append_new(cmp, c) != 0;
    }
    /* Every key of the entry written (one deleted meanwhile comes back),
     * every other configuration key deleted. */
    char **keys = calloc(n ? n : 1, sizeof(char *));
    oom = oom || !keys;
    for (size_t i = 0; !oom && i < n; i++) {
        keys[i] = key_of(s, v[i].section, v[i].name);
        json_t *op = keys[i] ? weir__etcd_op_put(keys[i], v[i].body, v[i].body_len, 0) : NULL;
        oom = !op || json_array_append_new(ops, op) != 0;
    }
    for (size_t k = 0; !oom && k < now.n; k++) {
        const weir_etcd_kv *kv = &now.v[k];
        if (!config_key(s, kv->key, kv->key_len))
            continue;
        bool kept = false;
        for (size_t i = 0; i < n && !kept; i++)
            kept = strcmp(keys[i], kv->key) == 0;
        json_t *op = kept ? NULL : weir__etcd_op_delete(kv->key, false);
        oom = !kept && (!op || json_array_append_new(ops, op) != 0);
    }
    for (size_t i = 0; keys && i < n; i++)
        free(keys[i]);
    free(keys);
    weir__cfg_sections_free(v, n);
    weir__etcd_kvs_free(&now);
    if (oom || json_array_size(ops) > 120) {
        if (oom)
            snprintf(err, err_len, "out of memory");
        else
            snprintf(err, err_len,
                     "%zu keys to write or delete: over what one etcd transaction takes (120 "
                     "here, 128 by etcd's default)",
                     json_array_size(ops));
        json_decref(cmp);
        json_decref(ops);
        return -1;
    }
    return weir__etcd_txn(s->main_e, cmp, ops, revision, err, err_len);
}

char *weir__etcd_source_fresh(weir_etcd_source *s, const char *section, const char *name,
                              int64_t *mod_revision, char *err, size_t err_len)
{
    char *key = key_of(s, section, name);
    weir_etcd_kvs k = {0};
    *mod_revision = 0;
    char *v = NULL;
    if (!key) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    if (weir__etcd_get(s->main_e, key, &k, err, err_len) == 0) {
        err[0] = '\0';
        if (k.n) {
            *mod_revision = k.v[0].mod_revision;
            v = malloc(k.v[0].value_len + 1);
            if (v) {
                memcpy(v, k.v[0].value, k.v[0].value_len + 1);
            } else {
                snprintf(err, err_len, "out of memory");
            }
        }
    }
    weir__etcd_kvs_free(&k);
    free(key);
    return v;
}

int weir__etcd_source_check_text(weir_etcd_source *s, const char *text, size_t len,
                                 weir_cfg_errors *errs)
{
    weir_cfg_section *v = NULL;
    size_t n = 0;
    int el;
    char err[300];
    if (weir__cfg_split(text, len, false, &v, &n, &el, err, sizeof(err)) != 0) {
        weir__cfg_errors_add(errs, "the entry:%d: %s", el, err);
        return -1;
    }
    weir_etcd_kvs k = {.v = calloc(n ? n : 1, sizeof(weir_etcd_kv)), .n = 0};
    int rc = -1;
    for (size_t i = 0; k.v && i < n; i++) {
        weir_etcd_kv *kv = &k.v[k.n];
        kv->key = key_of(s, v[i].section, v[i].name);
        kv->value = malloc(v[i].body_len + 1);
        k.n++;
        if (!kv->key || !kv->value)
            goto out;
        kv->key_len = strlen(kv->key);
        memcpy(kv->value, v[i].body, v[i].body_len);
        kv->value[v[i].body_len] = '\0';
        kv->value_len = v[i].body_len;
    }
    if (k.v)
        rc = kvs_load(s, &k, errs);
out:
    weir__etcd_kvs_free(&k);
    weir__cfg_sections_free(v, n);
    return rc;
}
