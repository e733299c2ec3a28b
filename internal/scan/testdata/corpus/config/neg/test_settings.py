from .settings import *  # noqa

SECRET_KEY = "insecure-test-key-for-unit-tests-only-not-a-secret"
