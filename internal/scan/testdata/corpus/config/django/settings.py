from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# SECURITY WARNING: keep the secret key used in production secret!
SECRET_KEY = 'django-insecure-@@R::a36:20@@^&@@R::a36:14@@(=@@R::a36:12@@'

DEBUG = True
ALLOWED_HOSTS = []
