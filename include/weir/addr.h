/*
 * weir/addr.h - socket addresses as text: the "ip:port" and "[v6]:port"
 * forms configurations, logs and the admin API use. Numeric only: there
 * is no DNS here. Any thread.
 */
#ifndef WEIR_ADDR_H
#define WEIR_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Longest "[v6addr]:port" text plus NUL. */
#define WEIR_ADDR_STRLEN 64

/* Parses "ip:port", "[v6]:port" or "*:port" into *ss and *len. Returns
 * WEIR_OK or WEIR_ERR_INVAL. */
int weir_addr_parse(const char *text, struct sockaddr_storage *ss, socklen_t *len);
/* Writes "ip:port" or "[v6]:port" into buf (WEIR_ADDR_STRLEN bytes are
 * enough). */
void weir_addr_format(const struct sockaddr *sa, char *buf, size_t buf_len);
/* Writes the IP alone ("1.2.3.4", "::1"); returns its length. */
size_t weir_addr_format_ip(const struct sockaddr *sa, char *buf, size_t buf_len);
/* Same family, address and port. */
bool weir_addr_equal(const struct sockaddr *a, const struct sockaddr *b);

#ifdef __cplusplus
}
#endif
#endif
