/*
 * log.c - error log and the asynchronous access-log sink.
 *
 * The sink is a byte ring guarded by a mutex: workers append whole lines
 * (a memcpy under the lock, no I/O), the logger thread swaps out what is
 * there and writes it with one write(2). The ring is bounded; a full ring
 * drops the line and counts it rather than stall a worker.
 */
#include "core/log.h"

#include "weir/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static _Atomic int log_level = WEIR_LOG_INFO;

void weir__log_set_level(enum weir_log_level level)
{
    atomic_store(&log_level, (int)level);
}

enum weir_log_level weir__log_get_level(void)
{
    return (enum weir_log_level)atomic_load_explicit(&log_level, memory_order_relaxed);
}

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void weir__log(enum weir_log_level level, const char *fmt, ...)
{
    if ((int)level > atomic_load_explicit(&log_level, memory_order_relaxed))
        return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = (int)strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n += snprintf(line + n, sizeof(line) - (size_t)n, ".%03ldZ %s ", ts.tv_nsec / 1000000,
                  level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    n += m;
    if (n > (int)sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

#define SINK_CAP (4u << 20) /* 4 MiB of queued lines */

struct weir_logsink {
    int fd;
    bool own_fd;
    char *path;  /* for reopening */
    bool reopen; /* guarded by lock */
    bool syslog; /* lines go to syslog(3) instead of fd */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    char *buf; /* filled by workers */
    size_t len;
    bool stopping;
    _Atomic uint64_t dropped;
};

static void *sink_main(void *arg)
{
    weir_logsink *s = arg;
    char *out = malloc(SINK_CAP);
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (s->len == 0 && !s->stopping && !s->reopen)
            pthread_cond_wait(&s->cond, &s->lock);
        if (s->len == 0 && s->stopping)
            break;
        /* Copy out under the lock, write without it. */
        size_t n = s->len;
        memcpy(out, s->buf, n);
        s->len = 0;
        bool reopen = s->reopen;
        s->reopen = false;
        pthread_mutex_unlock(&s->lock);
        if (reopen && s->own_fd) {
            int fd = open(s->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
            if (fd >= 0) {
                close(s->fd);
                s->fd = fd;
            } else {
                weir_log_error("access log %s: cannot reopen: %s", s->path, strerror(errno));
            }
        }
        if (s->syslog) {
            /* one syslog record per line */
            size_t start = 0;
            for (size_t i = 0; i < n; i++) {
                if (out[i] == '\n') {
                    syslog(LOG_INFO, "%.*s", (int)(i - start), out + start);
                    start = i + 1;
                }
            }
            pthread_mutex_lock(&s->lock);
            continue;
        }
        size_t off = 0;
        while (off < n) {
            ssize_t w = write(s->fd, out + off, n - off);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                break; /* disk full or closed: lines are lost, workers unaffected */
            }
            off += (size_t)w;
        }
        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    free(out);
    return NULL;
}

weir_logsink *weir__logsink_open(const char *path)
{
    weir_logsink *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    if (strcmp(path, "-") == 0) {
        s->fd = STDOUT_FILENO;
    } else if (strncmp(path, "syslog", 6) == 0 && (path[6] == '\0' || path[6] == ':')) {
        /* "syslog" or "syslog:FACILITY" (local0..local7, daemon, user) */
        static const struct {
            const char *name;
            int facility;
        } fac[] = {{"daemon", LOG_DAEMON}, {"user", LOG_USER},     {"local0", LOG_LOCAL0},
                   {"local1", LOG_LOCAL1}, {"local2", LOG_LOCAL2}, {"local3", LOG_LOCAL3},
                   {"local4", LOG_LOCAL4}, {"local5", LOG_LOCAL5}, {"local6", LOG_LOCAL6},
                   {"local7", LOG_LOCAL7}};
        int facility = LOG_DAEMON;
        if (path[6] == ':') {
            facility = -1;
            for (size_t i = 0; i < sizeof(fac) / sizeof(fac[0]); i++) {
                if (strcmp(path + 7, fac[i].name) == 0)
                    facility = fac[i].facility;
            }
            if (facility < 0) {
                weir_log_error("access log %s: unknown syslog facility", path);
                free(s);
                return NULL;
            }
        }
        openlog("weir", LOG_PID | LOG_NDELAY, facility);
        s->syslog = true;
        s->fd = -1;
    } else {
        s->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (s->fd < 0) {
            weir_log_error("access log %s: %s", path, strerror(errno));
            free(s);
            return NULL;
        }
        s->own_fd = true;
        s->path = strdup(path);
    }
    s->buf = malloc(SINK_CAP);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    /* The writer thread takes no signals: a process that handles SIGTERM
     * through a signalfd must not have it delivered (fatally) here. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int prc = s->buf ? pthread_create(&s->thread, NULL, sink_main, s) : -1;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (prc != 0) {
        weir_log_error("access log %s: cannot start the logger thread", path);
        if (s->own_fd)
            close(s->fd);
        free(s->buf);
        free(s->path);
        free(s);
        return NULL;
    }
    return s;
}

int weir__logsink_write(weir_logsink *s, const char *line, size_t len)
{
    pthread_mutex_lock(&s->lock);
    if (s->len + len + 1 > SINK_CAP) {
        pthread_mutex_unlock(&s->lock);
        atomic_fetch_add_explicit(&s->dropped, 1, memory_order_relaxed);
        return -1;
    }
    bool was_empty = s->len == 0;
    memcpy(s->buf + s->len, line, len);
    s->buf[s->len + len] = '\n';
    s->len += len + 1;
    pthread_mutex_unlock(&s->lock);
    if (was_empty)
        pthread_cond_signal(&s->cond);
    return 0;
}

void weir__logsink_close(weir_logsink *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    pthread_mutex_unlock(&s->lock);
    pthread_cond_signal(&s->cond);
    pthread_join(s->thread, NULL);
    if (s->own_fd)
        close(s->fd);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    free(s->buf);
    free(s->path);
    free(s);
}

static void logsink_reopen(weir_logsink *s)
{
    pthread_mutex_lock(&s->lock);
    s->reopen = true;
    pthread_mutex_unlock(&s->lock);
    pthread_cond_signal(&s->cond);
}

uint64_t weir__logsink_dropped(const weir_logsink *s)
{
    return atomic_load(&((weir_logsink *)s)->dropped);
}

/* ---- public API (weir/log.h) ---- */

void weir_log(int level, const char *fmt, ...)
{
    if (level < WEIR_LOG_ERROR || level > WEIR_LOG_DEBUG ||
        level > atomic_load_explicit(&log_level, memory_order_relaxed))
        return;
    char msg[1900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    weir__log((enum weir_log_level)level, "%s", msg);
}

weir_logger *weir_logger_open(const char *path)
{
    return (weir_logger *)weir__logsink_open(path);
}

int weir_logger_write(weir_logger *l, const char *line, size_t len)
{
    return weir__logsink_write((weir_logsink *)l, line, len);
}

uint64_t weir_logger_dropped(const weir_logger *l)
{
    return weir__logsink_dropped((const weir_logsink *)l);
}

void weir_logger_reopen(weir_logger *l)
{
    if (l)
        logsink_reopen((weir_logsink *)l);
}

void weir_logger_close(weir_logger *l)
{
    weir__logsink_close((weir_logsink *)l);
}
