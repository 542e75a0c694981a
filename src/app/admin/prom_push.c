/*
 * prom_push.c - metrics pushed to a Pushgateway (prom_push.h).
 */
#include "app/admin/prom_push.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "app/admin/metrics.h"
#include "app/app.h"
#include "weir/log.h"

#define PUSH_TIMEOUT_MS 5000

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct weir_app *app;
    char *url; /* NULL: off */
    uint32_t interval_ms;
    bool running, stopping;
    pthread_t thread;
    _Atomic uint64_t ok, failed;
} G = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

void weir__prom_push_counts(uint64_t *ok, uint64_t *failed)
{
    *ok = atomic_load(&G.ok);
    *failed = atomic_load(&G.failed);
}

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

static size_t read_body(char *dst, size_t size, size_t n, void *arg)
{
    struct {
        const char *p;
        size_t left;
    } *src = arg;
    size_t k = size * n < src->left ? size * n : src->left;
    memcpy(dst, src->p, k);
    src->p += k;
    src->left -= k;
    return k;
}

/* PUTs text (n bytes) to url: true when the gateway took it. */
static bool put(const char *url, const char *text, size_t n, char *err, size_t err_len)
{
    CURL *c = curl_easy_init();
    if (!c) {
        snprintf(err, err_len, "out of memory");
        return false;
    }
    struct {
        const char *p;
        size_t left;
    } src = {text, n};
    struct curl_slist *h =
        curl_slist_append(NULL, "Content-Type: text/plain; version=0.0.4; charset=utf-8");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, read_body);
    curl_easy_setopt(c, CURLOPT_READDATA, &src);
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)n);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)PUSH_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    curl_slist_free_all(h);
    if (rc != CURLE_OK)
        snprintf(err, err_len, "%s", curl_easy_strerror(rc));
    else if (status < 200 || status > 299)
        snprintf(err, err_len, "HTTP %ld", status);
    return rc == CURLE_OK && status >= 200 && status <= 299;
}

static void *push_main(void *arg)
{
    (void)arg;
    bool warned = false;
    pthread_mutex_lock(&G.mu);
    while (!G.stopping) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += G.interval_ms / 1000;
        until.tv_nsec += (long)(G.interval_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&G.cv, &G.mu, &until);
        if (G.stopping || !G.url)
            continue;
        char *url = strdup(G.url);
        pthread_mutex_unlock(&G.mu);
        weir_config *cfg = weir__app_config(G.app);
        size_t len = 0;
        char *text = cfg ? weir__metrics_render(cfg, weir__app_server(G.app),
                                                weir__app_log_dropped(G.app), &len)
                         : NULL;
        weir__config_unref(cfg);
        char err[256] = "out of memory";
        bool ok = url && text && put(url, text, len, err, sizeof(err));
        atomic_fetch_add(ok ? &G.ok : &G.failed, 1);
        if (!ok && !warned)
            weir_log(WEIR_LEVEL_WARN, "prometheus_push: %s: %s; trying again every interval",
                     url ? url : "?", err);
        else if (ok && warned)
            weir_log(WEIR_LEVEL_INFO, "prometheus_push: %s takes pushes again", url);
        warned = !ok;
        free(text);
        free(url);
        pthread_mutex_lock(&G.mu);
    }
    pthread_mutex_unlock(&G.mu);
    return NULL;
}

/* The URL with a grouping key, malloc'd. */
static char *with_group(const char *url)
{
    if (strstr(url, "/metrics/job/"))
        return strdup(url);
    char host[256] = "localhost";
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    size_t n = strlen(url);
    while (n && url[n - 1] == '/')
        n--;
    char *out = NULL;
    if (asprintf(&out, "%.*s/metrics/job/weir/instance/%s", (int)n, url, host) < 0)
        return NULL;
    return out;
}

void weir__prom_push_configure(struct weir_app *app)
{
    weir_config *cfg = weir__app_config(app);
    if (!cfg)
        return;
    char *url = cfg->basic.prometheus_push ? with_group(cfg->basic.prometheus_push) : NULL;
    uint32_t every = cfg->basic.prometheus_push_interval_ms;
    weir__config_unref(cfg);
    pthread_mutex_lock(&G.mu);
    free(G.url);
    G.url = url;
    G.interval_ms = every ? every : 15000;
    G.app = app;
    if (url && !G.running) {
        G.stopping = false;
        G.running = pthread_create(&G.thread, NULL, push_main, NULL) == 0;
    }
    pthread_cond_signal(&G.cv);
    pthread_mutex_unlock(&G.mu);
}

void weir__prom_push_stop(void)
{
    pthread_mutex_lock(&G.mu);
    bool running = G.running;
    G.stopping = true;
    pthread_cond_signal(&G.cv);
    pthread_mutex_unlock(&G.mu);
    if (running)
        pthread_join(G.thread, NULL);
    pthread_mutex_lock(&G.mu);
    G.running = false;
    free(G.url);
    G.url = NULL;
    pthread_mutex_unlock(&G.mu);
}
