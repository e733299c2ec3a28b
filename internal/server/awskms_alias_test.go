package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/cofferkms/coffer/client"
	"github.com/cofferkms/coffer/internal/authlimit"
	"github.com/cofferkms/coffer/internal/barrier"
	"github.com/cofferkms/coffer/internal/server"
	"github.com/cofferkms/coffer/internal/server/awskms"
	"github.com/cofferkms/coffer/internal/storage"
	"github.com/cofferkms/coffer/internal/storage/inmem"
	"github.com/cofferkms/coffer/internal/sys"
)

// restClient is Coffer's own client against the AWS test server, with
// cred (a token or an access key).
func (e *awsEnv) restClient(cred client.Option) *client.Client {
	e.t.Helper()
	c, err := client.New(e.ts.URL, client.WithHTTPClient(e.ts.Client()), cred)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// awsNewKey creates a key through the SDK and returns its id.
func awsNewKey(t *testing.T, c *kms.Client) string {
	t.Helper()
	out, err := c.CreateKey(context.Background(), &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(out.KeyMetadata.KeyId)
}

// aliasTarget is the key id alias/NAME points at, through DescribeKey.
func aliasTarget(t *testing.T, c *kms.Client, alias string) string {
	t.Helper()
	d, err := c.DescribeKey(context.Background(), &kms.DescribeKeyInput{KeyId: aws.String(alias)})
	if err != nil {
		t.Fatalf("DescribeKey %s: %v", alias, err)
	}
	return aws.ToString(d.KeyMetadata.KeyId)
}

// TestAWSKMSUpdateAlias moves an alias with the SDK's UpdateAlias: the
// alias, its listing, and encryption through it follow the new key; a
// missing alias or target is NotFoundException, and the request is
// audited as key:UpdateAlias naming the new key and the previous one.
func TestAWSKMSUpdateAlias(t *testing.T) {
	e := newAWSEnv(t)
	ak := e.accessKey("all", allowAll)
	c := e.kms(ak.ID, ak.SecretAccessKey, "")
	ctx := context.Background()
	x, y := awsNewKey(t, c), awsNewKey(t, c)
	if _, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/app"), TargetKeyId: aws.String(x)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UpdateAlias(ctx, &kms.UpdateAliasInput{AliasName: aws.String("alias/app"), TargetKeyId: aws.String(e.cfg.KeyARN(y))}); err != nil {
		t.Fatal(err)
	}
	if got := aliasTarget(t, c, "alias/app"); got != y {
		t.Fatalf("alias/app names %s after the move, want %s", got, y)
	}
	enc, err := c.Encrypt(ctx, &kms.EncryptInput{KeyId: aws.String(e.cfg.AliasARN("alias/app")), Plaintext: []byte("p")})
	if err != nil || aws.ToString(enc.KeyId) != e.cfg.KeyARN(y) {
		t.Fatalf("encrypt through the moved alias: %v, %v", err, enc)
	}
	la, err := c.ListAliases(ctx, &kms.ListAliasesInput{KeyId: aws.String(x)})
	if err != nil || len(la.Aliases) != 0 {
		t.Fatalf("the old key's aliases: %v, %+v", err, la)
	}
	la, err = c.ListAliases(ctx, &kms.ListAliasesInput{KeyId: aws.String(y)})
	if err != nil || len(la.Aliases) != 1 || aws.ToString(la.Aliases[0].AliasName) != "alias/app" {
		t.Fatalf("the new key's aliases: %v, %+v", err, la)
	}
	rec, ok := e.rec.last("key:UpdateAlias")
	if !ok || rec.Door != "aws-kms" || rec.Resource != "alias/app" || rec.KeyID != y || rec.Outcome != "ok" || rec.Detail != "previous_key_id="+x {
		t.Fatalf("record of the move: %+v", rec)
	}

	for _, c2 := range []struct{ name, alias, target, want string }{
		{"missing alias", "alias/none", x, "NotFoundException"},
		{"missing target", "alias/app", "11111111-2222-3333-4444-555555555555", "NotFoundException"},
		{"missing alias as target", "alias/app", "alias/none", "NotFoundException"},
		{"target ARN of another region", "alias/app", "arn:aws:kms:us-east-1:123456789012:key/" + x, "NotFoundException"},
		{"not an alias name", "app", x, "ValidationException"},
	} {
		_, err := c.UpdateAlias(ctx, &kms.UpdateAliasInput{AliasName: aws.String(c2.alias), TargetKeyId: aws.String(c2.target)})
		if apiCode(err) != c2.want {
			t.Errorf("%s: %v, want %s", c2.name, err, c2.want)
		}
	}
	if got := aliasTarget(t, c, "alias/app"); got != y {
		t.Fatalf("alias/app names %s after the refused moves, want %s", got, y)
	}
	var nf *types.NotFoundException
	if _, err := c.UpdateAlias(ctx, &kms.UpdateAliasInput{AliasName: aws.String("alias/none"), TargetKeyId: aws.String(x)}); !errors.As(err, &nf) {
		t.Fatalf("the SDK's typed error for a missing alias: %T %v", err, err)
	}
	// A key pending deletion takes no alias, as in AWS.
	if _, err := c.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: aws.String(x), PendingWindowInDays: aws.Int32(7)}); err != nil {
		t.Fatal(err)
	}
	var is *types.KMSInvalidStateException
	if _, err := c.UpdateAlias(ctx, &kms.UpdateAliasInput{AliasName: aws.String("alias/app"), TargetKeyId: aws.String(x)}); !errors.As(err, &is) {
		t.Fatalf("move to a key pending deletion: %T %v, want KMSInvalidStateException", err, err)
	}
	if got := aliasTarget(t, c, "alias/app"); got != y {
		t.Fatalf("alias/app names %s after the refused move, want %s", got, y)
	}
}

// TestAWSKMSUpdateAliasAuthorization: a move needs key:DeleteAlias on the
// alias and on its current key, and key:CreateAlias on the alias and on
// the new key; without any one of the four it is AccessDeniedException
// and the alias stays where it was. The REST door's move is the same
// call.
func TestAWSKMSUpdateAliasAuthorization(t *testing.T) {
	e := newAWSEnv(t)
	admin := e.accessKey("all", allowAll)
	ac := e.kms(admin.ID, admin.SecretAccessKey, "")
	ctx := context.Background()
	var x, y client.Key
	e.rest("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/app"}, &x)
	e.rest("POST", "/v1/keys", e.root, client.CreateKeyRequest{}, &y)

	q := func(rs []string) string {
		out := make([]string, len(rs))
		for i, r := range rs {
			out[i] = fmt.Sprintf("%q", r)
		}
		return "[" + strings.Join(out, ", ") + "]"
	}
	policy := func(deleteOn, createOn, deny []string) string {
		doc := fmt.Sprintf("statements:\n  - effect: allow\n    actions: [key:DeleteAlias]\n    resources: %s\n  - effect: allow\n    actions: [key:CreateAlias]\n    resources: %s\n",
			q(deleteOn), q(createOn))
		if len(deny) > 0 {
			doc += fmt.Sprintf("  - effect: deny\n    actions: [\"key:*\"]\n    resources: %s\n", q(deny))
		}
		return doc
	}
	// A key half is decided on the key's id with all its names, so rights
	// on alias/app reach its current key: that half is shown refused by a
	// deny on the key's id.
	cases := []struct {
		name                   string
		deleteOn, create, deny []string
		missing                string
	}{
		{"no DeleteAlias on the alias", []string{x.ID}, []string{"alias/app", y.ID}, nil, "key:DeleteAlias on alias/app"},
		{"no DeleteAlias on the old key", []string{"alias/app", x.ID}, []string{"alias/app", y.ID}, []string{x.ID}, "key:DeleteAlias on " + x.ID},
		{"no CreateAlias on the alias", []string{"alias/app", x.ID}, []string{y.ID}, nil, "key:CreateAlias on alias/app"},
		{"no CreateAlias on the new key", []string{"alias/app", x.ID}, []string{"alias/app"}, nil, "key:CreateAlias on " + y.ID},
		{"a deny on the new key", []string{"alias/app", x.ID}, []string{"alias/app", y.ID}, []string{y.ID}, "key:CreateAlias on " + y.ID},
	}
	for i, c := range cases {
		ak := e.accessKey(fmt.Sprint("p", i), policy(c.deleteOn, c.create, c.deny))
		_, err := e.kms(ak.ID, ak.SecretAccessKey, "").UpdateAlias(ctx, &kms.UpdateAliasInput{AliasName: aws.String("alias/app"), TargetKeyId: aws.String(y.ID)})
		if apiCode(err) != "AccessDeniedException" || !strings.Contains(err.Error(), c.missing) {
			t.Errorf("%s: %v, want AccessDeniedException naming %s", c.name, err, c.missing)
		}
		if rec, _ := e.rec.last("key:UpdateAlias"); rec.ErrorCode != "permission_denied" {
			t.Errorf("%s: recorded %q", c.name, rec.ErrorCode)
		}
		_, err = e.restClient(client.WithAccessKey(ak.ID, ak.SecretAccessKey)).UpdateAlias(ctx, "alias/app", y.ID)
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.StatusCode != http.StatusForbidden || !strings.Contains(ae.Message, c.missing) {
			t.Errorf("%s, REST: %v, want 403 naming %s", c.name, err, c.missing)
		}
		if got := aliasTarget(t, ac, "alias/app"); got != x.ID {
			t.Fatalf("%s moved alias/app to %s", c.name, got)
		}
	}
	// All four: the move goes through, by either door.
	ak := e.accessKey("mover", policy([]string{"alias/app", x.ID, y.ID}, []string{"alias/app", x.ID, y.ID}, nil))
	if _, err := e.kms(ak.ID, ak.SecretAccessKey, "").UpdateAlias(ctx, &kms.UpdateAliasInput{AliasName: aws.String("alias/app"), TargetKeyId: aws.String(y.ID)}); err != nil {
		t.Fatal(err)
	}
	if got := aliasTarget(t, ac, "alias/app"); got != y.ID {
		t.Fatalf("alias/app names %s, want %s", got, y.ID)
	}
	al, err := e.restClient(client.WithAccessKey(ak.ID, ak.SecretAccessKey)).UpdateAlias(ctx, "alias/app", x.ID)
	if err != nil || al.KeyID != x.ID || al.Name != "alias/app" {
		t.Fatalf("REST move back: %+v, %v", al, err)
	}
	if rec, _ := e.rec.last("key:UpdateAlias"); rec.Door == "aws-kms" || rec.KeyID != x.ID || rec.Outcome != "ok" {
		t.Fatalf("record of the REST move: %+v", rec)
	}
	// The REST door's bad input: a missing alias (404), no key (400).
	_, err = e.restClient(client.WithToken(e.root)).UpdateAlias(ctx, "alias/none", x.ID)
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusNotFound {
		t.Fatalf("REST move of a missing alias: %v", err)
	}
	_, err = e.restClient(client.WithToken(e.root)).UpdateAlias(ctx, "alias/app", "")
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusBadRequest {
		t.Fatalf("REST move without a key: %v", err)
	}
}

// TestUpdateAliasConcurrentMoves: concurrent moves of one alias to
// different keys through the REST door. Each either succeeds or is told
// to retry (409), and at the end the alias names exactly one key, in
// every index: the listing, that key's description, and resolution.
func TestUpdateAliasConcurrentMoves(t *testing.T) {
	e := newAWSEnv(t)
	ctx := context.Background()
	rc := e.restClient(client.WithToken(e.root))
	var x client.Key
	e.rest("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/app"}, &x)
	const n = 8
	targets := make([]string, n)
	for i := range targets {
		var k client.Key
		e.rest("POST", "/v1/keys", e.root, client.CreateKeyRequest{}, &k)
		targets[i] = k.ID
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := rc.UpdateAlias(ctx, "alias/app", targets[i])
			var ae *client.APIError
			if err != nil && (!errors.As(err, &ae) || ae.StatusCode != http.StatusConflict) {
				t.Errorf("move %d: %v, want success or 409", i, err)
			}
		}()
	}
	wg.Wait()
	list, err := rc.ListAliases(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var at []string
	for _, a := range list.Aliases {
		if a.Name == "alias/app" {
			at = append(at, a.KeyID)
		}
	}
	if len(at) != 1 || !slices.Contains(targets, at[0]) {
		t.Fatalf("alias/app listed for %v", at)
	}
	holders := 0
	for _, id := range append([]string{x.ID}, targets...) {
		k, err := rc.DescribeKey(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(k.Aliases, "alias/app") {
			holders++
			if id != at[0] {
				t.Fatalf("key %s lists alias/app, which names %s", id, at[0])
			}
		}
	}
	if holders != 1 {
		t.Fatalf("%d keys list alias/app", holders)
	}
}

// slowStore delays every write while slow is set: a change that reads in
// one step and writes in another has time to read what a concurrent
// change is about to replace.
type slowStore struct {
	*inmem.Backend
	slow atomic.Bool
}

func (s *slowStore) Apply(ctx context.Context, ops ...storage.Op) error {
	if s.slow.Load() {
		time.Sleep(3 * time.Millisecond)
	}
	return s.Backend.Apply(ctx, ops...)
}

// newSlowAWSEnv is newAWSEnv over a slowStore.
func newSlowAWSEnv(t *testing.T) (*awsEnv, *slowStore) {
	t.Helper()
	store := &slowStore{Backend: inmem.New()}
	e := &awsEnv{t: t, rec: &memRecorder{}, cfg: awskms.Config{Partition: "aws", Region: "eu-west-3", Account: "123456789012"}}
	s := sys.New(barrier.New(store), time.Now)
	api := server.New(s, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Audit: e.rec,
		AuthLimit: authlimit.New(authlimit.Config{Burst: 1000, PairBurst: 1000}), AWSKMS: e.cfg})
	e.ts = httptest.NewTLSServer(api)
	t.Cleanup(e.ts.Close)
	var ir client.InitResponse
	e.rest("POST", "/v1/sys/init", "", client.InitRequest{Shares: 1, Threshold: 1}, &ir)
	e.rest("POST", "/v1/sys/unseal", "", client.UnsealRequest{Share: ir.Shares[0]}, nil)
	e.root = ir.RootToken
	return e, store
}

// TestAWSKMSTagRace: concurrent TagResource and UntagResource calls on
// one key all take effect. Each is one change of the stored record; a
// read in the door and a whole write lost most of them (over a store
// whose writes take 3 ms, two runs kept 1 and 2 of the 24 tags added and
// made 2 of the 8 removals).
func TestAWSKMSTagRace(t *testing.T) {
	e, store := newSlowAWSEnv(t)
	ak := e.accessKey("all", allowAll)
	c := e.kms(ak.ID, ak.SecretAccessKey, "")
	ctx := context.Background()
	var pre []types.Tag
	for i := range 8 {
		pre = append(pre, types.Tag{TagKey: aws.String(fmt.Sprint("old", i)), TagValue: aws.String("x")})
	}
	out, err := c.CreateKey(ctx, &kms.CreateKeyInput{Tags: pre})
	if err != nil {
		t.Fatal(err)
	}
	id := out.KeyMetadata.KeyId
	const adds = 24
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range adds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if _, err := c.TagResource(ctx, &kms.TagResourceInput{KeyId: id,
				Tags: []types.Tag{{TagKey: aws.String(fmt.Sprint("t", i)), TagValue: aws.String(fmt.Sprint(i))}}}); err != nil {
				t.Error(err)
			}
		}()
	}
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if _, err := c.UntagResource(ctx, &kms.UntagResourceInput{KeyId: id, TagKeys: []string{fmt.Sprint("old", i)}}); err != nil {
				t.Error(err)
			}
		}()
	}
	store.slow.Store(true)
	close(start)
	wg.Wait()
	store.slow.Store(false)
	want := map[string]string{}
	for i := range adds {
		want[fmt.Sprint("t", i)] = fmt.Sprint(i)
	}
	tags, err := c.ListResourceTags(ctx, &kms.ListResourceTagsInput{KeyId: id})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, tg := range tags.Tags {
		got[aws.ToString(tg.TagKey)] = aws.ToString(tg.TagValue)
	}
	if !maps.Equal(got, want) {
		t.Fatalf("tags after concurrent changes: %d of them, %v; want %v", len(got), got, want)
	}
}

// TestAWSKMSTagLimit: tags past the 50 a key may have are
// LimitExceededException, and change nothing.
func TestAWSKMSTagLimit(t *testing.T) {
	e := newAWSEnv(t)
	ak := e.accessKey("all", allowAll)
	c := e.kms(ak.ID, ak.SecretAccessKey, "")
	ctx := context.Background()
	out, err := c.CreateKey(ctx, &kms.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	id := out.KeyMetadata.KeyId
	var tags []types.Tag
	for i := range 50 {
		tags = append(tags, types.Tag{TagKey: aws.String(fmt.Sprint("t", i)), TagValue: aws.String("")})
	}
	if _, err := c.TagResource(ctx, &kms.TagResourceInput{KeyId: id, Tags: tags}); err != nil {
		t.Fatal(err)
	}
	_, err = c.TagResource(ctx, &kms.TagResourceInput{KeyId: id, Tags: []types.Tag{{TagKey: aws.String("one-more"), TagValue: aws.String("")}}})
	var le *types.LimitExceededException
	if !errors.As(err, &le) {
		t.Fatalf("the 51st tag: %T %v, want LimitExceededException", err, err)
	}
	// Replacing a value stays within the limit.
	if _, err := c.TagResource(ctx, &kms.TagResourceInput{KeyId: id, Tags: []types.Tag{{TagKey: aws.String("t0"), TagValue: aws.String("v")}}}); err != nil {
		t.Fatal(err)
	}
	lt, err := c.ListResourceTags(ctx, &kms.ListResourceTagsInput{KeyId: id})
	if err != nil || len(lt.Tags) != 50 {
		t.Fatalf("%v, %d tags", err, len(lt.Tags))
	}
}

// TestAWSKMSUpdateAliasConflict: UpdateAlias calls that were authorized
// while the alias named one key, and reach the store after another call
// moved it, are ConflictException (the SDK's typed error), not a silent
// overwrite; the alias ends naming one of the targets.
func TestAWSKMSUpdateAliasConflict(t *testing.T) {
	e, store := newSlowAWSEnv(t)
	ak := e.accessKey("all", allowAll)
	c := e.kms(ak.ID, ak.SecretAccessKey, "")
	ctx := context.Background()
	var x client.Key
	e.rest("POST", "/v1/keys", e.root, client.CreateKeyRequest{Alias: "alias/app"}, &x)
	const n = 6
	targets := make([]string, n)
	for i := range targets {
		var k client.Key
		e.rest("POST", "/v1/keys", e.root, client.CreateKeyRequest{}, &k)
		targets[i] = k.ID
	}
	// Warm the connections, so that the moves arrive together.
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.ListAliases(ctx, &kms.ListAliasesInput{})
		}()
	}
	wg.Wait()
	start := make(chan struct{})
	var conflicts atomic.Int32
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, err := c.UpdateAlias(ctx, &kms.UpdateAliasInput{AliasName: aws.String("alias/app"), TargetKeyId: aws.String(targets[i])})
			var ce *types.ConflictException
			switch {
			case errors.As(err, &ce):
				conflicts.Add(1)
			case err != nil:
				t.Errorf("move %d: %v, want success or ConflictException", i, err)
			}
		}()
	}
	store.slow.Store(true)
	close(start)
	wg.Wait()
	store.slow.Store(false)
	if conflicts.Load() == 0 {
		t.Fatal("no move conflicted: the moves did not overlap, or a stale one overwrote the alias")
	}
	if got := aliasTarget(t, c, "alias/app"); !slices.Contains(targets, got) {
		t.Fatalf("alias/app names %s", got)
	}
	t.Logf("%d of %d moves conflicted", conflicts.Load(), n)
}

// TestAWSKMSTagReservedPrefix: tag keys beginning with aws: (in any case)
// are TagException, as in AWS, through TagResource and CreateKey, and
// leave the key's tags as they were.
func TestAWSKMSTagReservedPrefix(t *testing.T) {
	e := newAWSEnv(t)
	ak := e.accessKey("all", allowAll)
	c := e.kms(ak.ID, ak.SecretAccessKey, "")
	ctx := context.Background()
	out, err := c.CreateKey(ctx, &kms.CreateKeyInput{Tags: []types.Tag{{TagKey: aws.String("team"), TagValue: aws.String("a")}}})
	if err != nil {
		t.Fatal(err)
	}
	id := out.KeyMetadata.KeyId
	for _, k := range []string{"aws:cloudformation:stack-name", "AWS:x"} {
		var te *types.TagException
		_, err := c.TagResource(ctx, &kms.TagResourceInput{KeyId: id, Tags: []types.Tag{{TagKey: aws.String("ok"), TagValue: aws.String("")}, {TagKey: aws.String(k), TagValue: aws.String("v")}}})
		if !errors.As(err, &te) {
			t.Errorf("TagResource %q: %T %v, want TagException", k, err, err)
		}
		_, err = c.CreateKey(ctx, &kms.CreateKeyInput{Tags: []types.Tag{{TagKey: aws.String(k), TagValue: aws.String("v")}}})
		if !errors.As(err, &te) {
			t.Errorf("CreateKey with %q: %T %v, want TagException", k, err, err)
		}
	}
	lt, err := c.ListResourceTags(ctx, &kms.ListResourceTagsInput{KeyId: id})
	if err != nil || len(lt.Tags) != 1 || aws.ToString(lt.Tags[0].TagKey) != "team" {
		t.Fatalf("tags after the refusals: %v %+v", err, lt)
	}
}

// TestAWSKMSCreateAliasRefusals: through the SDK, a taken name is
// AlreadyExistsException (even when the target is pending deletion), a key
// pending deletion takes no new alias (KMSInvalidStateException) and a new
// name under alias/aws/ is a ValidationException; none of them is stored.
func TestAWSKMSCreateAliasRefusals(t *testing.T) {
	e := newAWSEnv(t)
	ak := e.accessKey("all", allowAll)
	c := e.kms(ak.ID, ak.SecretAccessKey, "")
	ctx := context.Background()
	live, doomed := awsNewKey(t, c), awsNewKey(t, c)
	if _, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/taken"), TargetKeyId: aws.String(live)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: aws.String(doomed), PendingWindowInDays: aws.Int32(7)}); err != nil {
		t.Fatal(err)
	}
	_, err := c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/taken"), TargetKeyId: aws.String(doomed)})
	var exists *types.AlreadyExistsException
	if !errors.As(err, &exists) {
		t.Fatalf("a taken name: got %v, want AlreadyExistsException", err)
	}
	_, err = c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/fresh"), TargetKeyId: aws.String(doomed)})
	var state *types.KMSInvalidStateException
	if !errors.As(err, &state) {
		t.Fatalf("a key pending deletion: got %v, want KMSInvalidStateException", err)
	}
	_, err = c.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/aws/s3"), TargetKeyId: aws.String(live)})
	if code := apiCode(err); code != "ValidationException" {
		t.Fatalf("alias/aws/s3: got %v, want ValidationException", err)
	}
	out, err := c.ListAliases(ctx, &kms.ListAliasesInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range out.Aliases {
		if n := aws.ToString(a.AliasName); n != "alias/taken" {
			t.Fatalf("a refused alias was stored: %s", n)
		}
		if k := aws.ToString(a.TargetKeyId); k != live {
			t.Fatalf("alias/taken was moved to %s", k)
		}
	}
}
