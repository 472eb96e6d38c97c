package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dbproxy/dbproxy/internal/model"
	"github.com/dbproxy/dbproxy/internal/seal"
)

const testPassword = "pl41nt3xt-Passw0rd-must-not-leak"

func newTestSealer(t *testing.T, b byte) *seal.Sealer {
	t.Helper()
	s, err := seal.New(bytes.Repeat([]byte{b}, seal.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func secretJSON(t *testing.T, name string) []byte {
	t.Helper()
	data, err := json.Marshal(model.Secret{Name: name, Username: "app", Password: testPassword, PasswordVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// writeSample stores a secret, an access key and a proxy through st.
func writeSample(t *testing.T, st Store) {
	t.Helper()
	_, err := st.Update(context.Background(), func(tx Tx) error {
		if err := tx.Put(model.KindSecret, "app", secretJSON(t, "app")); err != nil {
			return err
		}
		if err := tx.Put(model.KindSecret, "app2", secretJSON(t, "app2")); err != nil {
			return err
		}
		if err := tx.Put(model.KindAccessKey, "AKID1", []byte(`{"secret_access_key":"`+testPassword+`"}`)); err != nil {
			return err
		}
		return tx.Put(model.KindProxy, "visible-proxy-name", []byte(`{"name":"visible-proxy-name"}`))
	})
	if err != nil {
		t.Fatalf("write sample: %v", err)
	}
}

func TestEncryptedNotInFile(t *testing.T) {
	for _, tt := range []struct {
		name      string
		encrypt   bool
		wantInRaw bool
	}{
		// The plaintext run shows the check below can fail.
		{"plaintext store leaks", false, true},
		{"encrypted store does not", true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "store.db")
			b, err := OpenBolt(path, BoltOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var st Store = b
			if tt.encrypt {
				st = Encrypted(b, newTestSealer(t, 1), model.SensitiveKinds...)
			}
			writeSample(t, st)
			// Overwrite and delete too: freed pages must not keep a copy.
			put(t, st, model.KindSecret, "app", string(secretJSON(t, "app")))
			if _, err := st.Update(context.Background(), func(tx Tx) error { return tx.Delete(model.KindSecret, "app2") }); err != nil {
				t.Fatal(err)
			}
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := bytes.Contains(raw, []byte(testPassword)); got != tt.wantInRaw {
				t.Errorf("password in raw file = %v, want %v", got, tt.wantInRaw)
			}
			if !bytes.Contains(raw, []byte("visible-proxy-name")) {
				t.Error("non-sensitive value not found in the raw file: the search does not work")
			}
		})
	}
}

func TestEncryptedRoundTrip(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		b := be.open(t)
		st := Encrypted(b, newTestSealer(t, 1), model.SensitiveKinds...)
		writeSample(t, st)

		obj := mustGet(t, st, model.KindSecret, "app")
		if !bytes.Equal(obj.Value, secretJSON(t, "app")) {
			t.Fatalf("Get through Encrypted = %q", obj.Value)
		}
		if obj.Kind != model.KindSecret || obj.Key != "app" || obj.ModRevision != 1 || obj.CreateRevision != 1 {
			t.Errorf("object meta = %+v", obj)
		}
		objs := list(t, st, model.KindSecret, "")
		if len(objs) != 2 || objs[0].Key != "app" || objs[1].Key != "app2" || !bytes.Equal(objs[1].Value, secretJSON(t, "app2")) {
			t.Fatalf("List through Encrypted = %+v", objs)
		}
		if obj := mustGet(t, st, model.KindAccessKey, "AKID1"); !strings.Contains(string(obj.Value), testPassword) {
			t.Errorf("access key = %q", obj.Value)
		}

		// Underneath, sensitive values are sealed and others are not.
		if raw := mustGet(t, b, model.KindSecret, "app"); bytes.Contains(raw.Value, []byte(testPassword)) || raw.Value[0] != 1 {
			t.Errorf("inner value of a secret is not sealed: %q", raw.Value)
		}
		if raw := mustGet(t, b, model.KindProxy, "visible-proxy-name"); string(raw.Value) != `{"name":"visible-proxy-name"}` {
			t.Errorf("inner value of a proxy = %q, want it as written", raw.Value)
		}

		t.Run("transaction reads its own sealed write", func(t *testing.T) {
			_, err := st.Update(ctx, func(tx Tx) error {
				if err := tx.Put(model.KindSecret, "own", []byte("mine")); err != nil {
					return err
				}
				obj, err := tx.Get(model.KindSecret, "own")
				if err != nil {
					return err
				}
				if string(obj.Value) != "mine" {
					return errors.New("own write read back as " + string(obj.Value))
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
		t.Run("revisions and subscriptions pass through", func(t *testing.T) {
			ch, cancel := st.Subscribe()
			defer cancel()
			rev := put(t, st, model.KindSecret, "another", "v")
			if v, _ := recv(t, ch); v != rev || st.Revision() != rev || b.Revision() != rev {
				t.Fatalf("notified %d, Revision %d, inner %d; want %d", v, st.Revision(), b.Revision(), rev)
			}
			if _, err := st.Update(ctx, func(tx Tx) error { return tx.Delete(model.KindSecret, "another") }); err != nil {
				t.Fatal(err)
			}
			wantNotFound(t, st, model.KindSecret, "another")
		})
	})
}

func TestEncryptedRejects(t *testing.T) {
	forEachBackend(t, func(t *testing.T, be backend) {
		ctx := context.Background()
		b := be.open(t)
		st := Encrypted(b, newTestSealer(t, 1), model.SensitiveKinds...)
		writeSample(t, st)
		sealed := mustGet(t, b, model.KindSecret, "app").Value

		wantDecryptErr := func(t *testing.T, st Store, kind, key string) {
			t.Helper()
			_, err := get(t, st, kind, key)
			if !errors.Is(err, seal.ErrDecrypt) {
				t.Fatalf("Get %s/%s = %v, want seal.ErrDecrypt", kind, key, err)
			}
			if strings.Contains(err.Error(), testPassword) {
				t.Errorf("error %q leaks the password", err)
			}
			_, err = st.View(ctx, func(r Reader) error { _, err := r.List(kind, ""); return err })
			if !errors.Is(err, seal.ErrDecrypt) {
				t.Fatalf("List %s = %v, want seal.ErrDecrypt", kind, err)
			}
		}
		t.Run("wrong master key", func(t *testing.T) {
			wantDecryptErr(t, Encrypted(b, newTestSealer(t, 2), model.SensitiveKinds...), model.KindSecret, "app")
		})
		t.Run("sealed value moved to another key", func(t *testing.T) {
			put(t, b, model.KindSecret, "moved", string(sealed))
			wantDecryptErr(t, st, model.KindSecret, "moved")
		})
		t.Run("sealed value moved to another kind", func(t *testing.T) {
			put(t, b, model.KindAccessKey, "app", string(sealed))
			wantDecryptErr(t, st, model.KindAccessKey, "app")
		})
		t.Run("tampered value", func(t *testing.T) {
			bad := bytes.Clone(sealed)
			bad[len(bad)/2] ^= 1
			put(t, b, model.KindSecret, "app", string(bad))
			wantDecryptErr(t, st, model.KindSecret, "app")
		})
		t.Run("plaintext value in a sensitive kind", func(t *testing.T) {
			put(t, b, model.KindSecret, "app", string(secretJSON(t, "app")))
			wantDecryptErr(t, st, model.KindSecret, "app")
		})
		t.Run("other kinds unaffected", func(t *testing.T) {
			if obj := mustGet(t, st, model.KindProxy, "visible-proxy-name"); !strings.Contains(string(obj.Value), "visible") {
				t.Fatalf("proxy = %q", obj.Value)
			}
		})
	})
}

func TestEncryptedNilSealer(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Encrypted with a nil sealer did not panic")
		}
	}()
	Encrypted(openTemp(t), nil, model.KindSecret)
}
