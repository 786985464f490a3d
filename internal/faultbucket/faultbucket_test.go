package faultbucket

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/thanos-io/objstore"
)

func TestAcceptanceWithoutFaults(t *testing.T) {
	objstore.AcceptanceTest(t, New(objstore.NewInMemBucket(), 1))
}

func TestAcceptanceAfterClear(t *testing.T) {
	b := New(objstore.NewInMemBucket(), 1)
	b.FailRandomly(1)
	b.StallUploads(nil)
	b.Clear()
	objstore.AcceptanceTest(t, b)
}

func TestFailUploads(t *testing.T) {
	ctx := context.Background()
	mem := objstore.NewInMemBucket()
	b := New(mem, 1)
	b.FailUploads(func(name string) bool { return strings.HasSuffix(name, "/index") })

	err := b.Upload(ctx, "a/index", strings.NewReader("x"))
	var ferr *Error
	if !errors.As(err, &ferr) || ferr.StatusCode < 500 || ferr.Op != OpUpload || ferr.Name != "a/index" {
		t.Fatalf("upload a/index: got %v, want an injected 5xx *Error", err)
	}
	if b.IsObjNotFoundErr(err) {
		t.Error("injected error reads as not found")
	}
	if _, ok := mem.Objects()["a/index"]; ok {
		t.Error("failed upload reached the wrapped bucket")
	}
	if err := b.Upload(ctx, "a/meta.json", strings.NewReader("x")); err != nil {
		t.Fatalf("upload a/meta.json: %v", err)
	}
	// Other operations on the failing name are unaffected.
	if _, err := b.Exists(ctx, "a/index"); err != nil {
		t.Fatalf("exists a/index: %v", err)
	}

	b.Clear()
	if err := b.Upload(ctx, "a/index", strings.NewReader("x")); err != nil {
		t.Fatalf("upload a/index after Clear: %v", err)
	}
	if got := b.CallsFor(OpUpload, "a/index"); got != 2 {
		t.Errorf("CallsFor(upload, a/index) = %d, want 2", got)
	}
	if got := b.Calls(OpUpload); got != 3 {
		t.Errorf("Calls(upload) = %d, want 3", got)
	}
	if got := b.Calls(OpExists); got != 1 {
		t.Errorf("Calls(exists) = %d, want 1", got)
	}
}

func TestRuleOptions(t *testing.T) {
	ctx := context.Background()
	sentinel := errors.New("boom")
	b := New(objstore.NewInMemBucket(), 1)
	b.Add(Rule{Ops: []string{OpGet, OpExists}, Err: sentinel, Times: 2})

	for i, want := range []error{sentinel, sentinel, nil} {
		if _, err := b.Exists(ctx, "x"); !errors.Is(err, want) {
			t.Fatalf("exists #%d: got %v, want %v", i, err, want)
		}
	}
	if err := b.Upload(ctx, "x", strings.NewReader("x")); err != nil {
		t.Fatalf("upload is not in Ops but failed: %v", err)
	}
}

func TestFailRandomlyIsSeeded(t *testing.T) {
	run := func(seed uint64) (pattern string) {
		b := New(objstore.NewInMemBucket(), seed)
		b.FailRandomly(0.3, OpUpload)
		for range 200 {
			if b.Upload(context.Background(), "o", strings.NewReader("x")) != nil {
				pattern += "x"
			} else {
				pattern += "."
			}
		}
		return pattern
	}
	p1, p2 := run(42), run(42)
	if p1 != p2 {
		t.Fatal("same seed gave different failures")
	}
	if n := strings.Count(p1, "x"); n < 30 || n > 90 {
		t.Errorf("%d of 200 uploads failed at rate 0.3", n)
	}
	if run(43) == p1 {
		t.Error("different seeds gave the same failures")
	}
}

func TestStall(t *testing.T) {
	mem := objstore.NewInMemBucket()
	b := New(mem, 1)
	b.StallUploads(func(name string) bool { return name == "slow" })

	// A cancelled context ends the stall with its error.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := b.Upload(ctx, "slow", strings.NewReader("x")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stalled upload: got %v, want deadline exceeded", err)
	}
	if _, ok := mem.Objects()["slow"]; ok {
		t.Fatal("cancelled stalled upload reached the wrapped bucket")
	}

	// Release lets stalled calls through; others never wait.
	done := make(chan error, 1)
	go func() { done <- b.Upload(context.Background(), "slow", strings.NewReader("x")) }()
	waitFor(t, func() bool { return b.Stalled() == 1 })
	if err := b.Upload(context.Background(), "fast", strings.NewReader("x")); err != nil {
		t.Fatalf("upload fast: %v", err)
	}
	b.Release()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("released upload: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("released upload still blocked")
	}
	if _, ok := mem.Objects()["slow"]; !ok {
		t.Error("released upload did not reach the wrapped bucket")
	}

	// The rule still holds after Release; Clear removes it.
	go func() { done <- b.Upload(context.Background(), "slow", strings.NewReader("x")) }()
	waitFor(t, func() bool { return b.Stalled() == 1 })
	b.Clear()
	if err := <-done; err != nil {
		t.Fatalf("upload released by Clear: %v", err)
	}
	if err := b.Upload(context.Background(), "slow", strings.NewReader("x")); err != nil {
		t.Fatalf("upload after Clear: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(time.Millisecond)
	}
}
