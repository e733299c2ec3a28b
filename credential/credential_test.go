package credential

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"hash/crc32"
	"regexp"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		c := New(TokenPrefix)
		if !Valid(TokenPrefix, c) {
			t.Fatalf("%s not valid", c)
		}
		if seen[c] {
			t.Fatal("duplicate credential")
		}
		seen[c] = true
		if !strings.HasPrefix(c, "cft_") || len(c) != 4+BodyLen {
			t.Fatalf("shape of %s", c)
		}
	}
}

// TestIssuedTokensStayValid pins the token format: a token made by the
// first release must stay valid.
func TestIssuedTokensStayValid(t *testing.T) {
	const issued = "cft_MnuXdvwzGUp8vkMBGiAqhoK-qsTgBloPrWXAe59lEMDJlA"
	if !Valid(TokenPrefix, issued) {
		t.Fatal("issued token no longer valid")
	}
	if k, ok := Kind(issued); !ok || k != KindToken {
		t.Fatalf("Kind = %q, %v", k, ok)
	}
	if BodyLen != 46 {
		t.Fatalf("BodyLen = %d", BodyLen)
	}
}

func TestRejects(t *testing.T) {
	c := New(TokenPrefix)
	flip := []byte(c)
	if flip[10] == 'A' {
		flip[10] = 'B'
	} else {
		flip[10] = 'A'
	}
	for _, bad := range []string{"", "cft_", c[:len(c)-1], c + "A", "xyz" + c[3:], string(flip), strings.Repeat("A", len(c)),
		"cft_" + strings.Repeat("A", BodyLen), "cft_" + strings.Repeat("!", BodyLen)} {
		if Valid(TokenPrefix, bad) {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestAccessKey(t *testing.T) {
	idRe := regexp.MustCompile(`^cfak_[A-Z2-7]{24}$`)
	secretRe := regexp.MustCompile(`^cfsk_[A-Za-z0-9_-]{46}$`)
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id, secret := NewAccessKey()
		if !idRe.MatchString(id) || !secretRe.MatchString(secret) {
			t.Fatalf("shape of %s / %s", id, secret)
		}
		if !Valid(AccessKeyIDPrefix, id) || !Valid(AccessKeySecretPrefix, secret) {
			t.Fatalf("%s / %s not valid", id, secret)
		}
		if k, ok := Kind(id); !ok || k != KindAccessKeyID {
			t.Fatalf("Kind(%s) = %q, %v", id, k, ok)
		}
		if k, ok := Kind(secret); !ok || k != KindAccessKeySecret {
			t.Fatalf("Kind(%s) = %q, %v", secret, k, ok)
		}
		// Prefixes do not cross: a secret is not a token, an id not a secret.
		if Valid(TokenPrefix, "cft_"+secret[5:]) != Valid(AccessKeySecretPrefix, secret) {
			t.Fatal("secret body should be a valid token body (same shape)")
		}
		if Valid(AccessKeySecretPrefix, id) || Valid(TokenPrefix, secret) || Valid(AccessKeyIDPrefix, secret) {
			t.Fatal("kinds cross")
		}
		if seen[id] || seen[secret] {
			t.Fatal("duplicate")
		}
		seen[id], seen[secret] = true, true
	}
	if IDBodyLen != 24 {
		t.Fatalf("IDBodyLen = %d", IDBodyLen)
	}
}

func TestAccessKeyIDRejects(t *testing.T) {
	id, _ := NewAccessKey()
	body := id[5:]
	flip := []byte(id)
	if flip[8] == 'A' {
		flip[8] = 'B'
	} else {
		flip[8] = 'A'
	}
	for _, bad := range []string{"cfak_", id[:len(id)-1], id + "A", string(flip), "cfak_" + strings.ToLower(body),
		"cfak_" + strings.Repeat("A", 24), "cfak_" + strings.Repeat("A", 23) + "=", "cfak_" + strings.Repeat("1", 24),
		"cfsk_" + body, "AKIA" + body} {
		if Valid(AccessKeyIDPrefix, bad) {
			t.Errorf("%q accepted", bad)
		}
		if k, ok := Kind(bad); ok {
			t.Errorf("Kind(%q) = %q", bad, k)
		}
	}
}

func TestKindRejects(t *testing.T) {
	for _, s := range []string{"", "_", "cft", "cft_", "hello_world", "acc_0123456789abcdef01234567", "CFT_" + New(TokenPrefix)[4:],
		" " + New(TokenPrefix), New(TokenPrefix) + "\n"} {
		if k, ok := Kind(s); ok {
			t.Errorf("Kind(%q) = %q", s, k)
		}
	}
}

// TestFormatsMatchGenerated: the scanner's regular expressions, built from
// Formats, match what we generate.
func TestFormatsMatchGenerated(t *testing.T) {
	id, secret := NewAccessKey()
	samples := map[string]string{KindToken: New(TokenPrefix), KindAccessKeySecret: secret, KindAccessKeyID: id}
	for _, f := range Formats() {
		re := regexp.MustCompile(`^` + f.Prefix + `_[` + f.BodyChars + `]{` + itoaT(f.BodyLen) + `}$`)
		if !re.MatchString(samples[f.Kind]) {
			t.Errorf("%s: %s does not match %s", f.Kind, samples[f.Kind], re)
		}
	}
}

func itoaT(n int) string {
	s := ""
	for ; n > 0; n /= 10 {
		s = string(rune('0'+n%10)) + s
	}
	return s
}

func FuzzValid(f *testing.F) {
	f.Add(New(TokenPrefix))
	f.Add("cft_AAAA")
	f.Fuzz(func(t *testing.T, s string) {
		if Valid(TokenPrefix, s) && !strings.HasPrefix(s, "cft_") {
			t.Fatalf("%q valid without prefix", s)
		}
	})
}

// FuzzKind: Kind agrees with Valid, and never recognises a string without
// the right prefix and length.
func FuzzKind(f *testing.F) {
	id, secret := NewAccessKey()
	f.Add(New(TokenPrefix))
	f.Add(id)
	f.Add(secret)
	f.Add("cfak_AAAAAAAAAAAAAAAAAAAAAAAA")
	f.Fuzz(func(t *testing.T, s string) {
		k, ok := Kind(s)
		if !ok {
			if k != "" {
				t.Fatalf("kind %q without ok", k)
			}
			return
		}
		for _, fm := range Formats() {
			if fm.Kind == k {
				if !strings.HasPrefix(s, fm.Prefix+"_") || len(s) != len(fm.Prefix)+1+fm.BodyLen || !Valid(fm.Prefix, s) {
					t.Fatalf("%q recognised as %s", s, k)
				}
				return
			}
		}
		t.Fatalf("unknown kind %q", k)
	})
}

// TestEveryBitIsChecked: changing any one bit of a credential's bytes, the
// checksum bytes included, makes it invalid; so does a checksum that is
// right for other random bytes. A weakened check (fewer checksum bytes
// compared, fewer random bytes summed) fails here.
func TestEveryBitIsChecked(t *testing.T) {
	id, secret := NewAccessKey()
	cases := []struct {
		prefix string
		value  string
		enc    interface {
			DecodeString(string) ([]byte, error)
			EncodeToString([]byte) string
		}
		random int
	}{
		{AccessKeyIDPrefix, id, idEncoding, idRandomBytes},
		{AccessKeySecretPrefix, secret, base64.RawURLEncoding, randomBytes},
		{TokenPrefix, New(TokenPrefix), base64.RawURLEncoding, randomBytes},
	}
	for _, c := range cases {
		raw, err := c.enc.DecodeString(c.value[len(c.prefix)+1:])
		if err != nil || len(raw) != c.random+4 {
			t.Fatalf("%s: %v (%d bytes)", c.value, err, len(raw))
		}
		for i := range raw {
			for bit := range 8 {
				b := bytes.Clone(raw)
				b[i] ^= 1 << bit
				if v := c.prefix + "_" + c.enc.EncodeToString(b); Valid(c.prefix, v) {
					t.Errorf("%s: flipping bit %d of byte %d (%s) still valid: %s", c.prefix, bit, i,
						map[bool]string{true: "checksum", false: "random"}[i >= c.random], v)
				}
			}
		}
		// A checksum that is right, over random bytes of which one is
		// dropped: only a check over all of them refuses it.
		b := bytes.Clone(raw)
		b[c.random-1] ^= 0xff
		binary.BigEndian.PutUint32(b[c.random:], crc32.ChecksumIEEE(b[:c.random-1]))
		if v := c.prefix + "_" + c.enc.EncodeToString(b); Valid(c.prefix, v) {
			t.Errorf("%s: a checksum over all but the last random byte is accepted: %s", c.prefix, v)
		}
	}
}
