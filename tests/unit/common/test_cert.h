/* test_cert.h: a throwaway self-signed certificate for the TLS unit tests
 * (CN=localhost, EC P-256, valid for an hour), written as PEM files. */
#ifndef TEST_CERT_H
#define TEST_CERT_H

#include <stdio.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

static inline int test_make_cert(const char *cert_path, const char *key_path)
{
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    if (!pkey || !x)
        return -1;
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pkey);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509_sign(x, pkey, EVP_sha256());
    FILE *f = fopen(cert_path, "w");
    FILE *g = fopen(key_path, "w");
    int ok = f && g && PEM_write_X509(f, x) && PEM_write_PrivateKey(g, pkey, NULL, NULL, 0, NULL, NULL);
    if (f)
        fclose(f);
    if (g)
        fclose(g);
    X509_free(x);
    EVP_PKEY_free(pkey);
    return ok ? 0 : -1;
}

#endif
