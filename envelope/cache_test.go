package envelope

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/cofferkms/coffer/client"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fakeKMS is a Coffer server in memory: it wraps keys with a LocalKey per
// key id and binds the context, and counts calls.
type fakeKMS struct {
	mu                    sync.Mutex
	keys                  map[string]*LocalKey
	generates, encs, decs int
	fail                  error
}

func newFakeKMS(t testing.TB, ids ...string) *fakeKMS {
	f := &fakeKMS{keys: map[string]*LocalKey{}}
	for _, id := range ids {
		f.keys[id] = testKey(t, "kms:"+id)
	}
	return f
}

func (f *fakeKMS) GenerateDataKey(ctx context.Context, req client.DataKeyRequest) (*client.DataKeyResponse, error) {
	f.mu.Lock()
	f.generates++
	f.mu.Unlock()
	key := data(req.Bytes)
	key[0] ^= byte(f.generates) // a different key each call
	resp, err := f.Encrypt(ctx, client.EncryptRequest{KeyID: req.KeyID, Plaintext: key, Context: req.Context})
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.encs--
	f.mu.Unlock()
	return &client.DataKeyResponse{Plaintext: key, Ciphertext: resp.Ciphertext, KeyID: resp.KeyID, KeyVersion: 1}, nil
}

func (f *fakeKMS) Encrypt(ctx context.Context, req client.EncryptRequest) (*client.EncryptResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.encs++
	if f.fail != nil {
		return nil, f.fail
	}
	k, ok := f.keys[req.KeyID]
	if !ok {
		return nil, errors.New("key_not_found")
	}
	st, err := k.Wrap(ctx, req.Plaintext, req.Context)
	if err != nil {
		return nil, err
	}
	// The ciphertext names its key, as Coffer's does.
	return &client.EncryptResponse{Ciphertext: append([]byte(req.KeyID+":"), st[0].Body...), KeyID: req.KeyID, KeyVersion: 1}, nil
}

func (f *fakeKMS) Decrypt(ctx context.Context, req client.DecryptRequest) (*client.DecryptResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.decs++
	if f.fail != nil {
		return nil, f.fail
	}
	id, body, _ := bytes.Cut(req.Ciphertext, []byte(":"))
	k, ok := f.keys[string(id)]
	if !ok {
		return nil, errors.New("key_not_found")
	}
	pt, err := k.Unwrap(ctx, []Stanza{{Type: LocalType, KeyID: k.Name(), KeyVersion: 1, Body: body}}, req.Context)
	if err != nil {
		return nil, errors.New("invalid_ciphertext: encryption context differs")
	}
	return &client.DecryptResponse{Plaintext: pt}, nil
}

var _ KMS = (*client.Client)(nil)

func TestCofferWrapper(t *testing.T) {
	kms := newFakeKMS(t, "k1")
	w := NewCoffer(kms, "k1")
	ec := map[string]string{"tenant": "acme"}
	pt := data(3000)
	file := seal(t, w, pt, &EncryptOptions{EncryptionContext: ec, SegmentSize: 1024})
	if kms.generates != 1 || kms.encs != 0 {
		t.Fatalf("generates %d encrypts %d, want one GenerateDataKey", kms.generates, kms.encs)
	}
	hdr, _ := ReadHeader(bytes.NewReader(file))
	if s := hdr.Stanzas[0]; s.Type != CofferType || s.KeyID != "k1" || s.KeyVersion != 1 {
		t.Fatalf("stanza %+v", s)
	}
	got, err := open(file, nil, NewCoffer(kms, ""))
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("decrypt: %v", err)
	}
	// Recovery: a second key wraps the same data key; with k1 gone, k2
	// opens the file.
	kms.keys["k2"] = testKey(t, "kms:k2")
	file = seal(t, Multi(w, NewCoffer(kms, "k2")), pt, &EncryptOptions{EncryptionContext: ec})
	delete(kms.keys, "k1")
	if got, err := open(file, nil, NewCoffer(kms, "")); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("recovery decrypt: %v", err)
	}
	kms.fail = errors.New("server down")
	if _, err := open(file, nil, NewCoffer(kms, "")); !errors.Is(err, ErrWrongKey) || !bytes.Contains([]byte(err.Error()), []byte("server down")) {
		t.Fatalf("server down: %v", err)
	}
}

func newCache(t *testing.T, w Wrapper, u Unwrapper, l CacheLimits) (*CachingWrapper, *fakeClock) {
	t.Helper()
	clk := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	l.Now = clk.Now
	c, err := NewCachingWrapper(w, u, l)
	if err != nil {
		t.Fatal(err)
	}
	return c, clk
}

func TestCacheLimits(t *testing.T) {
	ec := map[string]string{"a": "1"}
	encrypt := func(c *CachingWrapper, n int, ec map[string]string) []byte {
		return seal(t, c, data(n), &EncryptOptions{EncryptionContext: ec})
	}
	t.Run("messages", func(t *testing.T) {
		kms := newFakeKMS(t, "k")
		c, _ := newCache(t, NewCoffer(kms, "k"), nil, CacheLimits{MaxMessages: 3})
		for range 7 {
			encrypt(c, 10, ec)
		}
		if kms.generates != 3 { // 3 + 3 + 1
			t.Errorf("%d generates for 7 files at 3 per key, want 3", kms.generates)
		}
	})
	t.Run("age", func(t *testing.T) {
		kms := newFakeKMS(t, "k")
		c, clk := newCache(t, NewCoffer(kms, "k"), nil, CacheLimits{MaxAge: time.Minute})
		a := encrypt(c, 10, ec)
		clk.Advance(59 * time.Second)
		b := encrypt(c, 10, ec)
		clk.Advance(time.Second)
		d := encrypt(c, 10, ec)
		if kms.generates != 2 {
			t.Errorf("%d generates, want 2", kms.generates)
		}
		ha, _ := ReadHeader(bytes.NewReader(a))
		hb, _ := ReadHeader(bytes.NewReader(b))
		hd, _ := ReadHeader(bytes.NewReader(d))
		if !bytes.Equal(ha.Stanzas[0].Body, hb.Stanzas[0].Body) || bytes.Equal(hb.Stanzas[0].Body, hd.Stanzas[0].Body) {
			t.Error("the key was not reused within MaxAge, or reused after it")
		}
		// Files sharing a data key still have their own salt and keys.
		if bytes.Equal(a[10:42], b[10:42]) {
			t.Error("two files share a salt")
		}
	})
	t.Run("bytes", func(t *testing.T) {
		kms := newFakeKMS(t, "k")
		c, _ := newCache(t, NewCoffer(kms, "k"), nil, CacheLimits{MaxBytes: 1000})
		encrypt(c, 600, ec) // key 1: 600
		encrypt(c, 600, ec) // key 1: 1200, retired
		encrypt(c, 10, ec)  // key 2
		if kms.generates != 2 {
			t.Errorf("%d generates, want 2", kms.generates)
		}
	})
	t.Run("contexts", func(t *testing.T) {
		kms := newFakeKMS(t, "k")
		c, clk := newCache(t, NewCoffer(kms, "k"), nil, CacheLimits{MaxEntries: 2})
		for _, v := range []string{"1", "2", "1", "2", "3", "1"} {
			encrypt(c, 10, map[string]string{"a": v})
			clk.Advance(time.Second)
		}
		// 1, 2 miss; 1, 2 hit; 3 evicts the oldest (1); 1 misses.
		if s := c.Stats(); kms.generates != 4 || s.EncryptHits != 2 || s.Evictions != 2 {
			t.Errorf("generates %d, stats %+v", kms.generates, s)
		}
	})
	t.Run("zeroed on eviction", func(t *testing.T) {
		c, clk := newCache(t, testKey(t, "local"), nil, CacheLimits{MaxAge: time.Second})
		encrypt(c, 10, ec)
		var e *cacheEntry
		for _, v := range c.enc {
			e = v
		}
		clk.Advance(time.Second)
		encrypt(c, 10, ec)
		if !bytes.Equal(e.key, make([]byte, DataKeySize)) {
			t.Error("retired key was not zeroed")
		}
		c.Purge()
		if len(c.enc) != 0 {
			t.Error("Purge left keys")
		}
	})
	t.Run("decrypt", func(t *testing.T) {
		kms := newFakeKMS(t, "k")
		c, clk := newCache(t, NewCoffer(kms, "k"), NewCoffer(kms, ""), CacheLimits{MaxAge: time.Minute, MaxMessages: 100})
		files := [][]byte{encrypt(c, 10, ec), encrypt(c, 20, ec), encrypt(c, 30, ec)}
		for _, f := range files {
			if _, err := open(f, nil, c); err != nil {
				t.Fatal(err)
			}
		}
		if kms.decs != 1 {
			t.Errorf("%d unwraps for 3 files of one key, want 1", kms.decs)
		}
		clk.Advance(time.Minute)
		if _, err := open(files[0], nil, c); err != nil {
			t.Fatal(err)
		}
		if kms.decs != 2 {
			t.Errorf("%d unwraps after MaxAge, want 2", kms.decs)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		if _, err := NewCachingWrapper(nil, nil, CacheLimits{MaxBytes: -1}); err == nil {
			t.Error("negative limit accepted")
		}
		c, _ := NewCachingWrapper(nil, nil, CacheLimits{})
		if l := c.Limits(); l.MaxAge != DefaultCacheMaxAge || l.MaxMessages != DefaultCacheMaxMessages || l.MaxBytes != DefaultCacheMaxBytes {
			t.Errorf("defaults %+v", l)
		}
		if _, err := Encrypt(io.Discard, c, nil); err == nil {
			t.Error("cache without wrapper encrypted")
		}
	})
}

func TestCacheConcurrent(t *testing.T) {
	kms := newFakeKMS(t, "k")
	c, _ := newCache(t, NewCoffer(kms, "k"), NewCoffer(kms, ""), CacheLimits{MaxMessages: 10})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 10 {
				f := seal(t, c, data(100+i), &EncryptOptions{EncryptionContext: map[string]string{"i": string(rune('a' + i%2))}})
				if _, err := open(f, nil, c); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if kms.generates < 8 || kms.generates > 10 {
		t.Errorf("%d generates for 80 files at 10 per key", kms.generates)
	}
}
