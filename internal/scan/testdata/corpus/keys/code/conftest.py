import pytest

# EC key of the fake identity provider used by the API tests.
IDP_KEY = (
    "-----BEGIN EC PRIVATE KEY-----\n"
    "MHcCAQEEI@@R::B64:55@@\n"
    "@@R::B64:64@@\n"
    "-----END EC PRIVATE KEY-----\n"
)

DOC_KEY = "-----BEGIN RSA PRIVATE KEY-----\n...\n-----END RSA PRIVATE KEY-----"


@pytest.fixture
def idp_key():
    return IDP_KEY
