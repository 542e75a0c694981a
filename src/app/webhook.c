/*
 * webhook.c - event notifications (webhook.h).
 */
#include "app/webhook.h"
#include "app/http_body.h"

#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "app/acme/manager.h"
#include "app/app.h"
#include "app/config/config.h"
#include "app/strbuf.h"
#include "weir/lb.h"
#include "weir/log.h"
#include "weir/server.h"

#define QUEUE_MAX 256
#define ATTEMPTS 3
#define EXPIRY_WARN_S (7 * 86400)

static const char *const names[WEIR_EV_N] = {"backend_status",
                                             "upstream_down",
                                             "reload_config",
                                             "reload_config_fail",
                                             "diff_config",
                                             "certificate",
                                             "certificate_fail",
                                             "certificate_expiry",
                                             "discovery_fail",
                                             "start",
                                             "stop"};
static const char *const types[] = {"normal", "slack", "wecom", "dingtalk", NULL};

int weir__event_by_name(const char *name)
{
    for (int i = 0; i < WEIR_EV_N; i++)
        if (strcmp(names[i], name) == 0)
            return i;
    return -1;
}

const char *weir__event_names(void)
{
    return "backend_status, upstream_down, reload_config, reload_config_fail, diff_config, "
           "certificate, certificate_fail, certificate_expiry, discovery_fail, start, stop";
}

int weir__webhook_type(const char *name)
{
    for (int i = 0; types[i]; i++)
        if (strcmp(types[i], name) == 0)
            return i;
    return -1;
}

typedef struct event {
    weir_event ev;
    char *msg;
    json_t *data; /* the fields of the normal type's "data" */
    int64_t unix_ms;
} event;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *url; /* NULL: off */
    int type;
    uint32_t mask;
    event q[QUEUE_MAX];
    size_t head, n;
    bool running, stopping;
    int64_t stop_deadline_ms;
    pthread_t thread;
    weir_app *app;
    weir_server *srv;
    _Atomic uint64_t sent, failed, dropped;
    _Atomic bool poll_posted; /* one poll queued on the main thread at most */
} W = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static int64_t wall_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

void weir__webhook_counts(uint64_t *sent, uint64_t *failed, uint64_t *dropped)
{
    *sent = atomic_load(&W.sent);
    *failed = atomic_load(&W.failed);
    *dropped = atomic_load(&W.dropped);
}

static bool wanted(weir_event ev)
{
    return W.url && (!W.mask || (W.mask & (1u << ev)));
}

/* msg, or (freed) a copy with each byte outside valid UTF-8 as U+FFFD: a
 * path or an error may hold any byte, and JSON holds UTF-8 only. */
static char *utf8(char *msg)
{
    if (!msg)
        return NULL;
    size_t n = strlen(msg);
    for (size_t i = 0; i < n;) {
        size_t k = (unsigned char)msg[i] < 0x80
                       ? 1
                       : weir__utf8_len((const unsigned char *)msg + i, n - i);
        if (!k) {
            weir_strbuf b = {0};
            weir__sb_put_utf8(&b, msg, n);
            free(msg);
            if (b.oom)
                free(b.p);
            return b.oom ? NULL : b.p;
        }
        i += k;
    }
    return msg;
}

/* s, valid UTF-8 but perhaps cut short by a buffer, ends on a whole
 * character. */
static void cut_tail(char *s)
{
    size_t n = strlen(s), j = n;
    while (j > 0 && n - j < 3 && ((unsigned char)s[j - 1] & 0xC0) == 0x80)
        j--;
    if (j > 0 && (unsigned char)s[j - 1] >= 0x80 &&
        !weir__utf8_len((const unsigned char *)s + j - 1, n - j + 1))
        s[j - 1] = '\0';
}

json_t *weir__webhook_str(const char *s)
{
    char *c = s ? utf8(strdup(s)) : NULL;
    json_t *j = c ? json_string(c) : NULL;
    free(c);
    return j ? j : json_null();
}

void weir__webhook_emit(weir_event ev, json_t *data, const char *fmt, ...)
{
    pthread_mutex_lock(&W.mu);
    bool want = W.running && !W.stopping && wanted(ev);
    pthread_mutex_unlock(&W.mu);
    if (!want && ev != WEIR_EV_STOP) {
        json_decref(data);
        return;
    }
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&msg, fmt, ap);
    va_end(ap);
    if (n < 0 || !(msg = utf8(msg))) {
        json_decref(data);
        return;
    }
    pthread_mutex_lock(&W.mu);
    if (!W.running || !wanted(ev)) {
        free(msg);
        json_decref(data);
    } else if (W.n == QUEUE_MAX) {
        free(msg);
        json_decref(data);
        atomic_fetch_add(&W.dropped, 1);
    } else {
        W.q[(W.head + W.n) % QUEUE_MAX] = (event){ev, msg, data, wall_ms()};
        W.n++;
        pthread_cond_signal(&W.cv);
    }
    pthread_mutex_unlock(&W.mu);
}

/* The body for the webhook's type. */
static char *payload(int type, const event *e)
{
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    char *h = utf8(strdup(host));
    snprintf(host, sizeof(host), "%s", h ? h : "?");
    free(h);
    time_t t = (time_t)(e->unix_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char when[40];
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    char text[2048];
    snprintf(text, sizeof(text), "weir %s on %s: %s", names[e->ev], host, e->msg);
    cut_tail(text);
    json_t *j;
    switch (type) {
    case WEIR_WEBHOOK_SLACK:
        j = json_pack("{s:s}", "text", text);
        break;
    case WEIR_WEBHOOK_WECOM:
        j = json_pack("{s:s, s:{s:s}}", "msgtype", "markdown", "markdown", "content", text);
        break;
    case WEIR_WEBHOOK_DINGTALK:
        j = json_pack("{s:s, s:{s:s, s:s}}", "msgtype", "markdown", "markdown", "title",
                      names[e->ev], "text", text);
        break;
    default:
        j = json_pack("{s:s, s:s, s:o, s:s, s:I, s:s, s:s}", "event", names[e->ev], "message",
                      e->msg, "data", e->data ? json_incref(e->data) : json_object(), "hostname",
                      host, "pid", (json_int_t)getpid(), "time", when, "version", weir_version());
        break;
    }
    char *out = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return out;
}

static bool post(const char *url, const char *body, long timeout_ms, char *err, size_t err_len)
{
    long st = weir__http_send(NULL, "POST", url, "application/json", body, strlen(body), NULL, 0,
                              timeout_ms, err, err_len);
    return st >= 200 && st <= 299;
}

static void poll_main(void *arg);

static void *sender_main(void *arg)
{
    (void)arg;
    int64_t next_poll = 0;
    pthread_mutex_lock(&W.mu);
    for (;;) {
        if (W.stopping && (W.n == 0 || wall_ms() >= W.stop_deadline_ms))
            break;
        if (W.n == 0) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += 1;
            pthread_cond_timedwait(&W.cv, &W.mu, &until);
        }
        if (!W.stopping && wall_ms() >= next_poll) {
            next_poll = wall_ms() + 1000;
            /* At most one queued: a busy main thread does not pile them up. */
            if (W.url && !atomic_exchange(&W.poll_posted, true) &&
                weir_server_call_main(W.srv, poll_main, NULL) != WEIR_OK)
                atomic_store(&W.poll_posted, false);
        }
        if (W.n == 0)
            continue;
        event e = W.q[W.head];
        W.head = (W.head + 1) % QUEUE_MAX;
        W.n--;
        char *url = W.url ? strdup(W.url) : NULL;
        int type = W.type;
        pthread_mutex_unlock(&W.mu);
        char *body = url ? payload(type, &e) : NULL;
        bool ok = false;
        char err[256] = "";
        for (int a = 0; body && a < ATTEMPTS && !ok; a++) {
            pthread_mutex_lock(&W.mu);
            bool stopping = W.stopping;
            int64_t left = W.stop_deadline_ms - wall_ms();
            pthread_mutex_unlock(&W.mu);
            if (stopping && left <= 0)
                break;
            if (a) /* 1 s, then 2 s */
                usleep((useconds_t)(1000000u << (a - 1)));
            ok = post(url, body, stopping && left < 5000 ? (long)left : 5000L, err, sizeof(err));
        }
        if (ok) {
            atomic_fetch_add(&W.sent, 1);
        } else {
            atomic_fetch_add(&W.failed, 1);
            weir_log(WEIR_LEVEL_WARN, "webhook: %s event not delivered: %s", names[e.ev], err);
        }
        free(body);
        free(url);
        free(e.msg);
        json_decref(e.data);
        pthread_mutex_lock(&W.mu);
    }
    /* What is left when the time is up is dropped. */
    while (W.n) {
        free(W.q[W.head].msg);
        json_decref(W.q[W.head].data);
        W.head = (W.head + 1) % QUEUE_MAX;
        W.n--;
        atomic_fetch_add(&W.dropped, 1);
    }
    W.running = false; /* what is emitted from now on is not queued (nor lost) */
    pthread_mutex_unlock(&W.mu);
    return NULL;
}

static void set_settings(const weir_cfg_basic *b)
{
    pthread_mutex_lock(&W.mu);
    free(W.url);
    W.url = b->webhook ? strdup(b->webhook) : NULL;
    W.type = b->webhook_type;
    W.mask = b->webhook_events;
    pthread_mutex_unlock(&W.mu);
}

void weir__webhook_start(weir_app *app, weir_server *srv, const weir_config *cfg)
{
    set_settings(&cfg->basic);
    pthread_mutex_lock(&W.mu);
    W.app = app;
    W.srv = srv;
    W.stopping = false;
    W.running = pthread_create(&W.thread, NULL, sender_main, NULL) == 0;
    pthread_mutex_unlock(&W.mu);
    weir__webhook_emit(
        WEIR_EV_START,
        json_pack("{s:s, s:o}", "version", weir_version(), "config", weir__webhook_str(cfg->file)),
        "weir %s serves (pid %d, configuration %s)", weir_version(), (int)getpid(), cfg->file);
}

void weir__webhook_stop(uint32_t ms)
{
    pthread_mutex_lock(&W.mu);
    bool running = W.running;
    W.stopping = true;
    W.stop_deadline_ms = wall_ms() + ms;
    pthread_cond_signal(&W.cv);
    pthread_mutex_unlock(&W.mu);
    if (running)
        pthread_join(W.thread, NULL);
    pthread_mutex_lock(&W.mu);
    W.running = false;
    free(W.url);
    W.url = NULL;
    pthread_mutex_unlock(&W.mu);
}

/* ---- the reload's diff ---- */

typedef struct diff_text {
    char text[1800];
    size_t len;
    json_t *changes; /* [{"change", "section"}] */
} diff_text;

static void add_section(void *arg, const char *change, const char *section)
{
    diff_text *d = arg;
    json_array_append_new(d->changes,
                          json_pack("{s:s, s:s}", "change", change, "section", section));
    if (d->len + 80 < sizeof(d->text))
        d->len += (size_t)snprintf(d->text + d->len, sizeof(d->text) - d->len, "%s %s [%s]",
                                   d->len ? "," : "", change, section);
}

void weir__webhook_reloaded(const weir_config *old, const weir_config *cfg)
{
    set_settings(&cfg->basic);
    weir__webhook_emit(WEIR_EV_RELOAD,
                       json_pack("{s:o, s:I}", "config", weir__webhook_str(cfg->file), "load",
                                 (json_int_t)cfg->revision),
                       "configuration %s reloaded (load %llu)", cfg->file,
                       (unsigned long long)cfg->revision);
    diff_text d = {.len = 0, .changes = json_array()};
    if (!weir__config_diff(old, cfg, add_section, &d)) {
        json_decref(d.changes);
        weir__webhook_emit(WEIR_EV_DIFF_CONFIG, NULL, "the configuration changed");
    } else if (d.len) {
        weir__webhook_emit(WEIR_EV_DIFF_CONFIG, json_pack("{s:o}", "changes", d.changes),
                           "sections%s", d.text);
    } else {
        json_decref(d.changes);
    }
}

/* ---- the poll (main thread) ---- */

typedef struct kv {
    char *key;
    int64_t v;
} kv;

static struct {
    kv *v;
    size_t n;
    bool primed; /* the first poll only records */
} seen;

/* The previous value of key (v_prev) and the new one recorded; false when
 * key is new. */
static bool record(const char *key, int64_t v, int64_t *prev)
{
    for (size_t i = 0; i < seen.n; i++) {
        if (strcmp(seen.v[i].key, key) == 0) {
            *prev = seen.v[i].v;
            seen.v[i].v = v;
            return true;
        }
    }
    kv *nv = realloc(seen.v, (seen.n + 1) * sizeof(*nv));
    if (nv) {
        seen.v = nv;
        seen.v[seen.n++] = (kv){strdup(key), v};
    }
    return false;
}

static void poll_upstream(const weir_cfg_upstream *u, bool emit)
{
    size_t want = weir_upstream_info(u->lb, NULL, 0) + 16;
    weir_backend_info *v = calloc(want, sizeof(*v));
    size_t n = v ? weir_upstream_info(u->lb, v, want) : 0;
    if (n > want)
        n = want;
    size_t healthy = 0;
    char key[400];
    int64_t prev;
    for (size_t i = 0; i < n; i++) {
        healthy += v[i].healthy && !v[i].draining;
        snprintf(key, sizeof(key), "b|%s|%s", u->name, v[i].addr);
        if (record(key, v[i].healthy, &prev) && emit && prev != v[i].healthy)
            weir__webhook_emit(WEIR_EV_BACKEND_STATUS,
                               json_pack("{s:s, s:s, s:b}", "upstream", u->name, "backend",
                                         v[i].addr, "healthy", v[i].healthy),
                               "upstream %s: backend %s is %s", u->name, v[i].addr,
                               v[i].healthy ? "healthy" : "unhealthy");
    }
    free(v);
    snprintf(key, sizeof(key), "u|%s", u->name);
    bool down = n > 0 && healthy == 0;
    if (record(key, down, &prev) && emit && prev != down)
        weir__webhook_emit(WEIR_EV_UPSTREAM_DOWN,
                           json_pack("{s:s, s:b, s:I, s:I}", "upstream", u->name, "down", down,
                                     "healthy", (json_int_t)healthy, "backends", (json_int_t)n),
                           "upstream %s %s", u->name,
                           down ? "has no healthy backend" : "has a healthy backend again");
    weir_discovery_info d;
    snprintf(key, sizeof(key), "d|%s", u->name);
    if (weir_upstream_discovery_info(u->lb, &d) && record(key, (int64_t)d.failures, &prev) &&
        emit && (uint64_t)prev < d.failures)
        weir__webhook_emit(
            WEIR_EV_DISCOVERY_FAIL,
            json_pack("{s:s, s:s, s:o, s:I}", "upstream", u->name, "discovery", d.kind, "error",
                      weir__webhook_str(d.last_error[0] ? d.last_error : "no answer"), "failures",
                      (json_int_t)d.failures),
            "upstream %s: %s discovery failed: %s", u->name, d.kind,
            d.last_error[0] ? d.last_error : "no answer");
}

static void poll_main(void *arg)
{
    (void)arg;
    atomic_store(&W.poll_posted, false);
    if (!W.app)
        return;
    weir_config *cfg = weir__app_config(W.app);
    if (!cfg)
        return;
    bool emit = seen.primed;
    for (size_t i = 0; i < cfg->n_upstreams; i++)
        if (cfg->upstreams[i].lb)
            poll_upstream(&cfg->upstreams[i], emit);
    /* Certificates near their end: once a day each. */
    int64_t now = (int64_t)time(NULL);
    for (size_t i = 0; i < cfg->n_certs; i++) {
        const weir_cfg_cert *c = &cfg->certs[i];
        int64_t na = weir__acme_not_after(c);
        char key[300];
        snprintf(key, sizeof(key), "c|%s", c->name);
        int64_t prev = 0;
        bool known = record(key, 0, &prev);
        if (na && na - now < EXPIRY_WARN_S && (!known || prev < now - 86400)) {
            record(key, now, &prev);
            weir__webhook_emit(WEIR_EV_CERT_EXPIRY,
                               json_pack("{s:s, s:I, s:b}", "certificate", c->name, "expires_in_s",
                                         (json_int_t)(na - now), "expired", na < now),
                               "certificate %s expires in %lld s (%s)", c->name,
                               (long long)(na - now), na < now ? "expired" : "renew it");
        } else if (known) {
            record(key, prev, &prev); /* keep when it was last said */
        }
    }
    seen.primed = true;
    weir__config_unref(cfg);
}
