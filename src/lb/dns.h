/*
 * dns.h - the parts of the DNS lookup service (dns.c) that read DNS
 * messages themselves, for the fuzz target (fuzz/dns_fuzz.c).
 */
#ifndef WEIR_LB_DNS_H
#define WEIR_LB_DNS_H

#include <stdint.h>

/* The shortest TTL, in seconds, of the answer records of `type` in the
 * DNS message abuf[0..alen) (a TTL with its top bit set counts as 0);
 * 0 when there are none or the message cannot be read. Reads only within
 * abuf[0..alen). */
uint32_t weir__dns_answer_ttl(const unsigned char *abuf, int alen, int type);

#endif
