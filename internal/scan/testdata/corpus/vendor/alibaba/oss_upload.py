import oss2

# uploader for the CDN origin bucket
auth = oss2.Auth('@@R:LTAI:A62:20@@', '@@R::A62:30@@')
bucket = oss2.Bucket(auth, 'https://oss-cn-hangzhou.aliyuncs.com', 'static-origin-cn')

def upload(path, name):
    bucket.put_object_from_file(name, path)
