EMAIL_BACKEND = "anymail.backends.mailgun.EmailBackend"
ANYMAIL = {
    "MAILGUN_API_KEY": "key-@@R::hex:32@@",
    "MAILGUN_SENDER_DOMAIN": "mg.bookings.app",
    "MAILGUN_API_URL": "https://api.eu.mailgun.net/v3",
}
DEFAULT_FROM_EMAIL = "Bookings <no-reply@mg.bookings.app>"
