package reqsig_test

import (
	"bytes"
	"context"
	"net/http"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	httpsig "github.com/remitly-oss/httpsig-go"

	"github.com/nops-kernel/nops/internal/redisconn"
	"github.com/nops-kernel/nops/internal/reqsig"
	"github.com/nops-kernel/nops/internal/reqsig/redisnonce"
	"github.com/nops-kernel/nops/internal/testutil/services"
)

// benchBatch is how many signed requests are prepared at a time, outside the timer.
const benchBatch = 1024

// BenchmarkVerify measures Verify of a signed POST with a JSON body (the whole chain: parsing,
// policy, key lookup, Content-Digest, signature, nonce claim) for each algorithm and nonce store:
// memory (the cost of verification alone), sqlite (one fsync'd write per request: the store
// that survives a restart on one node), redis (one SET NX round trip: the store replicas share;
// NOPS_TEST_REDIS_URL). The keys live in SQLite with a 1 s lookup cache, as the
// kernel would run them. "library" is the baseline of the same run: the bare library verifying
// a signature over the same components that its own Signer made, with no policy, no key store
// and no nonce; report Verify's ratio to it (docs/benchmarks.md).
//
//	go test -run '^$' -bench BenchmarkVerify -benchtime 2s ./internal/reqsig/
func BenchmarkVerify(b *testing.B) {
	for _, alg := range []reqsig.Algorithm{reqsig.AlgHMACSHA256, reqsig.AlgEd25519} {
		b.Run(string(alg), func(b *testing.B) {
			b.Run("library", func(b *testing.B) { benchLibrary(b, alg) })
			for _, store := range []string{"memory", "sqlite", "redis"} {
				b.Run(store, func(b *testing.B) { benchVerify(b, alg, store) })
			}
		})
	}
}

func benchVerify(b *testing.B, alg reqsig.Algorithm, store string) {
	s := openSQLite(b, "")
	seed(b, s)
	c := newClock(t0)
	keys := newKeys(b, s, c, reqsig.KeysOptions{CacheTTL: time.Second})
	var signer reqsig.SignerKey
	if alg == reqsig.AlgHMACSHA256 {
		_, signer = createHMAC(b, keys, "")
	} else {
		_, signer = createEd25519(b, keys)
	}
	var nonces reqsig.NonceStore = &reqsig.MemoryNonces{}
	switch store {
	case "sqlite":
		nonces = s
	case "redis":
		url, ns := services.RedisNamespace(b)
		client, err := redisconn.Open(context.Background(), redisconn.Config{URL: url})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = client.Close() })
		nonces = redisnonce.New(client, ns+":nonce:")
	}
	v := newVerifier(b, keys, nonces, c, reqsig.Config{})
	ctx := context.Background()
	reqs := make([]*http.Request, 0, benchBatch)
	bodies := make([][]byte, 0, benchBatch)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if i%benchBatch == 0 {
			b.StopTimer()
			reqs, bodies = reqs[:0], bodies[:0]
			for range min(benchBatch, b.N-i) {
				r, body := sign(b, postJSON, signer, t0, "")
				reqs, bodies = append(reqs, r), append(bodies, body)
			}
			b.StartTimer()
		}
		if _, err := v.Verify(ctx, reqs[i%benchBatch], bodies[i%benchBatch]); err != nil {
			b.Fatal(err)
		}
	}
}

// benchLibrary is the baseline: httpsig.Verify of a request httpsig.Sign signed over the same
// components, with a fixed key and no time checks.
func benchLibrary(b *testing.B, alg reqsig.Algorithm) {
	pub, priv := mustEd25519(b)
	secret := bytes.Repeat([]byte{1}, 32)
	spec := httpsig.KeySpec{KeyID: "k", Algo: httpsig.Algorithm(alg), Secret: secret, PubKey: pub}
	skey := httpsig.SigningKey{Key: priv, Secret: secret, MetaKeyID: "k", MetaTag: reqsig.Tag}
	profile := httpsig.SigningProfile{
		Algorithm: httpsig.Algorithm(alg),
		Fields:    httpsig.Fields("@method", "@target-uri", "content-digest", "content-type"),
		Metadata:  []httpsig.Metadata{httpsig.MetaCreated, httpsig.MetaKeyID, httpsig.MetaNonce, httpsig.MetaTag},
		Label:     reqsig.Label,
	}
	ver, err := httpsig.NewVerifier(libKeys{spec}, httpsig.VerifyProfile{SignatureLabel: reqsig.Label, DisableTimeEnforcement: true})
	if err != nil {
		b.Fatal(err)
	}
	r, err := http.NewRequest(postJSON.method, postJSON.url, bytes.NewReader(postJSON.body))
	if err != nil {
		b.Fatal(err)
	}
	r.Header.Set("Content-Type", postJSON.contentType)
	if err := httpsig.Sign(r, profile, skey); err != nil {
		b.Fatal(err)
	}
	sr, body := received(b, r)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		sr.Body = readCloser(body)
		if _, err := ver.Verify(sr); err != nil {
			b.Fatal(err)
		}
	}
}

type libKeys struct{ spec httpsig.KeySpec }

func (k libKeys) FetchByKeyID(context.Context, http.Header, string) (httpsig.KeySpecer, error) {
	return k.spec, nil
}

func (k libKeys) Fetch(context.Context, http.Header, httpsig.MetadataProvider) (httpsig.KeySpecer, error) {
	return k.spec, nil
}

type bodyReader struct{ *bytes.Reader }

func (bodyReader) Close() error { return nil }

func readCloser(b []byte) bodyReader { return bodyReader{bytes.NewReader(b)} }

// BenchmarkNonceClaimSQLite measures group-committed nonce claims on a SQLite file, 16 claimers
// at a time, with each durability: full (every commit fsynced) against process (committed with
// synchronous=NORMAL); ns/op is the time per claim.
//
//	go test -run '^$' -bench BenchmarkNonceClaimSQLite -benchtime 2s ./internal/reqsig/
func BenchmarkNonceClaimSQLite(b *testing.B) {
	for _, d := range []reqsig.Durability{reqsig.DurabilityFull, reqsig.DurabilityProcess} {
		b.Run(string(d), func(b *testing.B) {
			s := openSQLite(b, filepath.Join(b.TempDir(), "nops.db"))
			g, err := reqsig.NewGroupCommitNonces(s, s, d)
			if err != nil {
				b.Fatal(err)
			}
			var n atomic.Int64
			b.SetParallelism(8) // 16 claimers on 2 CPUs
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if ok, err := g.ClaimNonce(context.Background(), "key_A", strconv.FormatInt(n.Add(1), 10), t0.Add(time.Minute), t0); !ok || err != nil {
						b.Errorf("claim: %v %v", ok, err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkNonceClaimJournal measures nonce claims in the journal (FileNonces), 16 claimers at a
// time, with each durability, to compare with BenchmarkNonceClaimSQLite in the same run:
//
//	go test -run '^$' -bench 'BenchmarkNonceClaim(SQLite|Journal)' -benchmem -benchtime 2s ./internal/reqsig/
func BenchmarkNonceClaimJournal(b *testing.B) {
	for _, d := range []reqsig.Durability{reqsig.DurabilityFull, reqsig.DurabilityProcess} {
		b.Run(string(d), func(b *testing.B) {
			f := openFileNonces(b, b.TempDir(), d, nil)
			var n atomic.Int64
			b.SetParallelism(8) // 16 claimers on 2 CPUs
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if ok, err := f.ClaimNonce(context.Background(), "key_A", strconv.FormatInt(n.Add(1), 10), t0.Add(time.Minute), t0); !ok || err != nil {
						b.Errorf("claim: %v %v", ok, err)
						return
					}
				}
			})
		})
	}
}
