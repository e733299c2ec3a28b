package audit

import (
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// appendRecord appends the JSON encoding of r to b: byte for byte what
// encoding/json.Marshal produces (field order, omitempty, HTML-safe string
// escaping, sorted context keys), without reflection and with one buffer.
// ok is false when r's time cannot be written as RFC 3339 (a year outside
// 0-9999); the caller then uses encoding/json, which reports the error.
//
// It must cover every field of Record and Principal: TestAppendRecordCoversEveryField
// fails when a field is added to them and not here.
func appendRecord(b []byte, r *Record) ([]byte, bool) {
	b = append(b, '{')
	if r.Seq != 0 {
		b = append(b, `"seq":`...)
		b = strconv.AppendUint(b, r.Seq, 10)
		b = append(b, ',')
	}
	if r.Prev != "" {
		b = append(b, `"prev":`...)
		b = appendJSONString(b, r.Prev)
		b = append(b, ',')
	}
	b = append(b, `"type":`...)
	b = appendJSONString(b, r.Type)
	b = appendField(b, `,"replica":`, r.Replica)
	b = append(b, `,"time":`...)
	var ok bool
	if b, ok = appendJSONTime(b, r.Time); !ok {
		return b, false
	}
	b = appendField(b, `,"request_id":`, r.RequestID)
	b = appendField(b, `,"phase":`, r.Phase)
	b = appendField(b, `,"door":`, r.Door)
	b = appendField(b, `,"source":`, r.Source)
	p := &r.Principal
	b = append(b, `,"principal":{"kind":`...)
	b = appendJSONString(b, p.Kind)
	b = appendField(b, `,"id":`, p.ID)
	b = appendField(b, `,"name":`, p.Name)
	b = appendField(b, `,"accessor":`, p.Accessor)
	b = appendField(b, `,"role":`, p.Role)
	b = appendField(b, `,"cluster":`, p.Cluster)
	b = appendField(b, `,"namespace":`, p.Namespace)
	b = appendField(b, `,"service_account":`, p.ServiceAccount)
	b = append(b, '}')
	b = appendField(b, `,"token_hmac":`, r.TokenHMAC)
	if r.CredentialLeaked {
		b = append(b, `,"credential_leaked":true`...)
	}
	b = append(b, `,"action":`...)
	b = appendJSONString(b, r.Action)
	b = appendField(b, `,"resource":`, r.Resource)
	b = appendField(b, `,"key_id":`, r.KeyID)
	if r.Version != 0 {
		b = append(b, `,"key_version":`...)
		b = strconv.AppendUint(b, uint64(r.Version), 10)
	}
	if len(r.Context) > 0 {
		b = append(b, `,"context":{`...)
		b = appendStringMap(b, r.Context)
		b = append(b, '}')
	}
	b = appendField(b, `,"outcome":`, r.Outcome)
	b = appendField(b, `,"error_code":`, r.ErrorCode)
	if r.Status != 0 {
		b = append(b, `,"status":`...)
		b = strconv.AppendInt(b, int64(r.Status), 10)
	}
	if r.LatencyNS != 0 {
		b = append(b, `,"latency_ns":`...)
		b = strconv.AppendInt(b, r.LatencyNS, 10)
	}
	b = appendField(b, `,"detail":`, r.Detail)
	if len(r.Items) > 0 {
		b = append(b, `,"items":[`...)
		for i := range r.Items {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendItem(b, &r.Items[i])
		}
		b = append(b, ']')
	}
	b = appendField(b, `,"key":`, r.Key)
	b = appendField(b, `,"sig":`, r.Sig)
	return append(b, '}'), true
}

// appendItem appends the JSON object of one batch item.
func appendItem(b []byte, it *Item) []byte {
	b = append(b, '{')
	start := len(b)
	b = appendField(b, `,"resource":`, it.Resource)
	b = appendField(b, `,"key_id":`, it.KeyID)
	if it.Version != 0 {
		b = append(b, `,"key_version":`...)
		b = strconv.AppendUint(b, uint64(it.Version), 10)
	}
	if len(it.Context) > 0 {
		b = append(b, `,"context":{`...)
		b = appendStringMap(b, it.Context)
		b = append(b, '}')
	}
	b = append(b, `,"outcome":`...)
	b = appendJSONString(b, it.Outcome)
	b = appendField(b, `,"error_code":`, it.ErrorCode)
	if it.ContextOmitted {
		b = append(b, `,"context_omitted":true`...)
	}
	// Every member was written with a leading comma; the first needs none.
	b = append(b[:start], b[start+1:]...)
	return append(b, '}')
}

// appendField appends key and the string v unless v is empty (omitempty).
func appendField(b []byte, key, v string) []byte {
	if v == "" {
		return b
	}
	return appendJSONString(append(b, key...), v)
}

// appendStringMap appends the members of m in key order, as encoding/json
// does (keys compared as byte strings).
func appendStringMap(b []byte, m map[string]string) []byte {
	var small [8]string
	keys := small[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		b = appendJSONString(b, m[k])
	}
	return b
}

// appendJSONTime appends t as time.Time.MarshalJSON does; ok is false where
// MarshalJSON fails.
func appendJSONTime(b []byte, t time.Time) ([]byte, bool) {
	b = append(b, '"')
	start := len(b)
	b = t.AppendFormat(b, time.RFC3339Nano)
	// The checks of time.Time.appendStrictRFC3339.
	s := b[start:]
	if len(s) < 5 || s[4] != '-' {
		return b, false // year not exactly 4 digits
	}
	if s[len(s)-1] != 'Z' {
		c := s[len(s)-len("Z07:00")]
		hh := 10*int(s[len(s)-5]-'0') + int(s[len(s)-4]-'0')
		if ('0' <= c && c <= '9') || hh >= 24 {
			return b, false
		}
	}
	return append(b, '"'), true
}

const hexDigits = "0123456789abcdef"

// jsonSafe[c] is true for the ASCII bytes encoding/json writes as they are
// (with HTML escaping on, its default): not control characters, '"', '\\',
// '<', '>' or '&'.
var jsonSafe = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = true
	}
	for _, c := range `"\<>&` {
		t[c] = false
	}
	return t
}()

// appendJSONString appends s as a JSON string exactly as encoding/json
// does: \b \f \n \r \t and \" \\ short escapes, other control characters
// and < > & as \u00XX, invalid UTF-8 as \ufffd, U+2028 and U+2029 escaped.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if jsonSafe[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
