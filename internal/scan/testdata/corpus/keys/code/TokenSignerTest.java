package com.shop.auth;

import static org.junit.jupiter.api.Assertions.assertTrue;

class TokenSignerTest {

    // Signing key of the test issuer; the public half is in test-jwks.json.
    private static final String SIGNING_KEY =
        "-----BEGIN PRIVATE KEY-----\n" +
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC@@R::B64:32@@\n" +
        "@@R::B64:64@@\n" +
        "@@R::B64:64@@\n" +
        "@@R::B64:64@@\n" +
        "-----END PRIVATE KEY-----\n";

    private static final String PUBLIC_KEY =
        "-----BEGIN PUBLIC KEY-----\n" +
        "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A@@R::B64:32@@\n" +
        "-----END PUBLIC KEY-----\n";
}
