/*
 * fleet.c - the instance key and the singleton lock (see fleet.h).
 *
 * One loop every third of the TTL: keep the lease alive (a new lease, and
 * the keys put again, when it expired or was never granted), put the
 * instance key when what it says changed, and try the lock when not
 * holding it. A failed keep-alive drops the lock at once: the lease may
 * still live, but an instance that cannot tell must not act as holder.
 */
#include "app/etcd/fleet.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "weir/log.h"
#include "weir/server.h"

#define LOCK_NAME "singleton"

struct weir_fleet {
    weir_etcd *e; /* the fleet thread's */
    char *id, *key, *lock_key;
    json_t *info; /* the instance key's value, but the revision */
    int64_t ttl_s;
    pthread_t thread;
    _Atomic bool stop;
    pthread_mutex_t mu;
    int64_t revision, put_revision; /* served / in the key */
    int64_t lease;
    bool held;
    int64_t fencing;
    char *holder; /* the lock's holder as last read, or NULL */
};

static void pause_ms(weir_fleet *f, int64_t ms)
{
    for (int64_t t = 0; t < ms && !atomic_load(&f->stop); t += 50)
        usleep(50000);
}

/*
 * Keeps the instance key: created when absent, rewritten (compare-and-
 * swap) when it is on our lease and says an old revision, left alone
 * when another live instance holds the same id. Returns true when the
 * key is ours and current, false with err set otherwise.
 */
static bool keep_instance(weir_fleet *f, int64_t lease, char *err, size_t err_len)
{
    pthread_mutex_lock(&f->mu);
    int64_t rev = f->revision;
    pthread_mutex_unlock(&f->mu);
    weir_etcd_kvs k = {0};
    if (weir__etcd_get(f->e, f->key, &k, err, err_len) != 0)
        return false;
    int64_t expect = 0; /* absent */
    bool other = false;
    if (k.n == 1) {
        other = k.v[0].lease != lease;
        expect = k.v[0].mod_revision;
    }
    int64_t other_lease = other ? k.v[0].lease : 0;
    weir__etcd_kvs_free(&k);
    if (other) {
        snprintf(err, err_len,
                 "instance_id '%s' is registered by another live instance (lease %" PRId64
                 "): this one registers when that key is gone",
                 f->id, other_lease);
        return false;
    }
    if (expect != 0 && f->put_revision == rev)
        return true;
    json_t *v = json_deep_copy(f->info);
    json_object_set_new(v, "revision", json_integer((json_int_t)rev));
    char *text = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    if (!text) {
        snprintf(err, err_len, "out of memory");
        return false;
    }
    int rc = weir__etcd_put_if(f->e, f->key, text, strlen(text), expect, lease, NULL, err, err_len);
    free(text);
    if (rc == WEIR_ETCD_FAILED)
        snprintf(err, err_len, "%s changed while it was written; trying again", f->key);
    if (rc != 0)
        return false;
    f->put_revision = rev;
    return true;
}

/* Takes the lock if nobody holds it, else reads who does. */
static void campaign(weir_fleet *f, int64_t lease)
{
    char err[512];
    int64_t rev = 0;
    int rc = weir__etcd_put_if(f->e, f->lock_key, f->id, strlen(f->id), 0, lease, &rev, err,
                               sizeof(err));
    weir_etcd_kvs k = {0};
    bool read = rc == WEIR_ETCD_FAILED &&
                weir__etcd_get(f->e, f->lock_key, &k, err, sizeof(err)) == 0 && k.n == 1;
    pthread_mutex_lock(&f->mu);
    if (rc == 0) {
        f->held = true;
        f->fencing = rev;
        free(f->holder);
        f->holder = strdup(f->id);
    } else if (read) {
        /* Ours after a restart of this loop with the same lease? */
        f->held = k.v[0].lease == lease && strcmp(k.v[0].value, f->id) == 0;
        f->fencing = k.v[0].create_revision;
        free(f->holder);
        f->holder = strdup(k.v[0].value);
    }
    bool held = f->held;
    pthread_mutex_unlock(&f->mu);
    if (rc == 0)
        weir_log(WEIR_LEVEL_INFO, "fleet: %s holds the %s lock (fencing token %" PRId64 ")", f->id,
                 LOCK_NAME, rev);
    (void)held;
    weir__etcd_kvs_free(&k);
}

static void drop_lock(weir_fleet *f)
{
    pthread_mutex_lock(&f->mu);
    bool was = f->held;
    f->held = false;
    pthread_mutex_unlock(&f->mu);
    if (was)
        weir_log(WEIR_LEVEL_WARN, "fleet: %s no longer holds the %s lock", f->id, LOCK_NAME);
}

static void *fleet_main(void *arg)
{
    weir_fleet *f = arg;
    char err[512];
    bool down = false;
    while (!atomic_load(&f->stop)) {
        bool ok = true;
        if (f->lease == 0) {
            int64_t id = 0;
            ok = weir__etcd_lease_grant(f->e, f->ttl_s, &id, err, sizeof(err)) == 0;
            if (ok) {
                pthread_mutex_lock(&f->mu);
                f->lease = id;
                pthread_mutex_unlock(&f->mu);
                f->put_revision = -1;
                ok = keep_instance(f, id, err, sizeof(err));
            }
        } else {
            int64_t ttl = 0;
            ok = weir__etcd_lease_keepalive(f->e, f->lease, &ttl, err, sizeof(err)) == 0;
            if (ok && ttl <= 0) {
                snprintf(err, sizeof(err), "the lease expired");
                pthread_mutex_lock(&f->mu);
                f->lease = 0;
                pthread_mutex_unlock(&f->mu);
                ok = false;
            }
            if (ok)
                ok = keep_instance(f, f->lease, err, sizeof(err));
        }
        if (!ok) {
            drop_lock(f);
            if (!down)
                weir_log(WEIR_LEVEL_WARN, "fleet: %s: %s; retrying", f->key, err);
            down = true;
            pause_ms(f, f->ttl_s * 1000 / 6);
            continue;
        }
        if (down)
            weir_log(WEIR_LEVEL_INFO, "fleet: %s registered again", f->key);
        down = false;
        campaign(f, f->lease);
        pause_ms(f, f->ttl_s * 1000 / 3);
    }
    return NULL;
}

static char *default_id(void)
{
    char host[256] = "weir";
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    char *id = NULL;
    return asprintf(&id, "%s-%ld", host, (long)getpid()) < 0 ? NULL : id;
}

weir_fleet *weir__fleet_start(weir_etcd *e, const char *prefix, const char *id,
                              const weir_config *cfg, int64_t revision)
{
    weir_fleet *f = calloc(1, sizeof(*f));
    if (!f) {
        weir__etcd_free(e);
        return NULL;
    }
    f->e = e;
    pthread_mutex_init(&f->mu, NULL);
    f->id = id ? strdup(id) : default_id();
    f->ttl_s = (cfg->basic.instance_ttl_ms + 999) / 1000;
    f->revision = revision;
    f->put_revision = -1;
    if (!f->id || asprintf(&f->key, "%s/instances/%s", prefix, f->id) < 0 ||
        asprintf(&f->lock_key, "%s/locks/%s", prefix, LOCK_NAME) < 0)
        goto fail;
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    json_t *listen = json_array();
    for (size_t i = 0; i < cfg->n_servers; i++)
        for (size_t k = 0; k < cfg->servers[i].n_addrs; k++)
            json_array_append_new(listen, json_string(cfg->servers[i].addrs[k]));
    f->info = json_pack("{s:s, s:s, s:I, s:s, s:o, s:s?, s:I}", "id", f->id, "hostname", host,
                        "pid", (json_int_t)getpid(), "version", weir_version(), "listen", listen,
                        "admin", cfg->admin.addr, "started", (json_int_t)time(NULL));
    if (!f->info || pthread_create(&f->thread, NULL, fleet_main, f) != 0)
        goto fail;
    return f;
fail:
    weir__etcd_free(f->e);
    json_decref(f->info);
    free(f->id);
    free(f->key);
    free(f->lock_key);
    pthread_mutex_destroy(&f->mu);
    free(f);
    return NULL;
}

void weir__fleet_set_revision(weir_fleet *f, int64_t revision)
{
    if (!f)
        return;
    pthread_mutex_lock(&f->mu);
    f->revision = revision;
    pthread_mutex_unlock(&f->mu);
}

void weir__fleet_stop(weir_fleet *f)
{
    if (!f)
        return;
    atomic_store(&f->stop, true);
    pthread_join(f->thread, NULL);
    char err[512];
    if (f->lease && weir__etcd_lease_revoke(f->e, f->lease, err, sizeof(err)) != 0)
        weir_log(WEIR_LEVEL_WARN, "fleet: %s stays until its lease expires: %s", f->key, err);
    weir__etcd_free(f->e);
    json_decref(f->info);
    free(f->id);
    free(f->key);
    free(f->lock_key);
    free(f->holder);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

const char *weir__fleet_id(const weir_fleet *f)
{
    return f->id;
}

int64_t weir__fleet_lease(weir_fleet *f)
{
    pthread_mutex_lock(&f->mu);
    int64_t lease = f->lease;
    pthread_mutex_unlock(&f->mu);
    return lease;
}

bool weir__fleet_lock_held(weir_fleet *f, int64_t *fencing)
{
    pthread_mutex_lock(&f->mu);
    bool held = f->held;
    if (fencing)
        *fencing = held ? f->fencing : 0;
    pthread_mutex_unlock(&f->mu);
    return held;
}

json_t *weir__fleet_lock_json(weir_fleet *f)
{
    if (!f)
        return NULL;
    pthread_mutex_lock(&f->mu);
    json_t *j = json_pack("{s:s, s:s?, s:I, s:b}", "name", LOCK_NAME, "holder", f->holder,
                          "fencing", (json_int_t)f->fencing, "held", f->held);
    pthread_mutex_unlock(&f->mu);
    return j;
}

json_t *weir__fleet_instances(weir_etcd *e, const char *prefix, char *err, size_t err_len)
{
    char dir[600];
    snprintf(dir, sizeof(dir), "%s/instances/", prefix);
    weir_etcd_kvs k;
    if (weir__etcd_range(e, dir, 0, &k, err, err_len) != 0)
        return NULL;
    json_t *a = json_array();
    for (size_t i = 0; a && i < k.n; i++) {
        json_error_t je;
        json_t *v = json_loadb(k.v[i].value, k.v[i].value_len, 0, &je);
        if (!json_is_object(v)) {
            json_decref(v);
            v = json_pack("{s:s}", "key", k.v[i].key);
        }
        json_array_append_new(a, v);
    }
    weir__etcd_kvs_free(&k);
    return a;
}
