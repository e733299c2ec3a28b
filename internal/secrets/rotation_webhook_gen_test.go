package secrets

import (
	"errors"
	"strings"
	"testing"
)

// A webhook rotation takes the random: generator's options before its
// URL (url= last, since a URL may hold commas); a URL alone keeps the
// defaults.
func TestParseWebhookGenerator(t *testing.T) {
	for _, c := range []struct {
		with, hook, field string
		length            int
		chars             string
	}{
		{"webhook:https://rotator.internal/db", "https://rotator.internal/db", DefaultRandomField, DefaultRandomLength, charsets["alnum"]},
		{"webhook:https://rotator.internal/db?a=1,b=2", "https://rotator.internal/db?a=1,b=2", DefaultRandomField, DefaultRandomLength, charsets["alnum"]},
		{"webhook:url=https://rotator.internal/db", "https://rotator.internal/db", DefaultRandomField, DefaultRandomLength, charsets["alnum"]},
		{"webhook:length=48,charset=hex,field=token,url=https://rotator.internal/db?a=1,b=2", "https://rotator.internal/db?a=1,b=2", "token", 48, charsets["hex"]},
		{"webhook:charset=abcdefghijklmnopqrstuvwxyz,url=http://127.0.0.1:9/r", "http://127.0.0.1:9/r", DefaultRandomField, DefaultRandomLength, charsets["alnum"][26:52]},
	} {
		g, hook, err := parseWith(c.with)
		if err != nil {
			t.Errorf("%s: %v", c.with, err)
			continue
		}
		if hook != c.hook || g.field != c.field || g.length != c.length || g.chars != c.chars {
			t.Errorf("%s: hook %q field %q length %d chars %q", c.with, hook, g.field, g.length, g.chars)
		}
	}
	for _, c := range []struct{ with, want string }{
		{"webhook:length=48,charset=hex", "want webhook:URL, or generator options then the URL last"},
		{"webhook:length=3,url=https://rotator.internal/db", "random length"},
		{"webhook:length=8,charset=hex,url=https://rotator.internal/db", "at least 64"},
		{"webhook:colour=red,url=https://rotator.internal/db", "unknown random generator option"},
		{"webhook:field=a/b,url=https://rotator.internal/db", "field name"},
		{"webhook:length=40,url=http://192.0.2.1/x", "loopback"},
		{"webhook:length=40,url=", "does not parse"},
		{"webhook:length=40,url=https://" + strings.Repeat("a", 3000), "at most"},
	} {
		_, _, err := parseWith(c.with)
		if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", boundString(c.with, 80), err, c.want)
		}
	}
}

// The pending version of a webhook rotation holds the configured
// generator's value in the configured field; the other fields are copied.
func TestWebhookRotationUsesGenerator(t *testing.T) {
	e := newEnv(t)
	h := newHook(t)
	e.put(t, "db", map[string]string{"user": "app", "password": "old-secret-value"})
	e.rotation(t, "db", "webhook:length=48,charset=hex,field=token,url="+h.srv.URL+"/rotate?x=1,y=2")
	if _, err := e.svc.Rotate(ctx, "db"); err != nil {
		t.Fatal(err)
	}
	v, err := e.svc.Get(ctx, "db", 0, "")
	if err != nil {
		t.Fatal(err)
	}
	tok := v.Fields["token"]
	if len(tok) != 48 || strings.Trim(tok, "0123456789abcdef") != "" || v.Fields["password"] != "old-secret-value" || v.Fields["user"] != "app" {
		t.Fatalf("after rotation: token of %d bytes (%v hex), password kept %v", len(tok), strings.Trim(tok, "0123456789abcdef") == "", v.Fields["password"] == "old-secret-value")
	}
	if got := h.got(); len(got) != 2 {
		t.Fatalf("webhook calls %+v", got)
	}
}
