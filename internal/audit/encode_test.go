package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// checkEncoding fails unless appendRecord writes exactly what
// encoding/json.Marshal writes for r.
func checkEncoding(t *testing.T, r *Record) {
	t.Helper()
	want, err := json.Marshal(r)
	if err != nil {
		t.Fatalf("encoding/json: %v", err)
	}
	got, ok := appendRecord([]byte("prefix"), r)
	if !ok {
		t.Fatalf("appendRecord refused a record encoding/json writes: %s", want)
	}
	got, found := bytes.CutPrefix(got, []byte("prefix"))
	if !found || !bytes.Equal(got, want) {
		t.Fatalf("appendRecord differs from encoding/json\n got %s\nwant %s", got, want)
	}
}

// awkward are strings that exercise every escaping rule of encoding/json.
var awkward = []string{
	"",
	"plain",
	`quote " backslash \ slash /`,
	"<script>alert('x')</script> & co",
	"\x00\x01\x07\x08\x09\x0a\x0b\x0c\x0d\x1b\x1f\x7f",
	"tab\tnewline\ncr\rbell\a",
	"héllo wörld ünïcödé ✓ 日本語 🔑",
	"\u2028line\u2029paragraph\u2027\u202a",
	"invalid \xff\xfe utf-8 \xc3 truncated \xe2\x82",
	"\xed\xa0\x80 surrogate half",
	"\ufffd replacement char",
	"ends with multibyte é",
	strings.Repeat("long <value> ", 200),
}

func TestAppendRecordMatchesEncodingJSON(t *testing.T) {
	base := time.Date(2026, 11, 29, 14, 3, 4, 123456789, time.UTC)
	times := []time.Time{
		{},
		base,
		base.Truncate(time.Second),
		base.Truncate(time.Millisecond),
		base.In(time.FixedZone("", 5*3600+30*60)),
		base.In(time.FixedZone("", -8*3600)),
		base.In(time.FixedZone("LMT", 53*60+28)),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(0, 1, 1, 0, 0, 0, 1, time.UTC),
		time.Unix(1700000000, 0), // local time zone
	}
	for _, tm := range times {
		checkEncoding(t, &Record{Type: TypeRequest, Time: tm, Action: "kms:Encrypt"})
	}
	for _, s := range awkward {
		full := &Record{Seq: 18446744073709551615, Prev: s, Type: s, Time: base, RequestID: s, Phase: s, Door: s, Source: s,
			Principal: Principal{Kind: s, ID: s, Name: s, Accessor: s, Role: s, Cluster: s, Namespace: s, ServiceAccount: s},
			TokenHMAC: s, CredentialLeaked: true, Action: s, Resource: s, KeyID: s, Version: 4294967295,
			Context: map[string]string{s: s, "z" + s: "v", "a": s, "<": ">", "é": "\u2028"},
			Outcome: s, ErrorCode: s, Status: -503, LatencyNS: -9223372036854775808, Detail: s, Key: s, Sig: s,
			Token: "never written", ContextValues: map[string]string{"never": "written"}}
		checkEncoding(t, full)
		checkEncoding(t, &Record{Type: s, Action: s, Principal: Principal{Kind: s}})
	}
	// Typical records as the server writes them.
	checkEncoding(t, &Record{Type: TypeRequest, Time: base, RequestID: "abcd-17", Door: "rest", Source: "127.0.0.1",
		Principal: Principal{Kind: "token", ID: "t-1", Name: "ci", Accessor: "acc_0123", Role: "deployer", Cluster: "prod-eu",
			Namespace: "payments", ServiceAccount: "api"},
		TokenHMAC: strings.Repeat("ab", 32), Action: "kms:Encrypt", Resource: "alias/app", KeyID: "k-1", Version: 3,
		Context: map[string]string{"tenant": strings.Repeat("cd", 32)}, Outcome: "ok", Status: 200, LatencyNS: 183_000})
	checkEncoding(t, &Record{Type: TypeRequest, Time: base, Phase: PhaseIntent, Action: "key:Create", Principal: Principal{Kind: "root"}})
	checkEncoding(t, &Record{Type: TypeCheckpoint, Time: base, Key: "AAAA+/==", Sig: "BBBB+/=="})
	checkEncoding(t, &Record{Type: TypeRequest, Context: map[string]string{}}) // empty map: omitted
}

// TestAppendRecordCoversEveryField sets each encoded field of Record and
// Principal on its own: a field added to audit.go and not to appendRecord
// fails here.
func TestAppendRecordCoversEveryField(t *testing.T) {
	base := Record{Type: TypeRequest, Time: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), Action: "kms:Decrypt"}
	timeType := reflect.TypeFor[time.Time]()
	var walk func(path string, typ reflect.Type, index []int)
	walk = func(path string, typ reflect.Type, index []int) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" {
				continue
			}
			if name == "" {
				t.Fatalf("%s.%s has no json name", path, f.Name)
			}
			idx := append(slices.Clone(index), i)
			if f.Type.Kind() == reflect.Struct && f.Type != timeType {
				walk(path+"."+f.Name, f.Type, idx)
				continue
			}
			t.Run(path+"."+f.Name, func(t *testing.T) {
				r := base
				fv := reflect.ValueOf(&r).Elem().FieldByIndex(idx)
				switch {
				case f.Type == timeType:
					fv.Set(reflect.ValueOf(time.Date(2027, 2, 3, 4, 5, 6, 7, time.FixedZone("", 3600))))
				case fv.Kind() == reflect.String:
					fv.SetString("v<&>\u2028\x01é")
				case fv.Kind() == reflect.Bool:
					fv.SetBool(true)
				case fv.CanInt():
					fv.SetInt(-42)
				case fv.CanUint():
					fv.SetUint(42)
				case f.Type == reflect.TypeFor[map[string]string]():
					fv.Set(reflect.ValueOf(map[string]string{"b": "2", "a": "<1>"}))
				case f.Type == reflect.TypeFor[[]Item]():
					fv.Set(reflect.ValueOf([]Item{{}}))
				default:
					t.Fatalf("%s.%s: type %s is handled neither by this test nor, probably, by appendRecord", path, f.Name, f.Type)
				}
				before, _ := json.Marshal(&base)
				after, _ := json.Marshal(&r)
				if bytes.Equal(before, after) {
					t.Fatalf("setting %s.%s does not change what encoding/json writes", path, f.Name)
				}
				checkEncoding(t, &r)
			})
		}
	}
	walk("Record", reflect.TypeFor[Record](), nil)
}

// TestAppendItemCoversEveryField does for a batch item what
// TestAppendRecordCoversEveryField does for the record.
func TestAppendItemCoversEveryField(t *testing.T) {
	typ := reflect.TypeFor[Item]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		if f.Tag.Get("json") == "-" {
			continue
		}
		t.Run(f.Name, func(t *testing.T) {
			items := []Item{{}, {Outcome: "ok"}, {}}
			fv := reflect.ValueOf(&items[1]).Elem().Field(i)
			switch {
			case fv.Kind() == reflect.String:
				fv.SetString("v<&>\u2028\x01é")
			case fv.CanUint():
				fv.SetUint(4294967295)
			case fv.Kind() == reflect.Bool:
				fv.SetBool(true)
			case f.Type == reflect.TypeFor[map[string]string]():
				fv.Set(reflect.ValueOf(map[string]string{"b": "2", "a": "<1>", "é": "\u2029"}))
			default:
				t.Fatalf("Item.%s: type %s is handled neither by this test nor, probably, by appendItem", f.Name, f.Type)
			}
			r := &Record{Type: TypeRequest, Action: "kms:Decrypt", Items: items}
			before, _ := json.Marshal(&Record{Type: TypeRequest, Action: "kms:Decrypt", Items: []Item{{}, {Outcome: "ok"}, {}}})
			after, _ := json.Marshal(r)
			if bytes.Equal(before, after) {
				t.Fatalf("setting Item.%s does not change what encoding/json writes", f.Name)
			}
			checkEncoding(t, r)
		})
	}
	full := Item{Resource: "alias/app", KeyID: "k-1", Version: 7, Context: map[string]string{"tenant": "ab"}, Outcome: "error", ErrorCode: "permission_denied", ContextOmitted: true}
	checkEncoding(t, &Record{Type: TypeRequest, Action: "kms:Encrypt", Items: []Item{full, {Outcome: "ok"}, full}})
}

// TestAddItemBounds: a record keeps at most MaxItems items, cuts long
// resources and leaves out contexts over the limits.
func TestAddItemBounds(t *testing.T) {
	var r Record
	big := map[string]string{"k": strings.Repeat("v", MaxItemContextBytes)}
	many := map[string]string{}
	for i := range MaxItemContextPairs + 1 {
		many[strings.Repeat("k", i+1)] = "v"
	}
	for i := range MaxItems + 5 {
		ok := r.AddItem(Item{Resource: strings.Repeat("r", 10_000), ContextValues: []map[string]string{big, many, {"a": "b"}}[i%3], Outcome: "ok"})
		if ok != (i < MaxItems) {
			t.Fatalf("AddItem %d = %v", i, ok)
		}
	}
	if len(r.Items) != MaxItems {
		t.Fatalf("%d items", len(r.Items))
	}
	for i, it := range r.Items[:3] {
		if len(it.Resource) != MaxItemResource {
			t.Fatalf("item %d resource of %d bytes", i, len(it.Resource))
		}
		if (it.ContextValues != nil) != (i == 2) || it.ContextOmitted != (i != 2) {
			t.Fatalf("item %d context %d pairs, omitted %v", i, len(it.ContextValues), it.ContextOmitted)
		}
	}
	var n Nop
	n.Record(t.Context(), &r)
	if r.Items[2].ContextValues != nil {
		t.Fatal("Nop keeps item context values")
	}
}

// TestItemsContextBudget: 1,000 items with contexts at the per-item limit
// record at most MaxItemsContextBytes of contexts in all; the rest are
// marked context_omitted, and the encoded record stays small.
func TestItemsContextBudget(t *testing.T) {
	ctx := map[string]string{}
	for i := range MaxItemContextPairs {
		ctx[fmt.Sprintf("%063d", i)] = strings.Repeat("v", 60)
	}
	var r Record
	for range MaxItems {
		r.AddItem(Item{Resource: "k", ContextValues: ctx, Outcome: "error", ErrorCode: "permission_denied"})
	}
	kept, omitted := 0, 0
	for i := range r.Items {
		switch {
		case r.Items[i].ContextValues != nil:
			kept++
			r.Items[i].Context, r.Items[i].ContextValues = map[string]string{}, nil
			for k := range ctx {
				r.Items[i].Context[k] = strings.Repeat("h", 44)
			}
		case r.Items[i].ContextOmitted:
			omitted++
		}
	}
	if kept == 0 || omitted == 0 || kept+omitted != MaxItems {
		t.Fatalf("kept %d, omitted %d", kept, omitted)
	}
	b, ok := appendRecord(nil, &r)
	if !ok {
		t.Fatal("appendRecord refused the record")
	}
	if len(b) > MaxItemsContextBytes+MaxItems*128 {
		t.Fatalf("record of %d bytes for %d items", len(b), MaxItems)
	}
}

func TestAppendRecordRefusesWhatEncodingJSONRefuses(t *testing.T) {
	for _, tm := range []time.Time{
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("", 24*3600)),
		time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("", -25*3600)),
	} {
		r := &Record{Type: TypeRequest, Time: tm}
		if _, err := json.Marshal(r); err == nil {
			t.Fatalf("encoding/json accepts %v", tm)
		}
		if _, ok := appendRecord(nil, r); ok {
			t.Fatalf("appendRecord accepts %v, encoding/json does not", tm)
		}
	}
}

func FuzzAppendRecord(f *testing.F) {
	for _, s := range awkward {
		f.Add(s, s, "k", s, uint64(1), int64(1700000000), int64(5), 3*3600, int64(200), true)
	}
	f.Add("", "", "", "", uint64(0), int64(0), int64(0), 0, int64(0), false)
	f.Fuzz(func(t *testing.T, s1, s2, key, val string, seq uint64, sec, nsec int64, zone int, n int64, leaked bool) {
		r := &Record{Seq: seq, Prev: s1, Type: s2, Time: time.Unix(sec, nsec).In(time.FixedZone("", zone%(48*3600))),
			RequestID: s1, Door: s2, Source: key, Principal: Principal{Kind: s1, ID: s2, Name: val, Role: key, Cluster: s1},
			TokenHMAC: val, CredentialLeaked: leaked, Action: s2, Resource: s1, KeyID: val, Version: uint32(seq),
			Context: map[string]string{key: val, s1: s2}, Outcome: key, ErrorCode: val, Status: int(n), LatencyNS: n, Detail: s1 + s2,
			Key: key, Sig: val}
		want, err := json.Marshal(r)
		got, ok := appendRecord(nil, r)
		if err != nil {
			if ok {
				t.Fatalf("appendRecord accepts what encoding/json refuses (%v): %s", err, got)
			}
			return
		}
		if !ok || !bytes.Equal(got, want) {
			t.Fatalf("differs (ok=%v)\n got %s\nwant %s", ok, got, want)
		}
	})
}

func TestHMACPoolMatchesKeys(t *testing.T) {
	k := testKeys(t)
	p := newHMACPool(k)
	for _, v := range append(awkward, strings.Repeat("x", 127), strings.Repeat("y", 128), strings.Repeat("z", 129)) {
		for range 2 { // the second time from a reused state
			if got, want := p.sum(v), k.HMAC(v); got != want {
				t.Fatalf("HMAC(%q) = %s, want %s", v, got, want)
			}
		}
	}
}
