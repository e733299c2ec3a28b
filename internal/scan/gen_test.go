package scan

import (
	"encoding/base64"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"

	"github.com/cofferkms/coffer/credential"
)

// Test texts and the corpus hold no literal secrets: markers are expanded
// deterministically at test time, so the repository itself scans clean
// and no push protection trips on fixtures.
//
//	@@R:prefix:alphabet:n@@  prefix + n random characters
//	@@UUID@@ @@JWT@@ @@AUTH@@ @@DOCKERCFG@@ @@COFFER@@ @@COFFERBAD@@ @@COFFERAKID@@ @@COFFERAKSECRET@@ @@COFFERAKBAD@@
//	@@B64:inner@@            standard base64 of the expansion of @@inner@@
//	@@MAPBOX:pk@@ @@MAPBOX:sk@@  Mapbox public and secret tokens
var markerRe = regexp.MustCompile(`@@(.+?)@@`)

var alphabets = map[string]string{
	"AZ27": "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567",
	"A62":  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
	"a36":  "abcdefghijklmnopqrstuvwxyz0123456789",
	"az":   "abcdefghijklmnopqrstuvwxyz",
	"AZ":   "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
	"hex":  "0123456789abcdef",
	"d":    "0123456789",
	"B64":  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
	"URL":  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-",
}

type gen struct{ rnd *rand.Rand }

func newGen(seed string) *gen {
	h := fnv.New64a()
	h.Write([]byte(seed))
	return &gen{rand.New(rand.NewPCG(h.Sum64(), 7))}
}

func (g *gen) str(alpha string, n int) string {
	a := alphabets[alpha]
	if a == "" {
		panic("unknown alphabet " + alpha)
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = a[g.rnd.IntN(len(a))]
	}
	return string(b)
}

func (g *gen) expand(s string) string {
	return markerRe.ReplaceAllStringFunc(s, func(m string) string { return g.one(m[2 : len(m)-2]) })
}

func (g *gen) one(spec string) string {
	switch {
	case spec == "UUID":
		return g.str("hex", 8) + "-" + g.str("hex", 4) + "-4" + g.str("hex", 3) + "-a" + g.str("hex", 3) + "-" + g.str("hex", 12)
	case spec == "JWT":
		enc := base64.RawURLEncoding.EncodeToString
		return enc([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc([]byte(`{"sub":"`+g.str("a36", 12)+`","iat":1700000000}`)) + "." + g.str("URL", 43)
	case spec == "AUTH":
		return base64.StdEncoding.EncodeToString([]byte("ci-bot:" + g.str("A62", 16)))
	case spec == "DOCKERCFG":
		return `{"auths":{"registry.internal":{"auth":"` + g.one("AUTH") + `"}}}`
	case spec == "COFFER":
		return credential.New(credential.TokenPrefix)
	case spec == "COFFERAKID" || spec == "COFFERAKSECRET":
		id, secret := credential.NewAccessKey()
		if spec == "COFFERAKID" {
			return id
		}
		return secret
	case spec == "COFFERAKBAD":
		_, secret := credential.NewAccessKey()
		c := []byte(secret)
		c[10] ^= 1
		return string(c)
	case spec == "COFFERBAD":
		c := []byte(credential.New(credential.TokenPrefix))
		c[10] ^= 1 // a checksum mismatch (or a letter changed case)
		return string(c)
	case spec == "MAPBOX:pk" || spec == "MAPBOX:sk": // a Mapbox token: pk. or sk., base64url JSON {"u":..,"a":..}, signature
		body := base64.RawURLEncoding.EncodeToString([]byte(`{"u":"` + g.str("az", 8) + `","a":"` + g.str("a36", 25) + `"}`))
		return spec[7:] + "." + body + "." + g.str("URL", 22)
	case strings.HasPrefix(spec, "B64:"):
		return base64.StdEncoding.EncodeToString([]byte(g.one(spec[4:])))
	case strings.HasPrefix(spec, "R:"):
		f := strings.Split(spec, ":")
		if len(f) != 4 {
			panic("bad marker " + spec)
		}
		n, err := strconv.Atoi(f[3])
		if err != nil {
			panic(err)
		}
		return f[1] + g.str(f[2], n)
	}
	panic(fmt.Sprintf("unknown marker %q", spec))
}
