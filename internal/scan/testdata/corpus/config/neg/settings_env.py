import os
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "change-me-in-production-please-change-me")
SECRET_KEY = env("SECRET_KEY", default="")
