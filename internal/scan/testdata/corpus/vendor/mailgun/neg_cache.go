package cache

import (
	"crypto/md5"
	"encoding/hex"
)

// Object names in the bucket are "key-" followed by the MD5 of the URL.
// Example: s3://thumbs/key-9e107d9d372bb6826bd81d3542a419d6
const exampleObject = "s3://thumbs/key-9e107d9d372bb6826bd81d3542a419d6"

// Keys used by the tests.
var (
	zeroKey    = "key-00000000000000000000000000000000"
	xKey       = "key-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	seqKey     = "key-0123456789abcdef0123456789abcdef"
	beefKey    = "key-deadbeefdeadbeefdeadbeefdeadbeef"
	etagHeader = map[string]string{"etag": "key-@@R::hex:32@@"}
)

func objectName(url string) string {
	sum := md5.Sum([]byte(url))
	return "key-" + hex.EncodeToString(sum[:])
}
