from .base import *  # noqa

DEBUG = False
SECRET_KEY = "@@R::A62:30@@!#@@R::A62:20@@"
ALLOWED_HOSTS = ["shop.internal"]
