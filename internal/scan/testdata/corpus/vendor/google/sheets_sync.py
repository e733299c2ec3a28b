from google.oauth2.credentials import Credentials

# Long-lived credentials for the nightly export job.
creds = Credentials(
    token=None,
    refresh_token="@@R:1//0:URL:99@@",
    token_uri="https://oauth2.googleapis.com/token",
    client_id="381726094512-q8v3k0c2rj5d1m9ht7ap6wbsxe4nzyfu.apps.googleusercontent.com",
    client_secret=os.environ["GOOGLE_CLIENT_SECRET"],
)
