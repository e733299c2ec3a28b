import os
from alibabacloud_tea_openapi import models as open_api_models

config = open_api_models.Config(
    access_key_id='@@R:LTAI:A62:20@@',
    access_key_secret=os.environ['ALIBABA_CLOUD_ACCESS_KEY_SECRET'],
    region_id='cn-hangzhou',
)
# access_key_secret = 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'
secret_hint = 'abcdefghijklmnopqrstuvwxyz1234'
request_id = 'F2E1D0C9B8A7F6E5D4C3B2A1F0E9D8'
bucket = 'cnhangzhouprodlogsbucket20260a'
