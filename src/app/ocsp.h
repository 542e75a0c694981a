/*
 * ocsp.h - OCSP stapling for every certificate of the running
 * configuration (files and ACME): a thread of its own asks the responder
 * the certificate names (its AIA), checks the answer (signed for the
 * issuer, status good, current), hands it to the TLS servers to staple,
 * and asks again halfway to its nextUpdate (at least a minute, at most a
 * day). A failure keeps the last good response until it expires and tries
 * again after 5 s, doubling to an hour; an expired response is never
 * stapled. No handshake waits for any of it.
 */
#ifndef WEIR_APP_OCSP_H
#define WEIR_APP_OCSP_H

#include "app/app.h"

/* Main thread, once the app runs; follows reloads and new files. */
void weir__ocsp_start(weir_app *app);
void weir__ocsp_stop(void);

#endif
