/* admin/tlscheck.h — `ringside tls-check`: connect to an upstream with the
 * same TLS client and verification policy the console path uses, and say
 * what was verified, how, and whether the session resumed. */
#ifndef RS_TLSCHECK_H
#define RS_TLSCHECK_H

/* argv excludes "tls-check". Exit status: 0 all connections verified, 1 a
 * connection failed, 2 usage. */
int rs_tlscheck_main(int argc, char **argv);

#endif
