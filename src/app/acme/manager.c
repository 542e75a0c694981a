/*
 * manager.c - ordering, storing, renewing and swapping the certificates of
 * [certificates.NAME] with acme (manager.h).
 */
#include "app/acme/manager.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#include "app/acme/client.h"
#include "app/acme/jws.h"
#include "app/admin/toml_edit.h"
#include "app/config/config.h"
#include "app/etcd/source.h"
#include "app/strbuf.h"
#include "app/webhook.h"
#include "weir/log.h"
#include "weir/server.h"
#include "weir/tls.h"

#define MAX_TOKENS 32
#define BACKOFF_FIRST_S 5
#define BACKOFF_MAX_S 3600
#define CHECK_EVERY_S 3600
#define FLEET_CHECK_EVERY_S 5 /* a fleet member looks for the holder's certificate */

/* ---- HTTP-01 answers, read by the workers ---- */

static pthread_mutex_t tok_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char token[129];
    char key_auth[256];
} toks[MAX_TOKENS];
static size_t n_toks;

bool weir__acme_http01(const char *token, size_t len, char *buf, size_t cap)
{
    bool found = false;
    pthread_mutex_lock(&tok_mu);
    for (size_t i = 0; i < n_toks && !found; i++) {
        if (strlen(toks[i].token) == len && memcmp(toks[i].token, token, len) == 0 &&
            strlen(toks[i].key_auth) < cap) {
            strcpy(buf, toks[i].key_auth);
            found = true;
        }
    }
    pthread_mutex_unlock(&tok_mu);
    return found;
}

static int table_add(const char *token, const char *key_auth, char *err, size_t err_len);
static void table_remove(const char *token);

bool weir__acme_http01_set(const char *token, const char *key_auth)
{
    char err[100];
    if (key_auth)
        return table_add(token, key_auth, err, sizeof(err)) == 0;
    table_remove(token);
    return false;
}

static int table_add(const char *token, const char *key_auth, char *err, size_t err_len)
{
    int rc = -1;
    pthread_mutex_lock(&tok_mu);
    for (size_t i = 0; i < n_toks; i++) { /* the same token again (a fleet's echo) */
        if (strcmp(toks[i].token, token) == 0) {
            toks[i] = toks[--n_toks];
            break;
        }
    }
    if (n_toks == MAX_TOKENS)
        snprintf(err, err_len, "too many challenges at once");
    else if (strlen(token) >= sizeof(toks[0].token) || strlen(key_auth) >= sizeof(toks[0].key_auth))
        snprintf(err, err_len, "a token of %zu bytes", strlen(token));
    else {
        snprintf(toks[n_toks].token, sizeof(toks[0].token), "%s", token);
        snprintf(toks[n_toks].key_auth, sizeof(toks[0].key_auth), "%s", key_auth);
        n_toks++;
        rc = 0;
    }
    pthread_mutex_unlock(&tok_mu);
    return rc;
}

static void table_remove(const char *token)
{
    pthread_mutex_lock(&tok_mu);
    for (size_t i = 0; i < n_toks; i++) {
        if (strcmp(toks[i].token, token) == 0) {
            toks[i] = toks[--n_toks];
            break;
        }
    }
    pthread_mutex_unlock(&tok_mu);
}

/* ---- TLS-ALPN-01: a certificate for the TLS listeners ---- */

/* The challenge certificate for domain made and served: 0, or -1. */
static int alpn_serve(const char *domain, const char *key_auth, char *err, size_t err_len)
{
    char *cert = NULL, *key = NULL;
    int rc = weir__acme_alpn_cert(domain, key_auth, &cert, &key) &&
                     weir_tls_set_acme_challenge(domain, cert, key) == WEIR_OK
                 ? 0
                 : -1;
    if (rc != 0)
        snprintf(err, err_len, "cannot set up the TLS-ALPN-01 certificate for %s", domain);
    if (key)
        OPENSSL_cleanse(key, strlen(key));
    free(cert);
    free(key);
    return rc;
}

bool weir__acme_alpn_set(const char *domain, const char *key_auth)
{
    /* From etcd: a DNS name (no wildcard: RFC 8737), and a key
     * authorization of base64url and one dot. */
    size_t n = strlen(domain);
    if (!n || n > 253 || strspn(domain, "abcdefghijklmnopqrstuvwxyz0123456789.-") != n)
        return false;
    if (!key_auth) {
        weir_tls_set_acme_challenge(domain, NULL, NULL);
        return false;
    }
    size_t k = strlen(key_auth);
    if (!k || k > 255 ||
        strspn(key_auth, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.") != k)
        return false;
    char err[200];
    if (alpn_serve(domain, key_auth, err, sizeof(err)) != 0) {
        weir_log(WEIR_LEVEL_WARN, "acme: %s", err);
        return false;
    }
    return true;
}

/* ---- DNS-01: the dns_hook command ---- */

/* Runs HOOK add|remove _acme-challenge.DOMAIN VALUE and waits for it (at
 * most 120 s): 0 when it exits 0. */
static int run_hook(const char *hook, const char *op, const char *domain, const char *key_auth,
                    char *err, size_t err_len)
{
    unsigned char md[32];
    unsigned int n = 0;
    EVP_Digest(key_auth, strlen(key_auth), md, &n, EVP_sha256(), NULL);
    char *value = weir__b64url(md, n);
    char name[300];
    snprintf(name, sizeof(name), "_acme-challenge.%s", domain);
    char *const argv[] = {(char *)hook, (char *)op, name, value, NULL};
    pid_t pid;
    int rc = value ? posix_spawn(&pid, hook, NULL, NULL, argv, environ) : ENOMEM;
    free(value);
    if (rc != 0) {
        snprintf(err, err_len, "dns_hook %s: %s", hook, strerror(rc));
        return -1;
    }
    int status = 0;
    for (int waited = 0;; waited += 100) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR) {
            snprintf(err, err_len, "dns_hook %s: %s", hook, strerror(errno));
            return -1;
        }
        if (waited > 120000) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            snprintf(err, err_len, "dns_hook %s %s %s: no exit within 120 s", hook, op, name);
            return -1;
        }
        usleep(100000);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        snprintf(err, err_len, "dns_hook %s %s %s: %s %d", hook, op, name,
                 WIFEXITED(status) ? "exited" : "killed by signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        return -1;
    }
    return 0;
}

typedef struct dns_arg {
    const char *hook;
    char *token[MAX_TOKENS]; /* presented, with their key authorizations for the removal */
    char *key_auth[MAX_TOKENS];
} dns_arg;

static int dns_present(void *arg, const char *domain, const char *token, const char *key_auth,
                       char *err, size_t err_len)
{
    dns_arg *d = arg;
    size_t i = 0;
    while (i < MAX_TOKENS && d->token[i])
        i++;
    if (i == MAX_TOKENS) {
        snprintf(err, err_len, "too many challenges at once");
        return -1;
    }
    if (run_hook(d->hook, "add", domain, key_auth, err, err_len) != 0)
        return -1;
    d->token[i] = strdup(token);
    d->key_auth[i] = strdup(key_auth);
    return 0;
}

static void dns_cleanup(void *arg, const char *domain, const char *token)
{
    dns_arg *d = arg;
    for (size_t i = 0; i < MAX_TOKENS; i++) {
        if (d->token[i] && strcmp(d->token[i], token) == 0) {
            char err[512];
            if (d->key_auth[i] &&
                run_hook(d->hook, "remove", domain, d->key_auth[i], err, sizeof(err)) != 0)
                weir_log(WEIR_LEVEL_WARN, "acme: %s", err);
            free(d->token[i]);
            free(d->key_auth[i]);
            d->token[i] = d->key_auth[i] = NULL;
        }
    }
}

/* ---- the manager ---- */

typedef enum item_state { ST_CHECKING, ST_VALID, ST_ORDERING, ST_FAILED, ST_WAITING } item_state;

typedef struct item {
    int64_t ari_due;     /* the CA's suggested renewal time, 0: none */
    int64_t ari_asked_s; /* when it was last asked */
    char *name;
    char *sig; /* what the certificate is: directory, domains, key type, storage */
    item_state state;
    int64_t next_s;     /* wall clock of the next look */
    uint32_t backoff_s; /* after a failure */
    int64_t not_after;  /* of the certificate served, 0: none */
    char *error;        /* the last failure */
    bool seen;          /* still configured (this round) */
} item;

struct weir_acme_manager {
    weir_app *app;
    weir_server *srv;
    pthread_t thread;
    _Atomic bool stop;
    pthread_mutex_t mu; /* items, for the status */
    item *items;
    size_t n;
    _Atomic uint64_t started, succeeded, failed;
    weir_etcd_source *fleet; /* the config is etcd's: the lock holder orders for all */
    weir_etcd *e;            /* this thread's client of it */
    /* Instances that did not confirm a challenge in time: not waited for
     * again until quiet_until_ms (one that cannot answer, an older version
     * say, must not cost ACK_WAIT_MS per name). This thread only. */
    char *unconfirmed; /* ", "-separated ids, or NULL */
    int64_t quiet_until_ms;
};

/* ---- a challenge shared with the fleet through etcd ---- */

#define ACK_WAIT_MS 10000   /* for the other instances to confirm a challenge */
#define ACK_QUIET_MS 600000 /* how long one that did not is not waited for */

static int64_t mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Whether id is in the list of instances that did not confirm lately. */
static bool quiet(const weir_acme_manager *m, const char *id)
{
    if (!m->unconfirmed || mono_ms() >= m->quiet_until_ms)
        return false;
    size_t n = strlen(id);
    for (const char *p = m->unconfirmed; (p = strstr(p, id)); p += n)
        if ((p == m->unconfirmed || p[-1] == ' ') && (p[n] == ',' || p[n] == '\0'))
            return true;
    return false;
}

/*
 * Waits until every other live instance (/PREFIX/instances/ID) confirms
 * that it gives this answer (/PREFIX/acme/ack/KIND/NAME/ID = "REV
 * KEY_AUTH", REV the challenge key's mod revision, put by its etcd
 * watch), at most ACK_WAIT_MS: the CA may ask any instance, and one that
 * has not seen the challenge yet would fail the order. After the wait the
 * CA is asked anyway (an instance may be unable to answer, an older
 * version say; the order then fails as it would have), and those that did
 * not confirm are not waited for again for ACK_QUIET_MS.
 */
static void fleet_confirmed(weir_acme_manager *m, const char *kind, const char *name,
                            const char *key_auth, int64_t rev)
{
    const char *prefix = weir__etcd_source_prefix(m->fleet);
    const char *self = weir__etcd_source_instance(m->fleet);
    char *inst = NULL, *acks = NULL, *want = NULL, err[512] = "";
    if (asprintf(&inst, "%s/instances/", prefix) < 0)
        inst = NULL;
    if (asprintf(&acks, "%s/acme/ack/%s/%s/", prefix, kind, name) < 0)
        acks = NULL;
    if (asprintf(&want, "%" PRId64 " %s", rev, key_auth) < 0)
        want = NULL;
    size_t ni = inst ? strlen(inst) : 0, na = acks ? strlen(acks) : 0;
    int64_t until = mono_ms() + ACK_WAIT_MS;
    bool done = !inst || !acks || !want;
    weir_strbuf missing = {0};
    while (!done && !atomic_load(&m->stop)) {
        weir_etcd_kvs in = {0}, ak = {0};
        if (weir__etcd_range(m->e, inst, 0, &in, err, sizeof(err)) != 0 ||
            weir__etcd_range(m->e, acks, 0, &ak, err, sizeof(err)) != 0) {
            weir_log(WEIR_LEVEL_WARN, "acme: %s %s: the fleet's confirmations unread: %s", kind,
                     name, err);
            done = true;
        }
        missing.len = 0;
        size_t n_missing = 0;
        for (size_t i = 0; !done && i < in.n; i++) {
            const char *id = in.v[i].key + ni;
            if (in.v[i].key_len <= ni || (self && strcmp(id, self) == 0) || quiet(m, id))
                continue;
            bool acked = false;
            for (size_t k = 0; k < ak.n && !acked; k++)
                acked = ak.v[k].key_len > na && strcmp(ak.v[k].key + na, id) == 0 &&
                        strcmp(ak.v[k].value, want) == 0;
            if (!acked)
                weir__sb_printf(&missing, "%s%s", n_missing ? ", " : "", id);
            n_missing += !acked;
        }
        weir__etcd_kvs_free(&in);
        weir__etcd_kvs_free(&ak);
        if (done || n_missing == 0)
            break;
        if (mono_ms() >= until) {
            weir_log(WEIR_LEVEL_WARN,
                     "acme: %s %s: %zu instance(s) did not confirm the challenge in %d s (%s); "
                     "asking the CA anyway, and not waiting for them for %d min",
                     kind, name, n_missing, ACK_WAIT_MS / 1000,
                     missing.p && !missing.oom ? missing.p : "?", ACK_QUIET_MS / 60000);
            if (missing.p && !missing.oom) {
                free(m->unconfirmed);
                m->unconfirmed = missing.p;
                missing.p = NULL;
                m->quiet_until_ms = mono_ms() + ACK_QUIET_MS;
            }
            break;
        }
        usleep(50000);
    }
    free(missing.p);
    free(inst);
    free(acks);
    free(want);
}

/* key_auth under /PREFIX/acme/KIND/NAME, on this instance's lease (it goes
 * if the holder dies mid-order), for the other instances to give too,
 * once they all confirm it (or the wait is over). */
static void fleet_share(weir_acme_manager *m, const char *kind, const char *name,
                        const char *key_auth)
{
    char perr[300], *key = NULL;
    if (asprintf(&key, "%s/acme/%s/%s", weir__etcd_source_prefix(m->fleet), kind, name) < 0)
        return;
    int64_t rev = 0, lease = weir__etcd_source_lease(m->fleet);
    int rc = weir__etcd_put_if(m->e, key, key_auth, strlen(key_auth), -1, lease, &rev, perr,
                               sizeof(perr));
    if (rc != 0 && lease && strstr(perr, "lease not found"))
        rc = weir__etcd_put_if(m->e, key, key_auth, strlen(key_auth), -1, 0, &rev, perr,
                               sizeof(perr));
    if (rc != 0)
        weir_log(WEIR_LEVEL_WARN,
                 "acme: the challenge is not in etcd (%s): only this instance answers it", perr);
    else
        fleet_confirmed(m, kind, name, key_auth, rev);
    free(key);
}

/* The challenge and its confirmations go. */
static void fleet_unshare(weir_acme_manager *m, const char *kind, const char *name)
{
    char perr[300], *key = NULL, *acks = NULL;
    const char *prefix = weir__etcd_source_prefix(m->fleet);
    if (asprintf(&key, "%s/acme/%s/%s", prefix, kind, name) >= 0)
        weir__etcd_delete_if(m->e, key, false, -1, perr, sizeof(perr));
    if (asprintf(&acks, "%s/acme/ack/%s/%s/", prefix, kind, name) >= 0)
        weir__etcd_delete_if(m->e, acks, true, -1, perr, sizeof(perr));
    free(key);
    free(acks);
}

/* In a fleet, the key authorization also goes under
 * /PREFIX/acme/tls-alpn-01/DOMAIN: every instance serves the challenge
 * certificate (the CA may reach any one behind a balancer). */
static int alpn_present(void *arg, const char *domain, const char *token, const char *key_auth,
                        char *err, size_t err_len)
{
    weir_acme_manager *m = arg;
    (void)token;
    if (alpn_serve(domain, key_auth, err, err_len) != 0)
        return -1;
    if (m->e)
        fleet_share(m, "tls-alpn-01", domain, key_auth);
    return 0;
}

static void alpn_cleanup(void *arg, const char *domain, const char *token)
{
    weir_acme_manager *m = arg;
    (void)token;
    weir_tls_set_acme_challenge(domain, NULL, NULL);
    if (m->e)
        fleet_unshare(m, "tls-alpn-01", domain);
}

/* HTTP-01: the token in this instance's table and, in a fleet, under
 * /PREFIX/acme/http-01/TOKEN for the others to answer too (the CA may
 * ask any of them). */
static int present(void *arg, const char *domain, const char *token, const char *key_auth,
                   char *err, size_t err_len)
{
    weir_acme_manager *m = arg;
    (void)domain;
    if (table_add(token, key_auth, err, err_len) != 0)
        return -1;
    if (m->e)
        fleet_share(m, "http-01", token, key_auth);
    return 0;
}

static void cleanup(void *arg, const char *domain, const char *token)
{
    weir_acme_manager *m = arg;
    (void)domain;
    table_remove(token);
    if (m->e)
        fleet_unshare(m, "http-01", token);
}

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

static char *signature(const weir_cfg_cert *c)
{
    size_t cap =
        strlen(c->acme) + strlen(c->storage) + 32 + (c->dns_hook ? strlen(c->dns_hook) : 0);
    for (size_t i = 0; i < c->n_domains; i++)
        cap += strlen(c->domains[i]) + 1;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    /* Not the storage: the same certificate wherever an instance keeps it
     * (a fleet's instances compare this). */
    int n = snprintf(s, cap, "%s|%d|%s|%d|", c->acme, c->key_type, c->dns_hook ? c->dns_hook : "",
                     c->tls_alpn);
    for (size_t i = 0; i < c->n_domains && n > 0; i++)
        n += snprintf(s + n, cap - (size_t)n, "%s,", c->domains[i]);
    return s;
}

/* Whether x is served for d ("*.NAME": its wildcard). */
static bool covers(X509 *x, const char *d)
{
    if (strncmp(d, "*.", 2) != 0)
        return X509_check_host(x, d, 0, 0, NULL) == 1;
    char probe[300];
    snprintf(probe, sizeof(probe), "weir-wildcard-probe.%s", d + 2);
    return X509_check_host(x, probe, 0, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, NULL) == 1;
}

/* The certificate in path: whether it covers every domain, and its
 * validity. False when there is none to use. */
static bool cert_state(const char *path, const weir_cfg_cert *c, int64_t *not_before,
                       int64_t *not_after)
{
    FILE *f = fopen(path, "r");
    X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    if (!x)
        return false;
    bool ok = true;
    for (size_t i = 0; ok && i < c->n_domains; i++)
        ok = covers(x, c->domains[i]);
    struct tm b, a;
    ok = ok && ASN1_TIME_to_tm(X509_get0_notBefore(x), &b) == 1 &&
         ASN1_TIME_to_tm(X509_get0_notAfter(x), &a) == 1;
    if (ok) {
        *not_before = (int64_t)timegm(&b);
        *not_after = (int64_t)timegm(&a);
    }
    X509_free(x);
    return ok;
}

static int64_t renew_at(const weir_cfg_cert *c, int64_t nb, int64_t na)
{
    if (c->renew_before_ms)
        return na - (int64_t)(c->renew_before_ms / 1000);
    return nb + (na - nb) * 2 / 3;
}

static int mkdirs(const char *dir)
{
    char p[4096];
    snprintf(p, sizeof(p), "%s", dir);
    for (char *s = p + 1; *s; s++) {
        if (*s == '/') {
            *s = '\0';
            if (mkdir(p, 0700) != 0 && errno != EEXIST)
                return -1;
            *s = '/';
        }
    }
    return mkdir(p, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

static void refresh_main(void *arg)
{
    weir_acme_manager *m = arg;
    if (weir__app_refresh_tls(m->app) != 0)
        weir_log(WEIR_LEVEL_ERROR, "acme: a new certificate could not be put into service (see "
                                   "above); the servers keep what they served");
}

/* Whether the CA's chain is one to serve: its leaf for key, covering
 * every domain. */
static bool chain_fits(const char *chain, EVP_PKEY *key, const weir_cfg_cert *c, char *err,
                       size_t err_len)
{
    BIO *b = BIO_new_mem_buf(chain, -1);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    bool ok = x && X509_check_private_key(x, key) == 1;
    for (size_t i = 0; ok && i < c->n_domains; i++)
        ok = covers(x, c->domains[i]);
    X509_free(x);
    ERR_clear_error();
    if (!ok)
        snprintf(err, err_len,
                 "the CA's certificate does not fit (not for this key or not "
                 "every domain): not stored");
    return ok;
}

/* One order for c; 0, or -1 with *retry_s (a rate limit's wait, or 0). */
static int order(weir_acme_manager *m, const weir_cfg_cert *c, char *err, size_t err_len,
                 int64_t *retry_s)
{
    *retry_s = 0;
    if (mkdirs(c->storage) != 0) {
        snprintf(err, err_len, "cannot make the storage directory %s: %s", c->storage,
                 strerror(errno));
        return -1;
    }
    unsigned char md[32];
    unsigned int mdn = 0;
    EVP_Digest(c->acme, strlen(c->acme), md, &mdn, EVP_sha256(), NULL);
    char path[4200];
    snprintf(path, sizeof(path), "%s/account-%02x%02x%02x%02x%02x%02x.key", c->storage, md[0],
             md[1], md[2], md[3], md[4], md[5]);
    EVP_PKEY *account = weir__acme_key_load_or_create(path, WEIR_ACME_EC256, err, err_len);
    if (!account)
        return -1;
    EVP_PKEY *key = weir__acme_key_new((weir_acme_key_type)c->key_type);
    /* A renewal of the stored certificate (one that still covers the
     * domains) says which one it replaces. */
    int64_t nb, na;
    char *replaces = NULL, *pem = NULL, rerr[300];
    size_t n = 0;
    if (cert_state(c->acme_cert, c, &nb, &na) &&
        (pem = weir__admin_read_file(c->acme_cert, &n, rerr, sizeof(rerr))))
        replaces = weir__acme_cert_id(pem);
    free(pem);
    weir_acme_options o = {.directory = c->acme,
                           .ca_file = c->acme_ca,
                           .account_key = account,
                           .email = c->email,
                           .replaces = replaces};
    weir_acme *a = key ? weir__acme_new(&o) : NULL;
    free(replaces);
    dns_arg dns = {.hook = c->dns_hook};
    weir_acme_challenge_ops http = {"http-01", present, cleanup, m};
    weir_acme_challenge_ops dns01 = {"dns-01", dns_present, dns_cleanup, &dns};
    weir_acme_challenge_ops alpn = {"tls-alpn-01", alpn_present, alpn_cleanup, m};
    const weir_acme_challenge_ops *ops = c->dns_hook ? &dns01 : c->tls_alpn ? &alpn : &http;
    char *chain = NULL, *kp = NULL;
    int rc = -1;
    atomic_fetch_add(&m->started, 1);
    if (!a) {
        snprintf(err, err_len, "out of memory");
    } else if (weir__acme_order(a, (const char *const *)c->domains, c->n_domains, key, ops, &chain,
                                retry_s, err, err_len) == WEIR_ACME_OK) {
        kp = weir__acme_key_pem(key);
        /* The key first: the certificate's rename makes the pair current. */
        if (!chain_fits(chain, key, c, err, err_len)) {
            /* written nowhere: a certificate that would not load */
        } else if (!kp || weir__admin_write_file(c->acme_key, kp, strlen(kp), 0600) != 0 ||
                   weir__admin_write_file(c->acme_cert, chain, strlen(chain), 0600) != 0)
            snprintf(err, err_len, "cannot write %s: %s", c->acme_cert, strerror(errno));
        else
            rc = 0;
    }
    if (kp)
        OPENSSL_cleanse(kp, strlen(kp));
    free(kp);
    free(chain);
    weir__acme_free(a);
    EVP_PKEY_free(key);
    EVP_PKEY_free(account);
    atomic_fetch_add(rc == 0 ? &m->succeeded : &m->failed, 1);
    return rc;
}

static item *find(weir_acme_manager *m, const char *name)
{
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->items[i].name, name) == 0)
            return &m->items[i];
    return NULL;
}

static void item_free(item *it)
{
    free(it->name);
    free(it->sig);
    free(it->error);
}

/* Follows the configuration: new or changed certificates are looked at
 * now, removed ones forgotten. Returns the certificates' snapshot. */
static weir_config *sync_items(weir_acme_manager *m)
{
    weir_config *cfg = weir__app_config(m->app);
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->n; i++)
        m->items[i].seen = false;
    for (size_t i = 0; cfg && i < cfg->n_certs; i++) {
        const weir_cfg_cert *c = &cfg->certs[i];
        if (!c->acme)
            continue;
        char *sig = signature(c);
        item *it = find(m, c->name);
        if (!it) {
            item *nv = realloc(m->items, (m->n + 1) * sizeof(*nv));
            if (!nv) {
                free(sig);
                continue;
            }
            m->items = nv;
            it = &m->items[m->n++];
            *it = (item){.name = strdup(c->name)};
        }
        if (!it->sig || !sig || strcmp(it->sig, sig) != 0) {
            free(it->sig);
            it->sig = sig;
            it->state = ST_CHECKING;
            it->next_s = 0;
            it->backoff_s = 0;
        } else {
            free(sig);
        }
        it->seen = true;
    }
    size_t kept = 0;
    for (size_t i = 0; i < m->n; i++) {
        if (m->items[i].seen)
            m->items[kept++] = m->items[i];
        else
            item_free(&m->items[i]);
    }
    m->n = kept;
    pthread_mutex_unlock(&m->mu);
    return cfg;
}

static void set_state(weir_acme_manager *m, item *it, item_state st, int64_t next, const char *err)
{
    pthread_mutex_lock(&m->mu);
    it->state = st;
    it->next_s = next;
    if (err) {
        free(it->error);
        it->error = strdup(err);
    }
    pthread_mutex_unlock(&m->mu);
}

/* ---- a fleet on etcd: the lock holder orders, everyone loads ---- */

static char *fleet_key(weir_acme_manager *m, const char *name)
{
    char *k = NULL;
    if (asprintf(&k, "%s/acme/%s", weir__etcd_source_prefix(m->fleet), name) < 0)
        return NULL;
    return k;
}

/* Stores the certificate and key just written under /PREFIX/acme/NAME,
 * if this instance still holds the lock with that fencing token. */
static void fleet_push(weir_acme_manager *m, const weir_cfg_cert *c, const char *sig,
                       int64_t fencing)
{
    size_t n = 0;
    char rerr[300];
    char *cert = weir__admin_read_file(c->acme_cert, &n, rerr, sizeof(rerr));
    char *key = weir__admin_read_file(c->acme_key, &n, rerr, sizeof(rerr));
    char *k = fleet_key(m, c->name), *lock = NULL;
    json_t *v =
        cert && key ? json_pack("{s:s, s:s, s:s}", "sig", sig, "cert", cert, "key", key) : NULL;
    char *text = v ? json_dumps(v, JSON_COMPACT) : NULL;
    char err[512] = "";
    int rc = -1;
    if (text && k &&
        asprintf(&lock, "%s/locks/singleton", weir__etcd_source_prefix(m->fleet)) >= 0) {
        json_t *cmp = json_pack("[o]", weir__etcd_cmp_create(lock, fencing));
        json_t *ops = json_pack("[o]", weir__etcd_op_put(k, text, strlen(text), 0));
        rc = weir__etcd_txn(m->e, cmp, ops, NULL, err, sizeof(err));
    } else {
        lock = NULL;
    }
    if (rc == WEIR_ETCD_FAILED)
        weir_log(WEIR_LEVEL_WARN,
                 "acme: [certificates.%s]: the fleet lock changed hands (fencing token %lld): "
                 "the certificate is not stored in etcd",
                 c->name, (long long)fencing);
    else if (rc != 0)
        weir_log(WEIR_LEVEL_WARN, "acme: [certificates.%s]: not stored in etcd: %s", c->name,
                 err[0] ? err : "out of memory");
    if (key)
        OPENSSL_cleanse(key, strlen(key));
    if (text)
        OPENSSL_cleanse(text, strlen(text));
    free(cert);
    free(key);
    free(text);
    free(k);
    free(lock);
    json_decref(v);
}

/* Loads the fleet's certificate for c when it is newer than the local
 * one (na: its expiry, 0 for none); true when it did. */
static bool fleet_pull(weir_acme_manager *m, const weir_cfg_cert *c, const char *sig, int64_t na)
{
    char *k = fleet_key(m, c->name);
    weir_etcd_kvs kv = {0};
    char err[512];
    bool done = false;
    if (!k || weir__etcd_get(m->e, k, &kv, err, sizeof(err)) != 0 || kv.n != 1) {
        free(k);
        weir__etcd_kvs_free(&kv);
        return false;
    }
    json_error_t je;
    json_t *v = json_loadb(kv.v[0].value, kv.v[0].value_len, 0, &je);
    const char *vs = json_string_value(json_object_get(v, "sig"));
    const char *cert = json_string_value(json_object_get(v, "cert"));
    const char *key = json_string_value(json_object_get(v, "key"));
    if (vs && cert && key && strcmp(vs, sig) == 0 && mkdirs(c->storage) == 0) {
        BIO *b = BIO_new_mem_buf(cert, -1);
        X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
        b = BIO_new_mem_buf(key, -1);
        EVP_PKEY *pk = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
        struct tm t;
        int64_t their =
            x && ASN1_TIME_to_tm(X509_get0_notAfter(x), &t) == 1 ? (int64_t)timegm(&t) : 0;
        char ferr[256];
        if (x && pk && their > na && chain_fits(cert, pk, c, ferr, sizeof(ferr)) &&
            weir__admin_write_file(c->acme_key, key, strlen(key), 0600) == 0 &&
            weir__admin_write_file(c->acme_cert, cert, strlen(cert), 0600) == 0) {
            done = true;
            weir_log(WEIR_LEVEL_INFO,
                     "acme: [certificates.%s]: the fleet's certificate loaded from etcd, now "
                     "served",
                     c->name);
            weir_server_call_main(m->srv, refresh_main, m);
        }
        X509_free(x);
        EVP_PKEY_free(pk);
        ERR_clear_error();
    }
    json_decref(v);
    weir__etcd_kvs_free(&kv);
    free(k);
    return done;
}

/* The CA's suggested renewal time for the stored certificate (ARI, RFC
 * 9773), asked at most hourly; 0 when it offers none or cannot say. */
static int64_t ari_due(weir_acme_manager *m, const weir_cfg_cert *c, item *it, int64_t now)
{
    if (it->ari_asked_s && now - it->ari_asked_s < CHECK_EVERY_S)
        return it->ari_due;
    it->ari_asked_s = now;
    it->ari_due = 0;
    size_t n = 0;
    char rerr[300];
    char *pem = weir__admin_read_file(c->acme_cert, &n, rerr, sizeof(rerr));
    if (!pem)
        return 0;
    weir_acme_options o = {.directory = c->acme, .ca_file = c->acme_ca};
    weir_acme *a = weir__acme_new(&o);
    int64_t start = 0, end = 0;
    char err[512];
    int rc = a ? weir__acme_renewal_window(a, pem, &start, &end, err, sizeof(err)) : -1;
    if (rc == WEIR_ACME_OK) {
        uint32_t r = 0;
        RAND_bytes((unsigned char *)&r, sizeof(r));
        /* A random time in the window, as RFC 9773 4.2 asks. */
        it->ari_due = start + (end > start ? (int64_t)(r % (uint32_t)(end - start)) : 0);
    } else if (rc != 1) {
        weir_log(WEIR_LEVEL_WARN, "acme: [certificates.%s]: no renewal information: %s", c->name,
                 err);
    }
    weir__acme_free(a);
    free(pem);
    return it->ari_due;
}

static void look_at(weir_acme_manager *m, const weir_cfg_cert *c, item *it)
{
    int64_t now = now_s(), nb = 0, na = 0;
    bool have = cert_state(c->acme_cert, c, &nb, &na) && access(c->acme_key, R_OK) == 0;
    if (m->e && fleet_pull(m, c, it->sig, have ? na : 0)) {
        have = cert_state(c->acme_cert, c, &nb, &na);
        it->ari_asked_s = 0;
    }
    if (have) {
        pthread_mutex_lock(&m->mu);
        it->not_after = na;
        pthread_mutex_unlock(&m->mu);
    }
    int64_t due = have ? renew_at(c, nb, na) : now;
    if (have && !c->renew_before_ms) {
        int64_t ari = ari_due(m, c, it, now);
        if (ari)
            due = ari;
    }
    int64_t every = m->e ? FLEET_CHECK_EVERY_S : CHECK_EVERY_S;
    if (have && now < due) {
        set_state(m, it, ST_VALID, due < now + every ? due : now + every, NULL);
        return;
    }
    int64_t fencing = 0;
    if (m->e && !weir__etcd_source_lock(m->fleet, &fencing)) {
        /* Another instance orders for the fleet; its certificate comes
         * through etcd. */
        if (it->state != ST_WAITING)
            weir_log(WEIR_LEVEL_INFO,
                     "acme: [certificates.%s]: the fleet's lock holder orders it; waiting for "
                     "its certificate in etcd",
                     c->name);
        set_state(m, it, ST_WAITING, now + FLEET_CHECK_EVERY_S, NULL);
        return;
    }
    weir_log(WEIR_LEVEL_INFO, "acme: [certificates.%s]: %s %s for %s", c->name,
             have ? "renewing" : "ordering", "a certificate", c->domains[0]);
    set_state(m, it, ST_ORDERING, now, NULL);
    char err[1024] = "";
    int64_t retry = 0;
    if (order(m, c, err, sizeof(err), &retry) == 0) {
        cert_state(c->acme_cert, c, &nb, &na);
        pthread_mutex_lock(&m->mu);
        it->not_after = na;
        it->backoff_s = 0;
        pthread_mutex_unlock(&m->mu);
        it->ari_asked_s = 0; /* a new certificate: its own window */
        int64_t next = renew_at(c, nb, na);
        set_state(m, it, ST_VALID, next < now_s() + CHECK_EVERY_S ? next : now_s() + CHECK_EVERY_S,
                  NULL);
        weir_log(WEIR_LEVEL_INFO,
                 "acme: [certificates.%s]: certificate obtained for %s (expires in %" PRId64
                 " s), now served",
                 c->name, c->domains[0], na - now_s());
        json_t *doms = json_array();
        for (size_t i = 0; i < c->n_domains; i++)
            json_array_append_new(doms, json_string(c->domains[i]));
        weir__webhook_emit(WEIR_EV_CERT,
                           json_pack("{s:s, s:s, s:o, s:I}", "certificate", c->name, "action",
                                     have ? "renewed" : "obtained", "domains", doms, "expires_in_s",
                                     (json_int_t)(na - now_s())),
                           "certificate %s %s for %s (expires in %lld s)", c->name,
                           have ? "renewed" : "obtained", c->domains[0], (long long)(na - now_s()));
        if (m->e)
            fleet_push(m, c, it->sig, fencing);
        weir_server_call_main(m->srv, refresh_main, m);
        return;
    }
    uint32_t b = it->backoff_s ? it->backoff_s * 2 : BACKOFF_FIRST_S;
    if (b > BACKOFF_MAX_S)
        b = BACKOFF_MAX_S;
    int64_t wait = retry > b ? retry : b;
    pthread_mutex_lock(&m->mu);
    it->backoff_s = b;
    pthread_mutex_unlock(&m->mu);
    /* now_s() is whole seconds, up to one behind the real time: one more
     * makes the wait at least what the CA asked for (RFC 8555 7.6). */
    set_state(m, it, ST_FAILED, now_s() + wait + 1, err);
    weir__webhook_emit(WEIR_EV_CERT_FAIL,
                       json_pack("{s:s, s:o, s:I}", "certificate", c->name, "error",
                                 weir__webhook_str(err), "retry_in_s", (json_int_t)wait),
                       "certificate %s: %s (trying again in %lld s)", c->name, err,
                       (long long)wait);
    weir_log(WEIR_LEVEL_ERROR, "acme: [certificates.%s]: %s; %s, trying again in %" PRId64 " s",
             c->name, err, have ? "the current certificate stays" : "still serving a temporary one",
             wait);
}

static void *manager_main(void *arg)
{
    weir_acme_manager *m = arg;
    while (!atomic_load(&m->stop)) {
        weir_config *cfg = sync_items(m);
        for (size_t i = 0; cfg && i < cfg->n_certs && !atomic_load(&m->stop); i++) {
            const weir_cfg_cert *c = &cfg->certs[i];
            if (!c->acme)
                continue;
            pthread_mutex_lock(&m->mu);
            item *it = find(m, c->name);
            bool due = it && it->next_s <= now_s();
            pthread_mutex_unlock(&m->mu);
            if (due)
                look_at(m, c, it); /* items change only on this thread */
        }
        weir__config_unref(cfg);
        for (int t = 0; t < 10 && !atomic_load(&m->stop); t++)
            usleep(100000);
    }
    return NULL;
}

static _Atomic(weir_acme_manager *) running;

weir_acme_manager *weir__acme_manager_running(void)
{
    return atomic_load(&running);
}

weir_acme_manager *weir__acme_manager_start(weir_app *app, weir_server *srv,
                                            weir_etcd_source *fleet)
{
    weir_acme_manager *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->app = app;
    m->srv = srv;
    m->fleet = fleet;
    if (fleet) {
        char err[512];
        m->e = weir__etcd_source_client(fleet, err, sizeof(err));
        if (!m->e)
            weir_log(WEIR_LEVEL_ERROR, "acme: %s: each instance orders for itself", err);
    }
    pthread_mutex_init(&m->mu, NULL);
    if (pthread_create(&m->thread, NULL, manager_main, m) != 0) {
        pthread_mutex_destroy(&m->mu);
        free(m);
        return NULL;
    }
    atomic_store(&running, m);
    return m;
}

void weir__acme_manager_stop(weir_acme_manager *m)
{
    if (!m)
        return;
    weir_acme_manager *me = m;
    atomic_compare_exchange_strong(&running, &me, NULL);
    atomic_store(&m->stop, true);
    pthread_join(m->thread, NULL);
    for (size_t i = 0; i < m->n; i++)
        item_free(&m->items[i]);
    free(m->items);
    weir__etcd_free(m->e);
    free(m->unconfirmed);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

json_t *weir__acme_status(weir_acme_manager *m)
{
    static const char *const names[] = {"checking", "valid", "ordering", "failed", "waiting"};
    json_t *certs = json_array();
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; certs && i < m->n; i++) {
        const item *it = &m->items[i];
        json_array_append_new(certs,
                              json_pack("{s:s, s:s, s:I, s:I, s:s?}", "name", it->name, "state",
                                        names[it->state], "not_after", (json_int_t)it->not_after,
                                        "next_check", (json_int_t)it->next_s, "error", it->error));
    }
    pthread_mutex_unlock(&m->mu);
    return json_pack("{s:o, s:I, s:I, s:I}", "certificates", certs, "orders_started",
                     (json_int_t)atomic_load(&m->started), "orders_succeeded",
                     (json_int_t)atomic_load(&m->succeeded), "orders_failed",
                     (json_int_t)atomic_load(&m->failed));
}

int64_t weir__acme_not_after(const weir_cfg_cert *c)
{
    weir_acme_manager *m = c->acme ? weir__acme_manager_running() : NULL;
    if (!m)
        return c->acme ? 0 : c->not_after;
    int64_t na = 0;
    pthread_mutex_lock(&m->mu);
    item *it = find(m, c->name);
    if (it)
        na = it->not_after;
    pthread_mutex_unlock(&m->mu);
    return na;
}
