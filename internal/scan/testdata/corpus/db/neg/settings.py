import environ

env = environ.Env()
DATABASES = {
    "default": env.db("DATABASE_URL", default="postgres://postgres:postgres@localhost:5432/app"),
    "legacy": env.db("LEGACY_URL", default="sqlite:///legacy.sqlite3"),
}
CACHES = {"default": env.cache("CACHE_URL", default="redis://127.0.0.1:6379/1")}
