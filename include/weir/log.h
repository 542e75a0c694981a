/*
 * weir/log.h - logging for programs on libweir: the error log weir itself
 * writes to, and asynchronous line loggers (access logs).
 */
#ifndef WEIR_LOG_H
#define WEIR_LOG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum weir_log_level_public {
    WEIR_LEVEL_ERROR = 0,
    WEIR_LEVEL_WARN = 1,
    WEIR_LEVEL_INFO = 2,
    WEIR_LEVEL_DEBUG = 3,
};

/*
 * Writes one line "TIME LEVEL message" to weir's error log (stderr), if
 * `level` is enabled (see weir_set_log_level in weir/server.h). One
 * write(2) per line; any thread.
 */
void weir_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* An asynchronous line logger: lines are queued in memory (4 MiB) and
 * written by a background thread, so writers never block on the disk; when
 * the queue is full a line is dropped and counted. */
typedef struct weir_logger weir_logger;

/* Opens path for appending ("-" is stdout; "syslog" or "syslog:FACILITY"
 * with FACILITY daemon, user or local0..local7 sends each line to
 * syslog(3)) and starts the writer thread. Returns NULL (the reason is
 * logged) if the file cannot be opened. */
weir_logger *weir_logger_open(const char *path);
/* Queues one line (copied; a newline is appended). Returns 0, or -1 if it
 * was dropped because the queue is full. Any thread. */
int weir_logger_write(weir_logger *l, const char *line, size_t len);
/* Reopens the file (after logrotate moved it); the writer thread does it
 * before its next write. No effect for stdout. Any thread. */
void weir_logger_reopen(weir_logger *l);
/* Lines dropped so far. */
uint64_t weir_logger_dropped(const weir_logger *l);
/* Writes what is queued, stops the thread, closes the file. NULL is
 * accepted. No writer may still be using l. */
void weir_logger_close(weir_logger *l);

#ifdef __cplusplus
}
#endif
#endif
