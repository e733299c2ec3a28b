import os

SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
# SECRET_KEY = 'change-me-in-production-this-is-not-used'
DATABASES = {"default": {"PASSWORD": os.environ.get("DB_PASSWORD", "")}}
