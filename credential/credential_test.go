package credential

import (
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

func FuzzValid(f *testing.F) {
	f.Add(New(TokenPrefix))
	f.Add("cft_AAAA")
	f.Fuzz(func(t *testing.T, s string) {
		if Valid(TokenPrefix, s) && !strings.HasPrefix(s, "cft_") {
			t.Fatalf("%q valid without prefix", s)
		}
	})
}
