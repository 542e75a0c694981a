/*
 * log.h - the error log (levelled, to stderr or a file) and the access-log
 * writer (a bounded queue drained by a logger thread, so a worker never
 * blocks on disk; when the queue is full the line is dropped and counted).
 */
#ifndef WEIR_CORE_LOG_H
#define WEIR_CORE_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

enum weir_log_level { WEIR_LOG_ERROR, WEIR_LOG_WARN, WEIR_LOG_INFO, WEIR_LOG_DEBUG };

/* Messages above this level are dropped; default WEIR_LOG_INFO. */
void weir__log_set_level(enum weir_log_level level);
enum weir_log_level weir__log_get_level(void);

/* Writes one line "TIME LEVEL message" to the error log (stderr).
 * Thread-safe; one write(2) per line. Warnings and errors go through the
 * repeat limiter (log.c): a message that repeats within the interval is
 * counted, not written, and summarised as "... (repeated N times)". */
void weir__log(enum weir_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* weir__log with a va_list; fmt is the call site the limiter keys on. */
void weir__logv(enum weir_log_level level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* The window in which a repeated warning or error is written once
 * (default 1000 ms); 0 turns the limiter off. Any thread. */
void weir__log_set_repeat_interval(unsigned interval_ms);
/* Writes the pending "(repeated N times)" summaries now, whether or not
 * their windows have ended (at exit; tests). Any thread. */
void weir__log_flush_repeats(void);

#define weir_log_error(...) weir__log(WEIR_LOG_ERROR, __VA_ARGS__)
#define weir_log_warn(...) weir__log(WEIR_LOG_WARN, __VA_ARGS__)
#define weir_log_info(...)                                                                         \
    do {                                                                                           \
        if (weir__log_get_level() >= WEIR_LOG_INFO)                                                \
            weir__log(WEIR_LOG_INFO, __VA_ARGS__);                                                 \
    } while (0)
#define weir_log_debug(...)                                                                        \
    do {                                                                                           \
        if (weir__log_get_level() >= WEIR_LOG_DEBUG)                                               \
            weir__log(WEIR_LOG_DEBUG, __VA_ARGS__);                                                \
    } while (0)

/*
 * Access-log sink. Opening starts the logger thread. path "-" is stdout.
 * Returns NULL (error logged) if the file cannot be opened.
 */
typedef struct weir_logsink weir_logsink;
weir_logsink *weir__logsink_open(const char *path);
/* Queues one line (copied, a newline is appended); never blocks on I/O.
 * Returns 0, or -1 when the queue is full (the line is counted as dropped). */
int weir__logsink_write(weir_logsink *s, const char *line, size_t len);
/* Flushes what is queued, stops the thread, closes the file. */
void weir__logsink_close(weir_logsink *s);
uint64_t weir__logsink_dropped(const weir_logsink *s);

#endif
