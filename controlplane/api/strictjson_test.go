package api

import (
	"encoding/json"
	"net/http"
	"testing"
	"unicode/utf8"
)

func TestCheckJSON(t *testing.T) {
	for _, tc := range []struct {
		name, body, field string
		ok                bool
	}{
		{"plain", `{"a":"b","c":{"a":1},"d":[{"a":1},{"a":2}]}`, "", true},
		{"spelled replacement", `{"a":"\uFFFD` + "\uFFFD" + `\ufffd"}`, "", true},
		{"escaped backslash before a spelled-out escape", `{"a":"\\ufffd\ud800"}`, "a", false},
		{"surrogate pair", `{"a":"\ud83d\ude00"}`, "", true},
		{"reversed pair", `{"a":"\ude00\ud83d"}`, "a", false},
		{"duplicate in array element", `{"d":[{"a":1},{"a":1,"a":2}]}`, "d[1].a", false},
		{"duplicate after nested object", `{"a":{"x":1},"b":2,"a":3}`, "a", false},
		{"invalid byte in nested array", "{\"d\":[[\"\xfe\"]]}", "d[0][0]", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, e := checkJSON([]byte(tc.body))
			if (e == nil) != tc.ok {
				t.Fatalf("checkJSON(%q) = %v, want ok %v", tc.body, e, tc.ok)
			}
			if e != nil && (e.Field != tc.field || e.Status != http.StatusBadRequest) {
				t.Fatalf("checkJSON(%q) = %d field %q, want 400 field %q", tc.body, e.Status, e.Field, tc.field)
			}
		})
	}
	zeros, _ := checkJSON([]byte(`{"a":0,"b":{"c":-0,"d":0.0,"e":1e-400,"f":1},"g":[0,1,0]}`))
	for _, p := range []string{"a", "b.c", "b.d", "b.e", "g[0]", "g[2]"} {
		if !zeros[p] {
			t.Errorf("%s is 0 but not reported (%v)", p, zeros)
		}
	}
	if zeros["b.f"] || zeros["g[1]"] || len(zeros) != 6 {
		t.Errorf("zeros = %v", zeros)
	}
}

// FuzzCheckJSON checks that the walk never panics, that a refusal is a
// 400 that names what is wrong, and that valid JSON it lets through is
// valid UTF-8.
func FuzzCheckJSON(f *testing.F) {
	for _, s := range []string{`{"a":"b"}`, `{"a":1,"a":2}`, "{\"a\":\"\xff\"}", `{"a":"\ud800"}`, `[{"a":[0,{"b":0}]}]`, `{"a":`, `"x"`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		_, e := checkJSON(body)
		if e != nil {
			if e.Status != http.StatusBadRequest || e.Message == "" {
				t.Fatalf("refusal %+v", e)
			}
			return
		}
		if json.Valid(body) && !utf8.Valid(body) {
			t.Fatalf("accepted invalid UTF-8: %q", body)
		}
	})
}
