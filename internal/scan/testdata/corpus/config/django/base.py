import environ

env = environ.Env()
SECRET_KEY = env("DJANGO_SECRET_KEY", default="@@R::A62:24@@-@@R::a36:20@@")
DEBUG = env.bool("DJANGO_DEBUG", False)
